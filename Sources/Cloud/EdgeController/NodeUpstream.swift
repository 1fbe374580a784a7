import CloudEdgeProtocol
import KubeAPI
import KubeClient
import Logging
import Metrics
import ReliableSync

/// Applies what an edge node reports about itself (KubeEdge's edgecontroller upstream, for the
/// node): `node` insert registers the Node (created if missing — always labelled
/// `node-role.kubernetes.io/edge` — otherwise its labels and status are merged), `nodestatus`
/// update writes the status subresource (the heartbeat the node lifecycle controller watches).
/// CloudHub has already checked that a node only speaks about itself.
public struct NodeUpstream: Sendable {
    let client: KubeClient
    let logger: Logger
    let applied = Counter(label: "swiftedge_edgecontroller_upstream_applied_total")
    let failed = Counter(label: "swiftedge_edgecontroller_upstream_failed_total")

    /// Receives the inventory a node sends when it connects (what its store holds).
    let inventory: @Sendable (_ node: String, _ session: String, _ part: Int, _ parts: Int, [DeliveredRecord]) async -> Void

    /// The node a Device is bound to, from the cloud's cache (nil: no such device).
    let deviceNode: @Sendable (_ namespace: String, _ name: String) -> String?

    /// Writes a node's device status report (the device controller's upstream half).
    let deviceStatuses: (@Sendable (_ node: String, _ report: JSON) async throws -> Void)?

    public init(client: KubeClient, logger: Logger, deviceNode: @escaping @Sendable (String, String) -> String? = { _, _ in nil },
                deviceStatuses: (@Sendable (String, JSON) async throws -> Void)? = nil,
                inventory: @escaping @Sendable (String, String, Int, Int, [DeliveredRecord]) async -> Void)
    {
        self.client = client; self.logger = logger; self.inventory = inventory; self.deviceNode = deviceNode
        self.deviceStatuses = deviceStatuses
    }

    /// Handles one report of a node (decoded and authorised by CloudHub). Failures are logged and
    /// counted; nothing is lost: the node resends its state periodically.
    public func handle(node: String, _ report: UpstreamReport) async {
        do {
            switch report {
            case .nodeRegistration(_, let object):
                try await register(node: node, object)
            case .nodeStatus(_, let content):
                try await writeStatus(node: node, content["status"])
            case .podStatus(let namespace, _, let content):
                try await writePodStatus(node: node, namespace: namespace, content)
            case .event(let namespace, _, let event):
                try await recordEvent(node: node, namespace: namespace, event)
            case .lease(_, let lease):
                try await renewLease(node: node, lease)
            case .pod(let namespace, let name, .delete, let content):
                try await confirmPodDeletion(node: node, namespace: namespace, name: name ?? "", content)
            case .deviceStatus(let content):
                guard let deviceStatuses else {
                    logger.debug("device status report not handled (no device controller)", metadata: ["node": "\(node)"])
                    return
                }
                try await deviceStatuses(node, content)
            case .inventory(let owner, let part) where owner == node:
                await receiveInventory(node: node, part)
            case .nodePatch, .podPatch, .pod, .inventory:
                logger.debug("upstream report not handled", metadata: ["node": "\(node)", "resource": "\(report.resource)"])
                return
            }
            applied.increment()
        } catch {
            failed.increment()
            logger.warning("upstream report failed", metadata: ["node": "\(node)", "resource": "\(report.resource)", "error": "\(error)"])
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
            _ = try await client.create(ResourceType.nodes, namespace: nil, object, fieldManager: "swiftedge-edgecontroller")
            logger.info("edge node registered", metadata: ["node": "\(node)"])
            // The create may drop status (as kube-apiserver does): write it explicitly.
            try await writeStatus(node: node, reported["status"])
        } catch let e as StatusError where e.code == 409 {
            _ = try await client.patch(ResourceType.nodes, namespace: nil, name: node, ["metadata": ["labels": .object(labels)]],
                                       fieldManager: "swiftedge-edgecontroller")
            try await writeStatus(node: node, reported["status"])
        }
    }

    func receiveInventory(node: String, _ part: InventoryPart) async {
        let records = part.items.compactMap(DeliveredRecord.init)
        await inventory(node, part.session, part.part, part.parts, records)
    }

