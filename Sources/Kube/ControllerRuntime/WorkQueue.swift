import AsyncSupport
import KubeAPI
import Synchronization

/// client-go's rate-limited work queue: a key is queued at most once, is never handed to two
/// workers at the same time (a key re-added while being processed is queued again when it is
/// done), can be re-added after a delay, and failing keys back off exponentially per key.
public final class WorkQueue: Sendable {
    struct State {
        var queue: [String] = []
        var head = 0
        var dirty: Set<String> = []
        var processing: Set<String> = []
        var waiters: [CheckedContinuation<String?, Never>] = []
        var failures: [String: Int] = [:]
        var delayed: [String: ContinuousClock.Instant] = [:]
        var shuttingDown = false

        var depth: Int { queue.count - head }

        /// Queues `key`; returns a waiter to resume with it when one is parked.
        mutating func add(_ key: String) -> CheckedContinuation<String?, Never>? {
            guard !shuttingDown, !dirty.contains(key) else { return nil }
            dirty.insert(key)
            if processing.contains(key) { return nil }
            if !waiters.isEmpty {
                dirty.remove(key)
                processing.insert(key)
                return waiters.removeFirst()
            }
            queue.append(key)
            return nil
        }

        mutating func pop() -> String? {
            guard head < queue.count else { return nil }
            let key = queue[head]
            head += 1
            if head > 1024, head * 2 > queue.count { queue.removeFirst(head); head = 0 }
            dirty.remove(key)
            processing.insert(key)
            return key
        }
    }

    let state = Mutex(State())
    /// Wakes the timer loop when a delayed key is added (its deadline may be the earliest).
    let timerWake = WakeSignal()
    public let baseDelay: Duration
    public let maxDelay: Duration

    public init(baseDelay: Duration = .milliseconds(5), maxDelay: Duration = .seconds(300)) {
        self.baseDelay = baseDelay; self.maxDelay = maxDelay
    }

    /// Number of keys waiting to be processed.
    public var depth: Int { state.withLock { $0.depth } }

    public func add(_ key: String) {
        state.withLock { $0.add(key) }?.resume(returning: key)
    }

    /// Queues `key` once `delay` has passed (an earlier pending deadline wins).
    public func add(_ key: String, after delay: Duration) {
        if delay <= .zero { add(key); return }
        let at = ContinuousClock.now + delay
        state.withLock { s in
            guard !s.shuttingDown else { return }
            if let existing = s.delayed[key], existing <= at { return }
            s.delayed[key] = at
        }
        timerWake.signal()
    }

    /// Queues `key` after its per-key exponential back-off (base × 2^failures, capped).
    public func addRateLimited(_ key: String) {
        let n = state.withLock { s -> Int in
            let n = s.failures[key, default: 0]
            s.failures[key] = n + 1
            return n
        }
        let delay = n >= 30 ? maxDelay : min(baseDelay * (1 << n), maxDelay)
        add(key, after: delay)
    }

    /// Clears the back-off of `key` (call after it was processed successfully).
    public func forget(_ key: String) {
        _ = state.withLock { $0.failures.removeValue(forKey: key) }
    }

    public func failureCount(_ key: String) -> Int { state.withLock { $0.failures[key, default: 0] } }

    /// The next key to process, or nil once the queue is shut down. Cancellation shuts it down.
    public func get() async -> String? {
        if let key = state.withLock({ $0.pop() }) { return key }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<String?, Never>) in
                let immediate: String?? = state.withLock { s in
                    if s.shuttingDown { return .some(nil) }
                    if let k = s.pop() { return .some(k) }
                    s.waiters.append(c)
                    return nil
                }
                if let immediate { c.resume(returning: immediate) }
            }
        } onCancel: {
            shutDown()
        }
    }

    /// Marks `key` processed; if it was re-added meanwhile it is queued again.
    public func done(_ key: String) {
        let waiter = state.withLock { s -> CheckedContinuation<String?, Never>? in
            s.processing.remove(key)
            guard s.dirty.contains(key) else { return nil }
            s.dirty.remove(key)
            return s.add(key)
        }
        waiter?.resume(returning: key)
    }

    /// Wakes every waiting worker with nil; later adds are ignored.
    public func shutDown() {
        let waiters = state.withLock { s -> [CheckedContinuation<String?, Never>] in
            s.shuttingDown = true
            let w = s.waiters
            s.waiters = []
            return w
        }
        for w in waiters { w.resume(returning: nil) }
    }

    /// Moves delayed keys whose time has come into the queue; runs until cancelled. Sleeps until
    /// the earliest deadline (at most `maxSleep`), or until a new delayed key arrives.
    public func runTimers(maxSleep: Duration = .seconds(1)) async {
        while !Task.isCancelled {
            let now = ContinuousClock.now
            let (due, next) = state.withLock { s -> ([String], ContinuousClock.Instant?) in
                var due: [String] = []
                var next: ContinuousClock.Instant?
                for (k, at) in s.delayed {
                    if at <= now { due.append(k) } else if next == nil || at < next! { next = at }
                }
                for k in due { s.delayed.removeValue(forKey: k) }
                return (due, next)
            }
            for k in due { add(k) }
            let wait = min(maxSleep, next.map { $0 - now } ?? maxSleep)
            await withTaskGroup(of: Void.self) { group in
                group.addTask { try? await Task.sleep(for: wait) }
                group.addTask { await self.timerWake.wait() }
                await group.next()
                group.cancelAll()
            }
        }
    }
}
