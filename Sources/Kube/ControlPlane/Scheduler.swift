import ControllerRuntime
import KubeAPI
import KubeClient
import Logging
import Metrics
import Synchronization

/// What a pod asks of a node.
struct PodRequest: Sendable, Equatable {
    var cpu: Int64 = 0
    var memory: Int64 = 0
    /// Requests with Kubernetes' non-zero defaults (100m, 200Mi), used for spreading.
    var scoreCPU: Int64 = 0
    var scoreMemory: Int64 = 0

    init() {}

    init(_ spec: JSON) {
        func sum(_ containers: [JSON], _ r: String, _ parse: (JSON) -> Int64?) -> Int64 {
            containers.reduce(0) { $0 + (parse($1["resources"]["requests"][r]) ?? 0) }
        }
        let cs = spec["containers"].arrayValue ?? [], inits = spec["initContainers"].arrayValue ?? []
        cpu = max(sum(cs, "cpu", Quantity.milliValue), inits.map { Quantity.milliValue($0["resources"]["requests"]["cpu"]) ?? 0 }.max() ?? 0)
        memory = max(sum(cs, "memory", Quantity.value), inits.map { Quantity.value($0["resources"]["requests"]["memory"]) ?? 0 }.max() ?? 0)
        cpu += Quantity.milliValue(spec["overhead"]["cpu"]) ?? 0
        memory += Quantity.value(spec["overhead"]["memory"]) ?? 0
        scoreCPU = cs.reduce(0) { $0 + (Quantity.milliValue($1["resources"]["requests"]["cpu"]) ?? 100) }
        scoreMemory = cs.reduce(0) { $0 + (Quantity.value($1["resources"]["requests"]["memory"]) ?? 200 * 1_048_576) }
    }
}

/// The scheduler's view of one node.
struct NodeInfo: Sendable {
    var name: String
    var labels: [String: String]
    var taints: [JSON]
    var unschedulable: Bool
    var allocatableCPU: Int64
    var allocatableMemory: Int64
    var allocatablePods: Int64
    var requested = PodRequest()
    var podCount: Int64 = 0

    init(_ node: JSON) {
        name = node.name
        labels = node.labels
        taints = (node["spec"]["taints"].arrayValue ?? []).filter { ["NoSchedule", "NoExecute"].contains($0["effect"].stringValue ?? "") }
        unschedulable = node["spec"]["unschedulable"].boolValue ?? false
        let a = node["status"]["allocatable"].isObject ? node["status"]["allocatable"] : node["status"]["capacity"]
        allocatableCPU = Quantity.milliValue(a["cpu"]) ?? 0
        allocatableMemory = Quantity.value(a["memory"]) ?? 0
        allocatablePods = Quantity.value(a["pods"]) ?? 110
    }

    /// Whether the scheduling-relevant parts differ (heartbeats do not count).
    func differs(from o: NodeInfo) -> Bool {
        labels != o.labels || taints != o.taints || unschedulable != o.unschedulable || allocatableCPU != o.allocatableCPU
            || allocatableMemory != o.allocatableMemory || allocatablePods != o.allocatablePods
    }
}

/// The state the scheduler decides on: nodes with what is already placed on them.
/// A pod is "assumed" onto a node the moment it is chosen, before its binding is written, so
/// concurrent decisions never oversubscribe a node.
struct SchedulingState: Sendable {
    var nodes: [NodeInfo] = []
    var index: [String: Int] = [:]
    /// pod key → (node, request) for every pod counted on a node.
    var placed: [String: (node: String, request: PodRequest)] = [:]
    var nextStart = 0

    mutating func upsertNode(_ info: NodeInfo) -> Bool {
        if let i = index[info.name] {
            let changed = nodes[i].differs(from: info)
            var n = info
            n.requested = nodes[i].requested; n.podCount = nodes[i].podCount
            nodes[i] = n
            return changed
        }
        var n = info
        for (_, p) in placed where p.node == info.name { n.requested.add(p.request); n.podCount += 1 }
        index[info.name] = nodes.count
        nodes.append(n)
        return true
    }

