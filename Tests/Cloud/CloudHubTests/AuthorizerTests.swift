import CloudEdgeProtocol
import CloudHub
import Testing

/// Node authorization of upstream messages, without I/O.
@Suite struct AuthorizerTests {
    let authorizer = NodeAuthorizer { ns, name in ["default/mine": "node-a", "default/theirs": "node-b"]["\(ns)/\(name)"] }

    /// The report a node's message decodes to (the authorizer sees only typed reports).
    func message(_ op: Operation, _ resource: String) throws -> UpstreamReport {
        let m = Message(route: Route(source: "edged", group: "resource", operation: op, resource: resource), content: [:])
        return try #require(try UpstreamReport(m))
    }

    @Test func podsOfOtherNodesAreRefused() throws {
        #expect(authorizer.authorize(try message(.update, "default/podstatus/mine"), from: "node-a") == nil)
        #expect(authorizer.authorize(try message(.update, "default/podstatus/theirs"), from: "node-a")?.contains("bound to node-b") == true)
        #expect(authorizer.authorize(try message(.update, "default/nodestatus/node-b"), from: "node-a") != nil)
        #expect(authorizer.authorize(try message(.update, "kube-node-lease/lease/node-a"), from: "node-a") == nil)
    }

    /// A late status or deletion confirmation for a pod the cloud already deleted is not a
    /// violation (closing the connection for it made the node reconnect in a loop, resending it).
    @Test func messagesAboutPodsTheCloudNoLongerHasAreAllowed() throws {
        #expect(authorizer.authorize(try message(.delete, "default/pod/gone"), from: "node-a") == nil)
        #expect(authorizer.authorize(try message(.update, "default/podstatus/gone"), from: "node-a") == nil)
    }
}
