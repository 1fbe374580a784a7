import CloudEdgeProtocol
import CloudHub
import Foundation
import KubeAPI

/// How the cloud reaches the controller service of a CSI plugin: through the node it runs on
/// (the seam the provisioner and attacher are tested against).
public protocol CSIControllerChannel: Sendable {
    /// Makes the call on `node` and returns the CSI response (JSON, field names either way).
    func call(node: String, _ call: CSIControllerCall, timeout: Duration) async throws(CSICallError) -> JSON
}

/// ``CSIControllerChannel`` over CloudHub: the call travels as KubeEdge's csidriver sends it and
/// waits for the node's `response` or `error`.
public struct CloudHubCSIChannel: CSIControllerChannel {
    let hub: @Sendable () async -> CloudHub
    public init(hub: @escaping @Sendable () async -> CloudHub) { self.hub = hub }

    public func call(node: String, _ call: CSIControllerCall, timeout: Duration) async throws(CSICallError) -> JSON {
        guard let reply = await hub().request(call.message(), to: node, timeout: timeout) else {
            throw CSICallError(code: "UNAVAILABLE", message: "node \(node) did not answer the \(call.operation) call within \(timeout) (not connected?)")
        }
        return try Self.body(of: reply)
    }

    /// The CSI response in a reply: an object (SwiftEdge, edgecore over WebSocket), or a string
    /// holding JSON or base64 of JSON (bytes relayed by Go's encoding/json).
    static func body(of reply: Message) throws(CSICallError) -> JSON {
        if reply.route.operation == .error {
            throw CSICallError(replyText: reply.content.stringValue ?? String(decoding: reply.content.serialized(), as: UTF8.self))
        }
        switch reply.content {
        case .object: return reply.content
        case .null: return [:]
        case .string(let s):
            if let v = try? JSON.parse(Array(s.utf8)), v.isObject { return v }
            if let data = Data(base64Encoded: s), let v = try? JSON.parse(Array(data)), v.isObject { return v }
            throw CSICallError(code: "INTERNAL", message: "the node's answer is not a CSI response: \(s.prefix(200))")
        default:
            throw CSICallError(code: "INTERNAL", message: "the node's answer is not a CSI response")
        }
    }
}
