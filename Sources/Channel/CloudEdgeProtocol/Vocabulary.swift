import Foundation
import KubeAPI

/// The kinds of resource that travel between cloud and edge: the `<type>` of KubeEdge's
/// `<namespace>/<type>/<name>` resource strings. This is the one list: every component switches
/// over it, so adding a kind is one case here (with its Kubernetes type) plus the code that acts
/// on it, and the compiler points at every switch that must decide what to do with it.
public enum EdgeResourceKind: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    // Objects the cloud syncs to nodes; a node stores them (MetaManager) and acknowledges each.
    case pod, node, configMap = "configmap", secret, service, endpoints
    case device, deviceModel = "devicemodel"
    /// RBAC objects that grant the ServiceAccounts of the node's pods anything: MetaServer
    /// authorizes in-cluster clients with them while offline.
    case role, roleBinding = "rolebinding", clusterRole = "clusterrole", clusterRoleBinding = "clusterrolebinding"
    /// The claims the node's pods mount, the volumes they are bound to, and the node's
    /// VolumeAttachments (KubeEdge's `persistentvolumeclaim`, `persistentvolume`, `volumeattachment`).
    case persistentVolumeClaim = "persistentvolumeclaim", persistentVolume = "persistentvolume", volumeAttachment = "volumeattachment"
    /// The cluster's CSIDrivers (sent to every node: whether a driver's volumes wait for their
    /// VolumeAttachment).
    case csiDriver = "csidriver"
    /// The node's CSINode (the CSI drivers registered on it), reported up.
    case csiNode = "csinode"
    /// A CSI controller call the cloud's CSI driver makes through the node (`default/volume/<id>`
    /// with operation `createvolume`, `deletevolume`, `controllerpublishvolume` or
    /// `controllerunpublishvolume`; see ``CSIControllerCall``).
    case volume
    // Reports a node sends up.
    case podStatus = "podstatus", podPatch = "podpatch", nodeStatus = "nodestatus", nodePatch = "nodepatch"
    case lease, event, deviceStatus = "devicestatus"
    /// The node's inventory (`null/objectsync/<node>` query; see ``InventoryPart``).
    case objectSync = "objectsync"
    /// Requests edgecore makes: a ServiceAccount token (`<ns>/serviceaccounttoken/<sa>` query
    /// with a TokenRequest) and the cluster CA (`k8s/ca.crt` query).
    case serviceAccountToken = "serviceaccounttoken", caCertificate = "ca.crt"
    /// A serving certificate for the node's MetaServer (`null/certificatesigningrequest/<name>`
    /// query carrying a CertificateSigningRequest; answered with it signed).
    case certificateSigningRequest = "certificatesigningrequest"
    /// A request of an edge pod that MetaServer cannot answer from the node's store (writes, kinds
    /// it does not hold), carried to the cloud as ``ForwardedAPIRequest`` (`null/apirequest/<pod>` query).
    case apiRequest = "apirequest"

    /// The name on the wire (`configmap`, `podstatus`, …).
    public var wireName: String { rawValue }
    public var description: String { rawValue }

    /// Reads a wire name; a kind outside the vocabulary is refused.
    public init(wireName: String) throws(ProtocolError) {
        guard let kind = EdgeResourceKind(rawValue: wireName) else {
            throw ProtocolError("unknown resource type \"\(wireName)\"", reason: .unknownKind)
        }
        self = kind
    }

    /// The Kubernetes resource of an object of this kind (nil for reports and bookkeeping).
    public var resourceType: ResourceType? {
        switch self {
        case .pod: .pods
        case .node: .nodes
        case .configMap: .configMaps
        case .secret: .secrets
        case .service: .services
        case .endpoints: .endpoints
        case .device: .devices
        case .deviceModel: .deviceModels
        case .lease: .leases
        case .event: .events
        case .deviceStatus: .deviceStatuses
        case .role: .roles
        case .roleBinding: .roleBindings
        case .clusterRole: .clusterRoles
        case .clusterRoleBinding: .clusterRoleBindings
        case .certificateSigningRequest: .certificateSigningRequests
        case .persistentVolumeClaim: .persistentVolumeClaims
        case .persistentVolume: .persistentVolumes
        case .volumeAttachment: .volumeAttachments
        case .csiNode: .csiNodes
        case .csiDriver: .csiDrivers
        case .volume, .podStatus, .podPatch, .nodeStatus, .nodePatch, .objectSync, .serviceAccountToken, .caCertificate, .apiRequest: nil
        }
    }

    /// Objects of this kind are synced to nodes and stored there.
    public var isSynced: Bool {
        switch self {
        case .pod, .node, .configMap, .secret, .service, .endpoints, .device, .deviceModel, .role, .roleBinding, .clusterRole,
             .clusterRoleBinding, .persistentVolumeClaim, .persistentVolume, .volumeAttachment, .csiDriver: true
        case .csiNode, .volume, .podStatus, .podPatch, .nodeStatus, .nodePatch, .lease, .event, .deviceStatus, .objectSync, .serviceAccountToken,
             .caCertificate, .certificateSigningRequest, .apiRequest: false
        }
    }

    /// The synced kind of a Kubernetes object (`apiVersion` + `kind`; a record without a usable
    /// apiVersion is matched by its kind alone), nil for anything else.
    public init?(apiVersion: String, kind: String) {
        let synced = Self.allCases.filter(\.isSynced)
        guard let k = synced.first(where: { $0.resourceType?.apiVersion == apiVersion && $0.resourceType?.kind == kind })
            ?? synced.first(where: { $0.resourceType?.kind == kind })
        else { return nil }
        self = k
    }
}

