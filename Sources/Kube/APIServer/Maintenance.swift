import KubeAPI
import Logging
import Metrics
import ObjectStore
import ServiceLifecycle

/// Background upkeep of the embedded server: namespace deletion (empties a Terminating namespace,
/// then removes it), ownerReference garbage collection (Background, Foreground and Orphan
/// propagation), and periodic store compaction with size reporting.
public actor Maintenance: Service {
    let store: any ObjectStorage
    let registry: ResourceRegistry
    let logger: Logger
    let compactionInterval: Duration
    var terminatingNamespaces: Set<String> = []
    /// Owners in foreground deletion: uid → storage key.
    var foregroundOwners: [String: String] = [:]
    let dbSize = Gauge(label: "swiftedge_store_database_bytes")
    let walSize = Gauge(label: "swiftedge_store_wal_bytes")
    let objectCount = Gauge(label: "swiftedge_store_objects")

    public init(store: any ObjectStorage, registry: ResourceRegistry, compactionInterval: Duration = .seconds(300), logger: Logger) {
        self.store = store; self.registry = registry; self.compactionInterval = compactionInterval; self.logger = logger
    }

    public func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.watchLoop() }
            group.addTask { try await self.tickLoop() }
            group.addTask { try await self.compactionLoop() }
            try? await gracefulShutdown()
            // Long-lived watch responses end so that the HTTP server can drain.
            await store.closeAllWatches()
            group.cancelAll()
        }
    }

    func storagePrefixes() -> [String] {
        var seen = Set<String>()
        return registry.allTypes.compactMap { seen.insert($0.storagePrefix).inserted ? $0.storagePrefix : nil }
    }

    // MARK: Loops

    func watchLoop() async throws {
        var after: Int64? = nil
        while !Task.isCancelled {
            if after == nil {
                let rev = await store.currentRevision()
                try await fullScan()
                after = rev
            }
            let sub: WatchSubscription
            do { sub = try await store.watch(prefix: "/", after: after) } catch { after = nil; continue }
            for await item in sub.stream {
                guard case .event(let ev) = item else { continue }
                after = ev.revision
                await handle(ev)
            }
            await store.cancelWatch(sub.id)
            if Task.isCancelled { break }
        }
    }

    func tickLoop() async throws {
        while true {
            try await Task.sleep(for: .milliseconds(500))
            for ns in terminatingNamespaces { await cleanNamespace(ns) }
            for (uid, key) in foregroundOwners { await processForeground(uid: uid, key: key) }
        }
    }

    func compactionLoop() async throws {
        while true {
            try await Task.sleep(for: compactionInterval)
            do {
                try await store.compact()
                let s = await store.stats()
                dbSize.record(s.databaseBytes)
                walSize.record(s.walBytes)
                objectCount.record(s.objectCount)
                logger.info("store compacted", metadata: [
                    "revision": "\(s.revision)", "compactedRevision": "\(s.compactedRevision)", "objects": "\(s.objectCount)",
                    "databaseBytes": "\(s.databaseBytes)", "walBytes": "\(s.walBytes)", "freeBytes": "\(s.freeBytes)",
                ])
            } catch {
                logger.error("store compaction failed", metadata: ["error": "\(error)"])
            }
        }
    }

    func fullScan() async throws {
        for prefix in storagePrefixes() {
            let page = try await store.list(prefix: prefix, startAfter: nil, limit: nil, revision: nil) { o in
                Self.mentionsDeletion(o.data)
            }
            for o in page.items { await inspect(o) }
        }
    }

    static let deletionMarker = Array("\"deletionTimestamp\"".utf8)

    static func mentionsDeletion(_ data: [UInt8]) -> Bool {
        let m = deletionMarker
        guard data.count >= m.count else { return false }
        var i = 0
        while i <= data.count - m.count {
            if data[i] == m[0] {
                var j = 1
                while j < m.count && data[i + j] == m[j] { j += 1 }
                if j == m.count { return true }
            }
            i += 1
        }
        return false
    }

    // MARK: Event handling

    func handle(_ ev: StoreEvent) async {
        switch ev.type {
        case .deleted:
            guard let v = try? ev.object.decode(), let uid = v["metadata"]["uid"].stringValue else { return }
            foregroundOwners.removeValue(forKey: uid)
            await collectDependents(of: uid, orphan: false)
        case .added:
            if ev.object.attributes.ownerUIDs.isEmpty == false { await collectIfDangling(ev.object) }
            if Self.mentionsDeletion(ev.object.data) { await inspect(ev.object) }
        case .modified:
            if Self.mentionsDeletion(ev.object.data) { await inspect(ev.object) }
        }
    }

    func inspect(_ o: StoredObject) async {
        guard let v = try? o.decode(), !v["metadata"]["deletionTimestamp"].isNull else { return }
        let finalizers = (v["metadata"]["finalizers"].arrayValue ?? []).compactMap(\.stringValue)
        let uid = v["metadata"]["uid"].stringValue ?? ""
        if o.key.hasPrefix(NamespaceKeys.type.storagePrefix), let name = v["metadata"]["name"].stringValue {
            terminatingNamespaces.insert(name)
            await cleanNamespace(name)
        }
        if finalizers.contains("orphan") {
            await collectDependents(of: uid, orphan: true)
            await removeFinalizer("orphan", key: o.key)
        }
        if finalizers.contains("foregroundDeletion") {
            foregroundOwners[uid] = o.key
            await processForeground(uid: uid, key: o.key)
        }
    }

    func dependents(of uid: String) async -> [StoredObject] {
        var out: [StoredObject] = []
        for prefix in storagePrefixes() {
            if let page = try? await store.list(prefix: prefix, startAfter: nil, limit: nil, revision: nil, filter: { $0.attributes.ownerUIDs.contains(uid) }) {
                out += page.items
            }
        }
        return out
    }

    /// Owner gone (or orphaning): drop the reference; delete dependents left without owners.
    func collectDependents(of uid: String, orphan: Bool) async {
        for dep in await dependents(of: uid) {
            let type = registry.type(forStoragePrefix: FieldIndex.prefix(ofKey: dep.key))
            do {
                let r = try await store.write(dep.key) { cur in
                    guard let cur else { return .unchanged }
                    var v = try cur.decode()
                    var refs = v["metadata"]["ownerReferences"].arrayValue ?? []
                    refs.removeAll { $0["uid"].stringValue == uid }
                    if refs.isEmpty && !orphan, let type {
                        return try APIHandler.deleteMutation(v, type: type, options: .init(propagation: "Background"))
                    }
                    v["metadata"]["ownerReferences"] = refs.isEmpty ? .null : .array(refs)
                    return .put(v)
                }
                if r.eventType == .deleted {
                    logger.debug("garbage collected", metadata: ["key": "\(dep.key)", "owner": "\(uid)"])
                }
            } catch {
                logger.warning("garbage collection failed", metadata: ["key": "\(dep.key)", "error": "\(error)"])
            }
        }
    }

    /// A dependent created after its owner was deleted (a controller acting on a stale cache) never
    /// sees the owner's deletion event: check its owners once when it appears.
    func collectIfDangling(_ o: StoredObject) async {
        guard let v = try? o.decode() else { return }
        let namespace = v["metadata"]["namespace"].stringValue
        for ref in v["metadata"]["ownerReferences"].arrayValue ?? [] {
            guard let uid = ref["uid"].stringValue, let name = ref["name"].stringValue,
                  let type = registry.type(apiVersion: ref["apiVersion"].stringValue ?? "", kind: ref["kind"].stringValue ?? "")
            else { continue }
            let owner = await store.get(type.storageKey(namespace: namespace, name: name))
            let ownerUID = (try? owner?.decode())?["metadata"]["uid"].stringValue
            if ownerUID != uid {
                logger.debug("dependent of a missing owner", metadata: ["key": "\(o.key)", "owner": "\(uid)"])
                await collectDependents(of: uid, orphan: false)
            }
        }
    }

    func processForeground(uid: String, key: String) async {
        let deps = await dependents(of: uid)
        if deps.isEmpty {
            foregroundOwners.removeValue(forKey: uid)
            await removeFinalizer("foregroundDeletion", key: key)
            return
        }
        for dep in deps {
            guard let type = registry.type(forStoragePrefix: FieldIndex.prefix(ofKey: dep.key)) else { continue }
            _ = try? await store.write(dep.key) { cur in
                guard let cur else { return .unchanged }
                return try APIHandler.deleteMutation(try cur.decode(), type: type, options: .init(propagation: "Foreground"))
            }
        }
    }

    func removeFinalizer(_ name: String, key: String) async {
        _ = try? await store.write(key) { cur in
            guard let cur else { return .unchanged }
            var v = try cur.decode()
            var f = (v["metadata"]["finalizers"].arrayValue ?? []).compactMap(\.stringValue)
            guard f.contains(name) else { return .unchanged }
            f.removeAll { $0 == name }
            if f.isEmpty && !v["metadata"]["deletionTimestamp"].isNull {
                if key.hasPrefix(NamespaceKeys.type.storagePrefix), !(v["spec"]["finalizers"].arrayValue ?? []).isEmpty { } else { return .delete }
            }
            v["metadata"]["finalizers"] = f.isEmpty ? .null : .array(f.map { .string($0) })
            return .put(v)
        }
    }

    /// Deletes everything in a Terminating namespace; when empty, removes the namespace.
    func cleanNamespace(_ ns: String) async {
        var remaining = 0
        for t in registry.allTypes where t.namespaced {
            guard let page = try? await store.list(prefix: t.storagePrefix(namespace: ns), startAfter: nil, limit: nil, revision: nil, filter: nil) else { continue }
            for item in page.items {
                remaining += 1
                _ = try? await store.write(item.key) { cur in
                    guard let cur else { return .unchanged }
                    return try APIHandler.deleteMutation(try cur.decode(), type: t, options: .init(propagation: "Background"))
                }
            }
        }
        if remaining > 0 { return }
        terminatingNamespaces.remove(ns)
        _ = try? await store.write(NamespaceKeys.key(ns)) { cur in
            guard let cur else { return .unchanged }
            var v = try cur.decode()
            v["spec"]["finalizers"] = .null
            if (v["metadata"]["finalizers"].arrayValue ?? []).isEmpty { return .delete }
            return .put(v)
        }
        logger.info("namespace deleted", metadata: ["namespace": "\(ns)"])
    }
}
