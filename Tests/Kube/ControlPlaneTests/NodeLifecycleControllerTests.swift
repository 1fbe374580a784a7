import ControllerRuntime
import KubeAPI
import Synchronization
import Testing
import TestSupport
@testable import ControlPlane

/// Node health against the in-memory API, with a short grace period: a node whose Lease and
/// Ready heartbeat stop changing becomes Ready=Unknown and is tainted unreachable; a cloud
/// node's pods are then evicted, an edge node's are not (unless `evictEdgePods`).
/// The fake adds no default tolerations (kube-apiserver would add 300 s ones), so eviction of an
/// intolerant pod is immediate.
@Suite struct NodeLifecycleControllerTests {
    typealias T = TestResources

    static func options(evictEdgePods: Bool = false) -> NodeLifecycleOptions {
        var o = NodeLifecycleOptions()
        o.monitorPeriod = .milliseconds(100)
        o.gracePeriod = .milliseconds(600)
        o.evictEdgePods = evictEdgePods
        return o
    }

    func node(_ h: ControllerHarness, _ name: String) -> JSON? { h.client.object(T.nodes, name: name) }
    func pod(_ h: ControllerHarness, _ name: String) -> JSON? { h.client.object(T.pods, namespace: "default", name: name) }
    func ready(_ n: JSON?) -> String? {
        n?["status"]["conditions"].arrayValue?.first { $0["type"] == "Ready" }?["status"].stringValue
    }
    func taints(_ n: JSON?) -> Set<String> {
        Set((n?["spec"]["taints"].arrayValue ?? []).compactMap { t in t["key"].stringValue.map { "\($0):\(t["effect"].stringValue ?? "")" } })
    }

    /// Nodes whose Lease a simulated kubelet renews.
    let renewed = Renewed()

