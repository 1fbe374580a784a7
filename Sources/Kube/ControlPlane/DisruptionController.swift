import ControllerRuntime
import KubeAPI
import KubeClient
import Logging

/// What a PodDisruptionBudget's status says, computed from its pods (kube-controller-manager's
/// disruption controller): how many are healthy, how many must be, how many may be evicted now.
/// Pure: tested without I/O.
struct DisruptionBudget: Equatable {
    var expectedPods: Int
    var desiredHealthy: Int
    var currentHealthy: Int
    var disruptionsAllowed: Int
    /// Evictions granted by the API server whose pods have not gone yet (pod name → RFC 3339 time).
    var disruptedPods: [String: String]
    /// Why the budget could not be computed (a pod without a controller under a percentage).
    var failure: String?
    /// The earliest time an entry of `disruptedPods` expires, for a requeue.
    var nextExpiry: KubeTime?

    /// An eviction the pod never followed is forgotten after this long (kube's DeletionTimeout).
    static let disruptedPodTimeout: Int64 = 120

    /// `scale` answers a pod's controller's desired replicas (nil: no controller or unknown kind).
    static func compute(_ pdb: JSON, pods: [JSON], now: KubeTime, scale: (JSON) -> Int?) -> DisruptionBudget {
        let spec = pdb["spec"]
        // Evictions still pending: kept while the pod exists, is not being deleted and the grant is fresh.
        var disrupted: [String: String] = [:]
        var nextExpiry: KubeTime?
        let byName = Dictionary(pods.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for (name, at) in pdb["status"]["disruptedPods"].objectValue ?? [:] {
            guard let s = at.stringValue, let t = KubeTime.parse(s), let p = byName[name], !p.isDeleting else { continue }
            let expiry = t.adding(seconds: disruptedPodTimeout)
            guard expiry > now else { continue }
            disrupted[name] = s
            if nextExpiry.map({ expiry < $0 }) ?? true { nextExpiry = expiry }
        }
        let healthy = pods.filter { !$0.isDeleting && disrupted[$0.name] == nil && PodUtil.isReady($0) }.count

        var expected = pods.count
        var desired = 0
        var failure: String?
        func controllersScale() -> Int {
            var seen: Set<String> = []
            var total = 0
            for p in pods {
                guard let ref = p.controllerRef, let uid = ref["uid"].stringValue else {
                    failure = failure ?? "found no controller ref for pod \"\(p.name)\""
                    continue
                }
                guard seen.insert(uid).inserted else { continue }
                guard let n = scale(ref) else {
                    failure = failure ?? "found no controllers for pod \"\(p.name)\""
                    continue
                }
                total += n
            }
            return total
        }
        if !spec["maxUnavailable"].isNull {
            expected = controllersScale()
            let maxUnavailable = scaledValue(spec["maxUnavailable"], total: expected, roundUp: true, default: 0)
            desired = max(0, expected - maxUnavailable)
        } else if case .int(let n) = spec["minAvailable"] {
            desired = Int(n)
        } else if !spec["minAvailable"].isNull {
            expected = controllersScale()
            desired = scaledValue(spec["minAvailable"], total: expected, roundUp: true, default: 0)
        }
        let allowed = failure == nil ? max(0, healthy - desired) : 0
        return DisruptionBudget(expectedPods: expected, desiredHealthy: desired, currentHealthy: healthy, disruptionsAllowed: allowed,
                                disruptedPods: disrupted, failure: failure, nextExpiry: nextExpiry)
    }

    /// `pdb`'s status with these figures and the `DisruptionAllowed` condition.
    func status(of pdb: JSON, now: KubeTime) -> JSON {
        var status = pdb["status"]
        status["expectedPods"] = .int(Int64(expectedPods))
        status["desiredHealthy"] = .int(Int64(desiredHealthy))
        status["currentHealthy"] = .int(Int64(currentHealthy))
        status["disruptionsAllowed"] = .int(Int64(disruptionsAllowed))
        status["disruptedPods"] = disruptedPods.isEmpty ? .null : .object(disruptedPods.mapValues { .string($0) })
        status["observedGeneration"] = pdb["metadata"]["generation"].isNull ? .int(1) : pdb["metadata"]["generation"]
        let (state, reason, message): (String, String, String) =
            if let failure { ("False", "SyncFailed", failure) }
            else if disruptionsAllowed > 0 { ("True", "SufficientPods", "") }
            else { ("False", "InsufficientPods", "") }
        var conditions = (status["conditions"].arrayValue ?? []).filter { $0["type"].stringValue != "DisruptionAllowed" }
        let old = (pdb["status"]["conditions"].arrayValue ?? []).first { $0["type"].stringValue == "DisruptionAllowed" }
        let unchanged = old?["status"].stringValue == state && old?["reason"].stringValue == reason && old?["message"].stringValue == message
        var cond: JSON = ["type": "DisruptionAllowed", "status": .string(state), "reason": .string(reason), "message": .string(message),
                          "observedGeneration": status["observedGeneration"],
                          "lastTransitionTime": .string(now.rfc3339)]
        if unchanged, let t = old?["lastTransitionTime"], !t.isNull { cond["lastTransitionTime"] = t }
        conditions.append(cond)
        status["conditions"] = .array(conditions)
        return status
    }
}

/// Keeps every PodDisruptionBudget's status current from the pods its selector picks and their
/// controllers' scale; the API server's eviction subresource decides on that status.
final class DisruptionController: Reconciler {
    let name = "disruption"
    let client: KubeClient
    let budgets: SharedInformer
    let pods: SharedInformer
    let replicaSets: SharedInformer
    let deployments: SharedInformer
    let statefulSets: SharedInformer
    let podsByNamespace: InformerIndex
    let logger: Logger