    mutating func removeNode(_ name: String) {
        guard let i = index.removeValue(forKey: name) else { return }
        let last = nodes.count - 1
        if i != last { nodes[i] = nodes[last]; index[nodes[i].name] = i }
        nodes.removeLast()
    }

    mutating func place(_ podKey: String, on node: String, _ req: PodRequest) {
        if let p = placed[podKey] {
            if p.node == node { return }
            unplace(podKey)
        }
        placed[podKey] = (node, req)
        if let i = index[node] { nodes[i].requested.add(req); nodes[i].podCount += 1 }
    }

    mutating func unplace(_ podKey: String) {
        guard let p = placed.removeValue(forKey: podKey) else { return }
        if let i = index[p.node] { nodes[i].requested.subtract(p.request); nodes[i].podCount -= 1 }
    }

    /// Chooses a node for a pod, or explains why none fits.
    mutating func choose(spec: JSON, request: PodRequest, extra: (NodeInfo) -> String? = { _ in nil }) -> Result<String, Unschedulable> {
        let total = nodes.count
        guard total > 0 else { return .failure(Unschedulable(total: 0, reasons: [:])) }
        let tolerations = spec["tolerations"].arrayValue ?? []
        // Kubernetes' adaptive sample: score a share of feasible nodes on large clusters.
        let pct = max(5, 50 - total / 125)
        let wanted = total < 100 ? total : max(100, total * pct / 100)
        var reasons: [String: Int] = [:]
        var best: (index: Int, score: Double)? = nil
        var feasible = 0
        var checked = 0
        let start = nextStart % total
        while checked < total && feasible < wanted {
            let i = (start + checked) % total
            checked += 1
            if let reason = Self.filter(nodes[i], spec: spec, tolerations: tolerations, request: request) ?? extra(nodes[i]) {
                reasons[reason, default: 0] += 1
                continue
            }
            feasible += 1
            let s = Self.score(nodes[i], request)
            if best == nil || s > best!.score { best = (i, s) }
        }
        nextStart = start + checked
        guard let best else { return .failure(Unschedulable(total: total, reasons: reasons)) }
        return .success(nodes[best.index].name)
    }

    static func filter(_ n: NodeInfo, spec: JSON, tolerations: [JSON], request: PodRequest) -> String? {
        if n.unschedulable && !NodeUtil.tolerates(tolerations, ["key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"]) {
            return "node(s) were unschedulable"
        }
        if !NodeUtil.matchesNodeSelection(spec, labels: n.labels, nodeName: n.name) {
            return "node(s) didn't match Pod's node affinity/selector"
        }
        for t in n.taints where !NodeUtil.tolerates(tolerations, t) {
            return "node(s) had untolerated taint {\(t["key"].stringValue ?? ""): \(t["value"].stringValue ?? "")}"
        }
        if n.podCount + 1 > n.allocatablePods { return "Too many pods" }
        if request.cpu > 0 && n.requested.cpu + request.cpu > n.allocatableCPU { return "Insufficient cpu" }
        if request.memory > 0 && n.requested.memory + request.memory > n.allocatableMemory { return "Insufficient memory" }
        return nil
    }

    /// Least-allocated scoring (as the default scheduler's NodeResourcesFit) with pod-count spreading.
    static func score(_ n: NodeInfo, _ r: PodRequest) -> Double {
        func free(_ used: Int64, _ cap: Int64) -> Double { cap <= 0 ? 0 : max(0, Double(cap - used) / Double(cap)) }
        let cpu = free(n.requested.scoreCPU + r.scoreCPU, n.allocatableCPU)
        let mem = free(n.requested.scoreMemory + r.scoreMemory, n.allocatableMemory)
        let pods = free(n.podCount + 1, n.allocatablePods)
        return (cpu + mem) * 50 + pods * 10
    }
}

