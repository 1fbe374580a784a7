import KubeAPI

/// CustomResourceDefinition handling: definition checks, status conditions, and the
/// structural-schema operations on custom objects (pruning, defaulting, validation).
enum CRDSchema {
    static let crdType = BuiltinResources.all.first { $0.resource == "customresourcedefinitions" }!

    // MARK: Definition

    static func validateDefinition(_ crd: JSON, existing: ResourceRegistry) throws(StatusError) {
        let name = crd["metadata"]["name"].stringValue ?? ""
        let spec = crd["spec"]
        var causes: [StatusError.Cause] = []
        let group = spec["group"].stringValue ?? ""
        let plural = spec["names"]["plural"].stringValue ?? ""
        if group.isEmpty { causes.append(Admission.required("spec.group")) }
        if plural.isEmpty { causes.append(Admission.required("spec.names.plural")) }
        if (spec["names"]["kind"].stringValue ?? "").isEmpty { causes.append(Admission.required("spec.names.kind")) }
        if !group.isEmpty, !plural.isEmpty, name != "\(plural).\(group)" {
            causes.append(.init(reason: "FieldValueInvalid", message: "Invalid value: \"\(name)\": must be spec.names.plural+\".\"+spec.group", field: "metadata.name"))
        }
        let scope = spec["scope"].stringValue ?? ""
        if scope != "Namespaced" && scope != "Cluster" {
            causes.append(.init(reason: "FieldValueNotSupported", message: "Unsupported value: \"\(scope)\": supported values: \"Cluster\", \"Namespaced\"", field: "spec.scope"))
        }
        let versions = spec["versions"].arrayValue ?? []
        if versions.isEmpty { causes.append(Admission.required("spec.versions")) }
        if versions.filter({ $0["storage"].boolValue == true }).count != 1 && !versions.isEmpty {
            causes.append(.init(reason: "FieldValueInvalid", message: "Invalid value: must have exactly one version marked as storage version", field: "spec.versions"))
        }
        for (i, v) in versions.enumerated() where v["schema"]["openAPIV3Schema"].isNull {
            causes.append(Admission.required("spec.versions[\(i)].schema.openAPIV3Schema"))
        }
        if !causes.isEmpty { throw StatusError.invalid(kind: "CustomResourceDefinition", group: "apiextensions.k8s.io", name: name, causes: causes) }
    }

    /// kube-apiserver's defaults of a CRD's spec: `conversion.strategy: None`, the names' `singular`
    /// and `listKind`.
    static func defaultSpec(_ crd: inout JSON) {
        if crd["spec"]["conversion"].isNull { crd["spec"]["conversion"] = ["strategy": "None"] }
        if crd["spec"]["names"]["singular"].isNull { crd["spec"]["names"]["singular"] = .string((crd["spec"]["names"]["kind"].stringValue ?? "").lowercased()) }
        if crd["spec"]["names"]["listKind"].isNull { crd["spec"]["names"]["listKind"] = .string((crd["spec"]["names"]["kind"].stringValue ?? "") + "List") }
    }

    static func status(for crd: JSON) -> JSON {
        let now = KubeTime.now().rfc3339
        var names = crd["spec"]["names"]
        if names["singular"].isNull { names["singular"] = .string((names["kind"].stringValue ?? "").lowercased()) }
        if names["listKind"].isNull { names["listKind"] = .string((names["kind"].stringValue ?? "") + "List") }
        let storage = (crd["spec"]["versions"].arrayValue ?? []).first { $0["storage"].boolValue == true }?["name"] ?? .null
        var stored = crd["status"]["storedVersions"].arrayValue ?? []
        if !storage.isNull && !stored.contains(storage) { stored.append(storage) }
        return [
            "acceptedNames": names,
            "storedVersions": .array(stored),
            "conditions": [
                ["type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": .string(now)],
                ["type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": .string(now)],
            ],
        ]
    }

