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

    /// The cluster CA (PEM) edgecore asks for (`k8s/ca.crt`), when known.
    let caPEM: String?

    /// A pod from the cloud's cache (nil: unknown), for token requests of the node's pods.
    let pod: @Sendable (_ namespace: String, _ name: String) -> JSON?

    /// How long a node's serving-certificate request may wait for the signer.
    var signingTimeout: Duration = .seconds(30)

    /// Makes a request of an edge pod on the API server as the pod's ServiceAccount (nil: not offered).
    let forward: (@Sendable (ForwardedAPIRequest) async throws -> ForwardedAPIRequest.Answer)?

    public init(client: KubeClient, logger: Logger, deviceNode: @escaping @Sendable (String, String) -> String? = { _, _ in nil },
                deviceStatuses: (@Sendable (String, JSON) async throws -> Void)? = nil,
                mayRead: @escaping @Sendable (String, ResourceRef) -> Bool = { _, _ in false }, caPEM: String? = nil,
                pod: @escaping @Sendable (String, String) -> JSON? = { _, _ in nil },
                forward: (@Sendable (ForwardedAPIRequest) async throws -> ForwardedAPIRequest.Answer)? = nil,
                inventory: @escaping @Sendable (String, String, Int, Int, [DeliveredRecord]) async -> Void)
    {
        self.client = client; self.logger = logger; self.inventory = inventory; self.deviceNode = deviceNode
        self.deviceStatuses = deviceStatuses; self.mayRead = mayRead; self.caPEM = caPEM; self.pod = pod; self.forward = forward
    }

    /// Handles one report of a node (decoded and authorised by CloudHub). Failures are logged and
    /// counted; nothing is lost: the node resends its state periodically. Returns the answer a
    /// request gets (edgecore waits for one: its Node after registering or patching it, its
    /// Lease, the object it queried), or nil for a report nobody answers.
    @discardableResult
    public func handle(node: String, _ report: UpstreamReport) async -> UpstreamAnswer? {
        do {
            var answer: UpstreamAnswer?
            switch report {
            case .nodeRegistration(_, let object):
                answer = .object(try await register(node: node, object))
            case .nodeStatus(_, let content):
                try await writeStatus(node: node, content["status"])
                answer = .ok
            case .nodePatch(_, let content):
                let patch = try Self.patchBody(content)
                answer = .object(try await client.patch(ResourceType.nodes, namespace: nil, name: node, body: patch, patchType: .strategicMerge,
                                                        subresource: "status", fieldManager: Self.manager))
            case .podStatus(let namespace, _, let content):
                try await writePodStatus(node: node, namespace: namespace, content)
                answer = .ok
            case .podPatch(let namespace, let name, let content):
                answer = .object(try await patchPodStatus(node: node, namespace: namespace, name: name ?? "", try Self.patchBody(content)))
            case .event(let namespace, _, let event):
                try await recordEvent(node: node, namespace: namespace, event)
            case .lease(_, let operation, let lease):
                answer = .object(try await self.lease(node: node, operation, lease))
            case .query(let ref, let content):
                answer = try await query(node: node, ref, content)
            case .pod(let namespace, let name, .delete, let content):
                try await confirmPodDeletion(node: node, namespace: namespace, name: name ?? "", content)
                answer = .ok
            case .deviceStatus(let content):
                guard let deviceStatuses else {
                    logger.debug("device status report not handled (no device controller)", metadata: ["node": "\(node)"])
                    return nil
                }
                try await deviceStatuses(node, content)
            case .inventory(let owner, let part) where owner == node:
                await receiveInventory(node: node, part)
            case .csiNode(_, let content):
                answer = .object(try await writeCSINode(node: node, content))
            case .pod, .inventory:
                logger.debug("upstream report not handled", metadata: ["node": "\(node)", "resource": "\(report.resource)"])
                return nil
            }
            applied.increment()
            return answer
        } catch {
            failed.increment()
            logger.warning("upstream report failed", metadata: ["node": "\(node)", "resource": "\(report.resource)", "error": "\(error)"])
            return .failure(error)
        }
    }

    static let manager = "swiftedge-edgecontroller"

    /// The node's CSI drivers, as kubelet's nodeinfomanager records them: the CSINode
    /// (`spec.drivers`, owned by the Node) and the Node's `csi.volume.kubernetes.io/nodeid`
    /// annotation (driver → node id). Only the drivers are taken from the report.
    func writeCSINode(node: String, _ content: JSON) async throws -> JSON {
        let drivers = try JSONValueDecoder().decode([Storage.CSINodeDriver].self, from: content["spec"]["drivers"].isNull ? .array([]) : content["spec"]["drivers"])
        let nodeObject = try await client.get(ResourceType.nodes, namespace: nil, name: node)
        var ids: [String: JSON] = [:]
        for d in drivers { ids[d.name] = .string(d.nodeID) }
        // No drivers: no annotation (a node without CSI plugins is not written to on every connect).
        let annotation: String? = drivers.isEmpty ? nil : String(decoding: JSON.object(ids).serialized(), as: UTF8.self)
        if nodeObject["metadata"]["annotations"][Storage.Keys.csiNodeIDs].stringValue != annotation {
            let patch: JSON = ["metadata": ["annotations": [Storage.Keys.csiNodeIDs: annotation.map { .string($0) } ?? .null]]]
            _ = try await client.patch(ResourceType.nodes, namespace: nil, name: node, patch, fieldManager: Self.manager)
        }
        var object: JSON = ["apiVersion": "storage.k8s.io/v1", "kind": "CSINode",
                            "metadata": ["name": .string(node), "ownerReferences": [[
                                "apiVersion": "v1", "kind": "Node", "name": .string(node), "uid": nodeObject["metadata"]["uid"],
                            ]]],
                            "spec": ["drivers": content["spec"]["drivers"].isNull ? .array([]) : content["spec"]["drivers"]]]
        do {
            var current = try await client.get(ResourceType.csiNodes, namespace: nil, name: node)
            if current["spec"]["drivers"] == object["spec"]["drivers"] { return current }
            current["spec"]["drivers"] = object["spec"]["drivers"]
            object = try await client.update(ResourceType.csiNodes, namespace: nil, current, fieldManager: Self.manager)
        } catch let e as StatusError where e.code == 404 {
            object = try await client.create(ResourceType.csiNodes, namespace: nil, object, fieldManager: Self.manager)
        }
        logger.info("node CSI drivers", metadata: ["node": "\(node)", "drivers": "\(drivers.map(\.name).joined(separator: ","))"])
        return object
    }

    /// A patch as edgecore sends it: the patch document as a JSON string (or an object).
    static func patchBody(_ content: JSON) throws -> JSON {
        if let text = content.stringValue {
            do { return try JSON.parse(Array(text.utf8)) } catch { throw StatusError.badRequest("the patch is not JSON: \(error)") }
        }
        guard content.isObject else { throw StatusError.badRequest("the patch is neither a JSON object nor a JSON string") }
        return content
    }

    /// A pod status patch from edgecore's kubelet: applied if the pod is bound to this node (and
    /// is the one named by the patch's `metadata.uid`, when present).
    func patchPodStatus(node: String, namespace: String, name: String, _ patch: JSON) async throws -> JSON {
        let pod = try await client.get(ResourceType.pods, namespace: namespace, name: name)
        guard pod["spec"]["nodeName"].stringValue == node else {
            throw StatusError(.forbidden, "pod \(namespace)/\(name) is not bound to node \(node)")
        }
        if let uid = patch["metadata"]["uid"].stringValue, uid != pod["metadata"]["uid"].stringValue {
            throw StatusError(.conflict, "pod \(namespace)/\(name) has another UID than the patch names")
        }
        return try await client.patch(ResourceType.pods, namespace: namespace, name: name, body: patch, patchType: .strategicMerge,
                                      subresource: "status", fieldManager: Self.manager)
    }

    /// The node's Lease as edgecore's kubelet (and SwiftEdge's edge) handle it: query (NotFound
    /// until created), insert, update carrying the resourceVersion it was given. An update without
    /// one (an edge of an earlier SwiftEdge) renews the Lease, creating it if needed.
    func lease(node: String, _ operation: Operation, _ lease: JSON) async throws -> JSON {
        var object = ResourceType.leases.withTypeMeta(lease)
        object["metadata"]["name"] = .string(node)
        object["metadata"]["namespace"] = "kube-node-lease"
        switch operation {
        case .query:
            return try await client.get(ResourceType.leases, namespace: "kube-node-lease", name: node)
        case .insert:
            object["metadata"]["resourceVersion"] = .null
            return try await client.create(ResourceType.leases, namespace: "kube-node-lease", object, fieldManager: Self.manager)
        case .update where lease["metadata"]["resourceVersion"].stringValue != nil:
            return try await client.update(ResourceType.leases, namespace: "kube-node-lease", object, subresource: nil, fieldManager: Self.manager)
        default:
            return try await renewLease(node: node, lease)
        }
    }

    /// May this node read this object? ConfigMaps and Secrets its pods use (kube's Node authorizer rule).
    let mayRead: @Sendable (_ node: String, _ ref: ResourceRef) -> Bool

    /// A read the node asked for.
    func query(node: String, _ ref: ResourceRef, _ content: JSON) async throws -> UpstreamAnswer {
        switch ref.kind {
        case .caCertificate:
            guard let caPEM else { throw StatusError(.notFound, "the cluster CA is not known to the cloud") }
            return .bare(.string(caPEM))
        case .node:
            guard ref.name == nil || ref.name == node else { throw StatusError(.forbidden, "node \(node) may not read node \(ref.name ?? "")") }
            return .bare(ResourceType.nodes.withTypeMeta(try await client.get(ResourceType.nodes, namespace: nil, name: node)))
        case .configMap, .secret:
            guard let type = ref.kind.resourceType, let name = ref.name, let ns = ref.namespace else { throw StatusError.badRequest("query without a name") }
            guard mayRead(node, ref) else {
                throw StatusError(.forbidden, "node \(node) may not read \(ref.kind) \(ns)/\(name): no pod of the node uses it")
            }
            return .bare(type.withTypeMeta(try await client.get(type, namespace: ns, name: name)))
        case .serviceAccountToken:
            return .bare(try await serviceAccountToken(node: node, ref, content))
        case .certificateSigningRequest:
            return .bare(try await servingCertificate(node: node, content))
        case .apiRequest:
            return .bare(try await forwardedRequest(node: node, content))
        default:
            throw StatusError.badRequest("\(ref.kind) cannot be queried")
        }
    }

    /// Registers the node: created (labels, annotations, spec, status as reported, labelled
    /// `node-role.kubernetes.io/edge`), or, when it exists, its labels, annotations and status merged.
    /// Returns the Node as stored.
    func register(node: String, _ reported: JSON) async throws -> JSON {
        var labels = reported["metadata"]["labels"].objectValue ?? [:]
        labels["node-role.kubernetes.io/edge"] = ""
        let annotations = reported["metadata"]["annotations"]
        var object: JSON = ["apiVersion": "v1", "kind": "Node",
                            "metadata": ["name": .string(node), "labels": .object(labels), "annotations": annotations],
                            "spec": reported["spec"].isNull ? [:] : reported["spec"]]
        do {
            object["status"] = reported["status"]
            let created = try await client.create(ResourceType.nodes, namespace: nil, object, fieldManager: Self.manager)
            logger.info("edge node registered", metadata: ["node": "\(node)"])
            // The create may drop status (as kube-apiserver does): write it explicitly.
            return try await writeStatus(node: node, reported["status"]) ?? created
        } catch let e as StatusError where e.code == 409 {
            var meta: JSON = ["labels": .object(labels)]
            if !annotations.isNull { meta["annotations"] = annotations }
            let patched = try await client.patch(ResourceType.nodes, namespace: nil, name: node, ["metadata": meta], fieldManager: Self.manager)
            return try await writeStatus(node: node, reported["status"]) ?? patched
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
                                       fieldManager: Self.manager)
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
        do { _ = try await client.create(ResourceType.events, namespace: namespace, e, fieldManager: Self.manager) } catch let err as StatusError where err.code == 409 {}
    }

    /// The node's Lease in `kube-node-lease` (kubelet's heartbeat), created on first renewal.
    @discardableResult
    func renewLease(node: String, _ lease: JSON) async throws -> JSON {
        let spec: JSON = ["holderIdentity": .string(node), "leaseDurationSeconds": lease["spec"]["leaseDurationSeconds"].isNull ? 40 : lease["spec"]["leaseDurationSeconds"],
                          "renewTime": lease["spec"]["renewTime"].isNull ? .string(KubeTime.now().rfc3339Micro) : lease["spec"]["renewTime"]]
        do {
            return try await client.patch(ResourceType.leases, namespace: "kube-node-lease", name: node, ["spec": spec], fieldManager: Self.manager)
        } catch let e as StatusError where e.code == 404 {
            let object: JSON = ["apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                "metadata": ["name": .string(node), "namespace": "kube-node-lease"], "spec": spec]
            do { return try await client.create(ResourceType.leases, namespace: "kube-node-lease", object, fieldManager: Self.manager) }
            catch let e as StatusError where e.code == 409 {
                return try await client.get(ResourceType.leases, namespace: "kube-node-lease", name: node)
            }
        }
    }

    @discardableResult
    func writeStatus(node: String, _ status: JSON) async throws -> JSON? {
        guard !status.isNull else { return nil }
        return try await client.patch(ResourceType.nodes, namespace: nil, name: node, ["status": status], subresource: "status",
                                      fieldManager: Self.manager)
    }
}

