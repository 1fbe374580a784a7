import KubeAPI

/// Server-side `meta.k8s.io/v1 Table` rendering, the columns `kubectl get` shows per kind.
enum Tables {
    struct Column: Sendable {
        var name: String
        var type: String = "string"
        var format: String = ""
        var priority: Int = 0
        var description: String = ""
        var cell: @Sendable (JSON) -> JSON
    }

    static func age(_ o: JSON) -> JSON {
        guard let ts = o["metadata"]["creationTimestamp"].stringValue, let t = KubeTime.parse(ts) else { return "<unknown>" }
        return .string(KubeTime.humanDuration(seconds: KubeTime.now().seconds - t.seconds))
    }

    static func name(_ o: JSON) -> JSON { o["metadata"]["name"] }
    static func int(_ v: JSON) -> JSON { .int(v.intValue ?? 0) }
    static func str(_ v: JSON, _ dflt: String = "<none>") -> JSON {
        if let s = v.stringValue, !s.isEmpty { return .string(s) }
        if let i = v.intValue { return .string(String(i)) }
        return .string(dflt)
    }

    static let nameColumn = Column(name: "Name", format: "name", description: "Name must be unique within a namespace.", cell: name)
    static let ageColumn = Column(name: "Age", description: "CreationTimestamp is a timestamp representing the server time when this object was created.", cell: age)

    static func containers(_ spec: JSON) -> [JSON] { spec["template"]["spec"]["containers"].arrayValue ?? [] }

    static func workloadWide() -> [Column] {
        [Column(name: "Containers", priority: 1, cell: { o in .string(containers(o["spec"]).compactMap { $0["name"].stringValue }.joined(separator: ",")) }),
         Column(name: "Images", priority: 1, cell: { o in .string(containers(o["spec"]).compactMap { $0["image"].stringValue }.joined(separator: ",")) }),
         Column(name: "Selector", priority: 1, cell: { o in .string(((try? LabelSelector.from(object: o["spec"]["selector"]))?.description) ?? "") })]
    }

    static func podStatus(_ o: JSON) -> String {
        var reason = o["status"]["phase"].stringValue ?? "Unknown"
        if let r = o["status"]["reason"].stringValue, !r.isEmpty { reason = r }
        for cs in o["status"]["initContainerStatuses"].arrayValue ?? [] {
            if let t = cs["state"]["terminated"].objectValue, (t["exitCode"]?.intValue ?? 0) != 0 { reason = "Init:Error"; break }
            if let w = cs["state"]["waiting"]["reason"].stringValue, w != "PodInitializing" { reason = "Init:\(w)"; break }
        }
        for cs in (o["status"]["containerStatuses"].arrayValue ?? []).reversed() {
            if let w = cs["state"]["waiting"]["reason"].stringValue, !w.isEmpty { reason = w }
            else if let t = cs["state"]["terminated"]["reason"].stringValue, !t.isEmpty { reason = t }
        }
        if !o["metadata"]["deletionTimestamp"].isNull {
            reason = o["status"]["reason"].stringValue == "NodeLost" ? "Unknown" : "Terminating"
        }
        return reason
    }

