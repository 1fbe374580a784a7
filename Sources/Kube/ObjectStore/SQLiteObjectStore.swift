import Foundation
import GRDB
import KubeAPI
import Logging
import Metrics

/// Configuration of ``SQLiteObjectStore``.
public struct SQLiteStoreConfiguration: Sendable {
    /// Database file path.
    public var path: String
    /// Number of recent change events kept for watch resume and consistent pagination. A watch or
    /// continue token older than this window gets 410 Expired.
    public var historyLimit: Int
    /// `true`: fsync the WAL at every commit batch (power-loss safe). `false`: SQLite's
    /// `synchronous=NORMAL` (survives a process crash, may lose the last commits on power loss).
    public var fsyncEveryCommit: Bool
    /// Per-watcher buffer; a watcher that falls this far behind is closed and must re-watch.
    public var watchBufferLimit: Int
    /// Encrypts values on their way to disk and decrypts them back (kube's encryption at rest);
    /// nil: stored as they are.
    public var transformer: (any StorageTransformer)?

    public init(path: String, historyLimit: Int = 10_000, fsyncEveryCommit: Bool = true, watchBufferLimit: Int = 10_000) {
        self.path = path; self.historyLimit = historyLimit; self.fsyncEveryCommit = fsyncEveryCommit
        self.watchBufferLimit = watchBufferLimit
    }
}

/// Transforms stored values at the disk boundary (kube's `value.Transformer`: encryption at rest).
/// Memory holds plaintext; the database holds what `toStorage` returns.
public protocol StorageTransformer: Sendable {
    /// What is written for `data` under `key` (the key may be bound into the ciphertext).
    func toStorage(_ data: [UInt8], key: String) throws -> [UInt8]
    /// The plaintext of a stored value, and whether it should be rewritten (read with a key or
    /// provider other than the one writes use now).
    func fromStorage(_ data: [UInt8], key: String) throws -> (data: [UInt8], stale: Bool)
}

