import CloudEdgeProtocol
import CloudHub
import Testing

/// Node authorization of upstream messages, without I/O.
@Suite struct AuthorizerTests {
    let authorizer = NodeAuthorizer { ns, name in ["default/mine": "node-a", "default/theirs": "node-b"]["\(ns)/\(name)"] }

    func message(_ op: Operation, _ resource: String) -> Message {
        Message(route: Route(source: "edged", group: "resource", operation: op, resource: resource), content: [:])
    }

    @Test func podsOfOtherNodesAreRefused() {
        #expect(authorizer.authorize(message(.update, "default/podstatus/mine"), from: "node-a") == nil)
        #expect(authorizer.authorize(message(.update, "default/podstatus/theirs"), from: "node-a")?.contains("bound to node-b") == true)
        #expect(authorizer.authorize(message(.update, "default/nodestatus/node-b"), from: "node-a") != nil)
        #expect(authorizer.authorize(message(.update, "kube-node-lease/lease/node-a"), from: "node-a") == nil)
    }

    /// A late status or deletion confirmation for a pod the cloud already deleted is not a
    /// violation (closing the connection for it made the node reconnect in a loop, resending it).
    @Test func messagesAboutPodsTheCloudNoLongerHasAreAllowed() {
        #expect(authorizer.authorize(message(.delete, "default/pod/gone"), from: "node-a") == nil)
        #expect(authorizer.authorize(message(.update, "default/podstatus/gone"), from: "node-a") == nil)
    }
}