    static func columns(for type: ResourceType, registry: ResourceRegistry) -> [Column] {
        if type.isCustom {
            var cols = [nameColumn]
            for c in registry.printerColumns(for: type) ?? [] {
                let path = c["jsonPath"].stringValue ?? ""
                let t = c["type"].stringValue ?? "string"
                cols.append(Column(name: c["name"].stringValue ?? "", type: t == "date" ? "string" : t, format: c["format"].stringValue ?? "",
                                   priority: Int(c["priority"].intValue ?? 0), description: c["description"].stringValue ?? "",
                                   cell: { o in
                                       let v = jsonPath(o, path)
                                       if t == "date", let s = v.stringValue, let ts = KubeTime.parse(s) {
                                           return .string(KubeTime.humanDuration(seconds: KubeTime.now().seconds - ts.seconds))
                                       }
                                       if v.isNull { return t == "integer" || t == "number" ? .null : "<none>" }
                                       if case .object = v { return .string(v.description) }
                                       if case .array = v { return .string(v.description) }
                                       return v
                                   }))
            }
            if (registry.printerColumns(for: type) ?? []).isEmpty { cols.append(ageColumn) }
            return cols
        }
        switch (type.group, type.resource) {
        case ("", "pods"):
            return [nameColumn,
                    Column(name: "Ready", description: "The aggregate readiness state of this pod for accepting traffic.", cell: { o in
                        let specs = o["spec"]["containers"].arrayValue ?? []
                        let ready = (o["status"]["containerStatuses"].arrayValue ?? []).filter { $0["ready"].boolValue == true }.count
                        return .string("\(ready)/\(specs.count)")
                    }),
                    Column(name: "Status", description: "The aggregate status of the containers in this pod.", cell: { .string(podStatus($0)) }),
                    Column(name: "Restarts", type: "string", description: "The number of times the containers in this pod have been restarted.", cell: { o in
                        let n = (o["status"]["containerStatuses"].arrayValue ?? []).reduce(Int64(0)) { $0 + ($1["restartCount"].intValue ?? 0) }
                        return .string(String(n))
                    }),
                    ageColumn,
                    Column(name: "IP", priority: 1, cell: { str($0["status"]["podIP"]) }),
                    Column(name: "Node", priority: 1, cell: { str($0["spec"]["nodeName"]) }),
                    Column(name: "Nominated Node", priority: 1, cell: { str($0["status"]["nominatedNodeName"]) }),
                    Column(name: "Readiness Gates", priority: 1, cell: { o in
                        let gates = o["spec"]["readinessGates"].arrayValue ?? []
                        if gates.isEmpty { return "<none>" }
                        return .string("0/\(gates.count)")
                    })]
        case ("", "nodes"):
            return [nameColumn,
                    Column(name: "Status", cell: { o in
                        let ready = (o["status"]["conditions"].arrayValue ?? []).first { $0["type"].stringValue == "Ready" }
                        var s: String
                        switch ready?["status"].stringValue {
                        case "True": s = "Ready"
                        case "False": s = "NotReady"
                        default: s = ready == nil ? "NotReady" : "Unknown"
                        }
                        if o["spec"]["unschedulable"].boolValue == true { s += ",SchedulingDisabled" }
                        return .string(s)
                    }),
                    Column(name: "Roles", cell: { o in
                        let roles = (o["metadata"]["labels"].objectValue ?? [:]).keys.compactMap { k -> String? in
                            k.hasPrefix("node-role.kubernetes.io/") ? String(k.dropFirst("node-role.kubernetes.io/".count)) : nil
                        }.sorted()
                        return .string(roles.isEmpty ? "<none>" : roles.joined(separator: ","))
                    }),
                    ageColumn,
                    Column(name: "Version", cell: { str($0["status"]["nodeInfo"]["kubeletVersion"], "") }),
                    Column(name: "Internal-IP", priority: 1, cell: { o in address(o, "InternalIP") }),
                    Column(name: "External-IP", priority: 1, cell: { o in address(o, "ExternalIP") }),
                    Column(name: "OS-Image", priority: 1, cell: { str($0["status"]["nodeInfo"]["osImage"], "<unknown>") }),
                    Column(name: "Kernel-Version", priority: 1, cell: { str($0["status"]["nodeInfo"]["kernelVersion"], "<unknown>") }),
                    Column(name: "Container-Runtime", priority: 1, cell: { str($0["status"]["nodeInfo"]["containerRuntimeVersion"], "<unknown>") })]
        case ("apps", "deployments"):
            return [nameColumn,
                    Column(name: "Ready", cell: { o in .string("\(o["status"]["readyReplicas"].intValue ?? 0)/\(o["spec"]["replicas"].intValue ?? 0)") }),
                    Column(name: "Up-to-date", type: "integer", cell: { int($0["status"]["updatedReplicas"]) }),
                    Column(name: "Available", type: "integer", cell: { int($0["status"]["availableReplicas"]) }),
                    ageColumn] + workloadWide()
        case ("apps", "replicasets"):
            return [nameColumn,
                    Column(name: "Desired", type: "integer", cell: { int($0["spec"]["replicas"]) }),
                    Column(name: "Current", type: "integer", cell: { int($0["status"]["replicas"]) }),
                    Column(name: "Ready", type: "integer", cell: { int($0["status"]["readyReplicas"]) }),
                    ageColumn] + workloadWide()
        case ("apps", "daemonsets"):
            return [nameColumn,
                    Column(name: "Desired", type: "integer", cell: { int($0["status"]["desiredNumberScheduled"]) }),
                    Column(name: "Current", type: "integer", cell: { int($0["status"]["currentNumberScheduled"]) }),
                    Column(name: "Ready", type: "integer", cell: { int($0["status"]["numberReady"]) }),
                    Column(name: "Up-to-date", type: "integer", cell: { int($0["status"]["updatedNumberScheduled"]) }),
                    Column(name: "Available", type: "integer", cell: { int($0["status"]["numberAvailable"]) }),
                    Column(name: "Node Selector", cell: { o in
                        let sel = (o["spec"]["template"]["spec"]["nodeSelector"].objectValue ?? [:]).sorted { $0.key < $1.key }
                        return .string(sel.isEmpty ? "<none>" : sel.map { "\($0.key)=\($0.value.stringValue ?? "")" }.joined(separator: ","))
                    }),
                    ageColumn] + workloadWide()
        case ("apps", "statefulsets"):
            return [nameColumn,
                    Column(name: "Ready", cell: { o in .string("\(o["status"]["readyReplicas"].intValue ?? 0)/\(o["spec"]["replicas"].intValue ?? 0)") }),
                    ageColumn] + Array(workloadWide().prefix(2))
        case ("", "services"):
            return [nameColumn,
                    Column(name: "Type", cell: { str($0["spec"]["type"], "ClusterIP") }),
                    Column(name: "Cluster-IP", cell: { str($0["spec"]["clusterIP"]) }),
                    Column(name: "External-IP", cell: { o in
                        if let ips = o["spec"]["externalIPs"].arrayValue, !ips.isEmpty { return .string(ips.compactMap(\.stringValue).joined(separator: ",")) }
                        if o["spec"]["type"].stringValue == "LoadBalancer" { return "<pending>" }
                        if o["spec"]["type"].stringValue == "ExternalName" { return str(o["spec"]["externalName"]) }
                        return "<none>"
                    }),
                    Column(name: "Port(s)", cell: { o in
                        let ports = (o["spec"]["ports"].arrayValue ?? []).map { p -> String in
                            var s = "\(p["port"].intValue ?? 0)"
                            if let np = p["nodePort"].intValue { s += ":\(np)" }
                            return s + "/\(p["protocol"].stringValue ?? "TCP")"
                        }
                        return .string(ports.isEmpty ? "<none>" : ports.joined(separator: ","))
                    }),
                    ageColumn,
                    Column(name: "Selector", priority: 1, cell: { o in
                        let sel = (o["spec"]["selector"].objectValue ?? [:]).sorted { $0.key < $1.key }
                        return .string(sel.isEmpty ? "<none>" : sel.map { "\($0.key)=\($0.value.stringValue ?? "")" }.joined(separator: ","))
                    })]
        case ("", "configmaps"):
            return [nameColumn, Column(name: "Data", type: "integer", cell: { o in
                .int(Int64((o["data"].objectValue?.count ?? 0) + (o["binaryData"].objectValue?.count ?? 0)))
            }), ageColumn]
        case ("", "secrets"):
            return [nameColumn, Column(name: "Type", cell: { str($0["type"], "Opaque") }),
                    Column(name: "Data", type: "integer", cell: { .int(Int64($0["data"].objectValue?.count ?? 0)) }), ageColumn]
        case ("", "namespaces"):
            return [nameColumn, Column(name: "Status", cell: { str($0["status"]["phase"], "Active") }), ageColumn]
        case ("", "serviceaccounts"):
            return [nameColumn, Column(name: "Secrets", type: "integer", cell: { .int(Int64($0["secrets"].arrayValue?.count ?? 0)) }), ageColumn]
        case ("", "endpoints"):
            return [nameColumn, Column(name: "Endpoints", cell: { o in
                var eps: [String] = []
                for s in o["subsets"].arrayValue ?? [] {
                    let ports = (s["ports"].arrayValue ?? []).compactMap { $0["port"].intValue }
                    for a in s["addresses"].arrayValue ?? [] {
                        let ip = a["ip"].stringValue ?? ""
                        if ports.isEmpty { eps.append(ip) } else { for p in ports { eps.append("\(ip):\(p)") } }
                    }
                }
                if eps.isEmpty { return "<none>" }
                return .string(eps.count > 3 ? eps.prefix(3).joined(separator: ",") + " + \(eps.count - 3) more..." : eps.joined(separator: ","))
            }), ageColumn]
        case ("", "events"):
            return [Column(name: "Last Seen", cell: { o in
                        let ts = o["lastTimestamp"].stringValue ?? o["eventTime"].stringValue ?? o["metadata"]["creationTimestamp"].stringValue ?? ""
                        guard let t = KubeTime.parse(ts) else { return "<unknown>" }
                        return .string(KubeTime.humanDuration(seconds: KubeTime.now().seconds - t.seconds))
                    }),
                    Column(name: "Type", cell: { str($0["type"]) }),
                    Column(name: "Reason", cell: { str($0["reason"]) }),
                    Column(name: "Object", cell: { o in .string("\((o["involvedObject"]["kind"].stringValue ?? "").lowercased())/\(o["involvedObject"]["name"].stringValue ?? "")") }),
                    Column(name: "Message", cell: { str($0["message"], "") }),
                    Column(name: "Name", format: "name", priority: 1, cell: name)]
        case ("batch", "jobs"):
            return [nameColumn,
                    Column(name: "Status", cell: { o in
                        let conds = o["status"]["conditions"].arrayValue ?? []
                        if conds.contains(where: { $0["type"].stringValue == "Complete" && $0["status"].stringValue == "True" }) { return "Complete" }
                        if conds.contains(where: { $0["type"].stringValue == "Failed" && $0["status"].stringValue == "True" }) { return "Failed" }
                        if o["spec"]["suspend"].boolValue == true { return "Suspended" }
                        return "Running"
                    }),
                    Column(name: "Completions", cell: { o in .string("\(o["status"]["succeeded"].intValue ?? 0)/\(o["spec"]["completions"].intValue ?? 1)") }),
                    ageColumn] + Array(workloadWide())
        case ("batch", "cronjobs"):
            return [nameColumn,
                    Column(name: "Schedule", cell: { str($0["spec"]["schedule"], "") }),
                    Column(name: "Timezone", cell: { str($0["spec"]["timeZone"]) }),
                    Column(name: "Suspend", cell: { o in .string(o["spec"]["suspend"].boolValue == true ? "True" : "False") }),
                    Column(name: "Active", type: "integer", cell: { o in .int(Int64(o["status"]["active"].arrayValue?.count ?? 0)) }),
                    Column(name: "Last Schedule", cell: { o in
                        guard let s = o["status"]["lastScheduleTime"].stringValue, let t = KubeTime.parse(s) else { return "<none>" }
                        return .string(KubeTime.humanDuration(seconds: KubeTime.now().seconds - t.seconds))
                    }),
                    ageColumn]
        case ("rbac.authorization.k8s.io", "rolebindings"), ("rbac.authorization.k8s.io", "clusterrolebindings"):
            @Sendable func subjects(_ o: JSON, _ kind: String) -> JSON {
                let names = (o["subjects"].arrayValue ?? []).filter { $0["kind"].stringValue == kind }.map { s -> String in
                    let n = s["name"].stringValue ?? ""
                    return kind == "ServiceAccount" ? "\(s["namespace"].stringValue ?? "")/\(n)" : n
                }
                return names.isEmpty ? "" : .string(names.joined(separator: ", "))
            }
            return [nameColumn,
                    Column(name: "Role", cell: { o in .string("\(o["roleRef"]["kind"].stringValue ?? "")/\(o["roleRef"]["name"].stringValue ?? "")") }),
                    ageColumn,
                    Column(name: "Users", priority: 1, cell: { subjects($0, "User") }),
                    Column(name: "Groups", priority: 1, cell: { subjects($0, "Group") }),
                    Column(name: "ServiceAccounts", priority: 1, cell: { subjects($0, "ServiceAccount") })]
        case ("policy", "poddisruptionbudgets"):
            @Sendable func intOrPercent(_ v: JSON) -> JSON {
                switch v {
                case .int(let i): return .string(String(i))
                case .string(let x): return .string(x)
                default: return "N/A"
                }
            }
            return [nameColumn,
                    Column(name: "Min Available", cell: { intOrPercent($0["spec"]["minAvailable"]) }),
                    Column(name: "Max Unavailable", cell: { intOrPercent($0["spec"]["maxUnavailable"]) }),
                    Column(name: "Allowed Disruptions", type: "integer", cell: { .int($0["status"]["disruptionsAllowed"].intValue ?? 0) }),
                    ageColumn]
        case ("scheduling.k8s.io", "priorityclasses"):
            return [nameColumn,
                    Column(name: "Value", type: "integer", cell: { $0["value"].isNull ? 0 : $0["value"] }),
                    Column(name: "Global-Default", cell: { o in .string(o["globalDefault"].boolValue == true ? "true" : "false") }),
                    ageColumn,
                    Column(name: "PreemptionPolicy", cell: { str($0["preemptionPolicy"], "PreemptLowerPriority") })]
        case ("certificates.k8s.io", "certificatesigningrequests"):
            return [nameColumn, ageColumn,
                    Column(name: "SignerName", cell: { str($0["spec"]["signerName"], "") }),
                    Column(name: "Requestor", cell: { str($0["spec"]["username"], "") }),
                    Column(name: "RequestedDuration", cell: { o in
                        guard let s = o["spec"]["expirationSeconds"].intValue else { return "<none>" }
                        return .string(KubeTime.humanDuration(seconds: s))
                    }),
                    Column(name: "Condition", cell: { o in
                        let c = (o["status"]["conditions"].arrayValue ?? []).compactMap { $0["type"].stringValue }
                        var parts = c.isEmpty ? ["Pending"] : c
                        if !(o["status"]["certificate"].stringValue ?? "").isEmpty { parts.append("Issued") }
                        return .string(parts.joined(separator: ","))
                    })]
        case ("coordination.k8s.io", "leases"):
            return [nameColumn, Column(name: "Holder", cell: { str($0["spec"]["holderIdentity"], "") }), ageColumn]
        case ("apiextensions.k8s.io", "customresourcedefinitions"):
            return [nameColumn, Column(name: "Created At", format: "date", cell: { str($0["metadata"]["creationTimestamp"], "") })]
        default:
            return [nameColumn, ageColumn]
        }
    }

