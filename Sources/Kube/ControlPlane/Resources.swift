import ControllerRuntime
import KubeAPI

/// The resource types the controllers read and write.
enum R {
    static let pods = ResourceType.pods
    static let nodes = ResourceType.nodes
    static let services = ResourceType.services
    static let endpoints = ResourceType.endpoints
    static let pvcs = ResourceType.persistentVolumeClaims
    static let pvs = ResourceType.persistentVolumes
    static let storageClasses = ResourceType.storageClasses
    static let csiNodes = ResourceType.csiNodes
    static let csiDrivers = ResourceType.csiDrivers
    static let volumeAttachments = ResourceType.volumeAttachments
    static let endpointSlices = ResourceType.endpointSlices
    static let deployments = ResourceType.deployments
    static let replicaSets = ResourceType.replicaSets
    static let daemonSets = ResourceType.daemonSets
    static let statefulSets = ResourceType.statefulSets
    static let controllerRevisions = ResourceType.controllerRevisions
    static let jobs = ResourceType.jobs
    static let leases = ResourceType.leases
    static let podDisruptionBudgets = ResourceType.podDisruptionBudgets
    static let resourceQuotas = ResourceType.resourceQuotas
    static let certificateSigningRequests = ResourceType.certificateSigningRequests
    static let clusterRoles = ResourceType.clusterRoles
}

/// Splits an informer key (`ns/name` or `name`).
func splitKey(_ key: String) -> (namespace: String?, name: String) {
    guard let slash = key.firstIndex(of: "/") else { return (nil, key) }
    return (String(key[..<slash]), String(key[key.index(after: slash)...]))
}

extension JSON {
    var labels: [String: String] {
        var out: [String: String] = [:]
        for (k, v) in self["metadata"]["labels"].objectValue ?? [:] { out[k] = v.stringValue ?? "" }
        return out
    }
    var creation: KubeTime { KubeTime.parse(self["metadata"]["creationTimestamp"].stringValue ?? "") ?? KubeTime(micros: 0) }

    /// The controlling owner reference, if any.
    var controllerRef: JSON? {
        (self["metadata"]["ownerReferences"].arrayValue ?? []).first { $0["controller"].boolValue == true }
    }

    /// An ownerReference that makes `self` the controller of a dependent.
    var asControllerRef: JSON {
        ["apiVersion": self["apiVersion"], "kind": self["kind"], "name": self["metadata"]["name"], "uid": self["metadata"]["uid"],
         "controller": true, "blockOwnerDeletion": true]
    }
}

extension SharedInformer {
    /// For a pod informer: a pod change a selector can see (added, deleted, status, labels or
    /// deletion changed) enqueues the `owners` in the pod's namespace whose selector (nil: selects
    /// nothing) matches the pod before or after.
    func enqueueSelecting(_ owners: SharedInformer, into queue: WorkQueue, selector: @escaping @Sendable (JSON) -> LabelSelector?) {
        addHandler { ev in
            let changed: [JSON]
            switch ev {
            case .added(let p), .deleted(let p): changed = [p]
            case .updated(let old, let new):
                if old["status"] == new["status"] && old["metadata"]["labels"] == new["metadata"]["labels"] && old.isDeleting == new.isDeleting { return }
                changed = [old, new]
            case .synced: return
            }
            let ns = changed[0].namespace
            for owner in owners.cache.list() where owner.namespace == ns {
                guard let sel = selector(owner) else { continue }
                if changed.contains(where: { sel.matches($0.labels) }) { queue.add(InformerCache.key(owner)) }
            }
        }
    }
}

/// Pod facts shared by the controllers.
enum PodUtil {
    static func phase(_ p: JSON) -> String { p["status"]["phase"].stringValue ?? "Pending" }
    static func isTerminal(_ p: JSON) -> Bool { ["Succeeded", "Failed"].contains(phase(p)) }
    /// Counts towards a controller's replicas: not finished and not being deleted.
    static func isActive(_ p: JSON) -> Bool { !isTerminal(p) && !p.isDeleting }

    static func condition(_ p: JSON, _ type: String) -> JSON? {
        (p["status"]["conditions"].arrayValue ?? []).first { $0["type"].stringValue == type }
    }

    static func isReady(_ p: JSON) -> Bool {
        phase(p) == "Running" && condition(p, "Ready")?["status"].stringValue == "True"
    }

    /// Ready for at least `minReadySeconds`.
    static func isAvailable(_ p: JSON, minReadySeconds: Int64, now: KubeTime) -> Bool {
        guard isReady(p) else { return false }
        if minReadySeconds <= 0 { return true }
        guard let since = KubeTime.parse(condition(p, "Ready")?["lastTransitionTime"].stringValue ?? "") else { return false }
        return since.adding(seconds: minReadySeconds) <= now
    }

