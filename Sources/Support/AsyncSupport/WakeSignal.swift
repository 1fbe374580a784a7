import Dispatch
import Synchronization

/// An auto-reset event for one waiting task: ``wait()`` returns once ``signal()`` was called
/// (before or during the wait) or the waiting task is cancelled. Signals do not accumulate.
/// Cancellation is race-free: a cancel that lands before the waiter parks still wakes it.
public final class WakeSignal: Sendable {
    struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
        /// The timed wait the parked waiter belongs to (0: untimed), the last timed wait whose
        /// timer fired, and the last token handed out.
        var parkedFor: UInt64 = 0
        var expired: UInt64 = 0
        var lastToken: UInt64 = 0
    }

    let state = Mutex(State())

    public init() {}

    public func signal() {
        let w = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if let w = s.waiter { s.waiter = nil; return w }
            s.pending = true
            return nil
        }
        w?.resume()
    }

    public func wait() async {
        await park(token: 0)
    }

    /// Waits for a signal, but no longer than until `deadline`.
    ///
    /// The deadline is a dispatch timer, cancelled (and freed) as soon as the wait ends. Racing a
    /// `Task.sleep` instead left every early-woken wait's sleep pending until its deadline:
    /// ~2.5 KB each, thousands of them on a busy node (measured with heaptrack on the edge).
    public func wait(until deadline: ContinuousClock.Instant) async {
        let remaining = deadline - .now
        guard remaining > .zero else { return }
        let token = state.withLock { s -> UInt64 in
            s.lastToken &+= 1
            return s.lastToken
        }
        let timer = DispatchSource.makeTimerSource(queue: .global())
        let (seconds, attoseconds) = remaining.components
        // Nanoseconds overflow Int past ~292 years: such a deadline is never.
        timer.schedule(deadline: seconds >= Int64.max / 1_000_000_000 - 1 ? .distantFuture
                           : .now() + .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)))
        timer.setEventHandler { [weak self] in self?.expire(token) }
        timer.resume()
        await park(token: token)
        timer.cancel()
    }

    /// The timer of timed wait `token` fired: wakes that wait, if it is the one parked (or about
    /// to park); a timer that fires after its wait ended changes nothing.
    func expire(_ token: UInt64) {
        let w = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if let w = s.waiter, s.parkedFor == token { s.waiter = nil; return w }
            s.expired = token
            return nil
        }
        w?.resume()
    }

    func park(token: UInt64) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.pending || Task.isCancelled { s.pending = false; return true }
                    if token != 0 && s.expired == token { return true }
                    s.waiter = c
                    s.parkedFor = token
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            signal()
        }
    }
}

/// Runs `body`, cancelled once `limit` has passed, in which case `expired()` is thrown (or
/// `CancellationError` if the caller was cancelled). The limit is a ``WakeSignal`` timed wait, whose
/// timer is freed as soon as `body` ends; racing a `Task.sleep` instead keeps each sleep allocated
/// until its deadline however early the work finished.
public func withTimeLimit<T: Sendable>(_ limit: Duration, expired: @autoclosure () -> any Error,
                                       _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            await WakeSignal().wait(until: .now + limit)
            return nil
        }
        defer { group.cancelAll() }
        if let first = try await group.next(), let value = first { return value }
        try Task.checkCancellation()
        throw expired()
    }
}

/// Values made on first use of their key and kept (per-node metric handles, wake signals,
/// shared informers): one lock, one place for the get-or-create.
public final class LazyMap<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    let values = Mutex<[Key: Value]>([:])

    public init() {}

    /// The value for `key`, made by `make` if there is none yet.
    public func value(for key: Key, orMake make: () -> Value) -> Value {
        values.withLock { v in
            if let x = v[key] { return x }
            let x = make()
            v[key] = x
            return x
        }
    }

    /// Every value made so far.
    public var all: [Value] { values.withLock { Array($0.values) } }
}
