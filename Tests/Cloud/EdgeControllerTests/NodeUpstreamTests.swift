import CloudEdgeProtocol
import KubeAPI
import Foundation
import Logging
import Synchronization
import Testing
import TestSupport
@testable import EdgeController

/// What a node's upstream messages do to the API (``NodeUpstream/handle(node:_:)``), against the
/// in-memory API. Messages are built as the edge sends them today.
@Suite struct NodeUpstreamTests {
    typealias T = TestResources

    func upstream(_ c: InMemoryKubeClient) -> NodeUpstream {
        var logger = Logger(label: "nodeupstream-test")
        logger.logLevel = .critical
        return NodeUpstream(client: c, logger: logger, inventory: { _, _, _, _, _ in })
    }

    /// The report a node's message decodes to at CloudHub (what NodeUpstream is handed).
    func message(_ operation: CloudEdgeProtocol.Operation, _ resource: String, _ content: JSON, source: String = "edged") throws -> UpstreamReport {
        try #require(try UpstreamReport(Message(route: Route(source: source, group: "resource", operation: operation, resource: resource), content: content)))
    }

    static let reportedStatus: JSON = [
        "conditions": [["type": "Ready", "status": "True", "reason": "EdgeReady", "lastHeartbeatTime": "2026-01-01T00:00:00Z"]],
        "capacity": ["cpu": "2", "memory": "2Gi", "pods": "110"],
        "nodeInfo": ["kubeletVersion": "v1.31.0-kubeedge"],
    ]

    @Test func registrationCreatesTheNodeLabelledEdgeWithItsStatus() async throws {
        let c = InMemoryKubeClient()
        let u = upstream(c)
        await u.handle(node: "edge-1", try message(.insert, "default/node/edge-1", [
            "metadata": ["name": "edge-1", "labels": ["zone": "a"]], "status": Self.reportedStatus,
        ]))
        let node = try #require(c.object(T.nodes, name: "edge-1"))
        #expect(node["metadata"]["labels"] == ["zone": "a", "node-role.kubernetes.io/edge": ""])
        #expect(node["status"] == Self.reportedStatus)
        #expect(c.calls("create", T.nodes).count == 1)
        #expect(c.calls("patch", T.nodes).map(\.subresource) == ["status"])

        // Registering again (reconnect): labels merged, nothing recreated, uid kept.
        await u.handle(node: "edge-1", try message(.insert, "default/node/edge-1", ["metadata": ["labels": ["zone": "b", "gpu": "yes"]]]))
        let again = try #require(c.object(T.nodes, name: "edge-1"))
        #expect(again["metadata"]["uid"] == node["metadata"]["uid"])
        #expect(again["metadata"]["labels"] == ["zone": "b", "gpu": "yes", "node-role.kubernetes.io/edge": ""])
        #expect(again["status"] == Self.reportedStatus)  // no status reported: left alone
    }

    @Test func nodeStatusPatchesOnlyTheStatus() async throws {
        let c = InMemoryKubeClient()
        var existing = Fixtures.edgeNode("edge-1")
        existing["spec"]["podCIDR"] = "10.0.0.0/24"
        c.seed(T.nodes, existing)
        let u = upstream(c)
        let beat = "2026-06-01T12:00:00Z"
        await u.handle(node: "edge-1", try message(.update, "default/nodestatus/edge-1", [
            "status": ["conditions": [["type": "Ready", "status": "True", "reason": "EdgeReady", "lastHeartbeatTime": .string(beat)]]],
            "spec": ["podCIDR": "ignored"],
        ]))
        let node = try #require(c.object(T.nodes, name: "edge-1"))
        #expect(node["status"]["conditions"].arrayValue?.first?["lastHeartbeatTime"] == .string(beat))
        #expect(node["spec"]["podCIDR"] == "10.0.0.0/24")
        #expect(c.calls.map(\.description) == ["patch nodes/status edge-1"])
    }

