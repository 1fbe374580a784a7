import KubeAPI

/// Field-level knowledge of the built-in kinds, from the same interface table the protobuf reader
/// uses: which JSON fields exist where. Drives `fieldValidation` (Strict/Warn/Ignore) for built-ins.
public enum BuiltinSchema {
    /// Types whose JSON form is a scalar or free-form value.
    static let opaque: Set<String> = [
        "k8s.io.apimachinery.pkg.apis.meta.v1.Time", "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime",
        "k8s.io.apimachinery.pkg.apis.meta.v1.Duration", "k8s.io.apimachinery.pkg.api.resource.Quantity",
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString", "k8s.io.apimachinery.pkg.runtime.RawExtension",
        "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1",
    ]

    /// Whether the table knows this kind.
    public static func knows(apiVersion: String, kind: String) -> Bool {
        KubeProtobuf.messageName(apiVersion: apiVersion, kind: kind).map { ProtoSchema.shared.messages[$0] != nil } ?? false
    }

    /// Removes fields the kind does not define and returns their paths (`spec.containers[0].imagee`),
    /// or nil when the kind is not in the table.
    public static func pruneUnknownFields(_ obj: inout JSON, apiVersion: String, kind: String) -> [String]? {
        guard let name = KubeProtobuf.messageName(apiVersion: apiVersion, kind: kind), ProtoSchema.shared.messages[name] != nil else {
            return nil
        }
        var unknown: [String] = []
        guard case .object(var top) = obj else { return [] }
        let apiVersionValue = top.removeValue(forKey: "apiVersion")
        let kindValue = top.removeValue(forKey: "kind")
        var rest = JSON.object(top)
        walk(&rest, type: name, path: "", unknown: &unknown, schema: ProtoSchema.shared)
        guard case .object(var pruned) = rest else { return unknown }
        if let a = apiVersionValue { pruned["apiVersion"] = a }
        if let k = kindValue { pruned["kind"] = k }
        obj = .object(pruned)
        return unknown
    }

    static func lookup(_ key: String, in type: String, schema: ProtoSchema) -> ProtoSchema.Field? {
        guard let msg = schema.messages[type] else { return nil }
        for f in msg.values where f.name == key { return f }
        // Embedded (inline) structs contribute their fields.
        for f in msg.values where KubeProtobuf.inlineFields.contains(f.name) {
            if let inner = lookup(key, in: f.type, schema: schema) { return inner }
        }
        return nil
    }

    static func walk(_ v: inout JSON, type: String, path: String, unknown: inout [String], schema: ProtoSchema) {
        if opaque.contains(type) || schema.messages[type] == nil { return }
        guard case .object(var o) = v else { return }
        for (k, child) in o {
            let p = path.isEmpty ? k : "\(path).\(k)"
            guard let f = lookup(k, in: type, schema: schema) else {
                unknown.append(p)
                o.removeValue(forKey: k)
                continue
            }
            var c = child
            switch f.label {
            case .optional:
                walk(&c, type: f.type, path: p, unknown: &unknown, schema: schema)
            case .repeated:
                if case .array(var items) = c {
                    for i in items.indices { walk(&items[i], type: f.type, path: "\(p)[\(i)]", unknown: &unknown, schema: schema) }
                    c = .array(items)
                }
            case .map(_, let valueType):
                if case .object(var entries) = c {
                    for (ek, ev) in entries {
                        var e = ev
                        walk(&e, type: valueType, path: "\(p).\(ek)", unknown: &unknown, schema: schema)
                        entries[ek] = e
                    }
                    c = .object(entries)
                }
            }
            o[k] = c
        }
        v = .object(o)
    }
}
