/// The objects of its namespace a pod uses by name: what its node needs to run it, and all the
/// node may read of them (the cloud's per-node sync and the API server's Node authorizer).
public struct PodReferences: Sendable, Hashable {
    public var configMaps: Set<String> = []
    public var secrets: Set<String> = []
    public var persistentVolumeClaims: Set<String> = []
    public var serviceAccount: String

    /// Volumes (also projected sources), env and envFrom of every container kind, image pull secrets.
    public init(pod: JSON) {
        let spec = pod["spec"]
        serviceAccount = spec["serviceAccountName"].stringValue ?? "default"
        func cm(_ name: String?) { if let name, !name.isEmpty { configMaps.insert(name) } }
        func secret(_ name: String?) { if let name, !name.isEmpty { secrets.insert(name) } }
        for v in spec["volumes"].arrayValue ?? [] {
            cm(v["configMap"]["name"].stringValue)
            secret(v["secret"]["secretName"].stringValue)
            if let claim = v["persistentVolumeClaim"]["claimName"].stringValue, !claim.isEmpty { persistentVolumeClaims.insert(claim) }
            for source in v["projected"]["sources"].arrayValue ?? [] {
                cm(source["configMap"]["name"].stringValue)
                secret(source["secret"]["name"].stringValue)
            }
        }
        for c in (spec["containers"].arrayValue ?? []) + (spec["initContainers"].arrayValue ?? []) + (spec["ephemeralContainers"].arrayValue ?? []) {
            for e in c["env"].arrayValue ?? [] {
                cm(e["valueFrom"]["configMapKeyRef"]["name"].stringValue)
                secret(e["valueFrom"]["secretKeyRef"]["name"].stringValue)
            }
            for e in c["envFrom"].arrayValue ?? [] {
                cm(e["configMapRef"]["name"].stringValue)
                secret(e["secretRef"]["name"].stringValue)
            }
        }
        for s in spec["imagePullSecrets"].arrayValue ?? [] { secret(s["name"].stringValue) }
    }
}
