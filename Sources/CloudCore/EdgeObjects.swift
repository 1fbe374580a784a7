import ControllerRuntime
import KubeAPI
import KubeClient
import Logging
import ReliableSync
import Synchronization

/// What each edge node is sent, from shared informers: the pods bound to it and its own Node.
/// (ConfigMaps, Secrets and Services the pods need follow with the EdgeController.)
/// Every change is reported to ``ReliableSync`` as "look at this object for that node".
public final class EdgeObjects: NodeObjectSource {
    let pods: SharedInformer
    let nodes: SharedInformer
    let byNode = InformerIndex { o in
        let n = o["spec"]["nodeName"].stringValue ?? ""
        return n.isEmpty ? [] : [n]
    }
    /// uid → (informer key, kind) for every object a node may be sent.
    let uids = Mutex<[String: (key: String, isNode: Bool)]>([:])
    let sync: Mutex<ReliableSync?> = Mutex(nil)

    public init(informers: InformerFactory) {
        pods = informers.informer(ResourceType(group: "", version: "v1", resource: "pods", kind: "Pod", namespaced: true))
        nodes = informers.informer(ResourceType(group: "", version: "v1", resource: "nodes", kind: "Node", namespaced: false))
        pods.addHandler { [self] ev in
            byNode.handle(ev)
            switch ev {
            case .added(let p), .updated(_, let p): track(p, isNode: false); notify(p, node: p["spec"]["nodeName"].stringValue)
            case .deleted(let p): notify(p, node: p["spec"]["nodeName"].stringValue); untrack(p)
            case .synced: break
            }
        }
        nodes.addHandler { [self] ev in
            switch ev {
            case .updated(let old, let n) where Self.withoutStatus(old) == Self.withoutStatus(n):
                // The node's own heartbeats: not echoed back to it (a reconnect's comparison
                // still sends the current Node once if anything changed).
                track(n, isNode: true)
            case .added(let n), .updated(_, let n): track(n, isNode: true); notify(n, node: n["metadata"]["name"].stringValue)
            case .deleted(let n): notify(n, node: n["metadata"]["name"].stringValue); untrack(n)
            case .synced: break
            }
        }
    }

    static func withoutStatus(_ o: JSON) -> JSON {
        var o = o
        o["status"] = .null
        o["metadata"]["resourceVersion"] = .null
        o["metadata"]["managedFields"] = .null
        return o
    }

    /// Connects the change notifications to the delivery engine.
    public func attach(_ s: ReliableSync) { sync.withLock { $0 = s } }

    func track(_ o: JSON, isNode: Bool) {
        guard let uid = o["metadata"]["uid"].stringValue else { return }
        uids.withLock { $0[uid] = (InformerCache.key(o), isNode) }
    }

    func untrack(_ o: JSON) {
        guard let uid = o["metadata"]["uid"].stringValue else { return }
        _ = uids.withLock { $0.removeValue(forKey: uid) }
    }

    func notify(_ o: JSON, node: String?) {
        guard let node, !node.isEmpty, let uid = o["metadata"]["uid"].stringValue else { return }
        sync.withLock { $0 }?.changed(uid, node: node)
    }

    public func desired(for node: String) -> [String] {
        var out = byNode.objects(node, in: pods.cache).compactMap { $0["metadata"]["uid"].stringValue }
        if let n = nodes.cache.get(node), let uid = n["metadata"]["uid"].stringValue { out.append(uid) }
        return out
    }

    public func object(_ uid: String, for node: String) -> SyncedObject? {
        guard let entry = uids.withLock({ $0[uid] }) else { return nil }
        if entry.isNode {
            guard entry.key == node, let n = nodes.cache.get(entry.key) else { return nil }
            return SyncedObject(n, edgeType: "node")
        }
        guard let p = pods.cache.get(entry.key), p["spec"]["nodeName"].stringValue == node else { return nil }
        return SyncedObject(p, edgeType: "pod")
    }

    /// The node a pod is bound to (for node authorization of upstream messages).
    public func podNode(namespace: String, name: String) -> String? {
        pods.cache.get("\(namespace)/\(name)")?["spec"]["nodeName"].stringValue
    }
}