    /// A pod status from the node's Edged (KubeEdge's `PodStatusRequest` `{UID, Name, Status}`,
    /// one or a list): written to the pod's status subresource if the pod is still the one the
    /// node runs (same UID, bound to this node).
    func writePodStatus(node: String, namespace: String, _ content: JSON) async throws {
        for request in content.arrayValue ?? [content] {
            guard let name = request["Name"].stringValue, let uid = request["UID"].stringValue, !request["Status"].isNull else {
                throw StatusError.badRequest("pod status without UID, Name or Status")
            }
            let pod: JSON
            do { pod = try await client.get(ResourceType.pods, namespace: namespace, name: name) } catch let e as StatusError where e.code == 404 {
                continue
            }
            guard pod["metadata"]["uid"].stringValue == uid, pod["spec"]["nodeName"].stringValue == node else {
                logger.debug("pod status for another pod ignored", metadata: ["node": "\(node)", "pod": "\(namespace)/\(name)"])
                continue
            }
            var patch: JSON = ["status": request["Status"]]
            patch["metadata"] = ["uid": .string(uid)]
            _ = try await client.patch(ResourceType.pods, namespace: namespace, name: name, patch, subresource: "status",
                                       fieldManager: "swiftedge-edgecontroller")
        }
    }

    /// The node has stopped a terminating pod's containers: the pod is deleted for good (grace
    /// period 0, the UID the node ran as precondition, so a new pod of the same name is safe).
    func confirmPodDeletion(node: String, namespace: String, name: String, _ content: JSON) async throws {
        guard let uid = content["preconditions"]["uid"].stringValue ?? content.stringValue else {
            throw StatusError.badRequest("pod delete without the pod's UID")
        }
        let pod: JSON
        do { pod = try await client.get(ResourceType.pods, namespace: namespace, name: name) } catch let e as StatusError where e.code == 404 { return }
        guard pod["metadata"]["uid"].stringValue == uid, pod["spec"]["nodeName"].stringValue == node else { return }
        do {
            try await client.delete(ResourceType.pods, namespace: namespace, name: name, options: ["gracePeriodSeconds": 0, "preconditions": ["uid": .string(uid)]])
        } catch let e as StatusError where e.code == 404 || e.code == 409 {}
    }


    /// An event the node recorded about one of its pods or itself.
    func recordEvent(node: String, namespace: String, _ event: JSON) async throws {
        let involved = event["involvedObject"]
        switch involved["kind"].stringValue {
        case "Pod":
            guard let name = involved["name"].stringValue else { throw StatusError.badRequest("event without involvedObject.name") }
            let pod: JSON
            do { pod = try await client.get(ResourceType.pods, namespace: namespace, name: name) } catch let e as StatusError where e.code == 404 { return }
            guard pod["spec"]["nodeName"].stringValue == node else { throw StatusError.badRequest("event about a pod not on node \(node)") }
        case "Node":
            guard involved["name"].stringValue == node else { throw StatusError.badRequest("event about another node") }
        case "Device":
            guard let name = involved["name"].stringValue, deviceNode(namespace, name) == node else {
                throw StatusError.badRequest("event about a device not on node \(node)")
            }
        default:
            throw StatusError.badRequest("event about a \(involved["kind"].stringValue ?? "missing kind") is not accepted from a node")
        }
        var e = event
        e["metadata"] = ["name": event["metadata"]["name"], "namespace": .string(namespace)]
        do { _ = try await client.create(ResourceType.events, namespace: namespace, e, fieldManager: "swiftedge-edgecontroller") } catch let err as StatusError where err.code == 409 {}
    }

    /// The node's Lease in `kube-node-lease` (kubelet's heartbeat), created on first renewal.
    func renewLease(node: String, _ lease: JSON) async throws {
        let spec: JSON = ["holderIdentity": .string(node), "leaseDurationSeconds": lease["spec"]["leaseDurationSeconds"].isNull ? 40 : lease["spec"]["leaseDurationSeconds"],
                          "renewTime": lease["spec"]["renewTime"].isNull ? .string(KubeTime.now().rfc3339Micro) : lease["spec"]["renewTime"]]
        do {
            _ = try await client.patch(ResourceType.leases, namespace: "kube-node-lease", name: node, ["spec": spec], fieldManager: "swiftedge-edgecontroller")
        } catch let e as StatusError where e.code == 404 {
            let object: JSON = ["apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                "metadata": ["name": .string(node), "namespace": "kube-node-lease"], "spec": spec]
            do { _ = try await client.create(ResourceType.leases, namespace: "kube-node-lease", object, fieldManager: "swiftedge-edgecontroller") }
            catch let e as StatusError where e.code == 409 {}
        }
    }

    func writeStatus(node: String, _ status: JSON) async throws {
        guard !status.isNull else { return }
        _ = try await client.patch(ResourceType.nodes, namespace: nil, name: node, ["status": status], subresource: "status",
                                   fieldManager: "swiftedge-edgecontroller")
    }
}
