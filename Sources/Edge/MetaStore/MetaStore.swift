import CloudEdgeProtocol
import Foundation
import GRDB
import KubeAPI
import Logging
import Metrics
import Synchronization

/// A failure of the edge store, with what to do about it.
public struct MetaStoreError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One stored object, under KubeEdge's meta key `<namespace>/<type>/<name>`.
public struct MetaRecord: Sendable, Equatable {
    public var key: String
    public var type: EdgeResourceKind
    public var uid: String
    public var resourceVersion: UInt64
    public var value: JSON
    public init(key: String, type: EdgeResourceKind, uid: String, resourceVersion: UInt64, value: JSON) {
        self.key = key; self.type = type; self.uid = uid; self.resourceVersion = resourceVersion; self.value = value
    }
}

/// A committed change of the edge store.
public struct MetaChange: Sendable, Equatable {
    public enum Kind: String, Sendable { case added = "ADDED", modified = "MODIFIED", deleted = "DELETED" }
    public var kind: Kind
    public var record: MetaRecord
    public init(kind: Kind, record: MetaRecord) { self.kind = kind; self.record = record }
}

/// Everything the edge node received, persisted (the source of truth while offline).
public protocol MetaStorage: Sendable {
    /// Persists a downstream message (insert/update/delete) before it is acknowledged.
    func apply(_ message: Message) async throws
    func get(_ key: String) async throws -> MetaRecord?
    func list(type: EdgeResourceKind) async throws -> [MetaRecord]
    /// What the store holds, without contents: sent to the cloud on every connect.
    func inventory() async throws -> [InventoryItem]
    /// Changes committed from now on (for watches). A subscriber that falls more than
    /// `MetaChangeFeed.buffer` changes behind gets no gap: its stream ends, and it subscribes
    /// again and re-reads the store (as a Kubernetes watcher relists).
    func changes() -> AsyncStream<MetaChange>
}

/// State the node itself keeps beside what it received (device twins, registered mappers): not
/// part of the inventory, never overwritten by the cloud.
public protocol LocalStateStorage: Sendable {
    /// Every entry of `kind`: key → value.
    func localState(kind: String) async throws -> [String: [UInt8]]
    /// Writes entries of `kind` in one transaction; a nil value deletes the entry.
    func saveLocalState(kind: String, _ entries: [String: [UInt8]?]) async throws
}

/// Fans committed changes out to subscribers. One that falls `buffer` changes behind is ended
/// (never handed a stream with a gap in it); it resubscribes and re-reads the store.
public final class MetaChangeFeed: Sendable {
    public static let buffer = 10_000
    let limit: Int
    let subscribers = Mutex<[Int: AsyncStream<MetaChange>.Continuation]>([:])
    let nextID = Mutex(0)
    let overflows = Counter(label: "swiftedge_metastore_feed_overflows_total")

    public init(buffer: Int = MetaChangeFeed.buffer) { limit = max(1, buffer) }

    public func subscribe() -> AsyncStream<MetaChange> {
        let (stream, sink) = AsyncStream<MetaChange>.makeStream(bufferingPolicy: .bufferingOldest(limit))
        let id = nextID.withLock { $0 += 1; return $0 }
        subscribers.withLock { $0[id] = sink }
        sink.onTermination = { [weak self] _ in _ = self?.subscribers.withLock { $0.removeValue(forKey: id) } }
        return stream
    }

    public func publish(_ c: MetaChange) {
        for (id, s) in subscribers.withLock({ Array($0) }) {
            if case .dropped = s.yield(c) {
                // Too far behind: ended, so it cannot miss this change without knowing.
                subscribers.withLock { _ = $0.removeValue(forKey: id) }
                s.finish()
                overflows.increment()
            }
        }
    }
}

/// SQLite-backed ``MetaStorage`` (GRDB, WAL, fsync on commit). A version older than the stored
/// one is ignored, so duplicates and out-of-order resends are harmless.
public final class SQLiteMetaStore: MetaStorage, LocalStateStorage {
    let db: DatabaseQueue
    let logger: Logger
    let feed = MetaChangeFeed()

    public func changes() -> AsyncStream<MetaChange> { feed.subscribe() }