/// What the cloud answers an edge request with (KubeEdge's edgecontroller): the object as
/// `{"Object": …, "Err": null}` (registration, patches, lease), a bare object (queries), `"OK"`
/// (status reports, deletions), or the failure: `{"Object": null, "Err": {"ErrStatus": <Status>}}`,
/// or for a query of an object the error itself (`{"ErrStatus": …}`).
public enum UpstreamAnswer: Sendable {
    case object(JSON)
    case bare(JSON)
    case ok
    case failure(any Error)

    /// The `response` message to `request`.
    public func response(to request: Message) -> Message {
        switch self {
        case .object(let o):
            return request.response(content: ObjectResponse.object(o).content, resourceVersion: o["metadata"]["resourceVersion"].stringValue)
        case .bare(let o):
            return request.response(content: o, resourceVersion: o["metadata"]["resourceVersion"].stringValue)
        case .ok:
            return request.response(content: "OK")
        case .failure(let error):
            let status = (error as? StatusError ?? StatusError(.internalError, "\(error)")).status
            // A query of an object gets the error itself; leases and the other requests get it in an ObjectResp.
            let objectQuery = request.route.operation == .query && (try? ResourceRef(parsing: request.route.resource))?.kind != .lease
            return request.response(content: objectQuery ? ["ErrStatus": status] : ObjectResponse.error(status: status).content)
        }
    }
}