    /// A pod object built from a template, owned by `owner`.
    static func fromTemplate(_ template: JSON, owner: JSON, generateName: String? = nil, name: String? = nil,
                             extraLabels: [String: String] = [:]) -> JSON
    {
        var meta = template["metadata"].objectValue ?? [:]
        meta.removeValue(forKey: "name"); meta.removeValue(forKey: "namespace")
        if let name { meta["name"] = .string(name) } else if let generateName { meta["generateName"] = .string(generateName) }
        meta["namespace"] = owner["metadata"]["namespace"]
        var labels = template["metadata"]["labels"]
        for (k, v) in extraLabels { labels[k] = .string(v) }
        if !labels.isNull { meta["labels"] = labels }
        meta["ownerReferences"] = [owner.asControllerRef]
        return ["apiVersion": "v1", "kind": "Pod", "metadata": .object(meta), "spec": template["spec"]]
    }
}

/// Node facts shared by the scheduler, DaemonSet controller and node lifecycle.
enum NodeUtil {
    static let edgeRoleLabel = "node-role.kubernetes.io/edge"

    static func isEdge(_ node: JSON) -> Bool { node["metadata"]["labels"][edgeRoleLabel] != .null }

    static func readyStatus(_ node: JSON) -> String {
        (node["status"]["conditions"].arrayValue ?? []).first { $0["type"].stringValue == "Ready" }?["status"].stringValue ?? "Unknown"
    }

    /// Whether `tolerations` tolerate `taint` (the rules of the Kubernetes toleration API).
    static func tolerates(_ tolerations: [JSON], _ taint: JSON) -> Bool {
        tolerations.contains { t in tolerates(t, taint) }
    }

    static func tolerates(_ t: JSON, _ taint: JSON) -> Bool {
        if let e = t["effect"].stringValue, !e.isEmpty, e != taint["effect"].stringValue { return false }
        let key = t["key"].stringValue ?? ""
        let op = t["operator"].stringValue ?? "Equal"
        if key.isEmpty { return op == "Exists" }
        guard key == taint["key"].stringValue else { return false }
        if op == "Exists" { return true }
        return (t["value"].stringValue ?? "") == (taint["value"].stringValue ?? "")
    }

    /// Whether a pod's `nodeSelector` and required node affinity accept the node.
    static func matchesNodeSelection(_ podSpec: JSON, labels: [String: String], nodeName: String) -> Bool {
        for (k, v) in podSpec["nodeSelector"].objectValue ?? [:] where labels[k] != v.stringValue { return false }
        guard let terms = podSpec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"].arrayValue
        else { return true }
        if terms.isEmpty { return false }
        return terms.contains { term in
            let exprs = term["matchExpressions"].arrayValue ?? []
            let fields = term["matchFields"].arrayValue ?? []
            if exprs.isEmpty && fields.isEmpty { return false }
            return exprs.allSatisfy { matches($0, labels[$0["key"].stringValue ?? ""]) }
                && fields.allSatisfy { $0["key"].stringValue == "metadata.name" && matches($0, nodeName) }
        }
    }

    static func matches(_ req: JSON, _ value: String?) -> Bool {
        let values = (req["values"].arrayValue ?? []).compactMap(\.stringValue)
        switch req["operator"].stringValue ?? "" {
        case "In": return value.map(values.contains) ?? false
        case "NotIn": return !(value.map(values.contains) ?? false)
        case "Exists": return value != nil
        case "DoesNotExist": return value == nil
        case "Gt", "Lt":
            guard let v = value.flatMap({ Int64($0) }), let bound = values.first.flatMap({ Int64($0) }) else { return false }
            return req["operator"].stringValue == "Gt" ? v > bound : v < bound
        default: return false
        }
    }
}

/// `maxSurge`/`maxUnavailable` style values: an integer or a percentage of `total`.
func scaledValue(_ v: JSON, total: Int, roundUp: Bool, default def: Int) -> Int {
    switch v {
    case .int(let i): return Int(i)
    case .string(let s) where s.hasSuffix("%"):
        guard let pct = Double(s.dropLast()) else { return def }
        let x = pct * Double(total) / 100
        return Int(roundUp ? x.rounded(.up) : x.rounded(.down))
    case .string(let s): return Int(s) ?? def
    default: return def
    }
}

/// A short, stable hash of a pod template (FNV-1a over its canonical JSON), rendered with the
/// consonant-and-digit alphabet Kubernetes uses for `pod-template-hash`.
func templateHash(_ template: JSON) -> String {
    var h: UInt32 = 2_166_136_261
    for b in template.serialized() { h ^= UInt32(b); h = h &* 16_777_619 }
    let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
    var out = ""
    var v = h
    repeat { out.append(alphabet[Int(v % UInt32(alphabet.count))]); v /= UInt32(alphabet.count) } while v > 0
    return out
}
