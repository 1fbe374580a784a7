import KubeAPI
import KubeProtobuf
import Synchronization

/// OpenAPI v3 schemas of the built-in kinds, made from the built-in types' field table (JSON
/// names and types; no descriptions), so `kubectl explain` and `--recursive` work for them. Lists
/// carry the strategic-merge metadata (`x-kubernetes-patch-merge-key` / `-strategy`) the server's
/// own merge uses, because kubectl computes apply patches from these schemas once they exist.
enum BuiltinSchemas {
    /// `k8s.io.api.core.v1.Pod` → `io.k8s.api.core.v1.Pod` (kube-apiserver's component names).
    static func componentName(_ message: String) -> String {
        message.hasPrefix("k8s.io.") ? "io.k8s." + message.dropFirst("k8s.io.".count) : message
    }

    /// The kind's schema and every schema it refers to, keyed by component name (nil: a kind
    /// outside the table).
    static func schemas(for type: ResourceType) -> (root: String, schemas: [String: JSON])? {
        guard let message = KubeProtobuf.message(apiVersion: type.apiVersion, kind: type.kind),
              KubeProtobuf.fields(of: message) != nil
        else { return nil }
        var out: [String: JSON] = [:]
        var pending = [message]
        while let m = pending.popLast() {
            let name = componentName(m)
            guard out[name] == nil, let fields = KubeProtobuf.fields(of: m) else { continue }
            var properties: [String: JSON] = [:]
            // Go struct embedding (`json:",inline"`): the embedded message's fields belong here.
            var flat: [KubeProtobuf.FieldShape] = []
            var queue = fields[...]
            while let f = queue.popFirst() {
                if KubeProtobuf.inlineFields.contains(f.name), !f.repeated, let inner = KubeProtobuf.fields(of: f.type) {
                    queue.append(contentsOf: inner)
                } else {
                    flat.append(f)
                }
            }
            for f in flat {
                var refs: [String] = []
                let item = schema(of: f.type, refs: &refs)
                pending.append(contentsOf: refs)
                if f.repeated {
                    var list: JSON = ["type": "array", "items": item]
                    switch Patch.listStrategy(field: f.name, parent: parentHint(m), sample: nil) {
                    case .mergeByKey(let key):
                        list["x-kubernetes-patch-merge-key"] = .string(key)
                        list["x-kubernetes-patch-strategy"] = "merge"
                    case .mergePrimitives:
                        list["x-kubernetes-patch-strategy"] = "merge"
                    case .replace:
                        break
                    }
                    properties[f.name] = list
                } else if f.isMap {
                    properties[f.name] = ["type": "object", "additionalProperties": item]
                } else {
                    properties[f.name] = item
                }
            }
            var s: JSON = ["type": "object", "properties": .object(properties)]
            if m == message {
                s["properties"]["apiVersion"] = ["type": "string"]
                s["properties"]["kind"] = ["type": "string"]
                s["x-kubernetes-group-version-kind"] = [["group": .string(type.group), "version": .string(type.version), "kind": .string(type.kind)]]
            }
            out[name] = s
        }
        return (componentName(message), out)
    }

    /// The parent field name ``Patch/listStrategy(field:parent:sample:)`` expects for a message's lists.
    static func parentHint(_ message: String) -> String {
        if message.hasSuffix(".Container") || message.hasSuffix(".EphemeralContainer") { return "containers" }
        if message.hasSuffix(".NodeStatus") { return "status" }
        return ""
    }

    static func schema(of type: String, refs: inout [String]) -> JSON {
        switch type {
        case "string": return ["type": "string"]
        case "bytes": return ["type": "string", "format": "byte"]
        case "bool": return ["type": "boolean"]
        case "int32": return ["type": "integer", "format": "int32"]
        case "int64": return ["type": "integer", "format": "int64"]
        case "double", "float": return ["type": "number", "format": "double"]
        case "k8s.io.apimachinery.pkg.util.intstr.IntOrString": return ["x-kubernetes-int-or-string": true]
        case "k8s.io.apimachinery.pkg.api.resource.Quantity": return ["x-kubernetes-int-or-string": true]
        case "k8s.io.apimachinery.pkg.apis.meta.v1.Time", "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime":
            return ["type": "string", "format": "date-time"]
        case "k8s.io.apimachinery.pkg.apis.meta.v1.Duration": return ["type": "string"]
        case "k8s.io.apimachinery.pkg.runtime.RawExtension", "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1":
            return ["type": "object", "x-kubernetes-preserve-unknown-fields": true]
        default:
            guard KubeProtobuf.fields(of: type) != nil else { return ["type": "object", "x-kubernetes-preserve-unknown-fields": true] }
            refs.append(type)
            return ["allOf": [["$ref": .string("#/components/schemas/\(componentName(type))")]]]
        }
    }

    /// Built once per kind: the documents are asked for on every kubectl apply.
    static let cache = Mutex<[String: (root: String, schemas: [String: JSON])?]>([:])

    static func cached(_ type: ResourceType) -> (root: String, schemas: [String: JSON])? {
        let key = type.apiVersion + "/" + type.kind
        if let hit = cache.withLock({ $0[key] }) { return hit }
        let made = schemas(for: type)
        cache.withLock { $0[key] = made }
        return made
    }
}
