import AsyncSupport
import KubeAPI
import Synchronization

/// Messages awaiting their `"OK"` ack, with deadlines kept in one FIFO per timeout value (all
/// sends use the same few timeouts, so each FIFO is in deadline order). One sweeper task expires
/// them — no task or timer per message.
final class AckTracker: Sendable {
    enum Entry {
        case pending(session: UInt64)
        case acked
        case waiting(CheckedContinuation<Bool, Never>, session: UInt64)
    }

    struct Fifo {
        var items: [(id: String, deadline: ContinuousClock.Instant)] = []
        var head = 0
        var front: (id: String, deadline: ContinuousClock.Instant)? { head < items.count ? items[head] : nil }
        mutating func pop() {
            head += 1
            if head > 1024 && head * 2 > items.count { items.removeFirst(head); head = 0 }
        }
    }

    struct State {
        var entries: [String: Entry] = [:]
        var queues: [Duration: Fifo] = [:]
    }

    let state = Mutex(State())
    let wake = WakeSignal()

    var count: Int { state.withLock { $0.entries.count } }

    /// Starts tracking `id` (before the message is written, so an early ack is not missed).
    func register(_ id: String, session: UInt64, timeout: Duration) {
        let wasIdle = state.withLock { s -> Bool in
            s.entries[id] = .pending(session: session)
            let idle = s.queues.values.allSatisfy { $0.front == nil }
            s.queues[timeout, default: Fifo()].items.append((id, .now + timeout))
            return idle
        }
        if wasIdle { wake.signal() }
    }

    /// Stops tracking (the write failed).
    func cancel(_ id: String) { _ = state.withLock { $0.entries.removeValue(forKey: id) } }

    /// Waits for the ack (true) or the deadline (false).
    func wait(_ id: String) async -> Bool {
        await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
            let now: Bool? = state.withLock { s in
                switch s.entries[id] {
                case .acked: s.entries[id] = nil; return true
                case .pending(let session): s.entries[id] = .waiting(c, session: session); return nil
                case .waiting, nil: return false
                }
            }
            if let now { c.resume(returning: now) }
        }
    }

    /// An ack arrived; false if nothing was waiting for it (late or unknown).
    @discardableResult
    func acked(_ id: String) -> Bool {
        let (known, waiter) = state.withLock { s -> (Bool, CheckedContinuation<Bool, Never>?) in
            switch s.entries[id] {
            case .pending: s.entries[id] = .acked; return (true, nil)
            case .waiting(let c, _): s.entries[id] = nil; return (true, c)
            default: return (false, nil)
            }
        }
        waiter?.resume(returning: true)
        return known
    }

    /// The session ended: what was sent on it will not be acknowledged.
    func sessionEnded(_ session: UInt64) {
        var failed: [CheckedContinuation<Bool, Never>] = []
        state.withLock { s in
            for (id, e) in s.entries {
                switch e {
                case .pending(let x) where x == session: s.entries[id] = nil
                case .waiting(let c, let x) where x == session: s.entries[id] = nil; failed.append(c)
                default: break
                }
            }
        }
        for c in failed { c.resume(returning: false) }
    }

    /// Expires what is due; returns the next deadline (nil: nothing tracked).
    func expire(now: ContinuousClock.Instant) -> ContinuousClock.Instant? {
        var due: [CheckedContinuation<Bool, Never>] = []
        let next = state.withLock { s -> ContinuousClock.Instant? in
            var next: ContinuousClock.Instant?
            for key in Array(s.queues.keys) {
                while let f = s.queues[key]!.front, f.deadline <= now {
                    s.queues[key]!.pop()
                    switch s.entries[f.id] {
                    case .waiting(let c, _): s.entries[f.id] = nil; due.append(c)
                    case .pending, .acked: s.entries[f.id] = nil  // never awaited: forget it
                    case nil: break
                    }
                }
                if let f = s.queues[key]!.front { next = min(next ?? f.deadline, f.deadline) }
            }
            return next
        }
        for c in due { c.resume(returning: false) }
        return next
    }

    /// The sweeper: sleeps until the next deadline, or until something is tracked.
    func run() async {
        while !Task.isCancelled {
            if let next = expire(now: .now) {
                try? await Task.sleep(until: next, clock: .continuous)
            } else {
                await wake.wait()
            }
        }
    }
}