    static func address(_ node: JSON, _ type: String) -> JSON {
        for a in node["status"]["addresses"].arrayValue ?? [] where a["type"].stringValue == type {
            return a["address"]
        }
        return "<none>"
    }

    /// Evaluates the simple JSONPath subset printer columns use (`.spec.a.b`, `.status.x[0].y`).
    static func jsonPath(_ o: JSON, _ path: String) -> JSON {
        var p = path.trimmingCharacters(in: .whitespaces)
        if p.hasPrefix("{") && p.hasSuffix("}") { p = String(p.dropFirst().dropLast()) }
        var cur = o
        for seg in p.split(separator: ".") {
            var s = Substring(seg)
            var idx: Int?
            if let b = s.firstIndex(of: "["), s.hasSuffix("]") {
                idx = Int(s[s.index(after: b)..<s.index(before: s.endIndex)])
                s = s[..<b]
            }
            if !s.isEmpty { cur = cur[String(s)] }
            if let i = idx { cur = (cur.arrayValue.flatMap { i < $0.count ? $0[i] : nil }) ?? .null }
        }
        return cur
    }

    static func table(for objects: [JSON], type: ResourceType, registry: ResourceRegistry, revision: String,
                      continueToken: String?, includeHeaders: Bool, req: APIRequest) -> JSON
    {
        let cols = columns(for: type, registry: registry)
        let include = req.query["includeObject"] ?? "Metadata"
        var rows: [JSON] = []
        rows.reserveCapacity(objects.count)
        for o in objects {
            var row: JSON = ["cells": .array(cols.map { $0.cell(o) })]
            switch include {
            case "None": break
            case "Object": row["object"] = o
            default:
                row["object"] = ["kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]]
            }
            rows.append(row)
        }
        var meta: JSON = ["resourceVersion": .string(revision)]
        if let c = continueToken { meta["continue"] = .string(c) }
        var t: JSON = ["kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "rows": .array(rows)]
        t["columnDefinitions"] = includeHeaders ? .array(cols.map { c in
            ["name": .string(c.name), "type": .string(c.type), "format": .string(c.format),
             "description": .string(c.description), "priority": .int(Int64(c.priority))]
        }) : .array([])
        return t
    }
}