    init(client: KubeClient, informers: InformerFactory, queue: WorkQueue, logger: Logger) {
        self.client = client; self.logger = logger
        budgets = informers.informer(R.podDisruptionBudgets)
        pods = informers.informer(R.pods)
        replicaSets = informers.informer(R.replicaSets)
        deployments = informers.informer(R.deployments)
        statefulSets = informers.informer(R.statefulSets)
        let byNamespace = InformerIndex { [$0.namespace] }
        podsByNamespace = byNamespace
        pods.addHandler { byNamespace.handle($0) }
        budgets.enqueueKeys(into: queue)
        // A pod change matters to the budgets in its namespace that select it (before or after).
        pods.enqueueSelecting(budgets, into: queue) { try? LabelSelector.from(object: $0["spec"]["selector"]) }
    }

    func reconcile(_ key: String) async throws -> ReconcileResult {
        guard let pdb = budgets.cache.get(key), !pdb.isDeleting else { return .done }
        let now = KubeTime.now()
        var selected: [JSON] = []
        // policy/v1: an empty selector selects every pod of the namespace; a missing one none.
        if !pdb["spec"]["selector"].isNull, let sel = try? LabelSelector.from(object: pdb["spec"]["selector"]) {
            selected = podsByNamespace.objects(pdb.namespace, in: pods.cache).filter { sel.matches($0.labels) }
        }
        let budget = DisruptionBudget.compute(pdb, pods: selected, now: now) { ref in self.scale(of: ref, namespace: pdb.namespace) }
        let status = budget.status(of: pdb, now: now)
        if status != pdb["status"] {
            var updated = pdb
            updated["status"] = status
            _ = try await client.update(R.podDisruptionBudgets, namespace: pdb.namespace, updated, subresource: "status",
                                        fieldManager: "disruption-controller")
        }
        if let expiry = budget.nextExpiry { return .requeue(after: .seconds(max(1, expiry.seconds - now.seconds + 1))) }
        return .done
    }

    /// The desired replicas of a pod's controller (a ReplicaSet counts its Deployment's).
    func scale(of ref: JSON, namespace: String) -> Int? {
        let key = "\(namespace)/\(ref["name"].stringValue ?? "")"
        switch ref["kind"].stringValue {
        case "ReplicaSet":
            guard let rs = replicaSets.cache.get(key), rs.uid == ref["uid"].stringValue else { return nil }
            if let owner = rs.controllerRef, owner["kind"].stringValue == "Deployment",
                let d = deployments.cache.get("\(namespace)/\(owner["name"].stringValue ?? "")")
            {
                return Int(d["spec"]["replicas"].intValue ?? 1)
            }
            return Int(rs["spec"]["replicas"].intValue ?? 1)
        case "StatefulSet":
            guard let s = statefulSets.cache.get(key), s.uid == ref["uid"].stringValue else { return nil }
            return Int(s["spec"]["replicas"].intValue ?? 1)
        default:
            return nil
        }
    }
}