    @Test func podStatusIsWrittenOnlyForThePodTheNodeRuns() async throws {
        let c = InMemoryKubeClient()
        let mine = c.seed(T.pods, Fixtures.pod("mine", nodeName: "edge-1"))
        let theirs = c.seed(T.pods, Fixtures.pod("theirs", nodeName: "edge-2"))
        let u = upstream(c)
        let running: JSON = ["phase": "Running", "conditions": [["type": "Ready", "status": "True"]]]
        // edge-1 reporting about a pod of edge-2 (right uid even): ignored.
        await u.handle(node: "edge-1", try message(.update, "default/podstatus/theirs",
                                               ["UID": theirs["metadata"]["uid"], "Name": "theirs", "Status": running]))
        #expect(c.object(T.pods, namespace: "default", name: "theirs")?["status"].isNull == true)
        // Its own pod, but a stale uid (a recreated pod of the same name): ignored.
        await u.handle(node: "edge-1", try message(.update, "default/podstatus/mine", ["UID": "old-uid", "Name": "mine", "Status": running]))
        #expect(c.object(T.pods, namespace: "default", name: "mine")?["status"].isNull == true)
        #expect(c.calls("patch").isEmpty)
        // Its own pod with its uid: written to the status subresource.
        await u.handle(node: "edge-1", try message(.update, "default/podstatus/mine",
                                               ["UID": mine["metadata"]["uid"], "Name": "mine", "Status": running]))
        #expect(c.object(T.pods, namespace: "default", name: "mine")?["status"]["phase"] == "Running")
        #expect(c.calls("patch").map(\.description) == ["patch pods/status default/mine"])
    }

    @Test func podDeletionConfirmationNeedsTheRightUIDAndNode() async throws {
        let c = InMemoryKubeClient()
        c.seed(T.pods, Fixtures.pod("p", nodeName: "edge-1", phase: "Running", ready: true))
        let u = upstream(c)
        // The pod is terminating (graceful deletion marks it; the node finishes it).
        let marked = try await c.delete(T.pods, namespace: "default", name: "p", options: nil)
        #expect(!marked["metadata"]["deletionTimestamp"].isNull)
        let uid = marked["metadata"]["uid"].stringValue ?? ""
        c.resetCalls()

        await u.handle(node: "edge-1", try message(.delete, "default/pod/p", ["preconditions": ["uid": "wrong"]]))
        #expect(c.object(T.pods, namespace: "default", name: "p") != nil)
        await u.handle(node: "edge-2", try message(.delete, "default/pod/p", ["preconditions": ["uid": .string(uid)]]))
        #expect(c.object(T.pods, namespace: "default", name: "p") != nil)
        #expect(c.calls("delete").isEmpty)

        await u.handle(node: "edge-1", try message(.delete, "default/pod/p", ["preconditions": ["uid": .string(uid)]]))
        #expect(c.object(T.pods, namespace: "default", name: "p") == nil)
        #expect(c.calls("delete").map(\.description) == ["delete pods default/p"])
    }

