import ControllerRuntime
import KubeAPI
import KubeClient
import Logging
import Synchronization

/// Settings of the node lifecycle controller.
public struct NodeLifecycleOptions: Sendable {
    /// How often node health is checked.
    public var monitorPeriod: Duration = .seconds(5)
    /// A node whose Lease and Ready heartbeat are older than this becomes Ready=Unknown.
    public var gracePeriod: Duration = .seconds(40)
    /// Evict pods from unreachable edge nodes too (off: a disconnected edge node is normal).
    public var evictEdgePods = false
    /// Pods of a node that was deleted are removed after this quarantine (kube's pod GC: 40 s),
    /// checked against the API server once more before each deletion.
    public var orphanQuarantine: Duration = .seconds(40)
    /// Pods bound to a node name this controller has never seen (a box still being installed)
    /// wait for it to join; with a timeout they are removed like orphans once it passes (nil: wait).
    public var unjoinedNodeTimeout: Duration? = nil
    public init() {}
}

/// Node health, edge-aware. A node whose Lease (kube-node-lease) and Ready heartbeat stop being
/// renewed for the grace period gets Ready=Unknown and the `unreachable` taints; Ready=False
/// gets the `not-ready` taints; they are removed when the node reports Ready again. Pods on a
/// node with NoExecute taints they do not tolerate are evicted once their tolerationSeconds
/// run out, except on edge nodes (label `node-role.kubernetes.io/edge`), whose pods keep
/// running through disconnections unless `evictEdgePods` is set. Pods bound to a node that was
/// deleted are removed after the orphan quarantine; pods bound to a node that has not joined yet
/// wait for it (Pending, with a `NodeNotJoined` event) unless `unjoinedNodeTimeout` is set.
final class NodeLifecycleController: Reconciler {
    let name = "nodelifecycle"
    let client: KubeClient
    let nodes: SharedInformer
    let leases: SharedInformer
    let pods: SharedInformer
    let podsByNode: InformerIndex
    let events: EventRecorder
    let options: NodeLifecycleOptions
    let logger: Logger
    let queue: WorkQueue
    /// node → (heartbeat record, when this controller first saw it), measured on our clock.
    let health = Mutex<[String: (record: String, seen: ContinuousClock.Instant)]>([:])
    /// What is known of node names pods are bound to but that are not in the cache.
    let missing = Mutex<MissingNodes>(MissingNodes())
    static let manager = "node-controller"
    static let unreachable = "node.kubernetes.io/unreachable"
    static let notReady = "node.kubernetes.io/not-ready"

    init(client: KubeClient, informers: InformerFactory, events: EventRecorder, queue: WorkQueue, options: NodeLifecycleOptions, logger: Logger) {
        self.client = client; self.events = events; self.options = options; self.logger = logger; self.queue = queue
        nodes = informers.informer(R.nodes)
        leases = informers.informer(R.leases, namespace: "kube-node-lease")
        pods = informers.informer(R.pods)
        let index = InformerIndex { p in
            let n = p["spec"]["nodeName"].stringValue ?? ""
            return n.isEmpty ? [] : [n]
        }
        podsByNode = index
        pods.addHandler { ev in
            index.handle(ev)
            if case .added(let p) = ev, let n = p["spec"]["nodeName"].stringValue, !n.isEmpty { queue.add(n) }
            if case .updated(let old, let p) = ev, old["spec"]["nodeName"] != p["spec"]["nodeName"], let n = p["spec"]["nodeName"].stringValue { queue.add(n) }
        }
        nodes.addHandler { ev in
            switch ev {
            case .added(let n), .updated(_, let n):
                self.missing.withLock { $0.joined(n.name) }
                queue.add(n.name)
            case .deleted(let n):
                self.missing.withLock { $0.deleted(n.name, at: .now) }
                queue.add(n.name)
            case .synced: break
            }
        }
        leases.addHandler { ev in
            switch ev {
            case .added(let l), .updated(_, let l): queue.add(l.name)
            default: break
            }
        }
    }

