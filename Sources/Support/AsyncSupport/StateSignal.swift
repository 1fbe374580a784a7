import Synchronization

/// A value that changes over time and that any number of tasks follow: ``value`` now, and
/// ``updates()``, a stream that starts with the current value and then yields every change (a
/// slow subscriber sees the latest values, never a stale order). The edge's "connected to the
/// cloud" is one: EdgeHub sets it, Edged, DeviceTwin and the node status reporter follow it.
public final class StateSignal<Value: Sendable & Equatable>: Sendable {
    struct State {
        var value: Value
        var subscribers: [Int: AsyncStream<Value>.Continuation] = [:]
        var nextID = 0
    }
    let state: Mutex<State>

    public init(_ initial: Value) { state = Mutex(State(value: initial)) }

    public var value: Value { state.withLock { $0.value } }

    /// Sets the value; returns whether it changed (subscribers hear only changes).
    @discardableResult
    public func set(_ new: Value) -> Bool {
        // Yielded under the lock (a yield never blocks): concurrent sets reach every subscriber
        // in the order they took effect.
        state.withLock { s in
            guard s.value != new else { return false }
            s.value = new
            for c in s.subscribers.values { c.yield(new) }
            return true
        }
    }

    /// The current value, then every change, until the subscriber stops iterating.
    public func updates() -> AsyncStream<Value> {
        let (stream, continuation) = AsyncStream<Value>.makeStream(bufferingPolicy: .bufferingNewest(16))
        let id = state.withLock { s in
            let id = s.nextID
            s.nextID += 1
            s.subscribers[id] = continuation
            continuation.yield(s.value)
            return id
        }
        continuation.onTermination = { [weak self] _ in _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) } }
        return stream
    }

    /// Waits until the value satisfies `condition` and returns it (nil if the task is cancelled first).
    public func wait(until condition: (Value) -> Bool) async -> Value? {
        for await v in updates() where condition(v) { return v }
        return nil
    }
}