    // MARK: Pruning

    /// Drops fields the schema does not know (unless preserved) and returns their paths.
    static func prune(_ obj: inout JSON, schema: JSON) -> [String] {
        var unknown: [String] = []
        guard case .object(var o) = obj else { return [] }
        let props = schema["properties"].objectValue ?? [:]
        for (k, v) in o {
            switch k {
            case "apiVersion", "kind": continue
            case "metadata":
                var md = v
                unknown += KnownFields.unknownMetadata(&md, path: "metadata")
                o[k] = md
                continue
            default: break
            }
            if let sub = props[k] {
                var child = v
                pruneValue(&child, schema: sub, path: k, unknown: &unknown)
                o[k] = child
            } else if schema["x-kubernetes-preserve-unknown-fields"].boolValue != true {
                o.removeValue(forKey: k)
                unknown.append(k)
            }
        }
        obj = .object(o)
        return unknown
    }

    static func pruneValue(_ v: inout JSON, schema: JSON, path: String, unknown: inout [String]) {
        switch v {
        case .object(var o):
            if schema["x-kubernetes-embedded-resource"].boolValue == true {
                // Embedded objects keep apiVersion/kind/metadata.
                pruneProperties(&o, schema: schema, path: path, keep: ["apiVersion", "kind", "metadata"], unknown: &unknown)
            } else if schema["properties"].objectValue != nil {
                pruneProperties(&o, schema: schema, path: path, keep: [], unknown: &unknown)
            } else if case .object = schema["additionalProperties"] {
                let s = schema["additionalProperties"]
                for (k, x) in o {
                    var c = x
                    pruneValue(&c, schema: s, path: "\(path).\(k)", unknown: &unknown)
                    o[k] = c
                }
            } else if schema["additionalProperties"].boolValue != true,
                schema["x-kubernetes-preserve-unknown-fields"].boolValue != true, schema["type"].stringValue == "object"
            {
                for k in o.keys { unknown.append("\(path).\(k)") }
                o = [:]
            }
            v = .object(o)
        case .array(var a):
            let items = schema["items"]
            if !items.isNull {
                for i in a.indices {
                    var c = a[i]
                    pruneValue(&c, schema: items, path: "\(path)[\(i)]", unknown: &unknown)
                    a[i] = c
                }
            }
            v = .array(a)
        default:
            break
        }
    }

    /// Prunes the members of an object against `properties` (unless unknown fields are preserved).
    static func pruneProperties(_ o: inout [String: JSON], schema: JSON, path: String, keep: Set<String>, unknown: inout [String]) {
        let props = schema["properties"].objectValue ?? [:]
        let preserve = schema["x-kubernetes-preserve-unknown-fields"].boolValue == true
        for (k, x) in o where !keep.contains(k) {
            if let s = props[k] {
                var c = x
                pruneValue(&c, schema: s, path: "\(path).\(k)", unknown: &unknown)
                o[k] = c
            } else if !preserve {
                o.removeValue(forKey: k)
                unknown.append("\(path).\(k)")
            }
        }
    }

    // MARK: Defaulting

    static func applyDefaults(_ obj: inout JSON, schema: JSON) {
        defaultValue(&obj, schema: schema)
    }

    static func defaultValue(_ v: inout JSON, schema: JSON) {
        switch v {
        case .object(var o):
            for (k, s) in schema["properties"].objectValue ?? [:] {
                if o[k] == nil, !s["default"].isNull { o[k] = s["default"] }
                if var c = o[k] {
                    defaultValue(&c, schema: s)
                    o[k] = c
                }
            }
            if case .object = schema["additionalProperties"] {
                for (k, x) in o {
                    var c = x
                    defaultValue(&c, schema: schema["additionalProperties"])
                    o[k] = c
                }
            }
            v = .object(o)
        case .array(var a):
            let items = schema["items"]
            guard !items.isNull else { return }
            for i in a.indices { defaultValue(&a[i], schema: items) }
            v = .array(a)
        default:
            break
        }
    }

