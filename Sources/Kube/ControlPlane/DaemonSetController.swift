import ControllerRuntime
import KubeAPI
import KubeClient
import Logging

/// Runs one pod of each DaemonSet on every node its nodeSelector, required node affinity and
/// tolerations accept (so a DaemonSet with `node-role.kubernetes.io/edge` in its nodeSelector
/// covers exactly the edge nodes, including ones that join later). Pods are placed directly on
/// their node; rolling updates replace at most `maxUnavailable` pods at a time.
final class DaemonSetController: Reconciler {
    let name = "daemonset"
    let client: KubeClient
    let daemonSets: SharedInformer
    let pods: SharedInformer
    let nodes: SharedInformer
    let podsByOwner: InformerIndex
    let expectations = Expectations()
    let events: EventRecorder
    let logger: Logger
    static let hashLabel = "controller-revision-hash"
    /// Tolerations every daemon pod gets, as in Kubernetes.
    static let implicitTolerations: [JSON] = [
        ["key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"],
        ["key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"],
        ["key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"],
        ["key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"],
        ["key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"],
        ["key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"],
    ]

    init(client: KubeClient, informers: InformerFactory, podsByOwner: InformerIndex, events: EventRecorder, queue: WorkQueue, logger: Logger) {
        self.client = client; self.podsByOwner = podsByOwner; self.events = events; self.logger = logger
        daemonSets = informers.informer(R.daemonSets)
        pods = informers.informer(R.pods)
        nodes = informers.informer(R.nodes)
        let sets = daemonSets
        daemonSets.enqueueKeys(into: queue)
        nodes.addHandler { ev in
            func relevant(_ a: JSON, _ b: JSON) -> Bool {
                a["metadata"]["labels"] != b["metadata"]["labels"] || a["spec"]["taints"] != b["spec"]["taints"]
            }
            switch ev {
            case .updated(let old, let new) where !relevant(old, new): return
            case .synced: return
            default: for ds in sets.cache.list() { queue.add(InformerCache.key(ds)) }
            }
        }
        let routing = OwnedPodEvents(ownerKind: "DaemonSet", expectations: expectations, queue: queue)
        pods.addHandler { ev in routing.handle(ev) }
    }

    static func tolerations(_ ds: JSON) -> [JSON] {
        var t = ds["spec"]["template"]["spec"]["tolerations"].arrayValue ?? []
        for i in implicitTolerations where !t.contains(where: { $0["key"] == i["key"] && $0["effect"] == i["effect"] }) { t.append(i) }
        return t
    }

    /// Whether a daemon pod belongs on `node`.
    static func shouldRun(_ ds: JSON, on node: JSON, tolerations: [JSON]) -> Bool {
        let spec = ds["spec"]["template"]["spec"]
        guard NodeUtil.matchesNodeSelection(spec, labels: node.labels, nodeName: node.name) else { return false }
        for taint in node["spec"]["taints"].arrayValue ?? [] where ["NoSchedule", "NoExecute"].contains(taint["effect"].stringValue ?? "") {
            if !NodeUtil.tolerates(tolerations, taint) { return false }
        }
        return true
    }

