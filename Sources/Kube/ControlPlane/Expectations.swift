import ControllerRuntime
import KubeAPI
import Synchronization

/// client-go's controller expectations: after a controller creates or deletes pods it waits until
/// its informer has seen those changes before acting on the same owner again, so a stale cache
/// never makes it create or delete twice. Expectations older than `timeout` are dropped.
final class Expectations: Sendable {
    struct Entry { var adds: Int; var deletes: Int; var since: ContinuousClock.Instant }
    let entries = Mutex<[String: Entry]>([:])
    let timeout: Duration

    init(timeout: Duration = .seconds(300)) { self.timeout = timeout }

    func expect(_ key: String, adds: Int = 0, deletes: Int = 0) {
        entries.withLock { $0[key] = Entry(adds: adds, deletes: deletes, since: .now) }
    }

    func observedAdd(_ key: String) { entries.withLock { if $0[key] != nil { $0[key]!.adds -= 1 } } }
    func observedDelete(_ key: String) { entries.withLock { if $0[key] != nil { $0[key]!.deletes -= 1 } } }

    /// A create or delete that failed will never be observed.
    func lowered(_ key: String, adds: Int = 0, deletes: Int = 0) {
        entries.withLock { if $0[key] != nil { $0[key]!.adds -= adds; $0[key]!.deletes -= deletes } }
    }

    func satisfied(_ key: String) -> Bool {
        entries.withLock { e in
            guard let x = e[key] else { return true }
            if (x.adds <= 0 && x.deletes <= 0) || ContinuousClock.now - x.since > timeout { e[key] = nil; return true }
            return false
        }
    }

    func forget(_ key: String) { _ = entries.withLock { $0.removeValue(forKey: key) } }
}

/// Routes pod events to the controller that owns the pod and feeds its expectations.
struct OwnedPodEvents {
    let ownerKind: String
    let expectations: Expectations
    let queue: WorkQueue

    func handle(_ ev: InformerEvent) {
        switch ev {
        case .added(let p):
            guard let key = ownerKey(p) else { return }
            expectations.observedAdd(key)
            queue.add(key)
        case .updated(let old, let new):
            let ok = ownerKey(old), nk = ownerKey(new)
            if let nk, new.isDeleting, !old.isDeleting { expectations.observedDelete(nk) }
            if let ok, ok != nk { queue.add(ok) }
            if let nk { queue.add(nk) }
        case .deleted(let p):
            guard let key = ownerKey(p) else { return }
            if !p.isDeleting { expectations.observedDelete(key) }
            queue.add(key)
        case .synced: break
        }
    }

    func ownerKey(_ p: JSON) -> String? {
        guard let ref = p.controllerRef, ref["kind"].stringValue == ownerKind, let name = ref["name"].stringValue else { return nil }
        return "\(p.namespace)/\(name)"
    }
}