/// A request an edge pod made to MetaServer that only the cloud can answer, made there on the
/// pod's ServiceAccount's behalf (impersonated, so the cluster's RBAC decides), and its answer.
public struct ForwardedAPIRequest: Codable, Sendable, Equatable {
    public var method: String
    /// Path and query as the client sent them (`/apis/coordination.k8s.io/v1/namespaces/x/leases`).
    public var uri: String
    public var contentType: String?
    /// Base64 of the body.
    public var body: String?
    public var username: String
    public var uid: String
    public var groups: [String]
    public var extra: [String: [String]]

    public init(method: String, uri: String, contentType: String?, body: [UInt8]?, username: String, uid: String, groups: [String],
                extra: [String: [String]]) {
        self.method = method; self.uri = uri; self.contentType = contentType
        self.body = body.map { Data($0).base64EncodedString() }
        self.username = username; self.uid = uid; self.groups = groups; self.extra = extra
    }

    /// The decoded body.
    public var bodyBytes: [UInt8]? { body.flatMap { Data(base64Encoded: $0) }.map { Array($0) } }

    /// The answer, as the cloud's API server gave it.
    public struct Answer: Codable, Sendable, Equatable {
        public var status: Int
        public var contentType: String
        public var body: String
        public init(status: Int, contentType: String, body: [UInt8]) {
            self.status = status; self.contentType = contentType; self.body = Data(body).base64EncodedString()
        }
        public var bodyBytes: [UInt8] { Data(base64Encoded: body).map { Array($0) } ?? [] }
    }
}

/// Message groups of the channel (KubeEdge's `route.group`).
public enum MessageGroup {
    /// Objects and reports: everything addressed by a resource string.
    public static let resource = "resource"
    /// What edgecore's metamanager sends its requests with (node registration, patches, leases,
    /// queries); the cloud treats it as `resource`, as cloudcore routes by resource, not group.
    public static let meta = "meta"

    /// Messages of this group are addressed by a resource string.
    public static func carriesResources(_ group: String) -> Bool { group == resource || group == meta }
}

/// Modules that send messages (KubeEdge's `route.source`).
public enum MessageSource {
    public static let edgeController = "edgecontroller"
    public static let edged = "edged"
    public static let twin = "twin"
    public static let metaManager = "metamanager"
    public static let websocket = "websocket"
}

/// A downstream object message, decoded once: the cloud inserts, updates or deletes an object
/// the node stores. The content is the whole object (for a delete: its identity).
public struct ObjectSync: Sendable, Equatable {
    public enum Change: Sendable, Equatable { case insert, update, delete }
    public var ref: ResourceRef
    public var change: Change
    /// The object's resourceVersion (reliable delivery compares it), when the cloud sent one.
    public var resourceVersion: String?
    public var object: JSON

    public init(ref: ResourceRef, change: Change, resourceVersion: String?, object: JSON) {
        self.ref = ref; self.change = change; self.resourceVersion = resourceVersion; self.object = object
    }

    /// Decodes an object message; anything else (another group, operation or kind) is refused.
    public init(_ m: Message) throws(ProtocolError) {
        let ref = try ResourceRef(parsing: m.route.resource)
        guard ref.kind.isSynced else { throw ProtocolError("\(ref.kind) objects are not synced to nodes", reason: .unknownKind) }
        let change: Change
        switch m.route.operation {
        case .insert: change = .insert
        // KubeEdge's cloud also answers a node's query with the object (`response`).
        case .update, .patch, .response: change = .update
        case .delete: change = .delete
        default:
            throw ProtocolError("operation \(m.route.operation.rawValue) on \(m.route.resource) is not an object change", reason: .notAnObjectChange)
        }
        self.init(ref: ref, change: change, resourceVersion: m.resourceVersion, object: m.content)
    }

