/// What a ResourceQuota counts, shared by the API server's quota admission (which charges each
/// create) and the quota controller (which recomputes `status.used`): the usage of one object
/// in the quota's resource names, in thousandths (so `500m` CPU and `3` pods add up alike).
public enum ResourceQuotaUsage {
    /// The resource names a type's objects are counted under (`pods`, `count/pods`, `requests.cpu`, …).
    public static func isTracked(_ type: ResourceType, in hard: Set<String>) -> Bool {
        hard.contains { resourceTypeMatches($0, type) }
    }

    /// Whether quota resource `name` counts objects of `type` at all.
    static func resourceTypeMatches(_ name: String, _ type: ResourceType) -> Bool {
        if name == "count/\(type.qualifiedResource)" { return true }
        if type.group.isEmpty, let legacy = legacyCounts[name], legacy == type.resource { return true }
        if type.group.isEmpty && type.resource == "pods" { return computeNames.contains(name) }
        if type.group.isEmpty && type.resource == "services" { return name == "services.nodeports" || name == "services.loadbalancers" }
        if type.group.isEmpty && type.resource == "persistentvolumeclaims" { return name == "requests.storage" }
        return false
    }

    static let legacyCounts = ["pods": "pods", "services": "services", "secrets": "secrets", "configmaps": "configmaps",
                               "persistentvolumeclaims": "persistentvolumeclaims", "replicationcontrollers": "replicationcontrollers",
                               "resourcequotas": "resourcequotas"]
    static let computeNames: Set<String> = ["cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory",
                                            "ephemeral-storage", "requests.ephemeral-storage", "limits.ephemeral-storage"]

    /// Whether an object still counts (pods: not finished).
    public static func counts(_ object: JSON, type: ResourceType) -> Bool {
        guard type.group.isEmpty && type.resource == "pods" else { return true }
        let phase = object["status"]["phase"].stringValue ?? ""
        return phase != "Succeeded" && phase != "Failed"
    }

    /// The object's usage in each of `names` that applies to it, in thousandths.
    public static func usage(of object: JSON, type: ResourceType, names: Set<String>) -> [String: Int64] {
        var out: [String: Int64] = [:]
        guard counts(object, type: type) else { return out }
        for name in names where resourceTypeMatches(name, type) {
            switch name {
            case "services.nodeports":
                let t = object["spec"]["type"].stringValue ?? "ClusterIP"
                guard t == "NodePort" || t == "LoadBalancer" else { continue }
                out[name] = Int64((object["spec"]["ports"].arrayValue ?? []).count) * 1000
            case "services.loadbalancers":
                out[name] = object["spec"]["type"].stringValue == "LoadBalancer" ? 1000 : 0
            case "requests.storage":
                out[name] = Quantity.milliValue(object["spec"]["resources"]["requests"]["storage"]) ?? 0
            case _ where computeNames.contains(name):
                let isLimit = name.hasPrefix("limits.")
                let resource = name.split(separator: ".").last.map(String.init) ?? name
                out[name] = podTotal(object["spec"], resource, limits: isLimit)
            default:
                out[name] = 1000
            }
        }
        return out
    }

    /// A pod's effective request (or limit): the containers' sum, or the largest init container's
    /// if that is more, plus the pod overhead.
    static func podTotal(_ spec: JSON, _ resource: String, limits: Bool) -> Int64 {
        let field = limits ? "limits" : "requests"
        func amount(_ c: JSON) -> Int64 {
            Quantity.milliValue(c["resources"][field][resource]) ?? (limits ? 0 : Quantity.milliValue(c["resources"]["limits"][resource]) ?? 0)
        }
        let sum = (spec["containers"].arrayValue ?? []).reduce(Int64(0)) { $0 + amount($1) }
        let initMax = (spec["initContainers"].arrayValue ?? []).map(amount).max() ?? 0
        return max(sum, initMax) + (Quantity.milliValue(spec["overhead"][resource]) ?? 0)
    }

    /// Containers of a pod that leave `name` unset (a quota on it then refuses the pod).
    public static func containersMissing(_ name: String, in spec: JSON) -> [String] {
        guard computeNames.contains(name) else { return [] }
        let field = name.hasPrefix("limits.") ? "limits" : "requests"
        let resource = name.split(separator: ".").last.map(String.init) ?? name
        return ((spec["initContainers"].arrayValue ?? []) + (spec["containers"].arrayValue ?? [])).compactMap { c in
            let set = !c["resources"][field][resource].isNull || (field == "requests" && !c["resources"]["limits"][resource].isNull)
            return set ? nil : c["name"].stringValue ?? ""
        }
    }

    /// A usage of resource `name` in thousandths as a quantity string: `3`, `500m`, `128Mi`
    /// (binary suffixes for memory and storage only).
    public static func render(_ name: String, _ milli: Int64) -> String {
        if milli % 1000 != 0 { return "\(milli)m" }
        let units = milli / 1000
        guard name.contains("memory") || name.contains("storage") else { return "\(units)" }
        for (suffix, size) in [("Gi", Int64(1) << 30), ("Mi", Int64(1) << 20), ("Ki", Int64(1) << 10)] where units >= size && units % size == 0 {
            return "\(units / size)\(suffix)"
        }
        return "\(units)"
    }

    /// A hard limit in thousandths (nil: not a quantity).
    public static func parse(_ q: JSON) -> Int64? { Quantity.milliValue(q) }
}
