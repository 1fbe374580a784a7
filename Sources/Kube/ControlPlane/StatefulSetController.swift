import ControllerRuntime
import KubeAPI
import KubeClient
import Logging

/// StatefulSets: pods with stable names `<set>-<ordinal>` and hostnames, a PersistentVolumeClaim
/// per volumeClaimTemplate and ordinal, created in order (each waits for its predecessors to be
/// Running and Ready under `OrderedReady`) and removed from the highest ordinal down; rolling
/// updates replace one pod at a time from the highest ordinal, honouring `partition`.
final class StatefulSetController: Reconciler {
    let name = "statefulset"
    let client: KubeClient
    let sets: SharedInformer
    let pods: SharedInformer
    let podsByOwner: InformerIndex
    let expectations = Expectations()
    let events: EventRecorder
    let logger: Logger
    static let manager = "statefulset-controller"

    init(client: KubeClient, informers: InformerFactory, podsByOwner: InformerIndex, events: EventRecorder, queue: WorkQueue, logger: Logger) {
        self.client = client; self.podsByOwner = podsByOwner; self.events = events; self.logger = logger
        sets = informers.informer(R.statefulSets)
        pods = informers.informer(R.pods)
        sets.enqueueKeys(into: queue)
        let routing = OwnedPodEvents(ownerKind: "StatefulSet", expectations: expectations, queue: queue)
        pods.addHandler { ev in routing.handle(ev) }
    }

    static func ordinal(_ pod: JSON, set: String) -> Int? {
        let n = pod.name
        guard n.hasPrefix(set + "-") else { return nil }
        return Int(n.dropFirst(set.count + 1))
    }

    func reconcile(_ key: String) async throws -> ReconcileResult {
        guard let sts = sets.cache.get(key) else { expectations.forget(key); return .done }
        let revision = "\(sts.name)-\(templateHash(sts["spec"]["template"]))"
        var byOrdinal: [Int: JSON] = [:]
        for p in podsByOwner.objects(sts.uid, in: pods.cache) { if let o = Self.ordinal(p, set: sts.name) { byOrdinal[o] = p } }
        let replicas = Int(sts["spec"]["replicas"].intValue ?? 1)
        let parallel = sts["spec"]["podManagementPolicy"].stringValue == "Parallel"
        let now = KubeTime.now()
        let minReady = sts["spec"]["minReadySeconds"].intValue ?? 0

        if !sts.isDeleting && expectations.satisfied(key) {
            try await step(sts, key: key, pods: byOrdinal, replicas: replicas, parallel: parallel, revision: revision)
        }

        let active = byOrdinal.values.filter(PodUtil.isActive)
        let updatedCount = active.filter { $0.labels["controller-revision-hash"] == revision }.count
        var status = sts["status"]
        status["observedGeneration"] = sts["metadata"]["generation"]
        status["replicas"] = .int(Int64(active.count))
        status["readyReplicas"] = .int(Int64(active.filter(PodUtil.isReady).count))
        status["availableReplicas"] = .int(Int64(active.filter { PodUtil.isAvailable($0, minReadySeconds: minReady, now: now) }.count))
        status["updatedReplicas"] = .int(Int64(updatedCount))
        status["updateRevision"] = .string(revision)
        if status["currentRevision"].isNull || (updatedCount == replicas && active.count == replicas) {
            status["currentRevision"] = .string(revision)
        }
        let current = status["currentRevision"].stringValue
        status["currentReplicas"] = .int(Int64(active.filter { $0.labels["controller-revision-hash"] == current }.count))
        status["collisionCount"] = 0
        if status != sts["status"] {
            var u = sts
            u["status"] = status
            _ = try await client.update(R.statefulSets, namespace: sts.namespace, u, subresource: "status", fieldManager: Self.manager)
        }
        return .done
    }