    // MARK: Validation

    static func validate(_ obj: JSON, schema: JSON, type: ResourceType, name: String) throws(StatusError) {
        var causes: [StatusError.Cause] = []
        for (k, s) in schema["properties"].objectValue ?? [:] where !["apiVersion", "kind", "metadata"].contains(k) {
            if let v = obj.objectValue?[k] { check(v, schema: s, path: k, causes: &causes) }
        }
        for r in (schema["required"].arrayValue ?? []).compactMap(\.stringValue) where obj[r].isNull {
            causes.append(Admission.required(r))
        }
        if !causes.isEmpty {
            throw StatusError.invalid(kind: type.kind, group: type.group, name: name, causes: causes)
        }
    }

    static func check(_ v: JSON, schema: JSON, path: String, causes: inout [StatusError.Cause]) {
        if v.isNull {
            if schema["nullable"].boolValue != true {
                causes.append(.init(reason: "FieldValueTypeInvalid", message: "Invalid value: \"null\": \(path) in body must be of type \(schema["type"].stringValue ?? "object"): \"null\"", field: path))
            }
            return
        }
        let intOrString = schema["x-kubernetes-int-or-string"].boolValue == true
        if let t = schema["type"].stringValue, !intOrString {
            let ok: Bool
            switch t {
            case "object": ok = v.isObject
            case "array": ok = v.arrayValue != nil
            case "string": ok = v.stringValue != nil
            case "integer": ok = v.intValue != nil
            case "number": if case .int = v { ok = true } else if case .double = v { ok = true } else { ok = false }
            case "boolean": ok = v.boolValue != nil
            default: ok = true
            }
            if !ok {
                causes.append(.init(reason: "FieldValueTypeInvalid", message: "Invalid value: \"\(v.typeName)\": \(path) in body must be of type \(t): \"\(v.typeName)\"", field: path))
                return
            }
        } else if intOrString, v.stringValue == nil, v.intValue == nil {
            causes.append(.init(reason: "FieldValueTypeInvalid", message: "Invalid value: \(path) in body must be of type int-or-string", field: path))
            return
        }
        if let e = schema["enum"].arrayValue, !e.contains(v) {
            let allowed = e.map { $0.stringValue.map { "\"\($0)\"" } ?? $0.description }.joined(separator: ", ")
            causes.append(.init(reason: "FieldValueNotSupported", message: "Unsupported value: \(v): supported values: \(allowed)", field: path))
        }
        if let n = v.intValue ?? (v.stringValue == nil ? nil : nil) {
            if let min = schema["minimum"].intValue, n < min {
                causes.append(.init(reason: "FieldValueInvalid", message: "Invalid value: \(n): \(path) in body should be greater than or equal to \(min)", field: path))
            }
            if let max = schema["maximum"].intValue, n > max {
                causes.append(.init(reason: "FieldValueInvalid", message: "Invalid value: \(n): \(path) in body should be less than or equal to \(max)", field: path))
            }
        }
        if let s = v.stringValue {
            if let ml = schema["maxLength"].intValue, s.count > ml {
                causes.append(.init(reason: "FieldValueTooLong", message: "Too long: may not be longer than \(ml)", field: path))
            }
            if let ml = schema["minLength"].intValue, s.count < ml {
                causes.append(.init(reason: "FieldValueInvalid", message: "Invalid value: \"\(s)\": \(path) in body should be at least \(ml) chars long", field: path))
            }
        }
        switch v {
        case .object(let o):
            for r in (schema["required"].arrayValue ?? []).compactMap(\.stringValue) where o[r] == nil {
                causes.append(Admission.required("\(path).\(r)"))
            }
            if let props = schema["properties"].objectValue {
                for (k, x) in o { if let s = props[k] { check(x, schema: s, path: "\(path).\(k)", causes: &causes) } }
            } else if case .object = schema["additionalProperties"] {
                for (k, x) in o { check(x, schema: schema["additionalProperties"], path: "\(path).\(k)", causes: &causes) }
            }
        case .array(let a):
            if let mi = schema["maxItems"].intValue, a.count > Int(mi) {
                causes.append(.init(reason: "FieldValueTooMany", message: "Too many: \(a.count): must have at most \(mi) items", field: path))
            }
            let items = schema["items"]
            if !items.isNull { for (i, x) in a.enumerated() { check(x, schema: items, path: "\(path)[\(i)]", causes: &causes) } }
        default: break
        }
    }
}

