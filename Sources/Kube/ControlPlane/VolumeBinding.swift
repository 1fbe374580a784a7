import KubeAPI

/// What the PersistentVolume controller and the scheduler decide about claims, without I/O:
/// which free volume serves a claim, and whether a node can host a pod's claims (kube's
/// `VolumeBinding` plugin, with the edge's twist that a CSI class is only provisioned on nodes
/// whose CSINode lists its driver).
enum VolumeBinding {
    /// The volume to bind a claim to: one pre-bound to it (its `claimRef` names the claim) first,
    /// else the smallest free one that fits; with `node`, only volumes whose node affinity admits it.
    static func bestVolume(for claim: Storage.PersistentVolumeClaim, among volumes: [Storage.PersistentVolume],
                           node: (name: String, labels: [String: String])? = nil) -> Storage.PersistentVolume?
    {
        let fitting = volumes.filter { v in
            v.canBind(claim) && (node.map { v.admits(nodeName: $0.name, labels: $0.labels) } ?? true)
        }
        if let prebound = fitting.first(where: { $0.claimRef != nil }) { return prebound }
        return fitting.min { ($0.capacityBytes, $0.metadata?.name ?? "") < ($1.capacityBytes, $1.metadata?.name ?? "") }
    }

    /// A pod's claims as the scheduler sees them.
    struct PodClaims: Sendable {
        /// Volumes the pod's bound claims use (their node affinity must admit the node).
        var boundVolumes: [Storage.PersistentVolume] = []
        /// Unbound claims of `WaitForFirstConsumer` classes: decided with the node.
        var delayed: [Storage.PersistentVolumeClaim] = []
        /// Why no node can take the pod now (a claim missing, being deleted, unbound with
        /// immediate binding, or bound to a volume that does not exist).
        var unresolvable: String?
    }

    /// The state of the claims `claimNames` in `namespace`.
    static func podClaims(_ claimNames: [String], namespace: String, claim: (String) -> Storage.PersistentVolumeClaim?,
                          volume: (String) -> Storage.PersistentVolume?, storageClass: (String) -> Storage.StorageClass?) -> PodClaims
    {
        var out = PodClaims()
        for name in claimNames {
            guard let c = claim(name) else {
                out.unresolvable = "persistentvolumeclaim \"\(name)\" not found"
                return out
            }
            if c.metadata?.deletionTimestamp != nil {
                out.unresolvable = "persistentvolumeclaim \"\(name)\" is being deleted"
                return out
            }
            if !c.volumeName.isEmpty {
                guard let v = volume(c.volumeName) else {
                    out.unresolvable = "pvc(s) bound to non-existent pv(s)"
                    return out
                }
                out.boundVolumes.append(v)
                continue
            }
            let cls = c.storageClassName.flatMap(storageClass)
            if cls?.waitsForFirstConsumer == true {
                out.delayed.append(c)
            } else {
                out.unresolvable = "pod has unbound immediate PersistentVolumeClaims"
                return out
            }
        }
        return out
    }

    /// Why `node` cannot host the claims (nil: it can). `driversOnNode` are the CSI drivers
    /// registered on the node (its CSINode), `registeredAnywhere` those registered on any node.
    static func reason(_ claims: PodClaims, node: String, labels: [String: String], freeVolumes: [Storage.PersistentVolume],
                       storageClass: (String) -> Storage.StorageClass?, driversOnNode: Set<String>, registeredAnywhere: Set<String>) -> String?
    {
        for v in claims.boundVolumes where !v.admits(nodeName: node, labels: labels) {
            return "node(s) had volume node affinity conflict"
        }
        for c in claims.delayed {
            if bestVolume(for: c, among: freeVolumes, node: (node, labels)) != nil { continue }
            guard let cls = c.storageClassName.flatMap(storageClass), cls.provisioner != Storage.Keys.noProvisioner,
                  cls.allows(labels: labels) else {
                return "node(s) didn't find available persistent volumes to bind"
            }
            // A CSI driver known to run on some nodes provisions only there.
            if registeredAnywhere.contains(cls.provisioner) && !driversOnNode.contains(cls.provisioner) {
                return "node(s) did not have the CSI driver \(cls.provisioner)"
            }
        }
        return nil
    }
}