    func reconcile(_ key: String) async throws -> ReconcileResult {
        guard let ds = daemonSets.cache.get(key) else { expectations.forget(key); return .done }
        let owned = podsByOwner.objects(ds.uid, in: pods.cache)
        var byNode: [String: [JSON]] = [:]
        for p in owned { byNode[p["spec"]["nodeName"].stringValue ?? "", default: []].append(p) }
        let tolerations = Self.tolerations(ds)
        let hash = templateHash(ds["spec"]["template"])
        let allNodes = nodes.cache.list()
        let wanted = Set(allNodes.filter { Self.shouldRun(ds, on: $0, tolerations: tolerations) }.map(\.name))
        let now = KubeTime.now()
        let minReady = ds["spec"]["minReadySeconds"].intValue ?? 0

        if !ds.isDeleting && expectations.satisfied(key) {
            var create: [String] = []
            var delete: [JSON] = []
            for node in wanted {
                let active = (byNode[node] ?? []).filter(PodUtil.isActive)
                delete += (byNode[node] ?? []).filter { PodUtil.phase($0) == "Failed" && !$0.isDeleting }
                if active.isEmpty { create.append(node) } else if active.count > 1 {
                    delete += active.sorted { $0.creation < $1.creation }.dropFirst()
                }
            }
            for (node, ps) in byNode where !wanted.contains(node) { delete += ps.filter { !$0.isDeleting } }
            // Rolling update: replace outdated pods while staying within maxUnavailable.
            if ds["spec"]["updateStrategy"]["type"].stringValue != "OnDelete" {
                let maxUnavailable = max(1, scaledValue(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
                                                       total: wanted.count, roundUp: false, default: 1))
                var unavailable = wanted.filter { n in !(byNode[n] ?? []).contains { PodUtil.isActive($0) && PodUtil.isAvailable($0, minReadySeconds: minReady, now: now) } }.count
                for node in wanted.sorted() {
                    guard let p = (byNode[node] ?? []).first(where: PodUtil.isActive), p.labels[Self.hashLabel] != hash,
                          !delete.contains(where: { $0.uid == p.uid }) else { continue }
                    if !PodUtil.isAvailable(p, minReadySeconds: minReady, now: now) { delete.append(p); continue }
                    if unavailable < maxUnavailable { delete.append(p); unavailable += 1 }
                }
            }
            if !create.isEmpty || !delete.isEmpty {
                expectations.expect(key, adds: create.count, deletes: delete.count)
                try await apply(ds, key: key, create: create, delete: delete, hash: hash, tolerations: tolerations)
            }
        }

        // Status.
        var current = 0, misscheduled = 0, ready = 0, available = 0, updated = 0
        for (node, ps) in byNode {
            let active = ps.filter(PodUtil.isActive)
            guard let p = active.first else { continue }
            if wanted.contains(node) {
                current += 1
                if PodUtil.isReady(p) { ready += 1 }
                if PodUtil.isAvailable(p, minReadySeconds: minReady, now: now) { available += 1 }
                if p.labels[Self.hashLabel] == hash { updated += 1 }
            } else { misscheduled += 1 }
        }
        var status = ds["status"]
        status["desiredNumberScheduled"] = .int(Int64(wanted.count))
        status["currentNumberScheduled"] = .int(Int64(current))
        status["numberMisscheduled"] = .int(Int64(misscheduled))
        status["numberReady"] = .int(Int64(ready))
        status["numberAvailable"] = .int(Int64(available))
        status["numberUnavailable"] = .int(Int64(max(0, wanted.count - available)))
        status["updatedNumberScheduled"] = .int(Int64(updated))
        status["observedGeneration"] = ds["metadata"]["generation"]
        if status != ds["status"] {
            var u = ds
            u["status"] = status
            _ = try await client.update(R.daemonSets, namespace: ds.namespace, u, subresource: "status", fieldManager: "daemon-set-controller")
        }
        return ready > available ? .requeue(after: .seconds(max(1, minReady))) : .done
    }

    func apply(_ ds: JSON, key: String, create: [String], delete: [JSON], hash: String, tolerations: [JSON]) async throws {
        var template = ds["spec"]["template"]
        template["spec"]["tolerations"] = .array(tolerations)
        var firstError: Error?
        await withTaskGroup(of: (isCreate: Bool, error: Error?).self) { group in
            for node in create {
                var pod = PodUtil.fromTemplate(template, owner: ds, generateName: ds.name + "-", extraLabels: [Self.hashLabel: hash])
                pod["spec"]["nodeName"] = .string(node)
                group.addTask {
                    do { _ = try await self.client.create(R.pods, namespace: ds.namespace, pod, fieldManager: "daemon-set-controller"); return (true, nil) } catch {
                        return (true, error)
                    }
                }
            }
            for p in delete {
                group.addTask {
                    do { try await self.client.delete(R.pods, namespace: p.namespace, name: p.name); return (false, nil) } catch let e as StatusError where e.code == 404 {
                        return (false, e)
                    } catch { return (false, error) }
                }
            }
            for await (isCreate, err) in group {
                guard let err else { continue }
                if isCreate { expectations.lowered(key, adds: 1) } else { expectations.lowered(key, deletes: 1) }
                if (err as? StatusError)?.code != 404 { firstError = firstError ?? err }
            }
        }
        for node in create { events.record(ds, .normal, reason: "SuccessfulCreate", message: "Created pod on node \(node)") }
        for p in delete { events.record(ds, .normal, reason: "SuccessfulDelete", message: "Deleted pod: \(p.name)") }
        if let firstError {
            events.record(ds, .warning, reason: "FailedCreate", message: "Error: \(firstError)")
            throw firstError
        }
    }
}
