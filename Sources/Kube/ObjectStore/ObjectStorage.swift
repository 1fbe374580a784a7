import KubeAPI

/// Labels and selectable fields of a stored object, extracted once at write time so that
/// list and watch filtering never re-parse the object.
public struct IndexedAttributes: Sendable, Hashable {
    public var labels: [String: String]
    public var fields: [String: String]
    /// UIDs from `metadata.ownerReferences` (for the garbage collector).
    public var ownerUIDs: [String]
    public init(labels: [String: String] = [:], fields: [String: String] = [:], ownerUIDs: [String] = []) {
        self.labels = labels; self.fields = fields; self.ownerUIDs = ownerUIDs
    }
}

/// One object as stored: its key, the revision of its last write, and its JSON encoding
/// (with `metadata.resourceVersion` already set to `revision`).
public struct StoredObject: Sendable {
    public let key: String
    public let revision: Int64
    public let data: [UInt8]
    public let attributes: IndexedAttributes

    public init(key: String, revision: Int64, data: [UInt8], attributes: IndexedAttributes) {
        self.key = key; self.revision = revision; self.data = data; self.attributes = attributes
    }

    public func decode() throws -> JSON { try JSON.parse(data) }
}

/// What a write decides after seeing the current object.
public enum Mutation: Sendable {
    /// Store this value (the store sets `metadata.resourceVersion`).
    case put(JSON)
    /// Remove the object.
    case delete
    /// Change nothing (for example a patch that leaves the object as it is).
    case unchanged
}

public enum StoreEventType: String, Sendable {
    case added = "ADDED"
    case modified = "MODIFIED"
    case deleted = "DELETED"
}

/// A change committed to the store. `object` is the new state (for deletions: the last state,
/// stamped with the deletion's revision); `previous` the state before, when known.
public struct StoreEvent: Sendable {
    public let type: StoreEventType
    public let object: StoredObject
    public let previous: StoredObject?
    public var revision: Int64 { object.revision }
}

/// What a watch stream yields: committed changes in revision order, and progress marks.
public enum WatchItem: Sendable {
    case event(StoreEvent)
    /// Every change up to and including this revision has been delivered.
    case progress(Int64)
}

/// The result of a write.
public struct WriteResult: Sendable {
    public let object: StoredObject?
    public let eventType: StoreEventType?
    public var changed: Bool { eventType != nil }
}

/// One page of a list, read at a single revision.
public struct ListPage: Sendable {
    public var items: [StoredObject]
    public var revision: Int64
    /// The last key returned when more items remain.
    public var continueAfter: String?
    public var remaining: Int
}

/// Store sizes, for metrics and for `swiftedge` operators.
public struct StorageStats: Sendable {
    public var revision: Int64
    public var compactedRevision: Int64
    public var objectCount: Int
    public var historyEvents: Int
    public var databaseBytes: Int64
    public var walBytes: Int64
    public var freeBytes: Int64
}

/// A typed storage error with a clear message.
public struct StorageError: Error, CustomStringConvertible, Sendable {
    public enum Code: Sendable, Equatable {
        /// The requested revision has been compacted away.
        case compacted(requested: Int64, oldest: Int64)
        /// The database could not be opened or is damaged.
        case corrupt
        /// A write could not be committed.
        case commitFailed
        case closed
    }
    public var code: Code
    public var message: String
    public init(_ code: Code, _ message: String) { self.code = code; self.message = message }
    public var description: String { message }
}

/// A revisioned key-value store of Kubernetes objects with watch, in the spirit of etcd/kine:
/// one global, strictly increasing revision; every write is durable before it returns.
public protocol ObjectStorage: Sendable {
    /// The revision of the last committed write.
    func currentRevision() async -> Int64
    func get(_ key: String) async -> StoredObject?
    /// Lists keys under `prefix` in key order, after `startAfter`, at `revision` (nil: latest).
    func list(prefix: String, startAfter: String?, limit: Int?, revision: Int64?,
              filter: (@Sendable (StoredObject) -> Bool)?) async throws -> ListPage
    /// Atomically reads the current object at `key` and applies the decision of `body`.
    func write(_ key: String, _ body: @Sendable (StoredObject?) throws -> Mutation) async throws -> WriteResult
    /// Changes under `prefix` with revision greater than `after` (nil: from now on).
    func watch(prefix: String, after: Int64?) async throws -> WatchSubscription
    /// Asks the store to put a progress mark into a subscription's stream.
    func requestProgress(_ id: Int) async
    func cancelWatch(_ id: Int) async
    /// Ends every watch (server shutdown).
    func closeAllWatches() async
    func compact() async throws
    func stats() async -> StorageStats
}

/// A live watch on the store.
public struct WatchSubscription: Sendable {
    public let id: Int
    public let stream: AsyncStream<WatchItem>
}
