import Foundation
import KubeAPI
import KubeAuth
import ObjectStore

/// Per-kind defaulting and validation (what kube-apiserver's registry strategies and default
/// admission plugins do), plus follow-up writes after an object is stored.
enum Admission {
    static func invalid(_ type: ResourceType, _ obj: JSON, _ causes: [StatusError.Cause]) -> StatusError {
        StatusError.invalid(kind: type.kind, group: type.group, name: obj["metadata"]["name"].stringValue ?? "", causes: causes)
    }

    static func required(_ field: String) -> StatusError.Cause {
        .init(reason: "FieldValueRequired", message: "Required value", field: field)
    }

    // MARK: create

    static func admitCreate(_ obj: inout JSON, type: ResourceType, handler: APIHandler, user: UserInfo?) async throws {
        guard !type.isCustom else { return }
        switch (type.group, type.resource) {
        case ("", "pods"):
            defaultPodSpec(&obj["spec"])
            if obj["spec"]["serviceAccountName"].isNull { obj["spec"]["serviceAccountName"] = "default" }
            if obj["spec"]["serviceAccount"].isNull { obj["spec"]["serviceAccount"] = obj["spec"]["serviceAccountName"] }
            try await mountServiceAccountToken(&obj, handler: handler)
            try await resolvePriority(&obj, handler: handler)
            addDefaultTolerations(&obj["spec"])
            try validatePodSpec(obj["spec"], path: "spec", type: type, obj: obj)
            obj["status"] = ["phase": "Pending", "qosClass": .string(qosClass(obj["spec"]))]
        case ("", "namespaces"):
            obj["spec"]["finalizers"] = ["kubernetes"]
            obj["status"] = ["phase": "Active"]
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = .string(obj["metadata"]["name"].stringValue ?? "")
        case ("", "services"):
            try await defaultService(&obj, handler: handler)
            obj["status"] = ["loadBalancer": .emptyObject]
        case ("", "secrets"):
            if obj["type"].isNull { obj["type"] = "Opaque" }
            mergeStringData(&obj)
            try validateBase64Data(obj, type: type)
            try await fillServiceAccountToken(&obj, handler: handler)
        case ("", "configmaps"):
            break
        case ("scheduling.k8s.io", "priorityclasses"):
            if obj["globalDefault"].isNull { obj["globalDefault"] = false }
            if obj["preemptionPolicy"].isNull { obj["preemptionPolicy"] = "PreemptLowerPriority" }
        case ("certificates.k8s.io", "certificatesigningrequests"):
            // The requester, as kube-apiserver records it.
            let requester = user ?? .admin
            obj["spec"]["username"] = .string(requester.username)
            obj["spec"]["groups"] = .array(requester.groups.map { .string($0) })
            if !requester.uid.isEmpty { obj["spec"]["uid"] = .string(requester.uid) }
            if !requester.extra.isEmpty { obj["spec"]["extra"] = .object(requester.extra.mapValues { .array($0.map { .string($0) }) }) }
            obj["status"] = .emptyObject
        case ("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"), ("apps", "daemonsets"):
            try defaultWorkload(&obj, type: type)
            obj["status"] = .null
        case ("batch", "cronjobs"):
            defaultCronJob(&obj)
            obj["status"] = .null
        case ("batch", "jobs"):
            defaultJob(&obj)
            try validatePodSpec(obj["spec"]["template"]["spec"], path: "spec.template.spec", type: type, obj: obj)
            obj["status"] = .null
        case ("apiextensions.k8s.io", "customresourcedefinitions"):
            try CRDSchema.validateDefinition(obj, existing: handler.registry)
            CRDSchema.defaultSpec(&obj)
            obj["status"] = CRDSchema.status(for: obj)
        default:
            break
        }
    }

    /// `stringData` is write-only: its entries are folded into `data` (base64), as kube-apiserver does.
    static func mergeStringData(_ obj: inout JSON) {
        guard let sd = obj["stringData"].objectValue else { return }
        for (k, v) in sd { obj["data"][k] = .string(Data((v.stringValue ?? "").utf8).base64EncodedString()) }
        obj["stringData"] = .null
    }

    /// An immutable ConfigMap or Secret keeps its data (and stays immutable).
    static func checkImmutable(_ obj: JSON, old: JSON, type: ResourceType) throws(StatusError) {
        guard old["immutable"].boolValue == true else { return }
        if obj["data"] != old["data"] || obj["binaryData"] != old["binaryData"] || obj["immutable"].boolValue != true {
            throw invalid(type, obj, [.init(reason: "FieldValueForbidden", message: "Forbidden: field is immutable when `immutable` is set", field: "data")])
        }
    }