    /// Re-examines every node each monitor period (time passing is itself a change here).
    func runMonitor() async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: options.monitorPeriod) } catch { return }
            guard nodes.hasSynced && leases.hasSynced else { continue }
            for n in nodes.cache.list() { queue.add(n.name) }
            // Pods bound to nodes that do not exist.
            let known = Set(nodes.cache.list().map(\.name))
            for p in pods.cache.list() {
                if let n = p["spec"]["nodeName"].stringValue, !n.isEmpty, !known.contains(n) { queue.add(n) }
            }
        }
    }

    func reconcile(_ nodeName: String) async throws -> ReconcileResult {
        guard nodes.hasSynced, leases.hasSynced, pods.hasSynced else { return .requeue(after: .seconds(1)) }
        guard let node = nodes.cache.get(nodeName) else {
            health.withLock { _ = $0.removeValue(forKey: nodeName) }
            let now = ContinuousClock.now
            switch missing.withLock({ $0.decide(nodeName, now: now, quarantine: options.orphanQuarantine, unjoinedTimeout: options.unjoinedNodeTimeout) }) {
            case .wait(let d): return .requeue(after: d)
            case .waitForJoin:
                announceWaiting(nodeName)
                return .done
            case .collect: try await collectOrphans(nodeName)
            }
            return .done
        }
        var node2 = node
        let lease = leases.cache.get("kube-node-lease/\(nodeName)")
        let ready = (node["status"]["conditions"].arrayValue ?? []).first { $0["type"].stringValue == "Ready" }
        let record = "\(lease?["spec"]["renewTime"].stringValue ?? "")|\(ready?["lastHeartbeatTime"].stringValue ?? "")|\(ready?["status"].stringValue ?? "")"
        let now = ContinuousClock.now
        let seen = health.withLock { h -> ContinuousClock.Instant in
            if let e = h[nodeName], e.record == record { return e.seen }
            h[nodeName] = (record, now)
            return now
        }
        // 1. Heartbeat timeout → all conditions Unknown.
        if now - seen > options.gracePeriod, NodeUtil.readyStatus(node) != "Unknown" || ready == nil {
            node2 = try await markUnknown(node)
        }
        // 2. Taints follow the Ready condition.
        node2 = try await syncTaints(node2)
        // 3. Evictions (NoExecute taints not tolerated).
        let next = try await evict(node2)
        let untilTimeout = options.gracePeriod - (now - seen)
        var wait = options.monitorPeriod
        if untilTimeout > .zero && untilTimeout < wait { wait = untilTimeout + .milliseconds(50) }
        if let next, next < wait { wait = next }
        return .requeue(after: wait)
    }

    func markUnknown(_ node: JSON) async throws -> JSON {
        let now = KubeTime.now().rfc3339
        var conditions = node["status"]["conditions"].arrayValue ?? []
        for type in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
            if let i = conditions.firstIndex(where: { $0["type"].stringValue == type }) {
                if conditions[i]["status"].stringValue == "Unknown" { continue }
                conditions[i]["status"] = "Unknown"
                conditions[i]["reason"] = "NodeStatusUnknown"
                conditions[i]["message"] = "Kubelet stopped posting node status."
                conditions[i]["lastTransitionTime"] = .string(now)
            } else {
                conditions.append(["type": .string(type), "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                                   "message": "Kubelet never posted node status.", "lastHeartbeatTime": .string(now), "lastTransitionTime": .string(now)])
            }
        }
        var u = node
        u["status"]["conditions"] = .array(conditions)
        let updated = try await client.update(R.nodes, namespace: nil, u, subresource: "status", fieldManager: Self.manager)
        logger.notice("node stopped reporting; marked Ready=Unknown", metadata: ["node": "\(node.name)", "edge": "\(NodeUtil.isEdge(node))"])
        events.record(node, .normal, reason: "NodeNotReady", message: "Node \(node.name) status is now: NodeNotReady")
        if !NodeUtil.isEdge(node) || options.evictEdgePods { try await markPodsNotReady(node.name) }
        return updated
    }

    /// Pods on a node that stopped reporting are no longer Ready (Endpoints drop them).
    func markPodsNotReady(_ nodeName: String) async throws {
        let now = KubeTime.now().rfc3339
        for p in podsByNode.objects(nodeName, in: pods.cache) where PodUtil.isActive(p) && PodUtil.condition(p, "Ready")?["status"].stringValue == "True" {
            let patch: JSON = ["status": ["conditions": [["type": "Ready", "status": "False", "reason": "NodeNotReady",
                                                          "lastTransitionTime": .string(now), "lastProbeTime": .null]]]]
            do { _ = try await client.patch(R.pods, namespace: p.namespace, name: p.name, patch, patchType: .strategicMerge,
                                            subresource: "status", fieldManager: Self.manager) } catch let e as StatusError where e.code == 404 {}
        }
    }

    func syncTaints(_ node: JSON) async throws -> JSON {
        // A node that never reported is "not ready" until its grace period ends.
        let reported = (node["status"]["conditions"].arrayValue ?? []).contains { $0["type"].stringValue == "Ready" }
        let status = reported ? NodeUtil.readyStatus(node) : "False"
        let existing = node["spec"]["taints"].arrayValue ?? []
        var desired = existing.filter { ![Self.unreachable, Self.notReady].contains($0["key"].stringValue ?? "") }
        let key: String? = status == "Unknown" ? Self.unreachable : status == "False" ? Self.notReady : nil
        if let key {
            for effect in ["NoSchedule", "NoExecute"] {
                if let old = existing.first(where: { $0["key"].stringValue == key && $0["effect"].stringValue == effect }) {
                    desired.append(old)
                } else {
                    var t: JSON = ["key": .string(key), "effect": .string(effect)]
                    if effect == "NoExecute" { t["timeAdded"] = .string(KubeTime.now().rfc3339) }
                    desired.append(t)
                }
            }
        }
        if node["spec"]["unschedulable"].boolValue == true {
            if !desired.contains(where: { $0["key"].stringValue == "node.kubernetes.io/unschedulable" }) {
                desired.append(["key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule", "timeAdded": .string(KubeTime.now().rfc3339)])
            }
        } else {
            desired.removeAll { $0["key"].stringValue == "node.kubernetes.io/unschedulable" }
        }
        guard desired != existing else { return node }
        var u = node
        u["spec"]["taints"] = desired.isEmpty ? .null : .array(desired)
        logger.info("node taints updated", metadata: ["node": "\(node.name)", "ready": "\(status)",
                                                      "taints": "\(desired.compactMap { $0["key"].stringValue }.joined(separator: ","))"])
        return try await client.update(R.nodes, namespace: nil, u, fieldManager: Self.manager)
    }

    /// Evicts pods that do not tolerate the node's NoExecute taints; returns when to look again.
    func evict(_ node: JSON) async throws -> Duration? {
        let taints = (node["spec"]["taints"].arrayValue ?? []).filter { $0["effect"].stringValue == "NoExecute" }
        guard !taints.isEmpty else { return nil }
        if NodeUtil.isEdge(node) && !options.evictEdgePods { return nil }
        let now = KubeTime.now()
        var next: Duration? = nil
        for p in podsByNode.objects(node.name, in: pods.cache) where PodUtil.isActive(p) {
            let tolerations = p["spec"]["tolerations"].arrayValue ?? []
            var deadline: KubeTime? = nil
            var tolerated = true
            for t in taints {
                let matching = tolerations.filter { NodeUtil.tolerates($0, t) }
                if matching.isEmpty { tolerated = false; break }
                let secs = matching.compactMap { $0["tolerationSeconds"].intValue }.min()
                if let secs, matching.allSatisfy({ !$0["tolerationSeconds"].isNull }) {
                    let added = KubeTime.parse(t["timeAdded"].stringValue ?? "") ?? now
                    let d = added.adding(seconds: max(0, secs))
                    deadline = deadline.map { min($0, d) } ?? d
                }
            }
            if tolerated, let d = deadline, d > now {
                let wait = Duration.microseconds(d.micros - now.micros)
                next = next.map { min($0, wait) } ?? wait
                continue
            }
            if tolerated && deadline == nil { continue }
            do {
                try await client.delete(R.pods, namespace: p.namespace, name: p.name)
                logger.notice("evicting pod from unreachable node", metadata: ["pod": "\(p.namespace)/\(p.name)", "node": "\(node.name)"])
                events.record(p, .normal, reason: "TaintManagerEviction", message: "Marking for deletion Pod \(p.namespace)/\(p.name)")
            } catch let e as StatusError where e.code == 404 {}
        }
        return next
    }

    /// Tells each pod waiting for its node, once, why it is not running.
    func announceWaiting(_ nodeName: String) {
        for p in podsByNode.objects(nodeName, in: pods.cache) where PodUtil.isActive(p) {
            guard let uid = p["metadata"]["uid"].stringValue, missing.withLock({ $0.announced.insert(uid).inserted }) else { continue }
            logger.info("pod waits for its node to join", metadata: ["pod": "\(p.namespace)/\(p.name)", "node": "\(nodeName)"])
            events.record(p, .normal, reason: "NodeNotJoined", message: "Waiting for node \(nodeName) to join the cluster")
        }
    }

    /// Deletes pods bound to a node that no longer exists (the pod garbage collector's job),
    /// after asking the API server whether the node really is gone.
    func collectOrphans(_ nodeName: String) async throws {
        do {
            _ = try await client.get(R.nodes, namespace: nil, name: nodeName)
            return  // the cache is behind: the node exists
        } catch let e as StatusError where e.code == 404 {}
        for p in podsByNode.objects(nodeName, in: pods.cache) {
            do {
                try await client.delete(R.pods, namespace: p.namespace, name: p.name, options: ["gracePeriodSeconds": 0])
                logger.info("deleted pod of a removed node", metadata: ["pod": "\(p.namespace)/\(p.name)", "node": "\(nodeName)"])
            } catch let e as StatusError where e.code == 404 {}
        }
    }
}

