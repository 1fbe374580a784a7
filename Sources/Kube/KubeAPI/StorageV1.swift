/// Typed views of the storage objects the control plane, the cloud's CSI driver and the edge
/// act on: PersistentVolumeClaims and PersistentVolumes (core/v1), StorageClasses, CSINodes,
/// CSIDrivers and VolumeAttachments (storage.k8s.io/v1). Decoded from the stored JSON with
/// ``JSONValueDecoder``; only what is read is declared, so the JSON stays the written form.
public enum Storage {
    /// The annotations and finalizers kube's volume controllers use, spelled once.
    public enum Keys {
        /// On a PVC: the node the scheduler chose for a `WaitForFirstConsumer` claim.
        public static let selectedNode = "volume.kubernetes.io/selected-node"
        /// On a PVC: the provisioner asked to create its volume (and the beta spelling, still set by kube).
        public static let storageProvisioner = "volume.kubernetes.io/storage-provisioner"
        public static let betaStorageProvisioner = "volume.beta.kubernetes.io/storage-provisioner"
        /// On a PV: who created it (a dynamically provisioned volume is deleted by its provisioner).
        public static let provisionedBy = "pv.kubernetes.io/provisioned-by"
        /// On PVs and PVCs: the binding was made by the controller (not pre-bound by a user).
        public static let boundByController = "pv.kubernetes.io/bound-by-controller"
        /// On a PVC: the controller finished binding it.
        public static let bindCompleted = "pv.kubernetes.io/bind-completed"
        /// On a StorageClass: the class claims without one get.
        public static let defaultClass = "storageclass.kubernetes.io/is-default-class"
        /// Finalizers that keep a claim in use by a pod, and a bound volume, from going away.
        public static let pvcProtection = "kubernetes.io/pvc-protection"
        public static let pvProtection = "kubernetes.io/pv-protection"
        /// The provisioner name of classes whose volumes are only ever created by hand.
        public static let noProvisioner = "kubernetes.io/no-provisioner"
        /// The Node annotation kubelet keeps with each registered CSI driver's node id.
        public static let csiNodeIDs = "csi.volume.kubernetes.io/nodeid"
    }

    public struct ObjectReference: Decodable, Sendable, Equatable {
        public var kind: String?
        public var namespace: String?
        public var name: String?
        public var uid: String?
    }

    public struct PersistentVolumeClaim: Decodable, Sendable, Equatable {
        public var metadata: Core.ObjectMeta?
        public var spec: PersistentVolumeClaimSpec?
        public var status: PersistentVolumeClaimStatus?

        public var storageClassName: String? { spec?.storageClassName }
        public var volumeName: String { spec?.volumeName ?? "" }
        /// The requested size in bytes (0 when none is given).
        public var requestedBytes: Int64 { spec?.resources?.requests?["storage"].flatMap { Quantity.value($0) } ?? 0 }
        public var phase: String { status?.phase ?? "Pending" }
        public var annotations: [String: String] { metadata?.annotations ?? [:] }
    }

    public struct PersistentVolumeClaimSpec: Decodable, Sendable, Equatable {
        public var accessModes: [String]?
        public var selector: TypedLabelSelector?
        public var resources: Core.ResourceRequirements?
        public var volumeName: String?
        public var storageClassName: String?
        public var volumeMode: String?
    }

    public struct PersistentVolumeClaimStatus: Decodable, Sendable, Equatable {
        public var phase: String?
    }

    public struct PersistentVolume: Decodable, Sendable, Equatable {
        public var metadata: Core.ObjectMeta?
        public var spec: PersistentVolumeSpec?
        public var status: PersistentVolumeStatus?

        public var capacityBytes: Int64 { spec?.capacity?["storage"].flatMap { Quantity.value($0) } ?? 0 }
        public var phase: String { status?.phase ?? "Pending" }
        public var storageClassName: String { spec?.storageClassName ?? "" }
        public var reclaimPolicy: String { spec?.persistentVolumeReclaimPolicy ?? "Retain" }
        public var claimRef: ObjectReference? { spec?.claimRef }
        public var annotations: [String: String] { metadata?.annotations ?? [:] }
        /// Whether the volume's node affinity (if any) admits a node with these labels.
        public func admits(nodeName: String, labels: [String: String]) -> Bool {
            guard let required = spec?.nodeAffinity?.required else { return true }
            return required.matches(nodeName: nodeName, labels: labels)
        }
    }