    static func validateBase64Data(_ obj: JSON, type: ResourceType) throws(StatusError) {
        for (k, v) in obj["data"].objectValue ?? [:] {
            guard let s = v.stringValue, Data(base64Encoded: s) != nil else {
                throw StatusError.badRequest("Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input for key \(k)")
            }
        }
    }

    static func defaultPodSpec(_ spec: inout JSON) {
        if spec["restartPolicy"].isNull { spec["restartPolicy"] = "Always" }
        if spec["dnsPolicy"].isNull { spec["dnsPolicy"] = "ClusterFirst" }
        if spec["terminationGracePeriodSeconds"].isNull { spec["terminationGracePeriodSeconds"] = 30 }
        if spec["schedulerName"].isNull { spec["schedulerName"] = "default-scheduler" }
        if spec["securityContext"].isNull { spec["securityContext"] = .emptyObject }
        if spec["enableServiceLinks"].isNull { spec["enableServiceLinks"] = true }
        for field in ["containers", "initContainers"] {
            guard var list = spec[field].arrayValue else { continue }
            for i in list.indices {
                var c = list[i]
                if c["terminationMessagePath"].isNull { c["terminationMessagePath"] = "/dev/termination-log" }
                if c["terminationMessagePolicy"].isNull { c["terminationMessagePolicy"] = "File" }
                if c["imagePullPolicy"].isNull, let image = c["image"].stringValue {
                    let last = image.split(separator: "/").last ?? ""
                    let tagged = last.contains(":") && !last.hasSuffix(":latest")
                    c["imagePullPolicy"] = .string(tagged || image.contains("@") ? "IfNotPresent" : "Always")
                }
                if c["resources"].isNull { c["resources"] = .emptyObject }
                if var ports = c["ports"].arrayValue {
                    for j in ports.indices where ports[j]["protocol"].isNull { ports[j]["protocol"] = "TCP" }
                    c["ports"] = .array(ports)
                }
                list[i] = c
            }
            spec[field] = .array(list)
        }
    }