    /// Opens (or creates) the store at `path`.
    /// - Parameter recover: when the file is corrupt or truncated, move it aside
    ///   (`<path>.corrupt-<unix time>`) and start empty instead of failing; the node's (empty)
    ///   inventory on its next connect makes the cloud send everything again.
    public init(path: String, recover: Bool = false, logger: Logger) throws {
        self.logger = logger
        do {
            db = try Self.open(path)
        } catch let e as MetaStoreError where recover {
            let aside = "\(path).corrupt-\(Int(Date().timeIntervalSince1970))"
            logger.error("edge database unusable; moved aside, starting empty (the cloud sends everything again)",
                         metadata: ["path": "\(path)", "movedTo": "\(aside)", "error": "\(e.message)"])
            for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: path + suffix) {
                try? FileManager.default.moveItem(atPath: path + suffix, toPath: aside + suffix)
            }
            db = try Self.open(path)
        } catch let e as MetaStoreError {
            throw MetaStoreError("edge database \(path) is unusable (\(e.message)); start with --recover-store (the default) or move the file aside: the node then starts empty and the cloud sends everything again")
        }
    }

    static func open(_ path: String) throws(MetaStoreError) -> DatabaseQueue {
        var config = Configuration()
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL")
        }
        do {
            let db = try DatabaseQueue(path: path, configuration: config)
            let ok = try db.read { try String.fetchOne($0, sql: "PRAGMA quick_check") }
            guard ok == "ok" else { throw MetaStoreError("integrity check failed: \(ok ?? "no answer")") }
            try db.write { db in
                try db.execute(sql: """
                    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, type TEXT NOT NULL, uid TEXT NOT NULL,
                                                     rv INTEGER NOT NULL, value BLOB NOT NULL);
                    CREATE INDEX IF NOT EXISTS meta_type ON meta(type);
                    CREATE TABLE IF NOT EXISTS local_state (kind TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                                                            PRIMARY KEY (kind, key));
                    """)
            }
            return db
        } catch let e as MetaStoreError {
            throw e
        } catch {
            throw MetaStoreError("\(error)")
        }
    }

    public func inventory() async throws -> [InventoryItem] {
        try await db.read { db in
            try Row.fetchAll(db, sql: "SELECT key, uid, rv FROM meta").map {
                InventoryItem(key: $0["key"], uid: $0["uid"], resourceVersion: UInt64(bitPattern: $0["rv"]))
            }
        }
    }

    public func apply(_ message: Message) async throws {
        // Decoded once: only object changes of synced kinds reach the table.
        // A query or error reply about a stored kind changes nothing (acknowledged, as before).
        guard let sync = try ObjectSync.change(in: message) else { return }
        let ref = sync.ref
        let key = ref.description
        let rv = UInt64(sync.resourceVersion ?? "") ?? UInt64(sync.object["metadata"]["resourceVersion"].stringValue ?? "") ?? 0
        let uid = sync.object["metadata"]["uid"].stringValue ?? ""
        let bytes = sync.object.serialized()
        let change = try await db.write { db -> MetaChange? in
            let previous = try Row.fetchOne(db, sql: "SELECT * FROM meta WHERE key = ?", arguments: [key]).flatMap(Self.record)
            switch sync.change {
            case .delete:
                try db.execute(sql: "DELETE FROM meta WHERE key = ?", arguments: [key])
                return previous.map { MetaChange(kind: .deleted, record: $0) }
            case .insert, .update:
                try db.execute(sql: """
                    INSERT INTO meta(key, type, uid, rv, value) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT(key) DO UPDATE SET type = excluded.type, uid = excluded.uid, rv = excluded.rv, value = excluded.value
                    WHERE excluded.rv >= meta.rv OR excluded.uid != meta.uid
                    """, arguments: [key, ref.kind.wireName, uid, Int64(bitPattern: rv), Data(bytes)])
                guard db.changesCount > 0 else { return nil }
                let record = MetaRecord(key: key, type: ref.kind, uid: uid, resourceVersion: rv, value: sync.object)
                if previous == record { return nil }
                return MetaChange(kind: previous == nil ? .added : .modified, record: record)
            }
        }
        if let change { feed.publish(change) }
    }

    public func localState(kind: String) async throws -> [String: [UInt8]] {
        try await db.read { db in
            var out: [String: [UInt8]] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT key, value FROM local_state WHERE kind = ?", arguments: [kind]) {
                let data: Data = row["value"]
                out[row["key"]] = Array(data)
            }
            return out
        }
    }

    public func saveLocalState(kind: String, _ entries: [String: [UInt8]?]) async throws {
        guard !entries.isEmpty else { return }
        try await db.write { db in
            for (key, value) in entries {
                if let value {
                    try db.execute(sql: "INSERT OR REPLACE INTO local_state(kind, key, value) VALUES (?, ?, ?)", arguments: [kind, key, Data(value)])
                } else {
                    try db.execute(sql: "DELETE FROM local_state WHERE kind = ? AND key = ?", arguments: [kind, key])
                }
            }
        }
    }

    public func get(_ key: String) async throws -> MetaRecord? {
        try await db.read { db in try Row.fetchOne(db, sql: "SELECT * FROM meta WHERE key = ?", arguments: [key]).flatMap(Self.record) }
    }

    public func list(type: EdgeResourceKind) async throws -> [MetaRecord] {
        try await db.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM meta WHERE type = ? ORDER BY key", arguments: [type.wireName]).compactMap(Self.record)
        }
    }

    /// A stored row (nil for a kind this version does not know: written by a newer one).
    static func record(_ row: Row) -> MetaRecord? {
        let data: Data = row["value"]
        guard let type = EdgeResourceKind(rawValue: row["type"]) else { return nil }
        return MetaRecord(key: row["key"], type: type, uid: row["uid"], resourceVersion: UInt64(bitPattern: row["rv"]),
                          value: (try? JSON.parse(Array(data))) ?? .null)
    }
}