    public struct PersistentVolumeSpec: Decodable, Sendable, Equatable {
        public var capacity: [String: JSON]?
        public var accessModes: [String]?
        public var claimRef: ObjectReference?
        public var persistentVolumeReclaimPolicy: String?
        public var storageClassName: String?
        public var volumeMode: String?
        public var nodeAffinity: VolumeNodeAffinity?
        public var mountOptions: [String]?
        public var hostPath: Core.HostPathVolumeSource?
        public var local: LocalVolumeSource?
        public var csi: CSIPersistentVolumeSource?
    }

    public struct PersistentVolumeStatus: Decodable, Sendable, Equatable {
        public var phase: String?
    }

    public struct LocalVolumeSource: Decodable, Sendable, Equatable {
        public var path: String
        public var fsType: String?
    }

    public struct SecretReference: Decodable, Sendable, Equatable {
        public var name: String?
        public var namespace: String?
    }

    public struct CSIPersistentVolumeSource: Decodable, Sendable, Equatable {
        public var driver: String
        public var volumeHandle: String
        public var readOnly: Bool?
        public var fsType: String?
        public var volumeAttributes: [String: String]?
        public var nodeStageSecretRef: SecretReference?
        public var nodePublishSecretRef: SecretReference?
        public var controllerPublishSecretRef: SecretReference?
    }

    public struct VolumeNodeAffinity: Decodable, Sendable, Equatable {
        public var required: NodeSelector?
    }

    /// `nodeSelectorTerms`: the terms are ORed, the requirements inside a term ANDed.
    public struct NodeSelector: Decodable, Sendable, Equatable {
        public var nodeSelectorTerms: [NodeSelectorTerm]

        public init(nodeSelectorTerms: [NodeSelectorTerm]) { self.nodeSelectorTerms = nodeSelectorTerms }

        public func matches(nodeName: String, labels: [String: String]) -> Bool {
            nodeSelectorTerms.contains { $0.matches(nodeName: nodeName, labels: labels) }
        }
    }

    public struct NodeSelectorTerm: Decodable, Sendable, Equatable {
        public var matchExpressions: [NodeSelectorRequirement]?
        public var matchFields: [NodeSelectorRequirement]?

        public init(matchExpressions: [NodeSelectorRequirement]? = nil, matchFields: [NodeSelectorRequirement]? = nil) {
            self.matchExpressions = matchExpressions; self.matchFields = matchFields
        }

        /// An empty term matches nothing (kube's rule).
        public func matches(nodeName: String, labels: [String: String]) -> Bool {
            let exprs = matchExpressions ?? [], fields = matchFields ?? []
            if exprs.isEmpty && fields.isEmpty { return false }
            return exprs.allSatisfy { $0.matches(labels[$0.key]) }
                && fields.allSatisfy { $0.key == "metadata.name" && $0.matches(nodeName) }
        }
    }

    public struct NodeSelectorRequirement: Decodable, Sendable, Equatable {
        public var key: String
        public var `operator`: String
        public var values: [String]?

        public init(key: String, operator op: String, values: [String]?) { self.key = key; self.operator = op; self.values = values }

        public func matches(_ value: String?) -> Bool {
            let vs = values ?? []
            switch self.operator {
            case "In": return value.map(vs.contains) ?? false
            case "NotIn": return !(value.map(vs.contains) ?? false)
            case "Exists": return value != nil
            case "DoesNotExist": return value == nil
            case "Gt", "Lt":
                guard let v = value.flatMap({ Int64($0) }), let bound = vs.first.flatMap({ Int64($0) }) else { return false }
                return self.operator == "Gt" ? v > bound : v < bound
            default: return false
            }
        }
    }

    /// A label selector as written in objects (`matchLabels` + `matchExpressions`).
    public struct TypedLabelSelector: Decodable, Sendable, Equatable {
        public var matchLabels: [String: String]?
        public var matchExpressions: [NodeSelectorRequirement]?

        public func matches(_ labels: [String: String]) -> Bool {
            for (k, v) in matchLabels ?? [:] where labels[k] != v { return false }
            return (matchExpressions ?? []).allSatisfy { $0.matches(labels[$0.key]) }
        }
    }