    /// The object change a downstream message carries; nil for one that changes nothing (a query
    /// or error reply about a synced kind, acknowledged and ignored as KubeEdge's edge does).
    public static func change(in m: Message) throws(ProtocolError) -> ObjectSync? {
        do { return try ObjectSync(m) } catch {
            if error.reason == .notAnObjectChange { return nil }
            throw error
        }
    }

    /// The KubeEdge message (sent by the edge controller).
    public var message: Message {
        let op: Operation = switch change { case .insert: .insert; case .update: .update; case .delete: .delete }
        return Message(resourceVersion: resourceVersion,
                       route: Route(source: MessageSource.edgeController, group: MessageGroup.resource, operation: op, resource: ref.description),
                       content: object)
    }
}

/// What an edge node reports to the cloud, decoded once at CloudHub: every consumer switches over
/// these cases. Names are those of the resource string (authorization compares them with the
/// sending node); contents stay JSON where they are Kubernetes objects the cloud writes as given.
public enum UpstreamReport: Sendable, Equatable {
    /// The node registers its Node (`default/node/<name>` insert; update also accepted).
    case nodeRegistration(name: String?, node: JSON)
    /// A node status heartbeat (`default/nodestatus/<name>` update or patch: `{"status": …}`).
    case nodeStatus(name: String?, content: JSON)
    /// A node status patch (edgecore's kubelet: `null/nodepatch/<name>` patch, content the
    /// strategic-merge patch as a JSON string); applied to the status, answered with the Node.
    case nodePatch(name: String?, content: JSON)
    /// Pod statuses from Edged (`<ns>/podstatus/<name>` update or patch: KubeEdge's
    /// `PodStatusRequest` `{UID, Name, Status}`, one or a list).
    case podStatus(namespace: String, name: String?, content: JSON)
    /// A pod status patch (edgecore's kubelet: `<ns>/podpatch/<name>`, a strategic-merge patch as
    /// a JSON string); applied to the status, answered with the Pod.
    case podPatch(namespace: String, name: String?, content: JSON)
    /// Any other pod message (the node confirms a deletion with `delete`: `{"preconditions": {"uid"}}`).
    case pod(namespace: String, name: String?, operation: Operation, content: JSON)
    /// An Event about one of the node's pods, itself or its devices (`<ns>/event/<name>` insert or update).
    case event(namespace: String, name: String?, event: JSON)
    /// The node's Lease (`kube-node-lease/lease/<name>` insert or update; edgecore also queries it).
    case lease(name: String?, operation: Operation, lease: JSON)
    /// A read the node asks the cloud for (`query` of its Node, a ConfigMap or Secret its pods
    /// use, a ServiceAccount token, the cluster CA), answered with a `response`.
    case query(ResourceRef, content: JSON)
    /// Device twins and states (`null/devicestatus` update: `{"items": […]}`).
    case deviceStatus(report: JSON)
    /// What the node's store holds (`null/objectsync/<node>` query).
    case inventory(node: String?, InventoryPart)
    /// The CSI drivers registered on the node (`null/csinode/<node>` update with a CSINode).
    case csiNode(name: String?, csiNode: JSON)

    /// Decodes an upstream message. Nil: a kind or operation no component handles (dropped, as
    /// KubeEdge drops them); throws for a malformed resource string or report content.
    public init?(_ m: Message) throws(ProtocolError) {
        guard MessageGroup.carriesResources(m.route.group) else { return nil }
        try self.init(ref: try ResourceRef(parsing: m.route.resource), operation: m.route.operation, content: m.content)
    }