extension PodRequest {
    mutating func add(_ o: PodRequest) { cpu += o.cpu; memory += o.memory; scoreCPU += o.scoreCPU; scoreMemory += o.scoreMemory }
    mutating func subtract(_ o: PodRequest) { cpu -= o.cpu; memory -= o.memory; scoreCPU -= o.scoreCPU; scoreMemory -= o.scoreMemory }
}

/// Why a pod fits no node, in the words `kubectl describe pod` users know.
struct Unschedulable: Error, Sendable {
    var total: Int
    var reasons: [String: Int]
    /// A reason that rules out every node at once (an unbound claim, say).
    var podReason: String?
    var message: String {
        if let podReason { return "0/\(total) nodes are available: \(podReason)." }
        if total == 0 { return "0/0 nodes are available: no nodes available to schedule pods." }
        let parts = reasons.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }
        return "0/\(total) nodes are available: \(parts.joined(separator: ", "))."
    }
}

/// The default scheduler: binds pending pods (`spec.schedulerName` = `default-scheduler`) to nodes
/// through `pods/binding`, honouring nodeSelector, required node affinity, taints and tolerations,
/// resource requests against allocatable, max pods, unschedulable nodes and the pod's claims
/// (bound volumes' node affinity; `WaitForFirstConsumer` claims get the chosen node as
/// `volume.kubernetes.io/selected-node` and the pod is bound once they are). Pods that fit nowhere
/// get `PodScheduled=False` and a FailedScheduling event and are retried when nodes change.
public final class Scheduler: Reconciler {
    public let name = "scheduler"
    public static let schedulerName = "default-scheduler"
    let client: KubeClient
    let pods: SharedInformer
    let nodes: SharedInformer
    let events: EventRecorder
    let logger: Logger
    let queue: WorkQueue
    let state = Mutex(SchedulingState())
    let waiting = Mutex<Set<String>>([])
    /// Pods assumed on a node while their `WaitForFirstConsumer` claims are provisioned or bound there.
    let volumeWaits = Mutex<[String: String]>([:])
    let claims: SharedInformer
    let volumes: SharedInformer
    let classes: SharedInformer
    let csiNodes: SharedInformer
    let bound = Counter(label: "swiftedge_scheduler_bindings_total")
    let failed = Counter(label: "swiftedge_scheduler_unschedulable_total")

    init(client: KubeClient, informers: InformerFactory, events: EventRecorder, queue: WorkQueue, logger: Logger) {
        self.client = client; self.events = events; self.queue = queue; self.logger = logger
        pods = informers.informer(R.pods)
        nodes = informers.informer(R.nodes)
        claims = informers.informer(R.pvcs)
        volumes = informers.informer(R.pvs)
        classes = informers.informer(R.storageClasses)
        csiNodes = informers.informer(R.csiNodes)
        nodes.addHandler { [self] ev in nodeEvent(ev) }
        for i in [claims, volumes, classes, csiNodes] { i.addHandler { [self] ev in volumeEvent(ev) } }
        pods.addHandler { [self] ev in podEvent(ev) }
    }

    func nodeEvent(_ ev: InformerEvent) {
        var wake = false
        switch ev {
        case .added(let n), .updated(_, let n): wake = state.withLock { $0.upsertNode(NodeInfo(n)) }
        case .deleted(let n): state.withLock { $0.removeNode(n.name) }
        case .synced: wake = true
        }
        if wake { retryWaiting() }
    }

    /// A claim, volume, class or CSINode changed: pods waiting on volumes look again.
    func volumeEvent(_ ev: InformerEvent) {
        if case .synced = ev { return }
        for k in volumeWaits.withLock({ Array($0.keys) }) { queue.add(k) }
        retryWaiting()
    }

    func retryWaiting() {
        for k in waiting.withLock({ w -> Set<String> in let all = w; w.removeAll(); return all }) { queue.add(k) }
    }

    static func isPending(_ p: JSON) -> Bool {
        (p["spec"]["nodeName"].stringValue ?? "").isEmpty && !p.isDeleting && !PodUtil.isTerminal(p)
            && (p["spec"]["schedulerName"].stringValue ?? schedulerName) == schedulerName
    }