    static func addDefaultTolerations(_ spec: inout JSON) {
        var tols = spec["tolerations"].arrayValue ?? []
        for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]
        where !tols.contains(where: { $0["key"].stringValue == key && ($0["effect"].stringValue ?? "NoExecute") == "NoExecute" }) {
            tols.append(["key": .string(key), "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300])
        }
        spec["tolerations"] = .array(tols)
    }

    static func qosClass(_ spec: JSON) -> String {
        var anyRequest = false
        var allGuaranteed = true
        for c in (spec["containers"].arrayValue ?? []) + (spec["initContainers"].arrayValue ?? []) {
            let req = c["resources"]["requests"].objectValue ?? [:]
            let lim = c["resources"]["limits"].objectValue ?? [:]
            if !req.isEmpty || !lim.isEmpty { anyRequest = true }
            for r in ["cpu", "memory"] {
                guard let l = lim[r] else { allGuaranteed = false; continue }
                if let q = req[r], q != l { allGuaranteed = false }
            }
        }
        if !anyRequest { return "BestEffort" }
        return allGuaranteed ? "Guaranteed" : "Burstable"
    }

    static func validatePodSpec(_ spec: JSON, path: String, type: ResourceType, obj: JSON) throws(StatusError) {
        var causes: [StatusError.Cause] = []
        let containers = spec["containers"].arrayValue ?? []
        if containers.isEmpty { causes.append(required("\(path).containers")) }
        var names = Set<String>()
        for (i, c) in containers.enumerated() {
            let name = c["name"].stringValue ?? ""
            if name.isEmpty { causes.append(required("\(path).containers[\(i)].name")) }
            else if !isDNS1123Label(name) {
                causes.append(.init(reason: "FieldValueInvalid", message: "Invalid value: \"\(name)\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character", field: "\(path).containers[\(i)].name"))
            } else if !names.insert(name).inserted {
                causes.append(.init(reason: "FieldValueDuplicate", message: "Duplicate value: \"\(name)\"", field: "\(path).containers[\(i)].name"))
            }
            if (c["image"].stringValue ?? "").isEmpty { causes.append(required("\(path).containers[\(i)].image")) }
        }
        if let rp = spec["restartPolicy"].stringValue, !["Always", "OnFailure", "Never"].contains(rp) {
            causes.append(.init(reason: "FieldValueNotSupported", message: "Unsupported value: \"\(rp)\": supported values: \"Always\", \"OnFailure\", \"Never\"", field: "\(path).restartPolicy"))
        }
        if !causes.isEmpty { throw invalid(type, obj, causes) }
    }

    static func defaultWorkload(_ obj: inout JSON, type: ResourceType) throws(StatusError) {
        var spec = obj["spec"]
        if type.resource != "daemonsets", spec["replicas"].isNull { spec["replicas"] = 1 }
        if spec["revisionHistoryLimit"].isNull { spec["revisionHistoryLimit"] = 10 }
        switch type.resource {
        case "deployments":
            if spec["strategy"]["type"].isNull { spec["strategy"]["type"] = "RollingUpdate" }
            if spec["strategy"]["type"].stringValue == "RollingUpdate" {
                if spec["strategy"]["rollingUpdate"]["maxUnavailable"].isNull { spec["strategy"]["rollingUpdate"]["maxUnavailable"] = "25%" }
                if spec["strategy"]["rollingUpdate"]["maxSurge"].isNull { spec["strategy"]["rollingUpdate"]["maxSurge"] = "25%" }
            }
            if spec["progressDeadlineSeconds"].isNull { spec["progressDeadlineSeconds"] = 600 }
        case "statefulsets":
            if spec["podManagementPolicy"].isNull { spec["podManagementPolicy"] = "OrderedReady" }
            if spec["updateStrategy"]["type"].isNull { spec["updateStrategy"] = ["type": "RollingUpdate", "rollingUpdate": ["partition": 0]] }
        case "daemonsets":
            if spec["updateStrategy"]["type"].isNull { spec["updateStrategy"] = ["type": "RollingUpdate", "rollingUpdate": ["maxUnavailable": 1, "maxSurge": 0]] }
        default: break
        }
        defaultPodSpec(&spec["template"]["spec"])
        dropNullTimestamp(&spec["template"])
        obj["spec"] = spec
        var causes: [StatusError.Cause] = []
        for f in ["replicas", "revisionHistoryLimit", "minReadySeconds", "progressDeadlineSeconds"] {
            if let n = spec[f].intValue, n < 0 {
                causes.append(.init(reason: "FieldValueInvalid", message: "Invalid value: \(n): must be greater than or equal to 0", field: "spec.\(f)"))
            }
        }
        if spec["selector"].isNull { causes.append(required("spec.selector")) }
        else if let sel = try? LabelSelector.from(object: spec["selector"]) {
            var labels: [String: String] = [:]
            for (k, v) in spec["template"]["metadata"]["labels"].objectValue ?? [:] { labels[k] = v.stringValue ?? "" }
            if sel.isEverything {
                causes.append(.init(reason: "FieldValueInvalid", message: "Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment", field: "spec.selector"))
            } else if !sel.matches(labels) {
                causes.append(.init(reason: "FieldValueInvalid", message: "Invalid value: \(spec["template"]["metadata"]["labels"]): `selector` does not match template `labels`", field: "spec.template.metadata.labels"))
            }
        }
        if !causes.isEmpty { throw invalid(type, obj, causes) }
        try validatePodSpec(spec["template"]["spec"], path: "spec.template.spec", type: type, obj: obj)
    }

    /// `metadata.creationTimestamp: null` in a pod template (kubectl 1.32's rollout undo sends it)
    /// is no value: kube drops it, so the template — and its hash — is the revision's again.
    static func dropNullTimestamp(_ template: inout JSON) {
        if case .object(var md) = template["metadata"], md["creationTimestamp"] == .null, md.keys.contains("creationTimestamp") {
            md.removeValue(forKey: "creationTimestamp")
            template["metadata"] = .object(md)
        }
    }

    /// A CronJob's defaults, as kube-apiserver sets them.
    static func defaultCronJob(_ obj: inout JSON) {
        var spec = obj["spec"]
        if spec["concurrencyPolicy"].isNull { spec["concurrencyPolicy"] = "Allow" }
        if spec["suspend"].isNull { spec["suspend"] = false }
        if spec["successfulJobsHistoryLimit"].isNull { spec["successfulJobsHistoryLimit"] = 3 }
        if spec["failedJobsHistoryLimit"].isNull { spec["failedJobsHistoryLimit"] = 1 }
        var job = spec["jobTemplate"]
        defaultPodSpec(&job["spec"]["template"]["spec"])
        dropNullTimestamp(&job["spec"]["template"])
        spec["jobTemplate"] = job
        obj["spec"] = spec
    }

    static func defaultJob(_ obj: inout JSON) {
        var spec = obj["spec"]
        if spec["parallelism"].isNull { spec["parallelism"] = 1 }
        if spec["completions"].isNull { spec["completions"] = 1 }
        if spec["backoffLimit"].isNull { spec["backoffLimit"] = 6 }
        if spec["completionMode"].isNull { spec["completionMode"] = "NonIndexed" }
        if spec["suspend"].isNull { spec["suspend"] = false }
        if spec["template"]["spec"]["restartPolicy"].isNull { spec["template"]["spec"]["restartPolicy"] = "Never" }
        if spec["selector"].isNull, spec["manualSelector"].boolValue != true {
            let uid = obj["metadata"]["uid"]
            spec["selector"] = ["matchLabels": ["batch.kubernetes.io/controller-uid": uid]]
            spec["template"]["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] = uid
            spec["template"]["metadata"]["labels"]["controller-uid"] = uid
            spec["template"]["metadata"]["labels"]["batch.kubernetes.io/job-name"] = obj["metadata"]["name"]
            spec["template"]["metadata"]["labels"]["job-name"] = obj["metadata"]["name"]
        }
        defaultPodSpec(&spec["template"]["spec"])
        obj["spec"] = spec
    }

    static func defaultService(_ obj: inout JSON, handler: APIHandler) async throws {
        var spec = obj["spec"]
        let type = spec["type"].stringValue ?? "ClusterIP"
        spec["type"] = .string(type)
        if spec["sessionAffinity"].isNull { spec["sessionAffinity"] = "None" }
        if type != "ExternalName" {
            var ports = spec["ports"].arrayValue ?? []
            if ports.isEmpty && spec["clusterIP"].stringValue != "None" {  // a headless Service may have none
                throw invalid(BuiltinResources.all.first { $0.resource == "services" }!, obj, [required("spec.ports")])
            }
            for i in ports.indices {
                if ports[i]["protocol"].isNull { ports[i]["protocol"] = "TCP" }
                if ports[i]["targetPort"].isNull { ports[i]["targetPort"] = ports[i]["port"] }
                // `kubectl create service clusterip` sends nodePort 0: no node port, as kube stores it.
                if ports[i]["nodePort"].intValue == 0, type != "NodePort", type != "LoadBalancer" { ports[i]["nodePort"] = .null }
            }
            spec["ports"] = .array(ports)
            if spec["internalTrafficPolicy"].isNull { spec["internalTrafficPolicy"] = "Cluster" }
            if spec["ipFamilies"].isNull { spec["ipFamilies"] = ["IPv4"] }
            if spec["ipFamilyPolicy"].isNull { spec["ipFamilyPolicy"] = "SingleStack" }
            if spec["clusterIP"].stringValue == "None" {
                spec["clusterIPs"] = ["None"]
            } else if (spec["clusterIP"].stringValue ?? "").isEmpty {
                let ip = try await allocateClusterIP(handler)
                spec["clusterIP"] = .string(ip)
                spec["clusterIPs"] = [.string(ip)]
            } else {
                if let ip = spec["clusterIP"].stringValue { try await checkRequestedClusterIP(handler, obj, ip) }
                if spec["clusterIPs"].isNull { spec["clusterIPs"] = [spec["clusterIP"]] }
            }
            if type == "NodePort" || type == "LoadBalancer" {
                let used = try await usedNodePorts(handler)
                for (i, p) in ports.enumerated() {
                    if let n = p["nodePort"].intValue, n != 0 {
                        guard (30000...32767).contains(n) else {
                            throw invalid(ResourceType.services, obj, [.init(reason: "FieldValueInvalid", message: "Invalid value: \(n): provided port is not in the valid range. The range of valid ports is 30000-32767", field: "spec.ports[\(i)].nodePort")])
                        }
                        if used.contains(Int(n)) {
                            throw invalid(ResourceType.services, obj, [.init(reason: "FieldValueInvalid", message: "Invalid value: \(n): provided port is already allocated", field: "spec.ports[\(i)].nodePort")])
                        }
                    }
                }
                var next = 30000 + Int.random(in: 0..<2000)
                for i in ports.indices where ports[i]["nodePort"].isNull || ports[i]["nodePort"].intValue == 0 {
                    while used.contains(next) { next += 1 }
                    ports[i]["nodePort"] = .int(Int64(next))
                    next += 1
                }
                spec["ports"] = .array(ports)
                if spec["externalTrafficPolicy"].isNull { spec["externalTrafficPolicy"] = "Cluster" }
                if type == "NodePort", spec["healthCheckNodePort"].intValue == 0 { spec["healthCheckNodePort"] = .null }
            }
        }
        obj["spec"] = spec
    }

    /// kube's ResourceQuota admission: a create that would take its namespace past a quota's
    /// hard limit is refused (403 "exceeded quota"); otherwise its usage is charged to the quota's
    /// `status.used` at once, so the next create sees it (the quota controller recomputes usage
    /// from the objects later, undoing a charge whose create then failed). Quotas with scopes are
    /// not applied.
    static func chargeQuotas(_ obj: JSON, type: ResourceType, handler: APIHandler, dryRun: Bool) async throws {
        guard type.namespaced, let namespace = obj["metadata"]["namespace"].stringValue else { return }
        let quotaType = ResourceType.resourceQuotas
        let page = try await handler.store.list(prefix: quotaType.storagePrefix(namespace: namespace), startAfter: nil, limit: nil,
                                                revision: nil, filter: nil)
        guard !page.items.isEmpty else { return }
        let name = obj["metadata"]["name"].stringValue ?? ""
        @Sendable func forbidden(_ why: String) -> StatusError {
            StatusError(.forbidden, "\(type.resource) \"\(name)\" is forbidden: \(why)", name: name, group: type.group, kind: type.resource)
        }
        for item in page.items {
            let quota = try item.decode()
            let quotaName = quota["metadata"]["name"].stringValue ?? ""
            let names = Set((quota["spec"]["hard"].objectValue ?? [:]).keys)
            guard ResourceQuotaUsage.isTracked(type, in: names), (quota["spec"]["scopes"].arrayValue ?? []).isEmpty,
                quota["spec"]["scopeSelector"].isNull
            else { continue }
            if type.group.isEmpty && type.resource == "pods" {
                let missing = names.sorted().compactMap { n -> String? in
                    let c = ResourceQuotaUsage.containersMissing(n, in: obj["spec"])
                    return c.isEmpty ? nil : "\(n) for: \(c.joined(separator: ","))"
                }
                if !missing.isEmpty { throw forbidden("failed quota: \(quotaName): must specify \(missing.joined(separator: "; "))") }
            }
            let usage = ResourceQuotaUsage.usage(of: obj, type: type, names: names).filter { $0.value > 0 }.sorted { $0.key < $1.key }
            guard !usage.isEmpty else { continue }
            _ = try await handler.store.write(item.key) { cur in
                guard let cur else { return .unchanged }
                var q = try cur.decode()
                var exceeded: [(name: String, requested: Int64, used: Int64, hard: Int64)] = []
                for (n, add) in usage {
                    guard let hard = ResourceQuotaUsage.parse(q["status"]["hard"][n]) else {
                        throw forbidden("status unknown for quota: \(quotaName), resource: \(n)")
                    }
                    let used = ResourceQuotaUsage.parse(q["status"]["used"][n]) ?? 0
                    if used + add > hard { exceeded.append((n, add, used, hard)) }
                }
                if !exceeded.isEmpty {
                    func list(_ value: ((name: String, requested: Int64, used: Int64, hard: Int64)) -> Int64) -> String {
                        exceeded.map { "\($0.name)=\(ResourceQuotaUsage.render($0.name, value($0)))" }.joined(separator: ",")
                    }
                    throw forbidden("exceeded quota: \(quotaName), requested: \(list { $0.requested }), used: \(list { $0.used }), limited: \(list { $0.hard })")
                }
                if dryRun { return .unchanged }
                for (n, add) in usage {
                    q["status"]["used"][n] = .string(ResourceQuotaUsage.render(n, (ResourceQuotaUsage.parse(q["status"]["used"][n]) ?? 0) + add))
                }
                return .put(q)
            }
        }
    }

    static func allServices(_ handler: APIHandler) async throws -> [JSON] {
        let t = BuiltinResources.all.first { $0.resource == "services" }!
        let page = try await handler.store.list(prefix: t.storagePrefix, startAfter: nil, limit: nil, revision: nil, filter: nil)
        return page.items.compactMap { try? $0.decode() }
    }

    /// Picks a free address of the service range (its first address is `kubernetes`), one no
    /// stored Service has and none handed out moments ago (a concurrent create) has either.
    static func allocateClusterIP(_ handler: APIHandler) async throws -> String {
        let range = handler.options.serviceClusterIPRange
        let used = Set(try await allServices(handler).compactMap { $0["spec"]["clusterIP"].stringValue })
        let now = ContinuousClock.now
        let picked = handler.pendingClusterIPs.withLock { pending -> String? in
            pending = pending.filter { now - $0.value < .seconds(60) && !used.contains($0.key) }
            guard range.size > 3 else { return nil }
            for _ in 0..<1000 {
                guard let ip = range.address(UInt64.random(in: 2..<(range.size - 1)))?.description else { continue }
                if !used.contains(ip) && pending[ip] == nil {
                    pending[ip] = now
                    return ip
                }
            }
            return nil
        }
        guard let picked else { throw StatusError(.internalError, "failed to allocate a serviceIP: range is full") }
        return picked
    }

    /// A ClusterIP the client chose: inside the range and not taken (kube's messages).
    static func checkRequestedClusterIP(_ handler: APIHandler, _ obj: JSON, _ ip: String) async throws {
        let range = handler.options.serviceClusterIPRange
        guard let a = IPv4Address(ip), range.contains(a) else {
            throw invalid(ResourceType.services, obj, [.init(reason: "FieldValueInvalid",
                message: "Invalid value: \"\(ip)\": failed to allocate IP \(ip): the provided IP (\(ip)) is not in the valid range. The range of valid IPs is \(range)",
                field: "spec.clusterIPs")])
        }
        // The same Service again (a create that will meet AlreadyExists) is not a collision.
        let me = (obj["metadata"]["namespace"].stringValue ?? "default", obj["metadata"]["name"].stringValue ?? "")
        let taken = try await allServices(handler).contains {
            $0["spec"]["clusterIP"].stringValue == ip && ($0["metadata"]["namespace"].stringValue ?? "default", $0["metadata"]["name"].stringValue ?? "") != me
        } || handler.pendingClusterIPs.withLock { $0[ip] != nil }
        if taken {
            throw invalid(ResourceType.services, obj, [.init(reason: "FieldValueInvalid",
                message: "Invalid value: \"\(ip)\": failed to allocate IP \(ip): provided IP is already allocated", field: "spec.clusterIPs")])
        }
    }

    static func usedNodePorts(_ handler: APIHandler) async throws -> Set<Int> {
        Set(try await allServices(handler).flatMap { ($0["spec"]["ports"].arrayValue ?? []).compactMap { $0["nodePort"].intValue.map(Int.init) } })
    }

    // MARK: update

    static func admitUpdate(_ obj: inout JSON, old: JSON, type: ResourceType, subresource: Subresource?) throws {
        guard !type.isCustom, subresource == nil else { return }
        switch (type.group, type.resource) {
        case ("", "pods"):
            var a = obj["spec"], b = old["spec"]
            for field in ["containers", "initContainers"] {
                if var la = a[field].arrayValue, var lb = b[field].arrayValue, la.count == lb.count {
                    for i in la.indices { la[i]["image"] = .null; lb[i]["image"] = .null }
                    a[field] = .array(la); b[field] = .array(lb)
                }
            }
            for f in ["activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"] { a[f] = .null; b[f] = .null }
            if a != b {
                throw invalid(type, obj, [.init(reason: "FieldValueForbidden", message: "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)", field: "spec")])
            }
        case ("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"), ("apps", "daemonsets"):
            try defaultWorkload(&obj, type: type)
            if obj["spec"]["selector"] != old["spec"]["selector"] {
                throw invalid(type, obj, [.init(reason: "FieldValueInvalid", message: "Invalid value: \(obj["spec"]["selector"]): field is immutable", field: "spec.selector")])
            }
        case ("", "secrets"):
            mergeStringData(&obj)
            try validateBase64Data(obj, type: type)
            try checkImmutable(obj, old: old, type: type)
        case ("", "configmaps"):
            try checkImmutable(obj, old: old, type: type)
        case ("", "services"):
            if old["spec"]["clusterIP"] != .null, obj["spec"]["clusterIP"].isNull { obj["spec"]["clusterIP"] = old["spec"]["clusterIP"] }
            if obj["spec"]["clusterIPs"].isNull { obj["spec"]["clusterIPs"] = old["spec"]["clusterIPs"] }
        case ("apiextensions.k8s.io", "customresourcedefinitions"):
            CRDSchema.defaultSpec(&obj)
            obj["status"] = CRDSchema.status(for: obj)
        case ("batch", "cronjobs"):
            defaultCronJob(&obj)
        default:
            break
        }
    }

    // MARK: after write

    /// Kinds with follow-up work after a write (namespaces, CRDs).
    static func hasAfterWrite(_ type: ResourceType) -> Bool {
        (type.group.isEmpty && type.resource == "namespaces")
            || (type.group == "apiextensions.k8s.io" && type.resource == "customresourcedefinitions")
    }

    static func afterWrite(type: ResourceType, object: JSON, old: JSON?, handler: APIHandler) async throws {
        switch (type.group, type.resource) {
        case ("", "namespaces"):
            if object["metadata"]["deletionTimestamp"].isNull, let ns = object["metadata"]["name"].stringValue {
                try await ensureNamespaceDefaults(ns, handler: handler)
            }
        case ("apiextensions.k8s.io", "customresourcedefinitions"):
            if object["metadata"]["deletionTimestamp"].isNull { handler.registry.register(crd: object) }
        default:
            break
        }
    }

    /// What every namespace has in a cluster: the `default` ServiceAccount (kube's serviceaccount
    /// controller) and the `kube-root-ca.crt` ConfigMap with the cluster CA (kube's root-ca-cert-publisher).
    static func ensureNamespaceDefaults(_ ns: String, handler: APIHandler) async throws {
        let meta: (String) -> JSON = { name in
            ["name": .string(name), "namespace": .string(ns), "uid": .string(UUID().uuidString.lowercased()),
             "creationTimestamp": .string(KubeTime.now().rfc3339)]
        }
        let sa: JSON = ["apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("default")]
        _ = try await handler.store.write(ResourceType.serviceAccounts.storageKey(namespace: ns, name: "default")) { cur in
            cur == nil ? .put(sa) : .unchanged
        }
        if let ca = handler.options.rootCAPEM {
            let cm: JSON = ["apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(rootCAConfigMap), "data": ["ca.crt": .string(ca)]]
            _ = try await handler.store.write(ResourceType.configMaps.storageKey(namespace: ns, name: rootCAConfigMap)) { cur in
                guard let cur, let old = try? cur.decode() else { return .put(cm) }
                if old["data"]["ca.crt"].stringValue == ca { return .unchanged }
                var fixed = old
                fixed["data"] = ["ca.crt": .string(ca)]
                return .put(fixed)
            }
        }
    }

    /// kube's Priority admission: a pod naming a PriorityClass gets its value and preemption
    /// policy; a class that does not exist is refused.
    static func resolvePriority(_ obj: inout JSON, handler: APIHandler) async throws {
        guard let name = obj["spec"]["priorityClassName"].stringValue, !name.isEmpty else { return }
        guard let stored = await handler.store.get(ResourceType.priorityClasses.storageKey(namespace: nil, name: name)), let pc = try? stored.decode() else {
            throw StatusError(.forbidden, "pods \"\(obj["metadata"]["name"].stringValue ?? "")\" is forbidden: no PriorityClass with name \(name) was found")
        }
        obj["spec"]["priority"] = pc["value"].isNull ? 0 : pc["value"]
        if obj["spec"]["preemptionPolicy"].isNull { obj["spec"]["preemptionPolicy"] = pc["preemptionPolicy"].isNull ? "PreemptLowerPriority" : pc["preemptionPolicy"] }
    }

    static let rootCAConfigMap = "kube-root-ca.crt"

    /// A `kubernetes.io/service-account-token` Secret naming an existing ServiceAccount gets its
    /// legacy token, the cluster CA and the namespace (what kube's tokens controller writes a
    /// moment later; here at once), and the ServiceAccount's uid annotation. The annotation is required.
    static func fillServiceAccountToken(_ obj: inout JSON, handler: APIHandler) async throws {
        guard obj["type"].stringValue == "kubernetes.io/service-account-token" else { return }
        guard let saName = obj["metadata"]["annotations"]["kubernetes.io/service-account.name"].stringValue, !saName.isEmpty else {
            throw StatusError(.invalid, "Secret \"\(obj["metadata"]["name"].stringValue ?? "")\" is invalid: metadata.annotations[kubernetes.io/service-account.name]: Required value",
                              name: obj["metadata"]["name"].stringValue, kind: "Secret",
                              causes: [.init(reason: "FieldValueRequired", message: "Required value", field: "metadata.annotations[kubernetes.io/service-account.name]")])
        }
        let ns = obj["metadata"]["namespace"].stringValue ?? "default"
        guard (obj["data"]["token"].stringValue ?? "").isEmpty, let issuer = handler.options.access.serviceAccountTokens,
              let sa = await handler.store.get(ResourceType.serviceAccounts.storageKey(namespace: ns, name: saName)), let account = try? sa.decode(),
              let uid = account["metadata"]["uid"].stringValue,
              let name = obj["metadata"]["name"].stringValue, !name.isEmpty
        else { return }  // no such account (yet): the Secret stays without a token, as kube's controller leaves it
        let token = try issuer.issueLegacy(LegacyServiceAccountClaims(namespace: ns, secretName: name, serviceAccountName: saName, serviceAccountUID: uid))
        obj["metadata"]["annotations"]["kubernetes.io/service-account.uid"] = .string(uid)
        obj["data"]["token"] = .string(Data(token.utf8).base64EncodedString())
        obj["data"]["namespace"] = .string(Data(ns.utf8).base64EncodedString())
        if let ca = handler.options.rootCAPEM { obj["data"]["ca.crt"] = .string(Data(ca.utf8).base64EncodedString()) }
    }
    static let serviceAccountMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

    /// kube-apiserver's ServiceAccount admission: unless the pod or its ServiceAccount opts out
    /// (`automountServiceAccountToken: false`), a projected `kube-api-access-<random>` volume
    /// (token, `kube-root-ca.crt`, namespace) is added and mounted read-only in every container
    /// and init container that does not already mount something at the ServiceAccount path.
    static func mountServiceAccountToken(_ obj: inout JSON, handler: APIHandler) async throws {
        if obj["metadata"]["annotations"]["kubernetes.io/config.mirror"].stringValue != nil { return }
        var spec = obj["spec"]
        let ns = obj["metadata"]["namespace"].stringValue ?? ""
        let saName = spec["serviceAccountName"].stringValue ?? "default"
        var automount = spec["automountServiceAccountToken"].boolValue
        if automount == nil, let stored = await handler.store.get(ResourceType.serviceAccounts.storageKey(namespace: ns, name: saName)),
           let sa = try? stored.decode()
        {
            automount = sa["automountServiceAccountToken"].boolValue
        }
        guard automount ?? true else { return }
        let groups = ["containers", "initContainers"]
        let needs = groups.contains { g in
            (spec[g].arrayValue ?? []).contains { c in
                !(c["volumeMounts"].arrayValue ?? []).contains { $0["mountPath"].stringValue == serviceAccountMountPath }
            }
        }
        guard needs else { return }
        var volumes = spec["volumes"].arrayValue ?? []
        let taken = Set(volumes.compactMap { $0["name"].stringValue })
        var name = "kube-api-access-" + APIHandler.randomNameSuffix()
        while taken.contains(name) { name = "kube-api-access-" + APIHandler.randomNameSuffix() }
        volumes.append(["name": .string(name), "projected": [
            "defaultMode": 420,
            "sources": [
                ["serviceAccountToken": ["expirationSeconds": 3607, "path": "token"]],
                ["configMap": ["name": .string(rootCAConfigMap), "items": [["key": "ca.crt", "path": "ca.crt"]]]],
                ["downwardAPI": ["items": [["fieldRef": ["apiVersion": "v1", "fieldPath": "metadata.namespace"], "path": "namespace"]]]],
            ],
        ]])
        spec["volumes"] = .array(volumes)
        for g in groups {
            guard var containers = spec[g].arrayValue else { continue }
            for i in containers.indices {
                var mounts = containers[i]["volumeMounts"].arrayValue ?? []
                if mounts.contains(where: { $0["mountPath"].stringValue == serviceAccountMountPath }) { continue }
                mounts.append(["name": .string(name), "readOnly": true, "mountPath": .string(serviceAccountMountPath)])
                containers[i]["volumeMounts"] = .array(mounts)
            }
            spec[g] = .array(containers)
        }
        obj["spec"] = spec
    }

    /// Deleting a namespace marks it Terminating; the namespace cleaner empties and removes it.
    static func namespaceDeleteMutation(_ current: JSON) -> Mutation {
        if !current["metadata"]["deletionTimestamp"].isNull { return .unchanged }
        var obj = current
        obj["metadata"]["deletionTimestamp"] = .string(KubeTime.now().rfc3339)
        obj["metadata"]["deletionGracePeriodSeconds"] = 0
        obj["status"]["phase"] = "Terminating"
        return .put(obj)
    }
}