    /// Runs the controller (loop and monitor) over nodes `edge` (edge-labelled), `silent` (a cloud
    /// node that stops reporting) and `alive` (renewed by a simulated kubelet), one pod on each.
    func withNodes(_ options: NodeLifecycleOptions, _ body: (ControllerHarness) async throws -> Void) async throws {
        let h = ControllerHarness()
        h.client.seed(T.nodes, Fixtures.edgeNode("edge"))
        h.client.seed(T.nodes, Fixtures.node("silent"))
        h.client.seed(T.nodes, Fixtures.node("alive"))
        for n in ["edge", "silent", "alive"] {
            h.client.seed(T.leases, Fixtures.lease(node: n))
            h.client.seed(T.pods, Fixtures.pod("pod-on-\(n)", nodeName: n, phase: "Running", ready: true))
        }
        let queue = WorkQueue()
        let controller = NodeLifecycleController(client: h.client, informers: h.informers, events: h.events, queue: queue,
                                                 options: options, logger: h.logger)
        let loop = ControllerLoop(reconciler: controller, queue: queue, workers: 2, logger: h.logger)
        let client = h.client
        let renewed = self.renewed
        // The kubelets of the nodes in `renewed`: renew their Leases every 100 ms.
        let kubelet: @Sendable () async -> Void = {
            while !Task.isCancelled {
                for n in renewed.names.withLock({ $0 }) {
                    _ = try? await client.patch(T.leases, namespace: "kube-node-lease", name: n,
                                                ["spec": ["renewTime": .string(KubeTime.now().rfc3339Micro)]])
                }
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        try await h.run([loop], background: [{ await controller.runMonitor() }, kubelet]) { try await body(h) }
    }

    @Test func silentNodesBecomeUnknownAndTaintedButEdgePodsStay() async throws {
        try await withNodes(Self.options()) { h in
            try await eventually(timeout: .seconds(10), "edge and silent nodes Ready=Unknown") {
                ready(node(h, "edge")) == "Unknown" && ready(node(h, "silent")) == "Unknown"
            }
            let expected: Set = ["node.kubernetes.io/unreachable:NoSchedule", "node.kubernetes.io/unreachable:NoExecute"]
            try await eventually("unreachable taints on both") { taints(node(h, "edge")) == expected && taints(node(h, "silent")) == expected }
            #expect(node(h, "edge")?["status"]["conditions"].arrayValue?.first { $0["type"] == "Ready" }?["reason"] == "NodeStatusUnknown")
            // The cloud node's pod is marked not ready and evicted (graceful: it is bound to a node).
            try await eventually("pod on silent evicted") { pod(h, "pod-on-silent")?["metadata"]["deletionTimestamp"].isNull == false }
            #expect(pod(h, "pod-on-silent")?["status"]["conditions"].arrayValue?.first { $0["type"] == "Ready" }?["status"] == "False")
            // The edge node's pod keeps running and stays Ready; the renewed node stays healthy.
            try await consistently(for: .seconds(1), "edge pod untouched, alive node healthy") {
                let p = pod(h, "pod-on-edge")
                return p?["metadata"]["deletionTimestamp"].isNull == true
                    && p?["status"]["conditions"].arrayValue?.first { $0["type"] == "Ready" }?["status"] == "True"
                    && ready(node(h, "alive")) == "True" && taints(node(h, "alive")).isEmpty
                    && pod(h, "pod-on-alive")?["metadata"]["deletionTimestamp"].isNull == true
            }
            #expect(!h.client.calls("delete", T.pods).contains { $0.name == "pod-on-edge" })
        }
    }

    @Test func edgePodsAreEvictedWhenConfigured() async throws {
        try await withNodes(Self.options(evictEdgePods: true)) { h in
            try await eventually(timeout: .seconds(10), "pod on edge evicted") {
                pod(h, "pod-on-edge")?["metadata"]["deletionTimestamp"].isNull == false
            }
            #expect(taints(node(h, "edge")).contains("node.kubernetes.io/unreachable:NoExecute"))
            #expect(pod(h, "pod-on-alive")?["metadata"]["deletionTimestamp"].isNull == true)
        }
    }

    @Test func aNodeThatReportsAgainLosesTheTaints() async throws {
        try await withNodes(Self.options()) { h in
            try await eventually(timeout: .seconds(10), "edge tainted") { taints(node(h, "edge")).contains("node.kubernetes.io/unreachable:NoExecute") }
            // The node reconnects: Ready=True through the status subresource, and its Lease is renewed again.
            renewed.names.withLock { _ = $0.insert("edge") }
            let now = KubeTime.now().rfc3339
            _ = try await h.client.patch(T.nodes, namespace: nil, name: "edge",
                                         ["status": ["conditions": [["type": "Ready", "status": "True", "reason": "EdgeReady",
                                                                     "lastHeartbeatTime": .string(now), "lastTransitionTime": .string(now)]]]],
                                         patchType: .strategicMerge, subresource: "status")
            try await eventually("edge untainted") { taints(node(h, "edge")).isEmpty && ready(node(h, "edge")) == "True" }
        }
    }
}

extension NodeLifecycleControllerTests {
    /// A pod pinned to a box still being installed waits for it (interop finding: it was deleted at once).
    @Test func podsOfANodeThatHasNotJoinedWait() async throws {
        var o = Self.options()
        o.orphanQuarantine = .milliseconds(300)
        try await withNodes(o) { h in
            h.client.seed(T.pods, Fixtures.pod("pinned", nodeName: "not-yet-installed", phase: "Pending", ready: false))
            try await eventually("NodeNotJoined event") {
                h.client.objects(T.events, namespace: "default").contains { $0["reason"] == "NodeNotJoined" && $0["involvedObject"]["name"] == "pinned" }
            }
            try await consistently(for: .seconds(1), "the pinned pod is kept") { pod(h, "pinned") != nil }
            #expect(!h.client.calls("delete", T.pods).contains { $0.name == "pinned" })
            // The node joins: nothing happens to the pod.
            h.client.seed(T.nodes, Fixtures.edgeNode("not-yet-installed"))
            try await consistently(for: .milliseconds(500), "still kept after the join") { pod(h, "pinned") != nil }
        }
    }

    /// A deleted node's pods are removed after the quarantine, not before (kube's pod GC).
    @Test func podsOfADeletedNodeAreRemovedAfterTheQuarantine() async throws {
        var o = Self.options()
        o.orphanQuarantine = .milliseconds(800)
        try await withNodes(o) { h in
            // The controller has seen the nodes once it acted on one.
            try await eventually(timeout: .seconds(10), "controller running") { ready(node(h, "edge")) == "Unknown" }
            let deleted = ContinuousClock.now
            _ = try await h.client.delete(T.nodes, namespace: nil, name: "alive", options: nil)
            try await consistently(for: .milliseconds(500), "kept during the quarantine") { pod(h, "pod-on-alive") != nil }
            try await eventually(timeout: .seconds(10), "removed after it") { pod(h, "pod-on-alive") == nil }
            #expect(ContinuousClock.now - deleted >= .milliseconds(800))
            #expect(pod(h, "pod-on-edge") != nil)
        }
    }

    /// With a timeout, pods of a node that never joins are collected once it passes.
    @Test func unjoinedNodeTimeoutCollects() {
        var m = MissingNodes()
        let t0 = ContinuousClock.now
        #expect(m.decide("x", now: t0, quarantine: .seconds(40), unjoinedTimeout: nil) == .waitForJoin)
        #expect(m.decide("x", now: t0, quarantine: .seconds(40), unjoinedTimeout: .seconds(10)) == .wait(.seconds(10) + .milliseconds(50)))
        #expect(m.decide("x", now: t0 + .seconds(11), quarantine: .seconds(40), unjoinedTimeout: .seconds(10)) == .collect)
        m.deleted("y", at: t0)
        #expect(m.decide("y", now: t0 + .seconds(39), quarantine: .seconds(40), unjoinedTimeout: nil) == .wait(.seconds(1) + .milliseconds(50)))
        #expect(m.decide("y", now: t0 + .seconds(40), quarantine: .seconds(40), unjoinedTimeout: nil) == .collect)
        m.joined("y")
        #expect(m.decide("y", now: t0 + .seconds(50), quarantine: .seconds(40), unjoinedTimeout: nil) == .waitForJoin)
    }
}

/// The nodes whose kubelet is alive.
final class Renewed: Sendable {
    let names = Mutex<Set<String>>(["alive"])
}