    /// A node forwards requests only for the ServiceAccounts of its own pods, only API paths;
    /// the cloud makes them as that account and hands back the answer.
    @Test func forwardedRequestsOnlyForTheNodesOwnPods() async throws {
        var logger = Logger(label: "nodeupstream-test")
        logger.logLevel = .critical
        let pods: [String: JSON] = ["shop/app": ["metadata": ["name": "app", "namespace": "shop", "uid": "u-app"],
                                                 "spec": ["nodeName": "edge-1", "serviceAccountName": "reader"]]]
        let made = Mutex<[ForwardedAPIRequest]>([])
        let u = NodeUpstream(client: InMemoryKubeClient(), logger: logger, pod: { pods["\($0)/\($1)"] }, forward: { r in
            made.withLock { $0.append(r) }
            return ForwardedAPIRequest.Answer(status: 201, contentType: "application/json", body: Array("{\"kind\":\"ConfigMap\"}".utf8))
        }, inventory: { _, _, _, _, _ in })
        func ask(_ node: String, user: String = "system:serviceaccount:shop:reader", pod: String = "app", uid: String = "u-app",
                 uri: String = "/api/v1/namespaces/shop/configmaps") async throws -> JSON {
            let r = ForwardedAPIRequest(method: "POST", uri: uri, contentType: "application/json", body: Array("{}".utf8), username: user, uid: "",
                                        groups: ["system:serviceaccounts"],
                                        extra: ["authentication.kubernetes.io/pod-name": [pod], "authentication.kubernetes.io/pod-uid": [uid]])
            let content = try JSON.parse(Array(try JSONEncoder().encode(r)))
            let answer = await u.handle(node: node, try message(.query, "null/apirequest/\(pod)", content, source: "metamanager"))
            return try #require(answer).response(to: Message(route: Route(source: "metamanager", group: "resource", operation: .query,
                                                                         resource: "null/apirequest/\(pod)"), content: content)).content
        }
        let ok = try await ask("edge-1")
        #expect(ok["status"] == .int(201) && made.withLock { $0.count } == 1)
        #expect(try await ask("edge-2")["ErrStatus"]["code"] == .int(403))  // not its pod
        #expect(try await ask("edge-1", user: "system:serviceaccount:shop:admin")["ErrStatus"]["code"] == .int(403))  // not the pod's account
        #expect(try await ask("edge-1", uid: "u-other")["ErrStatus"]["code"] == .int(403))  // a pod of the same name, recreated
        #expect(try await ask("edge-1", uri: "/metrics")["ErrStatus"]["code"] == .int(403))
        #expect(made.withLock { $0.count } == 1)
    }
}

@Suite struct CSINodeReportTests {
    @Test func driversBecomeTheCSINodeAndTheNodeIDAnnotationAndNoDriversWriteNothingToTheNode() async throws {
        let c = InMemoryKubeClient()
        c.register(ResourceType.csiNodes)
        _ = c.seed(ResourceType.nodes, Fixtures.edgeNode("edge-1"))
        var logger = Logger(label: "csinode-test")
        logger.logLevel = .critical
        let u = NodeUpstream(client: c, logger: logger, inventory: { _, _, _, _, _ in })
        func report(_ drivers: JSON) throws -> UpstreamReport {
            try #require(try UpstreamReport(Message(route: Route(source: "edged", group: "resource", operation: .update, resource: "null/csinode/edge-1"),
                                                    content: ["metadata": ["name": "edge-1"], "spec": ["drivers": drivers]])))
        }
        // A node without plugins reports on every connect: the CSINode exists, the Node is not written.
        await u.handle(node: "edge-1", try report([]))
        await u.handle(node: "edge-1", try report([]))
        #expect(c.calls("patch", ResourceType.nodes).isEmpty)
        #expect(c.object(ResourceType.csiNodes, name: "edge-1")?["spec"]["drivers"] == [])
        // A driver registers: the annotation and the CSINode's drivers; reported again: no change.
        await u.handle(node: "edge-1", try report([["name": "lp.test", "nodeID": "edge-1", "topologyKeys": ["kubernetes.io/hostname"]]]))
        await u.handle(node: "edge-1", try report([["name": "lp.test", "nodeID": "edge-1", "topologyKeys": ["kubernetes.io/hostname"]]]))
        #expect(c.calls("patch", ResourceType.nodes).count == 1)
        #expect(c.object(ResourceType.nodes, name: "edge-1")?["metadata"]["annotations"][Storage.Keys.csiNodeIDs] == #"{"lp.test":"edge-1"}"#)
        #expect(c.object(ResourceType.csiNodes, name: "edge-1")?["spec"]["drivers"].arrayValue?.first?["name"] == "lp.test")
        // It goes: the annotation goes too.
        await u.handle(node: "edge-1", try report([]))
        #expect(c.object(ResourceType.nodes, name: "edge-1")?["metadata"]["annotations"][Storage.Keys.csiNodeIDs].isNull == true)
    }
}
