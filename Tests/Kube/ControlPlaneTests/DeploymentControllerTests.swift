import KubeAPI
import Testing
import TestSupport
@testable import ControlPlane

/// The Deployment controller alone (no ReplicaSet controller, so ReplicaSet status is only what
/// the test writes): one ReplicaSet per template named by its pod-template-hash, and a rolling
/// update that moves one step per availability change within maxSurge/maxUnavailable.
@Suite struct DeploymentControllerTests {
    typealias T = TestResources

    func rs(_ h: ControllerHarness, _ name: String) -> JSON? { h.client.object(T.replicaSets, namespace: "default", name: name) }
    func replicas(_ o: JSON?) -> Int64 { o?["spec"]["replicas"].intValue ?? -1 }

    /// What a ReplicaSet controller and ready pods would report: all `spec.replicas` available.
    func markAvailable(_ h: ControllerHarness, _ name: String) async throws {
        guard var o = rs(h, name) else { Issue.record("no replicaset \(name)"); return }
        let n = o["spec"]["replicas"]
        o["status"] = ["replicas": n, "readyReplicas": n, "availableReplicas": n, "fullyLabeledReplicas": n,
                       "observedGeneration": o["metadata"]["generation"]]
        _ = try await h.client.update(T.replicaSets, namespace: "default", o, subresource: "status")
    }

    @Test func createsAReplicaSetNamedByThePodTemplateHash() async throws {
        let h = ControllerHarness()
        try await h.run([h.deploymentLoop()]) {
            let d = try await h.client.create(T.deployments, namespace: "default", Fixtures.deployment("web", replicas: 2))
            let hash = templateHash(d["spec"]["template"])
            let created = try await eventuallyValue("replicaset web-\(hash)") { rs(h, "web-\(hash)") }
            #expect(created["metadata"]["labels"]["pod-template-hash"] == .string(hash))
            #expect(created["spec"]["selector"]["matchLabels"] == ["app": "web", "pod-template-hash": .string(hash)])
            #expect(created["spec"]["template"]["metadata"]["labels"] == ["app": "web", "pod-template-hash": .string(hash)])
            #expect(created["spec"]["template"]["spec"] == d["spec"]["template"]["spec"])
            #expect(replicas(created) == 2)
            #expect(created["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1")
            #expect(created["metadata"]["ownerReferences"].arrayValue?.first?["uid"] == d["metadata"]["uid"])
            try await eventually("deployment revision annotation") {
                h.client.object(T.deployments, namespace: "default", name: "web")?["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
            }
            try await eventually("deployment status observedGeneration 1") {
                h.client.object(T.deployments, namespace: "default", name: "web")?["status"]["observedGeneration"] == 1
            }
            try await consistently("one replicaset") { h.replicaSets(ownedBy: d).count == 1 }
        }
    }

    @Test func aTemplateChangeRollsOverWithinSurgeAndUnavailability() async throws {
        let h = ControllerHarness()
        try await h.run([h.deploymentLoop()]) {
            let d = try await h.client.create(T.deployments, namespace: "default",
                                              Fixtures.deployment("web", replicas: 4, maxSurge: 1, maxUnavailable: 1))
            let oldName = "web-\(templateHash(d["spec"]["template"]))"
            _ = try await eventuallyValue("first replicaset") { rs(h, oldName) }
            try await eventually("first replicaset at 4") { replicas(rs(h, oldName)) == 4 }
            try await markAvailable(h, oldName)

            let beforeChange = h.client.resourceVersion
            let changed = try await h.client.patch(T.deployments, namespace: "default", name: "web",
                                                   ["spec": ["template": ["spec": ["containers": [Fixtures.container(image: "nginx:1.28")]]]]])
            #expect(changed["metadata"]["generation"] == 2)
            let newName = "web-\(templateHash(changed["spec"]["template"]))"
            #expect(newName != oldName)
            // Where it settles until what was added becomes available (4 replicas, maxSurge 1,
            // maxUnavailable 1: never more than 5 pods asked for, never fewer than 3 available):
            // new 2 / old 3 (surge, then one old pod given up), then — both available — the old
            // scaled down to 1 and the new up to 4, then the last old pod goes.
            for (step, (new, old)) in [(2, 3), (4, 1), (4, 0)].enumerated() {
                try await eventually("step \(step + 1): new \(new), old \(old) (now \(replicas(rs(h, newName))), \(replicas(rs(h, oldName))))") {
                    replicas(rs(h, newName)) == Int64(new) && replicas(rs(h, oldName)) == Int64(old)
                }
                // Nothing moves further until what was added becomes available.
                try await consistently("step \(step + 1) holds") {
                    replicas(rs(h, newName)) == Int64(new) && replicas(rs(h, oldName)) == Int64(old)
                }
                try await markAvailable(h, newName)
                try await markAvailable(h, oldName)
            }
            #expect(rs(h, newName)?["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2")
            try await eventually("deployment at revision 2, 4 updated and available") {
                let dep = h.client.object(T.deployments, namespace: "default", name: "web")
                return dep?["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
                    && dep?["status"]["updatedReplicas"] == 4 && dep?["status"]["availableReplicas"] == 4
                    && dep?["status"]["observedGeneration"] == 2
            }
            #expect(h.replicaSets(ownedBy: d).count == 2)
            // Every intermediate state, replayed from the watch history: never more than
            // replicas + maxSurge = 5 pods asked for.
            let last = [rs(h, newName), rs(h, oldName)].compactMap { $0?["metadata"]["resourceVersion"].stringValue.flatMap { Int64($0) } }.max() ?? 0
            var specs: [String: Int64] = [oldName: 4]
            var maxTotal: Int64 = 0
            for try await ev in try await h.client.watch(T.replicaSets, namespace: "default", resourceVersion: beforeChange) {
                if let name = ev.object["metadata"]["name"].stringValue { specs[name] = ev.object["spec"]["replicas"].intValue ?? 0 }
                maxTotal = max(maxTotal, specs.values.reduce(0, +))
                if (ev.object["metadata"]["resourceVersion"].stringValue.flatMap { Int64($0) } ?? 0) >= last { break }
            }
            #expect(maxTotal == 5)
        }
    }
}
