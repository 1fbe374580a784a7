import ControllerRuntime
import KubeAPI
import KubeClient
import Logging

/// Deployments through ReplicaSets, as kube-controller-manager does it: one ReplicaSet per pod
/// template (named `<deployment>-<pod-template-hash>`), RollingUpdate within maxSurge and
/// maxUnavailable or Recreate, revision annotations (so `kubectl rollout history|undo` work),
/// history trimmed to `revisionHistoryLimit`, and the status fields and Available/Progressing
/// conditions that `kubectl rollout status` reads.
final class DeploymentController: Reconciler {
    let name = "deployment"
    let client: KubeClient
    let deployments: SharedInformer
    let replicaSets: SharedInformer
    let rsByOwner: InformerIndex
    let events: EventRecorder
    let logger: Logger
    static let revisionKey = "deployment.kubernetes.io/revision"
    static let hashLabel = "pod-template-hash"
    static let manager = "deployment-controller"

    init(client: KubeClient, informers: InformerFactory, events: EventRecorder, queue: WorkQueue, logger: Logger) {
        self.client = client; self.events = events; self.logger = logger
        deployments = informers.informer(R.deployments)
        replicaSets = informers.informer(R.replicaSets)
        let index = InformerIndex.byControllerUID()
        rsByOwner = index
        deployments.enqueueKeys(into: queue)
        replicaSets.addHandler { ev in
            index.handle(ev)
            switch ev {
            case .added(let o), .updated(_, let o), .deleted(let o):
                if let ref = o.controllerRef, ref["kind"].stringValue == "Deployment", let n = ref["name"].stringValue {
                    queue.add("\(o.namespace)/\(n)")
                }
            case .synced: break
            }
        }
    }

    static func revision(_ o: JSON) -> Int64 { Int64(o["metadata"]["annotations"][revisionKey].stringValue ?? "") ?? 0 }

    /// The RS template without the hash label, for comparing with the Deployment's template.
    static func templateWithoutHash(_ rs: JSON) -> JSON {
        var t = rs["spec"]["template"]
        t["metadata"]["labels"][hashLabel] = .null
        if t["metadata"]["labels"].objectValue?.isEmpty == true { t["metadata"]["labels"] = .null }
        return t
    }

    func reconcile(_ key: String) async throws -> ReconcileResult {
        guard let d = deployments.cache.get(key), !d.isDeleting else { return .done }
        let owned = rsByOwner.objects(d.uid, in: replicaSets.cache).filter { !$0.isDeleting }
        let template = d["spec"]["template"]
        var newRS = owned.first { Self.templateWithoutHash($0) == template }
        var old = owned.filter { $0.uid != newRS?.uid }.sorted { $0.creation < $1.creation }
        let maxOldRevision = old.map(Self.revision).max() ?? 0
        let replicas = Int(d["spec"]["replicas"].intValue ?? 1)

        if d["spec"]["paused"].boolValue == true {
            return try await syncStatus(d, newRS: newRS, all: owned, progressing: nil)
        }
        var progressing: (reason: String, message: String)? = nil
        if newRS == nil {
            newRS = try await createReplicaSet(d, template: template, revision: maxOldRevision + 1, old: old, replicas: replicas)
            progressing = ("NewReplicaSetCreated", "Created new replica set \"\(newRS!.name)\"")
        } else if let rs = newRS, Self.revision(rs) <= maxOldRevision {
            // An old template came back (rollout undo): it becomes the newest revision again.
            newRS = try await annotate(rs, d, revision: maxOldRevision + 1)
        }
        guard let rs = newRS else { return .done }
        if d["metadata"]["annotations"][Self.revisionKey].stringValue != String(Self.revision(rs)) {
            _ = try await client.patch(R.deployments, namespace: d.namespace, name: d.name,
                                       ["metadata": ["annotations": [.init(Self.revisionKey): .string(String(Self.revision(rs)))]]],
                                       fieldManager: Self.manager)
        }

        var all = [rs] + old
        if d["spec"]["strategy"]["type"].stringValue == "Recreate" {
            let oldActive = old.contains { ($0["spec"]["replicas"].intValue ?? 0) > 0 || ($0["status"]["replicas"].intValue ?? 0) > 0 }
            for (i, o) in old.enumerated() where (o["spec"]["replicas"].intValue ?? 0) > 0 { old[i] = try await scale(o, to: 0, d) }
            if !oldActive, (rs["spec"]["replicas"].intValue ?? 0) != Int64(replicas) { newRS = try await scale(rs, to: replicas, d) }
        } else {
            let (newScaled, oldScaled) = try await rollingUpdate(d, newRS: rs, old: old, replicas: replicas)
            newRS = newScaled
            old = oldScaled
        }
        all = [newRS!] + old
        try await cleanupHistory(d, old: old)
        return try await syncStatus(d, newRS: newRS, all: all, progressing: progressing)
    }