    /// One ordered step: replace failed pods, create missing ones, remove surplus, roll one outdated pod.
    func step(_ sts: JSON, key: String, pods: [Int: JSON], replicas: Int, parallel: Bool, revision: String) async throws {
        // Failed pods are recreated.
        for (_, p) in pods where PodUtil.phase(p) == "Failed" && !p.isDeleting {
            expectations.expect(key, deletes: 1)
            try await delete(sts, p, key: key)
            return
        }
        var creations: [Int] = []
        for i in 0..<replicas {
            if let p = pods[i] {
                if p.isDeleting { if parallel { continue } else { break } }
                if !parallel && !PodUtil.isReady(p) { break }
                continue
            }
            creations.append(i)
            if !parallel { break }
        }
        if !creations.isEmpty {
            expectations.expect(key, adds: creations.count)
            for i in creations { try await create(sts, ordinal: i, revision: revision, key: key) }
            return
        }
        let surplus = pods.keys.filter { $0 >= replicas }.sorted(by: >)
        if !surplus.isEmpty {
            // Ordered scale-down waits for the rest to be ready and for earlier removals to finish.
            if !parallel && (pods.values.contains { $0.isDeleting } || (0..<replicas).contains { !(pods[$0].map(PodUtil.isReady) ?? false) }) { return }
            let victims = parallel ? surplus.compactMap { pods[$0] }.filter { !$0.isDeleting } : [pods[surplus[0]]!].filter { !$0.isDeleting }
            expectations.expect(key, deletes: victims.count)
            for v in victims { try await delete(sts, v, key: key) }
            return
        }
        // Rolling update, highest ordinal first, one at a time, all others ready.
        guard sts["spec"]["updateStrategy"]["type"].stringValue != "OnDelete" else { return }
        let partition = Int(sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"].intValue ?? 0)
        guard (0..<replicas).allSatisfy({ pods[$0].map { PodUtil.isReady($0) && !$0.isDeleting } ?? false }) else { return }
        if let i = (partition..<max(partition, replicas)).reversed().first(where: { pods[$0]?.labels["controller-revision-hash"] != revision }),
           let p = pods[i]
        {
            expectations.expect(key, deletes: 1)
            try await delete(sts, p, key: key)
        }
    }

    func create(_ sts: JSON, ordinal i: Int, revision: String, key: String) async throws {
        let podName = "\(sts.name)-\(i)"
        var pod = PodUtil.fromTemplate(sts["spec"]["template"], owner: sts, name: podName, extraLabels: [
            "controller-revision-hash": revision, "statefulset.kubernetes.io/pod-name": podName, "apps.kubernetes.io/pod-index": String(i),
        ])
        pod["spec"]["hostname"] = .string(podName)
        if let svc = sts["spec"]["serviceName"].stringValue, !svc.isEmpty { pod["spec"]["subdomain"] = .string(svc) }
        var volumes = pod["spec"]["volumes"].arrayValue ?? []
        for t in sts["spec"]["volumeClaimTemplates"].arrayValue ?? [] {
            let claim = "\(t.name)-\(podName)"
            var pvc: JSON = ["apiVersion": "v1", "kind": "PersistentVolumeClaim",
                             "metadata": ["name": .string(claim), "namespace": .string(sts.namespace), "labels": t["metadata"]["labels"]],
                             "spec": t["spec"]]
            if pvc["metadata"]["labels"].isNull { pvc["metadata"]["labels"] = .null }
            do { _ = try await client.create(R.pvcs, namespace: sts.namespace, pvc, fieldManager: Self.manager) } catch let e as StatusError where e.code == 409 {}
            volumes.removeAll { $0.name == t.name }
            volumes.append(["name": .string(t.name), "persistentVolumeClaim": ["claimName": .string(claim)]])
        }
        if !volumes.isEmpty { pod["spec"]["volumes"] = .array(volumes) }
        do {
            _ = try await client.create(R.pods, namespace: sts.namespace, pod, fieldManager: Self.manager)
            events.record(sts, .normal, reason: "SuccessfulCreate", message: "create Pod \(podName) in StatefulSet \(sts.name) successful")
        } catch {
            expectations.lowered(key, adds: 1)
            if (error as? StatusError)?.code == 409 { return }
            events.record(sts, .warning, reason: "FailedCreate", message: "create Pod \(podName) in StatefulSet \(sts.name) failed error: \(error)")
            throw error
        }
    }

    func delete(_ sts: JSON, _ pod: JSON, key: String) async throws {
        do {
            try await client.delete(R.pods, namespace: pod.namespace, name: pod.name)
            events.record(sts, .normal, reason: "SuccessfulDelete", message: "delete Pod \(pod.name) in StatefulSet \(sts.name) successful")
        } catch let e as StatusError where e.code == 404 {
            expectations.lowered(key, deletes: 1)
        }
    }
}