/// The default ``ObjectStorage``: all current objects in memory (an apiserver-style watch cache),
/// every write appended to SQLite (WAL) before it is acknowledged. Concurrent writers are committed
/// together in one transaction (group commit), then fanned out to watchers.
public actor SQLiteObjectStore: ObjectStorage {
    public typealias Indexer = @Sendable (_ key: String, _ object: JSON) -> IndexedAttributes

    let config: SQLiteStoreConfiguration
    let pool: DatabasePool
    let indexer: Indexer
    let logger: Logger

    /// Current objects, per resource prefix (`/core/pods/`), keyed by the rest of the key.
    var objects: [String: [String: StoredObject]] = [:]
    var sortedKeys: [String: [String]] = [:]
    var revision: Int64 = 0
    var committedRevision: Int64 = 0
    var compactedRevision: Int64 = 0
    /// Recent committed events, oldest first.
    var history: [StoreEvent] = []
    var historyStart = 0
    var pending: [StoreEvent] = []
    var flushing = false
    var flushWaiters: [CheckedContinuation<Void, Never>] = []
    var failed: StorageError?

    struct Watcher {
        let prefix: String
        let after: Int64
        let continuation: AsyncStream<WatchItem>.Continuation
    }
    var watchers: [Int: Watcher] = [:]
    var nextWatcherID = 1

    let writeCounter = Counter(label: "swiftedge_store_writes_total")
    let batchRecorder = Recorder(label: "swiftedge_store_commit_batch_size")
    let commitTimer = Timer(label: "swiftedge_store_commit_duration")
    let watcherGauge = Gauge(label: "swiftedge_store_watchers")

    /// Opens (or creates) the database and loads the current objects and recent history.
    public init(configuration: SQLiteStoreConfiguration, indexer: @escaping Indexer, logger: Logger) throws {
        self.config = configuration
        self.indexer = indexer
        self.logger = logger
        var dbConfig = Configuration()
        let fsync = configuration.fsyncEveryCommit
        dbConfig.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = \(fsync ? "FULL" : "NORMAL")")
            // Reads are served from memory; SQLite's page cache only helps writes.
            try db.execute(sql: "PRAGMA cache_size = -1024")
        }
        dbConfig.maximumReaderCount = 2
        dbConfig.busyMode = .timeout(5)
        let dir = (configuration.path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        do {
            pool = try DatabasePool(path: configuration.path, configuration: dbConfig)
            try pool.writeWithoutTransaction { db in
                let tables = try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master WHERE type='table'") ?? 0
                if tables == 0 { try db.execute(sql: "PRAGMA auto_vacuum = INCREMENTAL") }
                try db.execute(sql: """
                    CREATE TABLE IF NOT EXISTS objects(key TEXT PRIMARY KEY NOT NULL, rev INTEGER NOT NULL, value BLOB NOT NULL);
                    CREATE TABLE IF NOT EXISTS events(rev INTEGER PRIMARY KEY NOT NULL, key TEXT NOT NULL, type INTEGER NOT NULL, value BLOB NOT NULL);
                    CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
                    """)
                let check = try String.fetchOne(db, sql: "PRAGMA quick_check") ?? "?"
                if check != "ok" {
                    throw StorageError(.corrupt, "database \(configuration.path) failed its integrity check: \(check)")
                }
            }
        } catch let e as StorageError {
            throw e
        } catch {
            throw StorageError(.corrupt,
                "cannot open object store \(configuration.path): \(error). If the file is damaged, move it aside (the server then starts empty) or restore a backup.")
        }
        let loaded = try Self.load(pool: pool, indexer: indexer, historyLimit: configuration.historyLimit, transformer: configuration.transformer)
        if let t = configuration.transformer, !loaded.stale.isEmpty {
            // Values read with an older key or provider are written again with the current one
            // (kube leaves this to `kubectl replace`; here a restart with the new configuration does it).
            try Self.rewrite(loaded.stale, pool: pool, transformer: t)
            logger.notice("object store values re-encrypted with the first provider", metadata: ["values": "\(loaded.stale.count)"])
        }
        objects = loaded.objects
        revision = loaded.revision
        committedRevision = loaded.revision
        history = loaded.history
        compactedRevision = loaded.compacted
        logger.info("object store opened", metadata: [
            "path": "\(configuration.path)", "revision": "\(loaded.revision)",
            "objects": "\(loaded.objects.values.reduce(0) { $0 + $1.count })", "history": "\(loaded.history.count)",
        ])
    }

    struct Loaded {
        var objects: [String: [String: StoredObject]]
        var revision: Int64
        var history: [StoreEvent]
        var compacted: Int64
        /// Values read with a key or provider that writes no longer use.
        var stale: [StaleValue] = []
    }

    /// A stored value to write again: an object row (by key) or an event row (by revision).
    struct StaleValue {
        var key: String
        var eventRevision: Int64?
        var plaintext: [UInt8]
    }

    static func rewrite(_ stale: [StaleValue], pool: DatabasePool, transformer: any StorageTransformer) throws {
        let encoded = try stale.map { ($0, Data(try transformer.toStorage($0.plaintext, key: $0.key))) }
        try pool.write { db in
            for (v, data) in encoded {
                if let rev = v.eventRevision {
                    try db.execute(sql: "UPDATE events SET value = ? WHERE rev = ?", arguments: [data, rev])
                } else {
                    try db.execute(sql: "UPDATE objects SET value = ? WHERE key = ?", arguments: [data, v.key])
                }
            }
        }
    }

    static let encryptedPrefix = Array("k8s:enc:".utf8)

    /// A value as read from disk, through the transformer; a value that cannot be read stops the
    /// load with the key and the reason.
    static func plaintext(_ data: Data, key: String, transformer: (any StorageTransformer)?) throws -> (bytes: [UInt8], stale: Bool) {
        guard let transformer else {
            if data.starts(with: Self.encryptedPrefix) {
                throw StorageError(.corrupt, "\(key) is encrypted (k8s:enc:…), but no encryption configuration was given (--encryption-provider-config)")
            }
            return ([UInt8](data), false)
        }
        do {
            let r = try transformer.fromStorage([UInt8](data), key: key)
            return (r.data, r.stale)
        } catch {
            throw StorageError(.corrupt, "cannot read \(key) from the store: \(error)")
        }
    }

    /// Reloads what is durable (after a failed commit).
    func loadState() throws {
        let loaded = try Self.load(pool: pool, indexer: indexer, historyLimit: config.historyLimit, transformer: config.transformer)
        objects = loaded.objects
        revision = loaded.revision
        committedRevision = loaded.revision
        history = loaded.history
        historyStart = 0
        compactedRevision = loaded.compacted
        sortedKeys = [:]
    }

    static func load(pool: DatabasePool, indexer: Indexer, historyLimit: Int, transformer: (any StorageTransformer)?) throws -> Loaded {
        var stale: [StaleValue] = []
        var objs: [String: [String: StoredObject]] = [:]
        var maxRev: Int64 = 0
        var loadedHistory: [StoreEvent] = []
        var compacted: Int64 = 0
        try pool.read { db in
            let rows = try Row.fetchCursor(db, sql: "SELECT key, rev, value FROM objects")
            while let row = try rows.next() {
                let key: String = row[0]
                let rev: Int64 = row[1]
                let data: Data = row[2]
                let (bytes, isStale) = try plaintext(data, key: key, transformer: transformer)
                if isStale { stale.append(StaleValue(key: key, eventRevision: nil, plaintext: bytes)) }
                let attrs = (try? JSON.parse(bytes)).map { indexer(key, $0) } ?? IndexedAttributes()
                let (res, sub) = Self.split(key)
                objs[res, default: [:]][sub] = StoredObject(key: key, revision: rev, data: bytes, attributes: attrs)
                maxRev = max(maxRev, rev)
            }
            let metaRev = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE name='revision'") ?? 0
            compacted = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE name='compacted'") ?? 0
            maxRev = max(maxRev, metaRev)
            // Recent history, oldest first; previous states are rebuilt within the window.
            let evRows = try Row.fetchAll(db, sql: "SELECT rev, key, type, value FROM (SELECT * FROM events ORDER BY rev DESC LIMIT ?) ORDER BY rev", arguments: [historyLimit])
            var last: [String: StoredObject] = [:]
            for row in evRows {
                let rev: Int64 = row[0]
                let key: String = row[1]
                let t: Int = row[2]
                let data: Data = row[3]
                let (bytes, isStale) = try plaintext(data, key: key, transformer: transformer)
                if isStale { stale.append(StaleValue(key: key, eventRevision: rev, plaintext: bytes)) }
                let attrs = (try? JSON.parse(bytes)).map { indexer(key, $0) } ?? IndexedAttributes()
                let obj = StoredObject(key: key, revision: rev, data: bytes, attributes: attrs)
                let type: StoreEventType = t == 0 ? .added : (t == 1 ? .modified : .deleted)
                loadedHistory.append(StoreEvent(type: type, object: obj, previous: last[key]))
                last[key] = type == .deleted ? nil : obj
                maxRev = max(maxRev, rev)
            }
        }
        // Anything older than the loaded window can no longer be replayed.
        let oldestKept = loadedHistory.first.map { $0.revision - 1 } ?? maxRev
        return Loaded(objects: objs, revision: maxRev, history: loadedHistory, compacted: max(compacted, oldestKept), stale: stale)
    }

    /// Splits `/core/pods/ns/name` into `/core/pods/` and `ns/name`.
    static func split(_ key: String) -> (String, String) {
        var slashes = 0
        var idx = key.startIndex
        while idx < key.endIndex {
            if key[idx] == "/" {
                slashes += 1
                if slashes == 3 { break }
            }
            idx = key.index(after: idx)
        }
        if idx >= key.endIndex { return (key, "") }
        let after = key.index(after: idx)
        return (String(key[..<after]), String(key[after...]))
    }

    // MARK: Reads

    /// The newest revision handed out; reads see it, and it is durable before its writer returns.
    public func currentRevision() -> Int64 { revision }

    public func get(_ key: String) -> StoredObject? {
        let (res, sub) = Self.split(key)
        return objects[res]?[sub]
    }

    func keys(of res: String) -> [String] {
        if let k = sortedKeys[res] { return k }
        let k = (objects[res]?.keys).map { Array($0).sorted() } ?? []
        sortedKeys[res] = k
        return k
    }

    public func list(prefix: String, startAfter: String?, limit: Int?, revision atRevision: Int64?,
                     filter: (@Sendable (StoredObject) -> Bool)?) throws -> ListPage
    {
        let (res, subPrefix) = Self.split(prefix)
        var snapshotRevision = revision
        // A past revision: rebuild the snapshot by undoing newer events of this resource.
        var overlay: [String: StoredObject?] = [:]
        if let r = atRevision, r < revision {
            guard r >= compactedRevision else {
                throw StorageError(.compacted(requested: r, oldest: compactedRevision + 1),
                                   "revision \(r) has been compacted (oldest available \(compactedRevision + 1))")
            }
            snapshotRevision = r
            for ev in pending.reversed() + history[historyStart...].reversed() {
                if ev.revision <= r { break }
                guard ev.object.key.hasPrefix(res) else { continue }
                let (_, sub) = Self.split(ev.object.key)
                overlay[sub] = .some(ev.type == .added ? nil : ev.previous)
            }
        }
        var ks = keys(of: res)
        if !overlay.isEmpty {
            var set = Set(ks)
            for (k, v) in overlay { if v == nil { set.remove(k) } else { set.insert(k) } }
            ks = set.sorted()
        }
        let table = objects[res] ?? [:]
        var lo = 0
        let start = startAfter.map { Self.split($0).1 } ?? subPrefix
        // Binary search for the first key >= start (or > startAfter).
        var hi = ks.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ks[mid] < start || (startAfter != nil && ks[mid] == start) { lo = mid + 1 } else { hi = mid }
        }
        var items: [StoredObject] = []
        let cap = (limit ?? 0) > 0 ? limit! : Int.max
        items.reserveCapacity(min(cap, ks.count - lo))
        var i = lo
        var continueAfter: String?
        var remaining = 0
        while i < ks.count {
            let k = ks[i]
            if !k.hasPrefix(subPrefix) { break }
            i += 1
            let obj: StoredObject?
            if let o = overlay[k] { obj = o } else { obj = table[k] }
            guard let o = obj else { continue }
            if let f = filter, !f(o) { continue }
            if items.count == cap {
                continueAfter = items.last!.key
                remaining = 1
                while i < ks.count, ks[i].hasPrefix(subPrefix) { remaining += 1; i += 1 }
                break
            }
            items.append(o)
        }
        return ListPage(items: items, revision: snapshotRevision, continueAfter: continueAfter, remaining: remaining)
    }

    // MARK: Writes

    public func write(_ key: String, _ body: @Sendable (StoredObject?) throws -> Mutation) async throws -> WriteResult {
        if let f = failed { throw f }
        let (res, sub) = Self.split(key)
        let current = objects[res]?[sub]
        let mutation = try body(current)
        let event: StoreEvent
        switch mutation {
        case .unchanged:
            return WriteResult(object: current, eventType: nil)
        case .put(var value):
            let rev = revision + 1
            value["metadata"]["resourceVersion"] = .string(String(rev))
            let obj = StoredObject(key: key, revision: rev, data: value.serialized(), attributes: indexer(key, value))
            revision = rev
            if current == nil { sortedKeys[res] = nil }
            objects[res, default: [:]][sub] = obj
            event = StoreEvent(type: current == nil ? .added : .modified, object: obj, previous: current)
        case .delete:
            guard let cur = current else { return WriteResult(object: nil, eventType: nil) }
            let rev = revision + 1
            var value = (try? cur.decode()) ?? .emptyObject
            value["metadata"]["resourceVersion"] = .string(String(rev))
            let obj = StoredObject(key: key, revision: rev, data: value.serialized(), attributes: cur.attributes)
            revision = rev
            objects[res]?.removeValue(forKey: sub)
            sortedKeys[res] = nil
            event = StoreEvent(type: .deleted, object: obj, previous: cur)
        }
        pending.append(event)
        writeCounter.increment()
        try await commit(upTo: event.revision)
        return WriteResult(object: event.object, eventType: event.type)
    }

    /// Group commit: the first waiter flushes everything pending in one transaction; others wait.
    func commit(upTo rev: Int64) async throws {
        while committedRevision < rev {
            if let f = failed { throw f }
            if flushing {
                await withCheckedContinuation { flushWaiters.append($0) }
                continue
            }
            guard !pending.isEmpty else {
                throw StorageError(.commitFailed, "the write at revision \(rev) was rolled back by a failed commit")
            }
            flushing = true
            let batch = pending
            pending = []
            let start = ContinuousClock.now
            do {
                let last = batch.last!.revision
                // Encrypted (when configured) before the transaction, which stays short.
                let transformer = config.transformer
                let values = try batch.map { ev in Data(try transformer?.toStorage(ev.object.data, key: ev.object.key) ?? ev.object.data) }
                try await pool.write { db in
                    let delete = try db.cachedStatement(sql: "DELETE FROM objects WHERE key = ?")
                    let upsert = try db.cachedStatement(sql: "INSERT OR REPLACE INTO objects(key, rev, value) VALUES (?, ?, ?)")
                    let append = try db.cachedStatement(sql: "INSERT INTO events(rev, key, type, value) VALUES (?, ?, ?, ?)")
                    for (ev, data) in zip(batch, values) {
                        if ev.type == .deleted {
                            try delete.execute(arguments: [ev.object.key])
                        } else {
                            try upsert.execute(arguments: [ev.object.key, ev.revision, data])
                        }
                        try append.execute(arguments: [ev.revision, ev.object.key,
                                                       ev.type == .added ? 0 : (ev.type == .modified ? 1 : 2), data])
                    }
                    try db.cachedStatement(sql: "INSERT OR REPLACE INTO meta(name, value) VALUES ('revision', ?)").execute(arguments: [last])
                }
            } catch {
                // The in-memory view ran ahead of the disk: reload what is durable and fail the batch.
                let err = StorageError(.commitFailed, "commit of revisions \(batch.first!.revision)...\(batch.last!.revision) failed: \(error)")
                logger.error("object store commit failed", metadata: ["error": "\(error)"])
                do { try loadState() } catch { failed = err }
                flushing = false
                let waiters = flushWaiters
                flushWaiters = []
                for w in waiters { w.resume() }
                throw err
            }
            let elapsed = start.duration(to: .now).components
            commitTimer.recordNanoseconds(elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000)
            batchRecorder.record(batch.count)
            committedRevision = batch.last!.revision
            publish(batch)
            flushing = false
            let waiters = flushWaiters
            flushWaiters = []
            for w in waiters { w.resume() }
        }
    }

    func publish(_ batch: [StoreEvent]) {
        history.append(contentsOf: batch)
        let live = history.count - historyStart
        if live > config.historyLimit {
            historyStart += live - config.historyLimit
            compactedRevision = max(compactedRevision, history[historyStart].revision - 1)
            if historyStart > config.historyLimit {
                history.removeFirst(historyStart)
                historyStart = 0
            }
        }
        guard !watchers.isEmpty else { return }
        var dead: [Int] = []
        for ev in batch {
            for (id, w) in watchers where ev.revision > w.after && ev.object.key.hasPrefix(w.prefix) {
                if case .dropped = w.continuation.yield(.event(ev)) { dead.append(id) }
            }
        }
        for id in dead {
            logger.warning("closing a watcher that fell behind", metadata: ["watcher": "\(id)"])
            cancelWatch(id)
        }
    }

    // MARK: Watch

    public func watch(prefix: String, after: Int64?) throws -> WatchSubscription {
        let from = after ?? revision
        if from < compactedRevision {
            throw StorageError(.compacted(requested: from, oldest: compactedRevision + 1),
                               "too old resource version: \(from) (\(compactedRevision + 1))")
        }
        let (stream, continuation) = AsyncStream<WatchItem>.makeStream(bufferingPolicy: .bufferingOldest(config.watchBufferLimit))
        let id = nextWatcherID
        nextWatcherID += 1
        // Replay the history after `from`, then register for live events (atomic on the actor).
        if from < committedRevision {
            var idx = history.count
            while idx > historyStart, history[idx - 1].revision > from { idx -= 1 }
            for ev in history[idx...] where ev.object.key.hasPrefix(prefix) {
                if case .dropped = continuation.yield(.event(ev)) {
                    continuation.finish()
                    throw StorageError(.compacted(requested: from, oldest: compactedRevision + 1),
                                       "too many changes since resource version \(from) to replay; relist")
                }
            }
        }
        watchers[id] = Watcher(prefix: prefix, after: from, continuation: continuation)
        watcherGauge.record(watchers.count)
        return WatchSubscription(id: id, stream: stream)
    }

    public func requestProgress(_ id: Int) {
        watchers[id]?.continuation.yield(.progress(committedRevision))
    }

    public func cancelWatch(_ id: Int) {
        if let w = watchers.removeValue(forKey: id) { w.continuation.finish() }
        watcherGauge.record(watchers.count)
    }

    /// Ends every watch (server shutdown).
    public func closeAllWatches() {
        for id in Array(watchers.keys) { cancelWatch(id) }
    }

    // MARK: Compaction and size

    /// Drops persisted history older than the in-memory window, checkpoints the WAL and returns
    /// free pages to the file system.
    public func compact() async throws {
        let keepFrom = compactedRevision
        try await pool.write { db in
            try db.execute(sql: "DELETE FROM events WHERE rev <= ?", arguments: [keepFrom])
            try db.execute(sql: "INSERT OR REPLACE INTO meta(name, value) VALUES ('compacted', ?)", arguments: [keepFrom])
        }
        try await pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA incremental_vacuum")
            _ = try Row.fetchAll(db, sql: "PRAGMA wal_checkpoint(TRUNCATE)")
        }
        logger.debug("object store compacted", metadata: ["compactedRevision": "\(keepFrom)"])
    }

    public func stats() async -> StorageStats {
        let (pages, pageSize, free) = (try? await pool.read { db in
            (try Int64.fetchOne(db, sql: "PRAGMA page_count") ?? 0,
             try Int64.fetchOne(db, sql: "PRAGMA page_size") ?? 0,
             try Int64.fetchOne(db, sql: "PRAGMA freelist_count") ?? 0)
        }) ?? (0, 0, 0)
        let wal = (try? FileManager.default.attributesOfItem(atPath: config.path + "-wal")[.size] as? Int64) ?? 0
        return StorageStats(revision: committedRevision, compactedRevision: compactedRevision,
                            objectCount: objects.values.reduce(0) { $0 + $1.count },
                            historyEvents: history.count - historyStart, databaseBytes: pages * pageSize,
                            walBytes: wal ?? 0, freeBytes: free * pageSize)
    }

    /// Closes the database.
    public func close() throws {
        closeAllWatches()
        try pool.close()
    }
}