/// Node names pods are bound to that are not (or no longer) in the node cache, and what to do
/// about their pods. Pure state, no I/O.
struct MissingNodes: Sendable {
    enum Decision: Equatable { case wait(Duration), waitForJoin, collect }
    /// Nodes seen deleted, and when.
    var deletedAt: [String: ContinuousClock.Instant] = [:]
    /// Node names first found missing without having been seen deleted.
    var firstMissing: [String: ContinuousClock.Instant] = [:]
    /// Pods already told they wait for their node.
    var announced: Set<String> = []

    mutating func joined(_ node: String) {
        deletedAt.removeValue(forKey: node)
        firstMissing.removeValue(forKey: node)
    }

    mutating func deleted(_ node: String, at t: ContinuousClock.Instant) { deletedAt[node] = t }

    mutating func decide(_ node: String, now: ContinuousClock.Instant, quarantine: Duration, unjoinedTimeout: Duration?) -> Decision {
        if let t = deletedAt[node] {
            let left = quarantine - (now - t)
            return left > .zero ? .wait(left + .milliseconds(50)) : .collect
        }
        guard let timeout = unjoinedTimeout else { return .waitForJoin }
        let first = firstMissing[node] ?? now
        firstMissing[node] = first
        let left = timeout - (now - first)
        return left > .zero ? .wait(left + .milliseconds(50)) : .collect
    }
}
