import CloudEdgeProtocol
import CloudHub
import Testing

/// Node authorization of upstream messages, without I/O.
@Suite struct AuthorizerTests {
    let authorizer = NodeAuthorizer { ns, name in ["default/mine": "node-a", "default/theirs": "node-b"]["\(ns)/\(name)"] }

    /// The resource of a node's message, as the authorizer sees it (whatever the operation).
    func message(_ op: Operation, _ resource: String) throws -> ResourceRef { try ResourceRef(parsing: resource) }

    @Test func podsOfOtherNodesAreRefused() throws {
        #expect(authorizer.authorize(try message(.update, "default/podstatus/mine"), from: "node-a") == nil)
        #expect(authorizer.authorize(try message(.update, "default/podstatus/theirs"), from: "node-a")?.contains("bound to node-b") == true)
        #expect(authorizer.authorize(try message(.update, "default/nodestatus/node-b"), from: "node-a") != nil)
        #expect(authorizer.authorize(try message(.update, "kube-node-lease/lease/node-a"), from: "node-a") == nil)
        // Any operation on another node's objects is refused, not only the ones a component handles.
        #expect(authorizer.authorize(try message(.delete, "default/node/node-b"), from: "node-a") != nil)
        #expect(authorizer.authorize(try message(.insert, "default/podstatus/theirs"), from: "node-a") != nil)
    }

    /// A late status or deletion confirmation for a pod the cloud already deleted is not a
    /// violation (closing the connection for it made the node reconnect in a loop, resending it).
    @Test func messagesAboutPodsTheCloudNoLongerHasAreAllowed() throws {
        #expect(authorizer.authorize(try message(.delete, "default/pod/gone"), from: "node-a") == nil)
        #expect(authorizer.authorize(try message(.update, "default/podstatus/gone"), from: "node-a") == nil)
    }
}
