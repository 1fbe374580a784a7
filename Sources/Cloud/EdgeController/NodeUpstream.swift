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
    static let nodes = ResourceType(group: "", version: "v1", resource: "nodes", kind: "Node", namespaced: false)
    let applied = Counter(label: "swiftedge_edgecontroller_upstream_applied_total")
    let failed = Counter(label: "swiftedge_edgecontroller_upstream_failed_total")

    /// Receives the inventory a node sends when it connects (what its store holds).
    let inventory: @Sendable (_ node: String, _ session: String, _ part: Int, _ parts: Int, [DeliveredRecord]) async -> Void

    /// The node a Device is bound to, from the cloud's cache (nil: no such device).
    let deviceNode: @Sendable (_ namespace: String, _ name: String) -> String?

    /// Writes a node's device status report (the device controller's upstream half).
    let deviceStatuses: @Sendable (_ node: String, _ report: JSON) async throws -> Void

    public init(client: KubeClient, logger: Logger, deviceNode: @escaping @Sendable (String, String) -> String? = { _, _ in nil },
                deviceStatuses: @escaping @Sendable (String, JSON) async throws -> Void = { _, _ in },
                inventory: @escaping @Sendable (String, String, Int, Int, [DeliveredRecord]) async -> Void)
    {
        self.client = client; self.logger = logger; self.inventory = inventory; self.deviceNode = deviceNode
        self.deviceStatuses = deviceStatuses
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
            case ("podstatus", .update), ("podstatus", .patch):
                try await writePodStatus(node: node, namespace: ref.namespace ?? "default", m.content)
            case ("event", .insert), ("event", .update):
                try await recordEvent(node: node, namespace: ref.namespace ?? "default", m.content)
            case ("lease", .insert), ("lease", .update):
                try await renewLease(node: node, m.content)
            case ("pod", .delete):
                try await confirmPodDeletion(node: node, namespace: ref.namespace ?? "default", name: ref.name ?? "", m.content)
            case ("devicestatus", .update):
                try await deviceStatuses(node, m.content)
            case ("objectsync", .query) where ref.name == node:
                try await receiveInventory(node: node, m.content)
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

    func receiveInventory(node: String, _ content: JSON) async throws {
        let part = try InventoryPart(content: content)
        var records: [DeliveredRecord] = []
        for item in part.items {
            guard let ref = try? ResourceRef(parsing: item.key), let name = ref.name else { continue }
            let (apiVersion, kind) = Self.kinds[ref.type] ?? ("v1", ref.type)
            records.append(DeliveredRecord(uid: item.uid, apiVersion: apiVersion, kind: kind, namespace: ref.namespace, name: name,
                                           edgeType: ref.type, resourceVersion: item.resourceVersion))
        }
        await inventory(node, part.session, part.part, part.parts, records)
    }

    /// Edge resource types and their Kubernetes kinds.
    static let kinds: [String: (String, String)] = [
        "pod": ("v1", "Pod"), "node": ("v1", "Node"), "configmap": ("v1", "ConfigMap"), "secret": ("v1", "Secret"),
        "service": ("v1", "Service"), "endpoints": ("v1", "Endpoints"),
        "device": ("devices.kubeedge.io/v1beta1", "Device"), "devicemodel": ("devices.kubeedge.io/v1beta1", "DeviceModel"),
    ]

    static let pods = ResourceType(group: "", version: "v1", resource: "pods", kind: "Pod", namespaced: true)

    /// A pod status from the node's Edged (KubeEdge's `PodStatusRequest` `{UID, Name, Status}`,
    /// one or a list): written to the pod's status subresource if the pod is still the one the
    /// node runs (same UID, bound to this node).
    func writePodStatus(node: String, namespace: String, _ content: JSON) async throws {
        for request in content.arrayValue ?? [content] {
            guard let name = request["Name"].stringValue, let uid = request["UID"].stringValue, !request["Status"].isNull else {
                throw StatusError.badRequest("pod status without UID, Name or Status")
            }
            let pod: JSON
            do { pod = try await client.get(Self.pods, namespace: namespace, name: name) } catch let e as StatusError where e.code == 404 {
                continue
            }
            guard pod["metadata"]["uid"].stringValue == uid, pod["spec"]["nodeName"].stringValue == node else {
                logger.debug("pod status for another pod ignored", metadata: ["node": "\(node)", "pod": "\(namespace)/\(name)"])
                continue
            }
            var patch: JSON = ["status": request["Status"]]
            patch["metadata"] = ["uid": .string(uid)]
            _ = try await client.patch(Self.pods, namespace: namespace, name: name, patch, subresource: "status",
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
        do { pod = try await client.get(Self.pods, namespace: namespace, name: name) } catch let e as StatusError where e.code == 404 { return }
        guard pod["metadata"]["uid"].stringValue == uid, pod["spec"]["nodeName"].stringValue == node else { return }
        do {
            try await client.delete(Self.pods, namespace: namespace, name: name, options: ["gracePeriodSeconds": 0, "preconditions": ["uid": .string(uid)]])
        } catch let e as StatusError where e.code == 404 || e.code == 409 {}
    }

    static let events = ResourceType(group: "", version: "v1", resource: "events", kind: "Event", namespaced: true)
    static let leases = ResourceType(group: "coordination.k8s.io", version: "v1", resource: "leases", kind: "Lease", namespaced: true)

    /// An event the node recorded about one of its pods or itself.
    func recordEvent(node: String, namespace: String, _ event: JSON) async throws {
        let involved = event["involvedObject"]
        switch involved["kind"].stringValue {
        case "Pod":
            guard let name = involved["name"].stringValue else { throw StatusError.badRequest("event without involvedObject.name") }
            let pod: JSON
            do { pod = try await client.get(Self.pods, namespace: namespace, name: name) } catch let e as StatusError where e.code == 404 { return }
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
        do { _ = try await client.create(Self.events, namespace: namespace, e, fieldManager: "swiftedge-edgecontroller") } catch let err as StatusError where err.code == 409 {}
    }

    /// The node's Lease in `kube-node-lease` (kubelet's heartbeat), created on first renewal.
    func renewLease(node: String, _ lease: JSON) async throws {
        let spec: JSON = ["holderIdentity": .string(node), "leaseDurationSeconds": lease["spec"]["leaseDurationSeconds"].isNull ? 40 : lease["spec"]["leaseDurationSeconds"],
                          "renewTime": lease["spec"]["renewTime"].isNull ? .string(KubeTime.now().rfc3339Micro) : lease["spec"]["renewTime"]]
        do {
            _ = try await client.patch(Self.leases, namespace: "kube-node-lease", name: node, ["spec": spec], fieldManager: "swiftedge-edgecontroller")
        } catch let e as StatusError where e.code == 404 {
            let object: JSON = ["apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                "metadata": ["name": .string(node), "namespace": "kube-node-lease"], "spec": spec]
            do { _ = try await client.create(Self.leases, namespace: "kube-node-lease", object, fieldManager: "swiftedge-edgecontroller") }
            catch let e as StatusError where e.code == 409 {}
        }
    }

    func writeStatus(node: String, _ status: JSON) async throws {
        guard !status.isNull else { return }
        _ = try await client.patch(Self.nodes, namespace: nil, name: node, ["status": status], subresource: "status",
                                   fieldManager: "swiftedge-edgecontroller")
    }
}