    func podEvent(_ ev: InformerEvent) {
        switch ev {
        case .added(let p), .updated(_, let p):
            let key = InformerCache.key(p)
            let node = p["spec"]["nodeName"].stringValue ?? ""
            if !node.isEmpty {
                if PodUtil.isTerminal(p) {
                    state.withLock { $0.unplace(key) }
                    retryWaiting()
                } else {
                    state.withLock { $0.place(key, on: node, PodRequest(p["spec"])) }
                }
            } else if Self.isPending(p) {
                queue.add(key)
            }
        case .deleted(let p):
            let key = InformerCache.key(p)
            let wasPlaced = state.withLock { s -> Bool in
                let had = s.placed[key] != nil
                s.unplace(key)
                return had
            }
            waiting.withLock { _ = $0.remove(key) }
            if wasPlaced { retryWaiting() }
        case .synced: break
        }
    }

    public func reconcile(_ key: String) async throws -> ReconcileResult {
        guard nodes.hasSynced, let pod = pods.cache.get(key), Self.isPending(pod) else {
            volumeWaits.withLock { _ = $0.removeValue(forKey: key) }
            return .done
        }
        let claimNames = PodReferences(pod: pod).persistentVolumeClaims.sorted()
        let claims = claimNames.isEmpty ? VolumeBinding.PodClaims() : podClaims(claimNames, namespace: pod.namespace)
        if let node = volumeWaits.withLock({ $0[key] }) {
            // A node was chosen and the pod's delayed claims were given to it: bound once they all are.
            if claims.unresolvable == nil && claims.delayed.isEmpty {
                volumeWaits.withLock { _ = $0.removeValue(forKey: key) }
                return try await bind(pod, key: key, node: node)
            }
            if claims.unresolvable == nil && claims.delayed.allSatisfy({ $0.annotations[Storage.Keys.selectedNode] == node }) {
                return .requeue(after: .seconds(30))
            }
            // The provisioner gave the node back (or a claim changed): choose again.
            volumeWaits.withLock { _ = $0.removeValue(forKey: key) }
            state.withLock { $0.unplace(key) }
        }
        if state.withLock({ $0.placed[key] != nil }) { return .done }  // binding in flight
        if let why = claims.unresolvable {
            return try await unschedulable(pod, key: key, Unschedulable(total: state.withLock { $0.nodes.count }, reasons: [:], podReason: why))
        }
        let request = PodRequest(pod["spec"])
        let volumeFilter = claims.boundVolumes.isEmpty && claims.delayed.isEmpty ? nil : volumeFilter(claims)
        let choice = state.withLock { s -> Result<String, Unschedulable> in
            let r = s.choose(spec: pod["spec"], request: request, extra: volumeFilter ?? { _ in nil })
            if case .success(let node) = r { s.place(key, on: node, request) }
            return r
        }
        switch choice {
        case .success(let node):
            if claims.delayed.isEmpty { return try await bind(pod, key: key, node: node) }
            // kube's PreBind: the claims learn the node (their provisioner or the binder acts on
            // it); the pod stays assumed on the node and is bound once they are.
            volumeWaits.withLock { $0[key] = node }
            do {
                for c in claims.delayed where c.annotations[Storage.Keys.selectedNode] != node {
                    let patch: JSON = ["metadata": ["annotations": [Storage.Keys.selectedNode: .string(node)]]]
                    _ = try await client.patch(R.pvcs, namespace: pod.namespace, name: c.metadata?.name ?? "", patch, fieldManager: Self.schedulerName)
                }
            } catch {
                volumeWaits.withLock { _ = $0.removeValue(forKey: key) }
                state.withLock { $0.unplace(key) }
                throw error
            }
            logger.info("volumes of the pod wait for their node", metadata: ["pod": "\(key)", "node": "\(node)", "claims": "\(claims.delayed.count)"])
            return .requeue(after: .seconds(30))
        case .failure(let why):
            return try await unschedulable(pod, key: key, why)
        }
    }

