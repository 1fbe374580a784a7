import KubeAPI
import Testing
import TestSupport
@testable import ControlPlane

/// The ReplicaSet controller against the in-memory API: pods created from the template with the
/// controller reference, surplus pods deleted in kube's order, lost pods replaced, no doubles.
@Suite struct ReplicaSetControllerTests {
    typealias T = TestResources

    @Test func scaleUpCreatesOwnedPodsFromTheTemplateOnce() async throws {
        let h = ControllerHarness()
        try await h.run([h.replicaSetLoop()]) {
            let rs = try await h.client.create(T.replicaSets, namespace: "default", Fixtures.replicaSet("web", replicas: 3))
            try await eventually("3 pods owned by web") { h.pods(ownedBy: rs).count == 3 }
            for p in h.pods(ownedBy: rs) {
                #expect(p["metadata"]["name"].stringValue?.hasPrefix("web-") == true)
                #expect(p["metadata"]["labels"] == ["app": "web"])
                #expect(p["spec"]["containers"] == rs["spec"]["template"]["spec"]["containers"])
                let ref = p["metadata"]["ownerReferences"].arrayValue?.first
                #expect(ref?["kind"] == "ReplicaSet" && ref?["name"] == "web" && ref?["blockOwnerDeletion"] == true)
            }
            try await eventually("status.replicas 3") {
                h.client.object(T.replicaSets, namespace: "default", name: "web")?["status"]["replicas"] == 3
            }
            #expect(h.client.object(T.replicaSets, namespace: "default", name: "web")?["status"]["observedGeneration"] == 1)
            // Expectations: later reconciles (status updates, pod events) never create a 4th pod.
            try await consistently("exactly 3 pod creates") { h.client.calls("create", T.pods).count == 3 }
            try await eventually("a SuccessfulCreate event") { !h.events(reason: "SuccessfulCreate", about: "web").isEmpty }
        }
    }

    @Test func scaleDownDeletesUnscheduledThenPendingAndKeepsReadyPods() async throws {
        let h = ControllerHarness()
        try await h.run([h.replicaSetLoop()]) {
            let rs = try await h.client.create(T.replicaSets, namespace: "default", Fixtures.replicaSet("web", replicas: 3))
            try await eventually("3 pods") { h.pods(ownedBy: rs).count == 3 }
            let names = h.pods(ownedBy: rs).compactMap { $0["metadata"]["name"].stringValue }.sorted()
            let (readyName, pendingName, unscheduledName) = (names[0], names[1], names[2])
            // One pod bound and Running+Ready, one bound but Pending, one never scheduled.
            for n in [readyName, pendingName] {
                _ = try await h.client.post(T.pods, namespace: "default", name: n, subresource: "binding", ["target": ["name": "node-1"]])
            }
            _ = try await h.client.patch(T.pods, namespace: "default", name: readyName,
                                         ["status": ["phase": "Running", "conditions": [["type": "Ready", "status": "True"]]]],
                                         patchType: .strategicMerge, subresource: "status")
            try await eventually("status.readyReplicas 1") {
                h.client.object(T.replicaSets, namespace: "default", name: "web")?["status"]["readyReplicas"] == 1
            }
            _ = try await h.client.patch(T.replicaSets, namespace: "default", name: "web", ["spec": ["replicas": 1]])
            // The unscheduled pod goes at once; the bound one is only marked (its node would finish it).
            try await eventually("unscheduled pod deleted, pending pod terminating") {
                h.client.object(T.pods, namespace: "default", name: unscheduledName) == nil
                    && h.client.object(T.pods, namespace: "default", name: pendingName)?["metadata"]["deletionTimestamp"].isNull == false
            }
            #expect(h.client.object(T.pods, namespace: "default", name: readyName)?["metadata"]["deletionTimestamp"].isNull == true)
            try await eventually("status.replicas 1 (terminating pods do not count)") {
                h.client.object(T.replicaSets, namespace: "default", name: "web")?["status"]["replicas"] == 1
            }
            try await consistently("no replacement for the terminating pod") {
                h.client.calls("create", T.pods).count == 3 && h.client.calls("delete", T.pods).count == 2
            }
            #expect(Set(h.client.calls("delete", T.pods).compactMap(\.name)) == [unscheduledName, pendingName])
        }
    }

    @Test func aDeletedPodIsReplaced() async throws {
        let h = ControllerHarness()
        try await h.run([h.replicaSetLoop()]) {
            let rs = try await h.client.create(T.replicaSets, namespace: "default", Fixtures.replicaSet("web", replicas: 2))
            try await eventually("2 pods") { h.pods(ownedBy: rs).count == 2 }
            let victim = h.pods(ownedBy: rs)[0]["metadata"]["name"].stringValue ?? ""
            try await h.client.delete(T.pods, namespace: "default", name: victim)
            try await eventually("a replacement pod") {
                let names = h.pods(ownedBy: rs).compactMap { $0["metadata"]["name"].stringValue }
                return names.count == 2 && !names.contains(victim)
            }
            try await consistently("still 2 pods, 3 creates") { h.pods(ownedBy: rs).count == 2 && h.client.calls("create", T.pods).count == 3 }
        }
    }

    @Test func podsOfOtherOwnersAreLeftAlone() async throws {
        let h = ControllerHarness()
        try await h.run([h.replicaSetLoop()]) {
            // A matching-label pod without a controller reference is not adopted (this controller
            // does not adopt) and is never deleted.
            h.client.seed(T.pods, Fixtures.pod("stray", labels: ["app": "web"]))
            let rs = try await h.client.create(T.replicaSets, namespace: "default", Fixtures.replicaSet("web", replicas: 1))
            try await eventually("1 owned pod") { h.pods(ownedBy: rs).count == 1 }
            _ = try await h.client.patch(T.replicaSets, namespace: "default", name: "web", ["spec": ["replicas": 0]])
            try await eventually("owned pod deleted") { h.pods(ownedBy: rs).isEmpty }
            #expect(h.client.object(T.pods, namespace: "default", name: "stray") != nil)
        }
    }
}