    public struct StorageClass: Decodable, Sendable, Equatable {
        public var metadata: Core.ObjectMeta?
        public var provisioner: String
        public var parameters: [String: String]?
        public var reclaimPolicy: String?
        public var volumeBindingMode: String?
        public var allowedTopologies: [TopologySelectorTerm]?
        public var mountOptions: [String]?

        public var name: String { metadata?.name ?? "" }
        public var waitsForFirstConsumer: Bool { volumeBindingMode == "WaitForFirstConsumer" }
        public var isDefault: Bool { metadata?.annotations?[Keys.defaultClass] == "true" }
        /// Whether the class's allowed topologies (none: every node) admit a node with these labels.
        public func allows(labels: [String: String]) -> Bool {
            guard let terms = allowedTopologies, !terms.isEmpty else { return true }
            return terms.contains { t in (t.matchLabelExpressions ?? []).allSatisfy { e in labels[e.key].map(e.values.contains) ?? false } }
        }
    }

    public struct TopologySelectorTerm: Decodable, Sendable, Equatable {
        public var matchLabelExpressions: [TopologySelectorRequirement]?
    }

    public struct TopologySelectorRequirement: Decodable, Sendable, Equatable {
        public var key: String
        public var values: [String]
    }

    public struct CSINode: Decodable, Sendable, Equatable {
        public var metadata: Core.ObjectMeta?
        public var spec: CSINodeSpec?
        public var drivers: [CSINodeDriver] { spec?.drivers ?? [] }
    }

    public struct CSINodeSpec: Decodable, Sendable, Equatable {
        public var drivers: [CSINodeDriver]?
    }

    public struct CSINodeDriver: Decodable, Sendable, Equatable {
        public var name: String
        public var nodeID: String
        public var topologyKeys: [String]?
    }

    public struct CSIDriver: Decodable, Sendable, Equatable {
        public var metadata: Core.ObjectMeta?
        public var spec: CSIDriverSpec?
        /// kube's default: a driver without a CSIDriver object, or without the field, is attached.
        public var attachRequired: Bool { spec?.attachRequired ?? true }
    }

    public struct CSIDriverSpec: Decodable, Sendable, Equatable {
        public var attachRequired: Bool?
        public var podInfoOnMount: Bool?
        public var fsGroupPolicy: String?
    }

    public struct VolumeAttachment: Decodable, Sendable, Equatable {
        public var metadata: Core.ObjectMeta?
        public var spec: VolumeAttachmentSpec
        public var status: VolumeAttachmentStatus?
    }

    public struct VolumeAttachmentSpec: Decodable, Sendable, Equatable {
        public var attacher: String
        public var nodeName: String
        public var source: VolumeAttachmentSource
    }

    public struct VolumeAttachmentSource: Decodable, Sendable, Equatable {
        public var persistentVolumeName: String?
    }

    public struct VolumeAttachmentStatus: Decodable, Sendable, Equatable {
        public var attached: Bool?
        public var attachmentMetadata: [String: String]?
    }
}

extension Storage.PersistentVolume {
    /// Whether this volume can serve the claim: class, mode, access modes, size and selector
    /// match, and it is free or already reserved for exactly this claim (kube's
    /// `findMatchingVolume`, without the node check).
    public func canBind(_ claim: Storage.PersistentVolumeClaim) -> Bool {
        guard metadata?.deletionTimestamp == nil else { return false }
        if let ref = claimRef {
            guard ref.name == claim.metadata?.name, ref.namespace == claim.metadata?.namespace,
                  (ref.uid ?? "").isEmpty || ref.uid == claim.metadata?.uid else { return false }
        } else if phase != "Available" && phase != "Pending" {
            return false
        }
        guard storageClassName == (claim.storageClassName ?? "") else { return false }
        guard (spec?.volumeMode ?? "Filesystem") == (claim.spec?.volumeMode ?? "Filesystem") else { return false }
        let offered = Set(spec?.accessModes ?? [])
        guard Set(claim.spec?.accessModes ?? []).isSubset(of: offered) else { return false }
        guard capacityBytes >= claim.requestedBytes else { return false }
        if let selector = claim.spec?.selector, !selector.matches(metadata?.labels ?? [:]) { return false }
        return true
    }
}
