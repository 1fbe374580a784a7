import CloudEdgeProtocol
import Foundation
import GRDB
import KubeAPI
import Logging

/// A failure of the edge store, with what to do about it.
public struct MetaStoreError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One stored object, under KubeEdge's meta key `<namespace>/<type>/<name>`.
public struct MetaRecord: Sendable, Equatable {
    public var key: String
    public var type: String
    public var uid: String
    public var resourceVersion: UInt64
    public var value: JSON
}

/// Everything the edge node received, persisted (the source of truth while offline).
public protocol MetaStorage: Sendable {
    /// Persists a downstream message (insert/update/delete) before it is acknowledged.
    func apply(_ message: Message) async throws
    func get(_ key: String) async throws -> MetaRecord?
    func list(type: String) async throws -> [MetaRecord]
}

/// SQLite-backed ``MetaStorage`` (GRDB, WAL, fsync on commit). A version older than the stored
/// one is ignored, so duplicates and out-of-order resends are harmless.
public final class SQLiteMetaStore: MetaStorage {
    let db: DatabaseQueue
    let logger: Logger

    public init(path: String, logger: Logger) throws {
        self.logger = logger
        var config = Configuration()
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL")
        }
        do {
            db = try DatabaseQueue(path: path, configuration: config)
            let ok = try db.read { try String.fetchOne($0, sql: "PRAGMA quick_check") }
            guard ok == "ok" else { throw MetaStoreError("integrity check failed: \(ok ?? "no answer")") }
            try db.write { db in
                try db.execute(sql: """
                    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, type TEXT NOT NULL, uid TEXT NOT NULL,
                                                     rv INTEGER NOT NULL, value BLOB NOT NULL);
                    CREATE INDEX IF NOT EXISTS meta_type ON meta(type);
                    """)
            }
        } catch let e as MetaStoreError {
            throw MetaStoreError("edge database \(path) is unusable (\(e.message)); move it aside to start empty (the cloud resends everything on reconnect)")
        } catch {
            throw MetaStoreError("edge database \(path) is unusable (\(error)); move it aside to start empty (the cloud resends everything on reconnect)")
        }
    }

    public func apply(_ message: Message) async throws {
        let ref = try ResourceRef(parsing: message.route.resource)
        let key = ref.description
        let rv = UInt64(message.resourceVersion ?? "") ?? UInt64(message.content["metadata"]["resourceVersion"].stringValue ?? "") ?? 0
        let uid = message.content["metadata"]["uid"].stringValue ?? ""
        let op = message.route.operation
        let bytes = message.content.serialized()
        try await db.write { db in
            switch op {
            case .delete:
                try db.execute(sql: "DELETE FROM meta WHERE key = ?", arguments: [key])
            case .insert, .update, .patch, .response:
                try db.execute(sql: """
                    INSERT INTO meta(key, type, uid, rv, value) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT(key) DO UPDATE SET type = excluded.type, uid = excluded.uid, rv = excluded.rv, value = excluded.value
                    WHERE excluded.rv >= meta.rv OR excluded.uid != meta.uid
                    """, arguments: [key, ref.type, uid, Int64(bitPattern: rv), Data(bytes)])
            default:
                break
            }
        }
    }

    public func get(_ key: String) async throws -> MetaRecord? {
        try await db.read { db in try Row.fetchOne(db, sql: "SELECT * FROM meta WHERE key = ?", arguments: [key]).map(Self.record) }
    }

    public func list(type: String) async throws -> [MetaRecord] {
        try await db.read { db in try Row.fetchAll(db, sql: "SELECT * FROM meta WHERE type = ? ORDER BY key", arguments: [type]).map(Self.record) }
    }

    static func record(_ row: Row) -> MetaRecord {
        let data: Data = row["value"]
        return MetaRecord(key: row["key"], type: row["type"], uid: row["uid"], resourceVersion: UInt64(bitPattern: row["rv"]),
                          value: (try? JSON.parse(Array(data))) ?? .null)
    }
}