/// Unknown-field detection for compiled-in kinds (used by `fieldValidation=Strict|Warn`).
/// Top-level and `metadata` fields are checked; nested built-in fields are accepted as they come.
enum KnownFields {
    static let metadataFields: Set<String> = ["name", "generateName", "namespace", "selfLink", "uid", "resourceVersion",
        "generation", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
        "ownerReferences", "finalizers", "managedFields"]

    static func topLevel(_ type: ResourceType) -> Set<String> {
        let base: Set<String> = ["apiVersion", "kind", "metadata"]
        switch (type.group, type.resource) {
        case ("", "configmaps"): return base.union(["data", "binaryData", "immutable"])
        case ("", "secrets"): return base.union(["data", "stringData", "type", "immutable"])
        case ("", "endpoints"): return base.union(["subsets"])
        case ("", "events"): return base.union(["involvedObject", "reason", "message", "source", "firstTimestamp",
            "lastTimestamp", "count", "type", "eventTime", "series", "action", "related", "reportingComponent", "reportingInstance"])
        case ("events.k8s.io", "events"): return base.union(["eventTime", "series", "reportingController",
            "reportingInstance", "action", "reason", "regarding", "related", "note", "type", "deprecatedSource",
            "deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount"])
        case ("", "serviceaccounts"): return base.union(["secrets", "imagePullSecrets", "automountServiceAccountToken"])
        case ("coordination.k8s.io", "leases"), ("", "namespaces"), ("", "nodes"), ("", "pods"), ("", "services"),
            ("", "persistentvolumeclaims"), ("", "persistentvolumes"), ("policy", "poddisruptionbudgets"):
            return base.union(["spec", "status"])
        case ("discovery.k8s.io", "endpointslices"): return base.union(["addressType", "endpoints", "ports"])
        case ("rbac.authorization.k8s.io", "roles"): return base.union(["rules"])
        case ("rbac.authorization.k8s.io", "clusterroles"): return base.union(["rules", "aggregationRule"])
        case ("rbac.authorization.k8s.io", _): return base.union(["subjects", "roleRef"])
        case ("apps", "controllerrevisions"): return base.union(["data", "revision"])
        case ("admissionregistration.k8s.io", _): return base.union(["webhooks"])
        default: return base.union(["spec", "status"])
        }
    }

    /// Removes and returns unknown top-level and metadata fields.
    static func unknownFields(_ obj: inout JSON, type: ResourceType) -> [String] {
        var out: [String] = []
        let allowed = topLevel(type)
        for k in (obj.objectValue ?? [:]).keys.sorted() where !allowed.contains(k) {
            out.append(k)
            obj[k] = .null
        }
        var md = obj["metadata"]
        out += unknownMetadata(&md, path: "metadata")
        if !md.isNull { obj["metadata"] = md }
        return out
    }

    static func unknownMetadata(_ md: inout JSON, path: String) -> [String] {
        guard case .object(var o) = md else { return [] }
        var out: [String] = []
        for k in o.keys.sorted() where !metadataFields.contains(k) {
            out.append("\(path).\(k)")
            o.removeValue(forKey: k)
        }
        md = .object(o)
        return out
    }
}
