import CloudEdgeProtocol
import KubeAPI
import KubeClient
import Logging
import Metrics

/// Applies what an edge node reports about itself (KubeEdge's edgecontroller upstream, for the
/// node): `node` insert registers the Node (created if missing — always labelled
/// `node-role.kubernetes.io/edge` — otherwise its labels and status are merged), `nodestatus`
/// update writes the status subresource (the heartbeat the node lifecycle controller watches).
/// CloudHub has already checked that a node only speaks about itself.
public struct NodeUpstream: Sendable {
    let client: KubeClient
    let logger: Logger
    static let nodes = ResourceType(group: "", version: "v1", resource: "nodes", kind: "Node", namespaced: false)
    let applied = Counter(label: "swiftedge_edgecontroller_upstream_applied_total")
    let failed = Counter(label: "swiftedge_edgecontroller_upstream_failed_total")

    /// Called when a node asks for everything again (its store is new or was recovered empty).
    let fullSync: @Sendable (String) async -> Void

    public init(client: KubeClient, logger: Logger, fullSync: @escaping @Sendable (String) async -> Void) {
        self.client = client; self.logger = logger; self.fullSync = fullSync
    }

    /// Handles one upstream message; unknown kinds are logged and ignored (nothing is lost: the
    /// node resends its state periodically).
    public func handle(node: String, _ m: Message) async {
        guard m.route.group == "resource", let ref = try? ResourceRef(parsing: m.route.resource) else { return }
        do {
            switch (ref.type, m.route.operation) {
            case ("node", .insert), ("node", .update):
                try await register(node: node, m.content)
            case ("nodestatus", .update), ("nodestatus", .patch):
                try await writeStatus(node: node, m.content["status"])
            case ("objectsync", .query) where ref.name == node:
                await fullSync(node)
            default:
                logger.debug("upstream message not handled", metadata: ["node": "\(node)", "resource": "\(m.route.resource)",
                                                                          "operation": "\(m.route.operation.rawValue)"])
                return
            }
            applied.increment()
        } catch {
            failed.increment()
            logger.warning("upstream message failed", metadata: ["node": "\(node)", "resource": "\(m.route.resource)", "error": "\(error)"])
        }
    }

    func register(node: String, _ reported: JSON) async throws {
        var labels = reported["metadata"]["labels"].objectValue ?? [:]
        labels["node-role.kubernetes.io/edge"] = ""
        var object: JSON = ["apiVersion": "v1", "kind": "Node",
                            "metadata": ["name": .string(node), "labels": .object(labels)],
                            "spec": reported["spec"].isNull ? [:] : reported["spec"]]
        do {
            object["status"] = reported["status"]
            _ = try await client.create(Self.nodes, namespace: nil, object, fieldManager: "swiftedge-edgecontroller")
            logger.info("edge node registered", metadata: ["node": "\(node)"])
            // The create may drop status (as kube-apiserver does): write it explicitly.
            try await writeStatus(node: node, reported["status"])
        } catch let e as StatusError where e.code == 409 {
            _ = try await client.patch(Self.nodes, namespace: nil, name: node, ["metadata": ["labels": .object(labels)]],
                                       fieldManager: "swiftedge-edgecontroller")
            try await writeStatus(node: node, reported["status"])
        }
    }

    func writeStatus(node: String, _ status: JSON) async throws {
        guard !status.isNull else { return }
        _ = try await client.patch(Self.nodes, namespace: nil, name: node, ["status": status], subresource: "status",
                                   fieldManager: "swiftedge-edgecontroller")
    }
}
