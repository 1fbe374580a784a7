import CloudEdgeProtocol
import KubeAPI

/// An object as delivered to (or meant for) an edge node.
public struct SyncedObject: Sendable, Equatable {
    public var uid: String
    public var apiVersion: String
    public var kind: String
    public var namespace: String?
    public var name: String
    /// Its kind in the cloud–edge vocabulary.
    public var edgeKind: EdgeResourceKind
    public var resourceVersion: UInt64
    public var object: JSON

    public init(uid: String, apiVersion: String, kind: String, namespace: String?, name: String, edgeKind: EdgeResourceKind,
                resourceVersion: UInt64, object: JSON)
    {
        self.uid = uid; self.apiVersion = apiVersion; self.kind = kind; self.namespace = namespace; self.name = name
        self.edgeKind = edgeKind; self.resourceVersion = resourceVersion; self.object = object
    }

    /// Reads the identity of a Kubernetes object (nil when it has no uid or resourceVersion).
    public init?(_ o: JSON, kind edgeKind: EdgeResourceKind) {
        let m = o["metadata"]
        guard let uid = m["uid"].stringValue, let name = m["name"].stringValue,
              let rv = m["resourceVersion"].stringValue.flatMap({ UInt64($0) }) else { return nil }
        self.init(uid: uid, apiVersion: o["apiVersion"].stringValue ?? "v1", kind: o["kind"].stringValue ?? "",
                  namespace: m["namespace"].stringValue.flatMap { $0.isEmpty ? nil : $0 }, name: name, edgeKind: edgeKind,
                  resourceVersion: rv, object: o)
    }

    /// What the node has recorded of it (no content).
    public var record: DeliveredRecord {
        DeliveredRecord(uid: uid, apiVersion: apiVersion, kind: kind, namespace: namespace, name: name, edgeKind: edgeKind, resourceVersion: resourceVersion)
    }
}

/// The version of an object a node acknowledged.
public struct DeliveredRecord: Sendable, Equatable {
    public var uid: String
    public var apiVersion: String
    public var kind: String
    public var namespace: String?
    public var name: String
    public var edgeKind: EdgeResourceKind
    public var resourceVersion: UInt64

    public init(uid: String, apiVersion: String, kind: String, namespace: String?, name: String, edgeKind: EdgeResourceKind, resourceVersion: UInt64) {
        self.uid = uid; self.apiVersion = apiVersion; self.kind = kind; self.namespace = namespace; self.name = name
        self.edgeKind = edgeKind; self.resourceVersion = resourceVersion
    }

    /// What a node's inventory says it holds (nil for a key that is not an object of a synced kind).
    public init?(_ item: InventoryItem) {
        guard let ref = try? ResourceRef(parsing: item.key), ref.kind.isSynced, let name = ref.name, let type = ref.kind.resourceType
        else { return nil }
        self.init(uid: item.uid, apiVersion: type.apiVersion, kind: type.kind, namespace: ref.namespace, name: name, edgeKind: ref.kind,
                  resourceVersion: item.resourceVersion)
    }
}

/// What to do for one object of one node.
public enum SyncAction: Sendable, Equatable {
    case send(SyncedObject, firstTime: Bool)
    case delete(DeliveredRecord)
    case none
}

/// Per-node delivery bookkeeping as a value: which versions the node acknowledged, which objects
/// need a look, which are in flight. Decides, for each object, whether to send it, delete it or
/// do nothing — so only the newest version is ever sent and nothing is re-sent needlessly.
public struct NodeDeliveryState: Sendable {
    public private(set) var delivered: [String: DeliveredRecord] = [:]
    var dirty: [String] = []
    var dirtySet: Set<String> = []
    var inflight: Set<String> = []
    var failures: [String: Int] = [:]
    /// Objects acknowledged (or deleted) during the current connection: newer than any
    /// inventory the node took when it connected.
    var touched: Set<String> = []
    public var connected = false

    public init() {}

    public var pendingCount: Int { dirtySet.count }
    /// Objects sent and not yet acknowledged.
    public var inFlightCount: Int { inflight.count }

    /// Marks an object for a look (deduplicated; one entry per object, so bounded by the node's objects).
    public mutating func markDirty(_ uid: String) {
        if dirtySet.insert(uid).inserted { dirty.append(uid) }
    }

    /// After a (re)connect: every object the node should have or has.
    public mutating func markAll(desired: some Sequence<String>) {
        for uid in desired { markDirty(uid) }
        for uid in delivered.keys { markDirty(uid) }
    }

    /// Takes up to `limit` dirty objects that are not in flight.
    public mutating func take(_ limit: Int) -> [String] {
        var out: [String] = []
        var keep: [String] = []
        for uid in dirty {
            if out.count < limit && !inflight.contains(uid) {
                out.append(uid)
                dirtySet.remove(uid)
                inflight.insert(uid)
            } else {
                keep.append(uid)
            }
        }
        dirty = keep
        return out
    }

    /// Decides what an object needs, given its current state (nil = gone).
    public func action(for uid: String, current: SyncedObject?) -> SyncAction {
        let had = delivered[uid]
        if let current {
            if let had, had.resourceVersion >= current.resourceVersion { return .none }
            return .send(current, firstTime: had == nil)
        }
        if let had { return .delete(had) }
        return .none
    }

    /// The node acknowledged `action`.
    public mutating func acknowledged(_ action: SyncAction) {
        switch action {
        case .send(let o, _):
            inflight.remove(o.uid); failures[o.uid] = nil; touched.insert(o.uid)
            if (delivered[o.uid]?.resourceVersion ?? 0) < o.resourceVersion { delivered[o.uid] = o.record }
        case .delete(let r):
            inflight.remove(r.uid); failures[r.uid] = nil; touched.insert(r.uid)
            delivered[r.uid] = nil
        case .none: break
        }
    }

    /// Nothing needed doing for `uid`.
    public mutating func settled(_ uid: String) { inflight.remove(uid) }

    /// Sending failed; returns how many times in a row.
    public mutating func failed(_ uid: String) -> Int {
        inflight.remove(uid)
        let n = failures[uid, default: 0] + 1
        failures[uid] = n
        return n
    }

    /// Restores what the node acknowledged before a restart (from ObjectSync records).
    public mutating func restore(_ r: DeliveredRecord) {
        if (delivered[r.uid]?.resourceVersion ?? 0) <= r.resourceVersion { delivered[r.uid] = r }
    }

    /// A new connection starts.
    public mutating func beginSession() { touched.removeAll() }

    /// The node's own account of what it holds (sent when it connects) replaces what the cloud
    /// believed — the records can lag a crash, and a node can lose its store — except for what
    /// was acknowledged since; objects whose account changed are compared again: missing ones
    /// are sent, ones the node should not have are deleted.
    public mutating func reconcile(inventory: [DeliveredRecord]) {
        var have: [String: DeliveredRecord] = [:]
        for r in inventory { have[r.uid] = r }
        var changed: [String] = []
        for uid in Array(delivered.keys) where have[uid] == nil && !touched.contains(uid) { delivered[uid] = nil; changed.append(uid) }
        for (uid, r) in have where !touched.contains(uid) && delivered[uid]?.resourceVersion != r.resourceVersion {
            delivered[uid] = r
            changed.append(uid)
        }
        // Only objects whose account changed need another look (the connect pass saw the rest).
        if connected { for uid in changed { markDirty(uid) } }
    }

    /// The connection dropped: in-flight objects are looked at again after the next connect.
    public mutating func disconnected() {
        connected = false
        inflight.removeAll()
        dirty.removeAll()
        dirtySet.removeAll()
    }
}