    /// Decodes a report whose resource string was parsed already.
    public init?(ref: ResourceRef, operation op: Operation, content c: JSON) throws(ProtocolError) {
        let ns = ref.namespace ?? "default"
        switch (ref.kind, op) {
        case (.node, .insert), (.node, .update): self = .nodeRegistration(name: ref.name, node: c)
        case (.nodeStatus, .update), (.nodeStatus, .patch): self = .nodeStatus(name: ref.name, content: c)
        case (.node, .query), (.configMap, .query), (.secret, .query), (.serviceAccountToken, .query), (.caCertificate, .query),
             (.certificateSigningRequest, .query), (.apiRequest, .query):
            self = .query(ref, content: c)
        case (.nodePatch, _): self = .nodePatch(name: ref.name, content: c)
        case (.podStatus, .update), (.podStatus, .patch): self = .podStatus(namespace: ns, name: ref.name, content: c)
        case (.podPatch, _): self = .podPatch(namespace: ns, name: ref.name, content: c)
        case (.pod, _): self = .pod(namespace: ns, name: ref.name, operation: op, content: c)
        case (.event, .insert), (.event, .update): self = .event(namespace: ns, name: ref.name, event: c)
        case (.lease, .insert), (.lease, .update), (.lease, .query): self = .lease(name: ref.name, operation: op, lease: c)
        case (.deviceStatus, .update): self = .deviceStatus(report: c)
        case (.objectSync, .query): self = .inventory(node: ref.name, try InventoryPart(content: c))
        case (.csiNode, .insert), (.csiNode, .update): self = .csiNode(name: ref.name, csiNode: c)
        case (.csiNode, _), (.csiDriver, _), (.volume, _), (.persistentVolumeClaim, _), (.persistentVolume, _), (.volumeAttachment, _), (.node, _), (.nodeStatus, _), (.podStatus, _), (.event, _), (.lease, _), (.deviceStatus, _), (.objectSync, _),
             (.configMap, _), (.secret, _), (.service, _), (.endpoints, _), (.device, _), (.deviceModel, _),
             (.serviceAccountToken, _), (.caCertificate, _), (.certificateSigningRequest, _), (.apiRequest, _), (.role, _), (.roleBinding, _),
             (.clusterRole, _), (.clusterRoleBinding, _):
            return nil
        }
    }

    /// The resource string and operation this report travels with.
    var route: (namespace: String?, kind: EdgeResourceKind, name: String?, operation: Operation) {
        switch self {
        case .nodeRegistration(let name, _): ("default", .node, name, .insert)
        case .nodeStatus(let name, _): ("default", .nodeStatus, name, .update)
        case .nodePatch(let name, _): ("default", .nodePatch, name, .patch)
        case .podStatus(let ns, let name, _): (ns, .podStatus, name, .update)
        case .podPatch(let ns, let name, _): (ns, .podPatch, name, .patch)
        case .pod(let ns, let name, let op, _): (ns, .pod, name, op)
        case .event(let ns, let name, _): (ns, .event, name, .insert)
        case .lease(let name, let op, _): ("kube-node-lease", .lease, name, op)
        case .query(let ref, _): (ref.namespace, ref.kind, ref.name, .query)
        case .deviceStatus: (nil, .deviceStatus, nil, .update)
        case .inventory(let node, _): (nil, .objectSync, node, .query)
        case .csiNode(let name, _): (nil, .csiNode, name, .update)
        }
    }

    var content: JSON {
        switch self {
        case .nodeRegistration(_, let c), .nodeStatus(_, let c), .nodePatch(_, let c), .podStatus(_, _, let c), .podPatch(_, _, let c),
             .pod(_, _, _, let c), .event(_, _, let c), .lease(_, _, let c), .deviceStatus(let c), .query(_, let c), .csiNode(_, let c):
            c
        case .inventory(_, let part): part.content
        }
    }

    /// The kind in its resource string.
    public var kind: EdgeResourceKind { route.kind }

    /// The resource string it travels with (for logs).
    public var resource: String {
        let r = route
        return ResourceRef(namespace: r.namespace, kind: r.kind, name: r.name).description
    }

    /// The KubeEdge message, from `source` (the edge module: `edged`, `twin`, `metamanager`).
    public func message(source: String) -> Message {
        let r = route
        return Message(route: Route(source: source, group: MessageGroup.resource, operation: r.operation,
                                    resource: ResourceRef(namespace: r.namespace, kind: r.kind, name: r.name).description),
                       content: content)
    }
}

/// The content of KubeEdge's answer to a request that carries an object (edgecontroller's
/// `ObjectResp`): `{"Object": <object>, "Err": null}`, or `{"Object": null, "Err": {"ErrStatus": <Status>}}`.
/// The cloud writes it for node registration, node/pod patches and leases; the edge reads it.
public enum ObjectResponse: Sendable, Equatable {
    case object(JSON)
    case error(status: JSON)

    public var content: JSON {
        switch self {
        case .object(let o): ["Object": o, "Err": .null]
        case .error(let status): ["Object": .null, "Err": ["ErrStatus": status]]
        }
    }

    /// Reads the content of an answer; nil when it is not of this shape.
    public init?(content: JSON) {
        let status = content["Err"]["ErrStatus"]
        if !status.isNull { self = .error(status: status) } else if content["Object"].isObject { self = .object(content["Object"]) } else { return nil }
    }
}