    func createReplicaSet(_ d: JSON, template: JSON, revision: Int64, old: [JSON], replicas: Int) async throws -> JSON {
        let hash = templateHash(template)
        var t = template
        t["metadata"]["labels"][Self.hashLabel] = .string(hash)
        var selector = d["spec"]["selector"]
        selector["matchLabels"][Self.hashLabel] = .string(hash)
        var labels = template["metadata"]["labels"]
        labels[Self.hashLabel] = .string(hash)
        // Start at the surge allowance (RollingUpdate) or at zero until old pods are gone (Recreate).
        var initial = 0
        if d["spec"]["strategy"]["type"].stringValue != "Recreate" {
            let surge = scaledValue(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], total: replicas, roundUp: true, default: 1)
            let current = old.reduce(0) { $0 + Int($1["spec"]["replicas"].intValue ?? 0) }
            initial = max(0, min(replicas, replicas + surge - current))
        }
        var annotations: JSON = [.init(Self.revisionKey): .string(String(revision)),
                                 "deployment.kubernetes.io/desired-replicas": .string(String(replicas)),
                                 "deployment.kubernetes.io/max-replicas": .string(String(replicas + maxSurge(d, replicas)))]
        if let cause = d["metadata"]["annotations"]["kubernetes.io/change-cause"].stringValue {
            annotations["kubernetes.io/change-cause"] = .string(cause)
        }
        let rs: JSON = ["apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "metadata": ["name": .string("\(d.name)-\(hash)"), "namespace": .string(d.namespace), "labels": labels,
                                     "annotations": annotations, "ownerReferences": [d.asControllerRef]],
                        "spec": ["replicas": .int(Int64(initial)), "minReadySeconds": d["spec"]["minReadySeconds"].isNull ? 0 : d["spec"]["minReadySeconds"],
                                 "selector": selector, "template": t]]
        do {
            let created = try await client.create(R.replicaSets, namespace: d.namespace, rs, fieldManager: Self.manager)
            events.record(d, .normal, reason: "ScalingReplicaSet", message: "Scaled up replica set \(created.name) from 0 to \(initial)")
            return created
        } catch let e as StatusError where e.code == 409 {
            // Created by an earlier attempt that the cache has not shown yet.
            return try await client.get(R.replicaSets, namespace: d.namespace, name: "\(d.name)-\(hash)")
        }
    }

    func annotate(_ rs: JSON, _ d: JSON, revision: Int64) async throws -> JSON {
        var ann: JSON = [.init(Self.revisionKey): .string(String(revision))]
        if let cause = d["metadata"]["annotations"]["kubernetes.io/change-cause"].stringValue { ann["kubernetes.io/change-cause"] = .string(cause) }
        return try await client.patch(R.replicaSets, namespace: rs.namespace, name: rs.name, ["metadata": ["annotations": ann]],
                                      fieldManager: Self.manager)
    }

    func maxSurge(_ d: JSON, _ replicas: Int) -> Int {
        guard d["spec"]["strategy"]["type"].stringValue != "Recreate" else { return 0 }
        return scaledValue(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], total: replicas, roundUp: true, default: 1)
    }

    func scale(_ rs: JSON, to n: Int, _ d: JSON) async throws -> JSON {
        let from = rs["spec"]["replicas"].intValue ?? 0
        guard from != Int64(n) else { return rs }
        let patch: JSON = ["metadata": ["annotations": ["deployment.kubernetes.io/desired-replicas": .string(String(d["spec"]["replicas"].intValue ?? 1)),
                                                        "deployment.kubernetes.io/max-replicas": .string(String(Int(d["spec"]["replicas"].intValue ?? 1) + maxSurge(d, Int(d["spec"]["replicas"].intValue ?? 1))))]],
                           "spec": ["replicas": .int(Int64(n))]]
        let updated = try await client.patch(R.replicaSets, namespace: rs.namespace, name: rs.name, patch, fieldManager: Self.manager)
        events.record(d, .normal, reason: "ScalingReplicaSet",
                      message: "Scaled \(Int64(n) > from ? "up" : "down") replica set \(rs.name) from \(from) to \(n)")
        return updated
    }

    /// One step of a rolling update: scale the new ReplicaSet up within maxSurge, then scale old
    /// ones down as far as maxUnavailable allows (unhealthy old pods first).
    func rollingUpdate(_ d: JSON, newRS: JSON, old: [JSON], replicas: Int) async throws -> (JSON, [JSON]) {
        let ru = d["spec"]["strategy"]["rollingUpdate"]
        let surge = scaledValue(ru["maxSurge"], total: replicas, roundUp: true, default: 1)
        var unavailable = scaledValue(ru["maxUnavailable"], total: replicas, roundUp: false, default: 0)
        if surge == 0 && unavailable == 0 { unavailable = 1 }
        func spec(_ r: JSON) -> Int { Int(r["spec"]["replicas"].intValue ?? 0) }
        func available(_ r: JSON) -> Int { Int(r["status"]["availableReplicas"].intValue ?? 0) }
        var newRS = newRS
        var old = old

        // Scale up.
        let total = spec(newRS) + old.reduce(0) { $0 + spec($1) }
        if spec(newRS) > replicas {
            newRS = try await scale(newRS, to: replicas, d)
        } else if spec(newRS) < replicas {
            let room = replicas + surge - total
            if room > 0 { newRS = try await scale(newRS, to: spec(newRS) + min(room, replicas - spec(newRS)), d) }
        }
        if old.allSatisfy({ spec($0) == 0 }) { return (newRS, old) }

        // Scale down: first old pods that are not available, then available ones down to minAvailable.
        let minAvailable = replicas - unavailable
        let allPods = spec(newRS) + old.reduce(0) { $0 + spec($1) }
        let newUnavailable = max(0, spec(newRS) - available(newRS))
        var budget = allPods - minAvailable - newUnavailable
        guard budget > 0 else { return (newRS, old) }
        for i in old.indices where budget > 0 {
            let unhealthy = min(spec(old[i]) - available(old[i]), budget)
            if unhealthy > 0 {
                old[i] = try await scale(old[i], to: spec(old[i]) - unhealthy, d)
                budget -= unhealthy
            }
        }
        let availableTotal = available(newRS) + old.reduce(0) { $0 + min(available($1), spec($1)) }
        var down = min(availableTotal - minAvailable, budget)
        for i in old.indices where down > 0 && spec(old[i]) > 0 {
            let n = min(spec(old[i]), down)
            old[i] = try await scale(old[i], to: spec(old[i]) - n, d)
            down -= n
        }
        return (newRS, old)
    }

    /// Deletes scaled-down old ReplicaSets beyond `revisionHistoryLimit`, oldest first.
    func cleanupHistory(_ d: JSON, old: [JSON]) async throws {
        let limit = Int(d["spec"]["revisionHistoryLimit"].intValue ?? 10)
        let idle = old.filter { ($0["spec"]["replicas"].intValue ?? 0) == 0 && ($0["status"]["replicas"].intValue ?? 0) == 0 }
            .sorted { Self.revision($0) < Self.revision($1) }
        guard idle.count > limit else { return }
        for rs in idle.prefix(idle.count - limit) {
            do { try await client.delete(R.replicaSets, namespace: rs.namespace, name: rs.name) } catch let e as StatusError where e.code == 404 {}
        }
    }

    func syncStatus(_ d: JSON, newRS: JSON?, all: [JSON], progressing: (reason: String, message: String)?) async throws -> ReconcileResult {
        func sum(_ f: String) -> Int64 { all.reduce(0) { $0 + ($1["status"][f].intValue ?? 0) } }
        let replicas = d["spec"]["replicas"].intValue ?? 1
        let ru = d["spec"]["strategy"]["rollingUpdate"]
        let maxUnavailable = d["spec"]["strategy"]["type"].stringValue == "Recreate" ? 0
            : Int64(scaledValue(ru["maxUnavailable"], total: Int(replicas), roundUp: false, default: 0))
        let available = sum("availableReplicas")
        let total = sum("replicas")
        let updated = newRS?["status"]["replicas"].intValue ?? 0
        let newAvailable = newRS?["status"]["availableReplicas"].intValue ?? 0
        var status = d["status"]
        status["observedGeneration"] = d["metadata"]["generation"]
        status["replicas"] = .int(total)
        status["updatedReplicas"] = .int(updated)
        status["readyReplicas"] = .int(sum("readyReplicas"))
        status["availableReplicas"] = .int(available)
        status["unavailableReplicas"] = .int(max(0, total - available))
        status["terminatingReplicas"] = .null

        let now = KubeTime.now().rfc3339
        var conditions = status["conditions"].arrayValue ?? []
        func set(_ type: String, _ st: String, _ reason: String, _ message: String, touch: Bool) {
            if let i = conditions.firstIndex(where: { $0["type"].stringValue == type }) {
                var c = conditions[i]
                let changed = c["status"].stringValue != st
                if changed { c["lastTransitionTime"] = .string(now) }
                if changed || touch || c["reason"].stringValue != reason { c["lastUpdateTime"] = .string(now) }
                c["status"] = .string(st); c["reason"] = .string(reason); c["message"] = .string(message)
                conditions[i] = c
            } else {
                conditions.append(["type": .string(type), "status": .string(st), "reason": .string(reason), "message": .string(message),
                                   "lastUpdateTime": .string(now), "lastTransitionTime": .string(now)])
            }
        }
        if available >= replicas - maxUnavailable {
            set("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.", touch: false)
        } else {
            set("Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.", touch: false)
        }
        let complete = updated == replicas && newAvailable == replicas && total == replicas
        var requeue: ReconcileResult = .done
        if d["spec"]["paused"].boolValue == true {
            set("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", touch: false)
        } else if let rs = newRS {
            if complete {
                set("Progressing", "True", "NewReplicaSetAvailable", "ReplicaSet \"\(rs.name)\" has successfully progressed.", touch: false)
            } else if let p = progressing {
                set("Progressing", "True", p.reason, p.message, touch: true)
            } else {
                let prev = d["status"]
                let moved = prev["updatedReplicas"] != status["updatedReplicas"] || prev["availableReplicas"] != status["availableReplicas"]
                    || prev["replicas"] != status["replicas"] || prev["readyReplicas"] != status["readyReplicas"]
                let deadline = d["spec"]["progressDeadlineSeconds"].intValue ?? 600
                let current = conditions.first { $0["type"].stringValue == "Progressing" }
                let last = KubeTime.parse(current?["lastUpdateTime"].stringValue ?? "") ?? .now()
                if moved || current == nil || current?["reason"].stringValue == "NewReplicaSetAvailable" {
                    set("Progressing", "True", "ReplicaSetUpdated", "ReplicaSet \"\(rs.name)\" is progressing.", touch: true)
                    requeue = .requeue(after: .seconds(deadline + 1))
                } else if last.adding(seconds: deadline) <= .now() {
                    if current?["reason"].stringValue != "ProgressDeadlineExceeded" {
                        events.record(d, .warning, reason: "ProgressDeadlineExceeded", message: "ReplicaSet \"\(rs.name)\" has timed out progressing.")
                    }
                    set("Progressing", "False", "ProgressDeadlineExceeded", "ReplicaSet \"\(rs.name)\" has timed out progressing.", touch: false)
                } else {
                    requeue = .requeue(after: .seconds(max(1, last.adding(seconds: deadline).seconds - KubeTime.now().seconds + 1)))
                }
            }
        }
        status["conditions"] = .array(conditions.sorted { ($0["type"].stringValue ?? "") < ($1["type"].stringValue ?? "") })
        if status != d["status"] {
            var u = d
            u["status"] = status
            _ = try await client.update(R.deployments, namespace: d.namespace, u, subresource: "status", fieldManager: Self.manager)
        }
        return requeue
    }
}
