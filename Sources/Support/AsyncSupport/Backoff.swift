/// Jittered exponential back-off: the one every reconnecting or retrying component uses (EdgeHub,
/// the stream tunnel client, the MQTT client, certificate rotation, informers). Each delay is the
/// current step times a random factor from `jitter`; the step doubles after each delay, up to
/// `max`, and returns to `base` on ``reset()`` (a connection that held long enough).
public struct Backoff: Sendable, Equatable {
    public let base: Duration
    public let max: Duration
    public let jitter: ClosedRange<Double>
    /// The undithered delay the next ``next(using:)`` starts from.
    public private(set) var step: Duration

    public init(base: Duration, max: Duration, jitter: ClosedRange<Double> = 0.5...1.5) {
        self.base = base; self.max = Swift.max(base, max); self.jitter = jitter; step = base
    }

    /// The delay before the next attempt; the one after is twice as long (capped at `max`).
    public mutating func next<G: RandomNumberGenerator>(using generator: inout G) -> Duration {
        let delay = step * Double.random(in: jitter, using: &generator)
        step = Swift.min(step * 2, max)
        return delay
    }

    public mutating func next() -> Duration {
        var g = SystemRandomNumberGenerator()
        return next(using: &g)
    }

    /// Back to `base` (after a success).
    public mutating func reset() { step = base }

    /// An attempt that ran for `duration` ended: one that held at least `healthy` resets the back-off,
    /// so a node that was connected for a while reconnects quickly after a blip.
    public mutating func attemptEnded(after duration: Duration, healthy: Duration) {
        if duration >= healthy { reset() }
    }
}
