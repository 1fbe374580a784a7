import AsyncSupport
import Testing

/// The one back-off: doubling, capped, jittered within its range, reset after a healthy attempt.
@Suite struct BackoffTests {
    /// A generator that always returns the same value (so jitter factors are predictable).
    struct Fixed: RandomNumberGenerator {
        var value: UInt64
        mutating func next() -> UInt64 { value }
    }

    @Test func doublesUpToTheCapWithoutJitter() {
        var b = Backoff(base: .milliseconds(100), max: .milliseconds(700), jitter: 1...1)
        let delays = (0..<6).map { _ in b.next() }
        #expect(delays == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(700), .milliseconds(700), .milliseconds(700)])
        b.reset()
        #expect(b.next() == .milliseconds(100))
    }

    @Test func jitterStaysInItsRange() {
        var low = Fixed(value: 0), high = Fixed(value: .max)
        var a = Backoff(base: .seconds(1), max: .seconds(30)), b = a
        #expect(a.next(using: &low) == .milliseconds(500))
        #expect(b.next(using: &high) <= .milliseconds(1500) && b.next(using: &high) > .milliseconds(2900))
        var c = Backoff(base: .seconds(2), max: .seconds(30), jitter: 0.5...1.0)
        for _ in 0..<50 {
            let step = c.step
            let d = c.next()
            #expect(d >= step * 0.5 && d <= step)
        }
    }

    @Test func aHealthyAttemptResetsOnlyWhenItLastedLongEnough() {
        var b = Backoff(base: .milliseconds(200), max: .seconds(5), jitter: 1...1)
        _ = b.next(); _ = b.next()
        b.attemptEnded(after: .seconds(10), healthy: .seconds(60))
        #expect(b.step == .milliseconds(800))
        b.attemptEnded(after: .seconds(61), healthy: .seconds(60))
        #expect(b.step == .milliseconds(200))
    }

    @Test func aCapBelowTheBaseIsTheBase() {
        var b = Backoff(base: .seconds(2), max: .seconds(1), jitter: 1...1)
        #expect(b.next() == .seconds(2) && b.next() == .seconds(2))
    }
}
