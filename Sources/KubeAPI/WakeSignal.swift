import Synchronization

/// An auto-reset event for one waiting task: ``wait()`` returns once ``signal()`` was called
/// (before or during the wait) or the waiting task is cancelled. Signals do not accumulate.
/// Cancellation is race-free: a cancel that lands before the waiter parks still wakes it.
public final class WakeSignal: Sendable {
    struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
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
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.pending || Task.isCancelled { s.pending = false; return true }
                    s.waiter = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            signal()
        }
    }

    /// Waits for a signal, but no longer than until `deadline`.
    public func wait(until deadline: ContinuousClock.Instant) async {
        guard deadline > .now else { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.wait() }
            group.addTask { try? await Task.sleep(until: deadline, clock: .continuous) }
            await group.next()
            group.cancelAll()
        }
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
