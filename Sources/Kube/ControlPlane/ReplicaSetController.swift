import ControllerRuntime
import KubeAPI
import KubeClient
import Logging

/// Keeps `spec.replicas` pods of each ReplicaSet: creates missing pods from the template (in
/// slow-start batches), deletes surplus ones (unscheduled, then not ready, then newest first),
/// and reports replicas, ready and available counts in status.
final class ReplicaSetController: Reconciler {
    let name = "replicaset"
    let client: KubeClient
    let replicaSets: SharedInformer
    let pods: SharedInformer
    let podsByOwner: InformerIndex
    let expectations = Expectations()
    let events: EventRecorder
    let logger: Logger
    let queue: WorkQueue
    static let burst = 500

    init(client: KubeClient, informers: InformerFactory, podsByOwner: InformerIndex, events: EventRecorder, queue: WorkQueue, logger: Logger) {
        self.client = client; self.podsByOwner = podsByOwner; self.events = events; self.queue = queue; self.logger = logger
        replicaSets = informers.informer(R.replicaSets)
        pods = informers.informer(R.pods)
        replicaSets.enqueueKeys(into: queue)
        let routing = OwnedPodEvents(ownerKind: "ReplicaSet", expectations: expectations, queue: queue)
        pods.addHandler { ev in routing.handle(ev) }
    }

    func reconcile(_ key: String) async throws -> ReconcileResult {
        guard let rs = replicaSets.cache.get(key) else { expectations.forget(key); return .done }
        let all = podsByOwner.objects(rs.uid, in: pods.cache)
        let active = all.filter(PodUtil.isActive)
        if !rs.isDeleting && expectations.satisfied(key) {
            let want = Int(rs["spec"]["replicas"].intValue ?? 1)
            let diff = want - active.count
            if diff > 0 {
                try await createPods(rs, key: key, count: min(diff, Self.burst))
            } else if diff < 0 {
                try await deletePods(rs, key: key, victims: Self.deletionOrder(active).prefix(-diff))
            }
        }
        return try await updateStatus(rs, pods: all)
    }

    func createPods(_ rs: JSON, key: String, count: Int) async throws {
        expectations.expect(key, adds: count)
        let pod = PodUtil.fromTemplate(rs["spec"]["template"], owner: rs, generateName: rs.name + "-")
        var created = 0, succeeded = 0
        var batch = 1
        var failure: Error?
        // Slow start (1, 2, 4, …) so a broken template fails once, not `count` times.
        while created < count && failure == nil {
            let n = min(batch, count - created)
            let results = await withTaskGroup(of: Error?.self) { group in
                for _ in 0..<n {
                    group.addTask {
                        do { _ = try await self.client.create(R.pods, namespace: rs.namespace, pod, fieldManager: "replicaset-controller"); return nil } catch {
                            return error
                        }
                    }
                }
                var errs: [Error] = []
                for await r in group { if let r { errs.append(r) } }
                return errs
            }
            created += n
            succeeded += n - results.count
            if let e = results.first {
                failure = e
                expectations.lowered(key, adds: results.count)
            }
            batch *= 2
        }
        expectations.lowered(key, adds: count - created)
        if succeeded > 0 {
            events.record(rs, .normal, reason: "SuccessfulCreate", message: "Created \(succeeded == 1 ? "pod" : "\(succeeded) pods") for \(rs.name)")
        }
        if let failure {
            events.record(rs, .warning, reason: "FailedCreate", message: "Error creating: \(failure)")
            throw failure
        }
    }

    func deletePods(_ rs: JSON, key: String, victims: ArraySlice<JSON>) async throws {
        expectations.expect(key, deletes: victims.count)
        var failure: Error?
        await withTaskGroup(of: Error?.self) { group in
            for p in victims {
                group.addTask {
                    do { try await self.client.delete(R.pods, namespace: p.namespace, name: p.name); return nil } catch let e as StatusError where e.code == 404 {
                        return e
                    } catch { return error }
                }
            }
            for await r in group {
                if let r { expectations.lowered(key, deletes: 1); if (r as? StatusError)?.code != 404 { failure = r } }
            }
        }
        for p in victims { events.record(rs, .normal, reason: "SuccessfulDelete", message: "Deleted pod: \(p.name)") }
        if let failure { throw failure }
    }

    /// Pods to delete first: unscheduled, pending, not ready, then the most recently created.
    static func deletionOrder(_ pods: [JSON]) -> [JSON] {
        func rank(_ p: JSON) -> Int {
            if (p["spec"]["nodeName"].stringValue ?? "").isEmpty { return 0 }
            if PodUtil.phase(p) == "Pending" { return 1 }
            if !PodUtil.isReady(p) { return 2 }
            return 3
        }
        return pods.sorted { a, b in
            let ra = rank(a), rb = rank(b)
            return ra != rb ? ra < rb : a.creation > b.creation
        }
    }

    func updateStatus(_ rs: JSON, pods: [JSON]) async throws -> ReconcileResult {
        let now = KubeTime.now()
        let minReady = rs["spec"]["minReadySeconds"].intValue ?? 0
        let active = pods.filter(PodUtil.isActive)
        var templateLabels: [String: String] = [:]
        for (k, v) in rs["spec"]["template"]["metadata"]["labels"].objectValue ?? [:] { templateLabels[k] = v.stringValue ?? "" }
        let ready = active.filter(PodUtil.isReady)
        let available = ready.filter { PodUtil.isAvailable($0, minReadySeconds: minReady, now: now) }
        var status = rs["status"]
        status["replicas"] = .int(Int64(active.count))
        status["fullyLabeledReplicas"] = .int(Int64(active.filter { p in templateLabels.allSatisfy { p.labels[$0.key] == $0.value } }.count))
        status["readyReplicas"] = .int(Int64(ready.count))
        status["availableReplicas"] = .int(Int64(available.count))
        status["terminatingReplicas"] = .null
        status["observedGeneration"] = rs["metadata"]["generation"].isNull ? .null : rs["metadata"]["generation"]
        if status != rs["status"] {
            var updated = rs
            updated["status"] = status
            _ = try await client.update(R.replicaSets, namespace: rs.namespace, updated, subresource: "status", fieldManager: "replicaset-controller")
        }
        if ready.count > available.count { return .requeue(after: .seconds(max(1, minReady))) }
        return .done
    }
}