    func bind(_ pod: JSON, key: String, node: String) async throws -> ReconcileResult {
        let binding: JSON = ["apiVersion": "v1", "kind": "Binding",
                             "metadata": ["name": .string(pod.name), "namespace": .string(pod.namespace), "uid": .string(pod.uid)],
                             "target": ["apiVersion": "v1", "kind": "Node", "name": .string(node)]]
        do {
            try await client.post(R.pods, namespace: pod.namespace, name: pod.name, subresource: "binding", binding)
        } catch let e as StatusError where e.code == 409 || e.code == 404 {
            state.withLock { $0.unplace(key) }  // bound elsewhere, deleted or replaced: the informer will tell
            return .done
        } catch {
            state.withLock { $0.unplace(key) }
            throw error
        }
        bound.increment()
        events.record(pod, .normal, reason: "Scheduled", message: "Successfully assigned \(pod.namespace)/\(pod.name) to \(node)")
        return .done
    }

    func unschedulable(_ pod: JSON, key: String, _ why: Unschedulable) async throws -> ReconcileResult {
        failed.increment()
        waiting.withLock { _ = $0.insert(key) }
        let message = why.message
        let existing = PodUtil.condition(pod, "PodScheduled")
        if existing?["status"].stringValue != "False" || existing?["message"].stringValue != message {
            logger.info("pod unschedulable", metadata: ["pod": "\(key)", "reason": "\(message)"])
            let patch: JSON = ["status": ["conditions": [[
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": .string(message),
                "lastProbeTime": .null, "lastTransitionTime": .string(KubeTime.now().rfc3339),
            ]]]]
            _ = try await client.patch(R.pods, namespace: pod.namespace, name: pod.name, patch, patchType: .strategicMerge,
                                       subresource: "status", fieldManager: Self.schedulerName)
            events.record(pod, .warning, reason: "FailedScheduling", message: message)
        }
        return .requeue(after: .seconds(60))
    }

    // MARK: volumes

    static let decoder = JSONValueDecoder()

    func podClaims(_ names: [String], namespace: String) -> VolumeBinding.PodClaims {
        VolumeBinding.podClaims(names, namespace: namespace,
                                claim: { [claims] in claims.cache.get("\(namespace)/\($0)").flatMap { try? Self.decoder.decode(Storage.PersistentVolumeClaim.self, from: $0) } },
                                volume: { [volumes] in volumes.cache.get($0).flatMap { try? Self.decoder.decode(Storage.PersistentVolume.self, from: $0) } },
                                storageClass: storageClass)
    }

    func storageClass(_ name: String) -> Storage.StorageClass? {
        classes.cache.get(name).flatMap { try? Self.decoder.decode(Storage.StorageClass.self, from: $0) }
    }

    /// The per-node check of the pod's claims, over one snapshot of volumes and CSINodes.
    func volumeFilter(_ claims: VolumeBinding.PodClaims) -> (NodeInfo) -> String? {
        let free = volumes.cache.list().compactMap { try? Self.decoder.decode(Storage.PersistentVolume.self, from: $0) }
            .filter { v in v.claimRef == nil || claims.delayed.contains { c in v.claimRef?.name == c.metadata?.name && v.claimRef?.namespace == c.metadata?.namespace } }
        var drivers: [String: Set<String>] = [:]
        for n in csiNodes.cache.list() {
            guard let c = try? Self.decoder.decode(Storage.CSINode.self, from: n) else { continue }
            drivers[n.name] = Set(c.drivers.map(\.name))
        }
        let anywhere = drivers.values.reduce(into: Set<String>()) { $0.formUnion($1) }
        let classes = Dictionary(classes.cache.list().compactMap { try? Self.decoder.decode(Storage.StorageClass.self, from: $0) }.map { ($0.name, $0) },
                                 uniquingKeysWith: { a, _ in a })
        return { node in
            VolumeBinding.reason(claims, node: node.name, labels: node.labels, freeVolumes: free, storageClass: { classes[$0] },
                                 driversOnNode: drivers[node.name] ?? [], registeredAnywhere: anywhere)
        }
    }
}
