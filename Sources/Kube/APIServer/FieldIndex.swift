import KubeAPI
import ObjectStore

/// The selectable fields of each kind (`?fieldSelector=`), as kube-apiserver supports them.
enum FieldIndex {
    static let podFields = ["spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                            "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"]
    static let eventFields = ["involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                              "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                              "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"]

    /// Extra fields by storage prefix.
    static func extraFields(prefix: String) -> [String] {
        switch prefix {
        case "/core/pods/": return podFields
        case "/core/nodes/": return ["spec.unschedulable"]
        case "/core/events/": return eventFields
        case "/core/secrets/": return ["type"]
        case "/core/namespaces/": return ["status.phase"]
        case "/core/services/": return ["spec.clusterIP", "spec.type"]
        case "/apps/replicasets/": return ["status.replicas"]
        case "/batch/jobs/": return ["status.successful"]
        default: return []
        }
    }

    static func prefix(ofKey key: String) -> String {
        var slashes = 0
        var idx = key.startIndex
        while idx < key.endIndex {
            if key[idx] == "/" { slashes += 1; if slashes == 3 { return String(key[...idx]) } }
            idx = key.index(after: idx)
        }
        return key
    }

    /// Values a missing field stands for.
    static let defaults: [String: String] = ["spec.hostNetwork": "false", "spec.unschedulable": "false"]

    /// The stored selectable fields: only non-default values; name and namespace come from the key.
    static func fields(key: String, object obj: JSON) -> [String: String] {
        var f: [String: String] = [:]
        for path in extraFields(prefix: prefix(ofKey: key)) {
            let comps = path.split(separator: ".").map(String.init)
            let v = obj[path: comps]
            switch v {
            case .string(let s): f[path] = s
            case .bool(let b): f[path] = b ? "true" : "false"
            case .int(let i): f[path] = String(i)
            case .null:
                if path == "spec.hostNetwork" || path == "spec.unschedulable" { f[path] = "false" } else { f[path] = "" }
            default: f[path] = ""
            }
            if path == "source" { f[path] = obj["source"]["component"].stringValue ?? obj["reportingComponent"].stringValue ?? "" }
            if f[path] == "" || f[path] == defaults[path] { f.removeValue(forKey: path) }
        }
        return f
    }

    /// Whether a stored object matches a field selector.
    static func matches(_ fs: FieldSelector, _ o: StoredObject) -> Bool {
        fs.matches { field in
            switch field {
            case "metadata.name": return String(o.key[o.key.index(after: o.key.lastIndex(of: "/")!)...])
            case "metadata.namespace":
                let parts = o.key.split(separator: "/", omittingEmptySubsequences: false)
                return parts.count == 5 ? String(parts[3]) : ""
            default: return o.attributes.fields[field] ?? defaults[field] ?? ""
            }
        }
    }

    static func validate(_ fs: FieldSelector, type: ResourceType) throws(StatusError) {
        let allowed = Set(["metadata.name", "metadata.namespace"] + extraFields(prefix: type.storagePrefix))
        for r in fs.requirements where !allowed.contains(r.field) {
            throw StatusError.badRequest("field label not supported: \(r.field)")
        }
    }
}
