import AsyncSupport
import CloudEdgeProtocol
import KubeAPI
import KubeClient
import KubeEdgeCRDs
import Logging
import Metrics
import ServiceLifecycle
import Synchronization

/// Persists acknowledged versions as KubeEdge does: an `ObjectSync` (namespaced objects) or
/// `ClusterObjectSync` (cluster-scoped ones) named `<node>.<uid>` whose
/// `status.objectResourceVersion` is the version the node acknowledged; deleted when the node
/// acknowledged a delete. Writes are coalesced per object and made in the background, so acks
/// are never slowed by the API server; after a crash a record may lag, which costs a re-send of
/// an object the node already has, never a loss.
public final class ObjectSyncRecorder: DeliveryRecorder, Service {
    public static let objectSyncs = ResourceType(group: "reliablesyncs.kubeedge.io", version: "v1alpha1", resource: "objectsyncs",
                                                 kind: "ObjectSync", namespaced: true)
    public static let clusterObjectSyncs = ResourceType(group: "reliablesyncs.kubeedge.io", version: "v1alpha1", resource: "clusterobjectsyncs",
                                                        kind: "ClusterObjectSync", namespaced: false)
    let client: KubeClient
    let logger: Logger
    let pending = Mutex<[String: (node: String, action: SyncAction)]>([:])
    let ready = WakeSignal()
    let existing = Mutex<Set<String>>([])
    let stopping = Atomic<Bool>(false)
    let writes = Counter(label: "swiftedge_sync_objectsync_writes_total")
    let backlog = Gauge(label: "swiftedge_sync_objectsync_backlog")

    public init(client: KubeClient, logger: Logger) { self.client = client; self.logger = logger }

    /// Installs the ObjectSync CRDs (KubeEdge's own definitions) if they are missing.
    public static func installCRDs(_ client: KubeClient) async throws {
        let crds = ResourceType(group: "apiextensions.k8s.io", version: "v1", resource: "customresourcedefinitions",
                                kind: "CustomResourceDefinition", namespaced: false)
        for text in embeddedCRDs {
            do { _ = try await client.create(crds, namespace: nil, try JSON.parse(text)) } catch let e as StatusError where e.code == 409 {}
        }
    }

    /// Loads every recorded delivery: node → records.
    public func load() async throws -> [String: [DeliveredRecord]] {
        var out: [String: [DeliveredRecord]] = [:]
        for type in [Self.objectSyncs, Self.clusterObjectSyncs] {
            var token: String?
            repeat {
                let page = try await client.list(type, namespace: nil, limit: 1000, continueToken: token)
                for item in page["items"].arrayValue ?? [] {
                    let name = item["metadata"]["name"].stringValue ?? ""
                    guard let dot = name.lastIndex(of: "."), let rv = item["status"]["objectResourceVersion"].stringValue.flatMap({ UInt64($0) })
                    else { continue }
                    let node = String(name[..<dot]), uid = String(name[name.index(after: dot)...])
                    let kind = item["spec"]["objectKind"].stringValue ?? ""
                    let apiVersion = item["spec"]["objectAPIVersion"].stringValue ?? "v1"
                    let ns = item["metadata"]["namespace"].stringValue.flatMap { $0.isEmpty ? nil : $0 }
                    guard let edgeKind = EdgeResourceKind(apiVersion: apiVersion, kind: kind) else { continue }
                    out[node, default: []].append(DeliveredRecord(uid: uid, apiVersion: apiVersion,
                                                                  kind: kind, namespace: ns, name: item["spec"]["objectName"].stringValue ?? "",
                                                                  edgeKind: edgeKind, resourceVersion: rv))
                    existing.withLock { _ = $0.insert(Self.key(ns, name)) }
                }
                token = page["metadata"]["continue"].stringValue.flatMap { $0.isEmpty ? nil : $0 }
            } while token != nil
        }
        return out
    }

    static func key(_ namespace: String?, _ name: String) -> String { "\(namespace ?? "")/\(name)" }

    public func record(node: String, _ action: SyncAction) {
        let uid: String
        switch action {
        case .send(let o, _): uid = o.uid
        case .delete(let r): uid = r.uid
        case .none: return
        }
        pending.withLock { $0["\(node).\(uid)"] = (node, action) }
        ready.signal()
    }

    /// Writes records until graceful shutdown, then flushes what is pending and returns.
    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await loop()
        } onGracefulShutdown: {
            self.stopping.store(true, ordering: .relaxed)
            self.ready.signal()
        }
    }

    func loop() async throws {
        while !Task.isCancelled {
            func take() -> [(String, (node: String, action: SyncAction))] {
                pending.withLock { p in
                    let taken = Array(p.prefix(64))
                    for (k, _) in taken { p[k] = nil }
                    return taken
                }
            }
            var batch = take()
            if batch.isEmpty && !stopping.load(ordering: .relaxed) {
                await ready.wait()
                batch = take()
            }
            backlog.record(pending.withLock { $0.count })
            if Task.isCancelled || (batch.isEmpty && stopping.load(ordering: .relaxed)) { return }
            await withTaskGroup(of: Void.self) { group in
                var running = 0
                for (name, item) in batch {
                    if running >= 8 { await group.next(); running -= 1 }
                    running += 1
                    group.addTask {
                        do { try await self.write(name: name, item.action) } catch {
                            self.logger.info("ObjectSync write failed; will retry", metadata: ["name": "\(name)", "error": "\(error)"])
                            self.pending.withLock { p in if p[name] == nil { p[name] = item } }
                            try? await Task.sleep(for: .seconds(1))
                        }
                    }
                }
            }
        }
    }

    func write(name: String, _ action: SyncAction) async throws {
        writes.increment()
        switch action {
        case .none: return
        case .delete(let r):
            let type = r.namespace == nil ? Self.clusterObjectSyncs : Self.objectSyncs
            do { try await client.delete(type, namespace: r.namespace, name: name) } catch let e as StatusError where e.code == 404 {}
            existing.withLock { _ = $0.remove(Self.key(r.namespace, name)) }
        case .send(let o, _):
            let type = o.namespace == nil ? Self.clusterObjectSyncs : Self.objectSyncs
            let status: JSON = ["status": ["objectResourceVersion": .string(String(o.resourceVersion))]]
            let k = Self.key(o.namespace, name)
            if !existing.withLock({ $0.contains(k) }) {
                var obj: JSON = ["apiVersion": "reliablesyncs.kubeedge.io/v1alpha1", "kind": .string(type.kind),
                                 "metadata": ["name": .string(name)],
                                 "spec": ["objectAPIVersion": .string(o.apiVersion), "objectKind": .string(o.kind), "objectName": .string(o.name)]]
                if let ns = o.namespace { obj["metadata"]["namespace"] = .string(ns) }
                do { _ = try await client.create(type, namespace: o.namespace, obj, fieldManager: "cloudhub") } catch let e as StatusError where e.code == 409 {}
                existing.withLock { _ = $0.insert(k) }
            }
            do {
                _ = try await client.patch(type, namespace: o.namespace, name: name, status, subresource: "status", fieldManager: "cloudhub")
            } catch let e as StatusError where e.code == 404 {
                existing.withLock { _ = $0.remove(k) }
                throw e
            }
        }
    }
}
