/// The four patch types a Kubernetes API server accepts.
public enum PatchType: String, Sendable {
    case json = "application/json-patch+json"
    case merge = "application/merge-patch+json"
    case strategicMerge = "application/strategic-merge-patch+json"
    case apply = "application/apply-patch+yaml"

    public init?(contentType: String) {
        let base = contentType.split(separator: ";").first.map { String($0).trimmingSpaces().lowercased() } ?? ""
        switch base {
        case PatchType.json.rawValue: self = .json
        case PatchType.merge.rawValue: self = .merge
        case PatchType.strategicMerge.rawValue: self = .strategicMerge
        case PatchType.apply.rawValue, "application/apply-patch+json", "application/apply-patch+cbor": self = .apply
        default: return nil
        }
    }
}

public enum Patch {
    // MARK: RFC 7386 JSON merge patch

    public static func mergePatch(_ target: JSON, _ patch: JSON) -> JSON {
        guard case .object(let p) = patch else { return patch }
        var t = target.objectValue ?? [:]
        for (k, v) in p {
            if case .null = v { t.removeValue(forKey: k) } else { t[k] = mergePatch(t[k] ?? .null, v) }
        }
        return .object(t)
    }

    // MARK: RFC 6902 JSON patch

    public static func jsonPatch(_ doc: JSON, _ ops: JSON) throws(StatusError) -> JSON {
        guard let list = ops.arrayValue else {
            throw StatusError.badRequest("json patch must be an array of operations")
        }
        var d = doc
        for op in list {
            guard let name = op["op"].stringValue, let path = op["path"].stringValue else {
                throw StatusError.badRequest("json patch operation is missing 'op' or 'path': \(op)")
            }
            let tokens = try pointer(path)
            switch name {
            case "add": d = try add(d, tokens, op["value"], name: name)
            case "remove": d = try remove(d, tokens).0
            case "replace":
                _ = try get(d, tokens)
                d = try set(d, tokens, op["value"])
            case "move":
                guard let from = op["from"].stringValue else { throw StatusError.badRequest("move requires 'from'") }
                let (nd, v) = try remove(d, try pointer(from))
                d = try add(nd, tokens, v, name: name)
            case "copy":
                guard let from = op["from"].stringValue else { throw StatusError.badRequest("copy requires 'from'") }
                d = try add(d, tokens, try get(d, try pointer(from)), name: name)
            case "test":
                let cur = try get(d, tokens)
                if cur != op["value"] {
                    throw StatusError(.invalid, "the server rejected our request due to an error in our request: testing value \(path) failed", code: 422)
                }
            default:
                throw StatusError.badRequest("Unexpected kind: \(name)")
            }
        }
        return d
    }

    static func pointer(_ p: String) throws(StatusError) -> [String] {
        if p.isEmpty { return [] }
        guard p.hasPrefix("/") else { throw StatusError.badRequest("invalid JSON pointer \"\(p)\"") }
        return p.dropFirst().split(separator: "/", omittingEmptySubsequences: false).map {
            String($0).replacing("~1", with: "/").replacing("~0", with: "~")
        }
    }

    static func missing(_ path: [String]) -> StatusError {
        StatusError(.invalid, "the server rejected our request due to an error in our request: doc is missing path: \"/\(path.joined(separator: "/"))\"", code: 422)
    }

    static func get(_ d: JSON, _ path: [String]) throws(StatusError) -> JSON {
        var cur = d
        for t in path {
            switch cur {
            case .object(let o):
                guard let v = o[t] else { throw missing(path) }
                cur = v
            case .array(let a):
                guard let i = Int(t), i >= 0, i < a.count else { throw missing(path) }
                cur = a[i]
            default: throw missing(path)
            }
        }
        return cur
    }

    static func set(_ d: JSON, _ path: [String], _ v: JSON) throws(StatusError) -> JSON {
        guard let first = path.first else { return v }
        let rest = Array(path.dropFirst())
        switch d {
        case .object(var o):
            guard let child = o[first] else { throw missing(path) }
            o[first] = try set(child, rest, v)
            return .object(o)
        case .array(var a):
            guard let i = Int(first), i >= 0, i < a.count else { throw missing(path) }
            a[i] = try set(a[i], rest, v)
            return .array(a)
        default: throw missing(path)
        }
    }

    static func add(_ d: JSON, _ path: [String], _ v: JSON, name: String) throws(StatusError) -> JSON {
        guard let first = path.first else { return v }
        let rest = Array(path.dropFirst())
        switch d {
        case .object(var o):
            if rest.isEmpty { o[first] = v } else {
                guard let child = o[first] else { throw missing(path) }
                o[first] = try add(child, rest, v, name: name)
            }
            return .object(o)
        case .array(var a):
            if rest.isEmpty {
                if first == "-" { a.append(v) } else {
                    guard let i = Int(first), i >= 0, i <= a.count else { throw missing(path) }
                    a.insert(v, at: i)
                }
            } else {
                guard let i = Int(first), i >= 0, i < a.count else { throw missing(path) }
                a[i] = try add(a[i], rest, v, name: name)
            }
            return .array(a)
        default: throw missing(path)
        }
    }

    static func remove(_ d: JSON, _ path: [String]) throws(StatusError) -> (JSON, JSON) {
        guard let first = path.first else { throw StatusError.badRequest("cannot remove the document root") }
        let rest = Array(path.dropFirst())
        switch d {
        case .object(var o):
            guard let child = o[first] else { throw missing(path) }
            if rest.isEmpty { o.removeValue(forKey: first); return (.object(o), child) }
            let (nc, removed) = try remove(child, rest)
            o[first] = nc
            return (.object(o), removed)
        case .array(var a):
            guard let i = Int(first), i >= 0, i < a.count else { throw missing(path) }
            if rest.isEmpty { let r = a.remove(at: i); return (.array(a), r) }
            let (nc, removed) = try remove(a[i], rest)
            a[i] = nc
            return (.array(a), removed)
        default: throw missing(path)
        }
    }

    // MARK: Strategic merge patch

    /// How lists merge in strategic-merge patches for built-in kinds (the `patchMergeKey` /
    /// `patchStrategy` tags of the Kubernetes Go types), looked up by field name and parent field.
    public enum ListStrategy: Sendable, Equatable {
        case replace
        case mergeByKey(String)
        case mergePrimitives
    }

    public static func listStrategy(field: String, parent: String, sample: JSON?) -> ListStrategy {
        switch field {
        case "containers", "initContainers", "ephemeralContainers", "volumes", "env", "imagePullSecrets",
            "resourceClaims", "claims":
            return .mergeByKey("name")
        case "volumeMounts": return .mergeByKey("mountPath")
        case "volumeDevices": return .mergeByKey("devicePath")
        case "ports":
            if parent == "containers" || parent == "initContainers" || parent == "ephemeralContainers" {
                return .mergeByKey("containerPort")
            }
            if let s = sample, s["containerPort"] != .null { return .mergeByKey("containerPort") }
            return .mergeByKey("port")
        case "conditions": return .mergeByKey("type")
        case "addresses" where parent == "status": return .mergeByKey("type")
        case "ownerReferences": return .mergeByKey("uid")
        case "hostAliases": return .mergeByKey("ip")
        case "topologySpreadConstraints": return .mergeByKey("topologyKey")
        case "finalizers": return .mergePrimitives
        default: return .replace
        }
    }

    /// Applies a strategic-merge patch to `target` with the built-in list merge keys.
    public static func strategicMerge(_ target: JSON, _ patch: JSON) throws(StatusError) -> JSON {
        try smpObject(target, patch, parent: "")
    }

    static func smpObject(_ target: JSON, _ patch: JSON, parent: String) throws(StatusError) -> JSON {
        guard case .object(var p) = patch else { return patch }
        if let directive = p["$patch"]?.stringValue {
            p.removeValue(forKey: "$patch")
            switch directive {
            case "replace": return stripDirectives(.object(p))
            case "delete": return .null
            case "merge": break
            default: throw StatusError.badRequest("unknown patch directive \"\(directive)\"")
            }
        }
        var t = target.objectValue ?? [:]
        var retainKeys: Set<String>?
        if let rk = p.removeValue(forKey: "$retainKeys")?.arrayValue {
            retainKeys = Set(rk.compactMap(\.stringValue))
        }
        for (k, v) in p {
            if k.hasPrefix("$setElementOrder/") { continue }
            if k.hasPrefix("$deleteFromPrimitiveList/") {
                let field = String(k.dropFirst("$deleteFromPrimitiveList/".count))
                if let remove = v.arrayValue, let cur = t[field]?.arrayValue {
                    t[field] = .array(cur.filter { !remove.contains($0) })
                }
                continue
            }
            if case .null = v { t.removeValue(forKey: k); continue }
            switch v {
            case .object:
                let merged = try smpObject(t[k] ?? .null, v, parent: k)
                if case .null = merged { t.removeValue(forKey: k) } else { t[k] = merged }
            case .array(let items):
                t[k] = try smpList(t[k]?.arrayValue ?? [], items, field: k, parent: parent)
            default:
                t[k] = v
            }
        }
        if let rk = retainKeys {
            for key in t.keys where !rk.contains(key) { t.removeValue(forKey: key) }
        }
        return .object(t)
    }

    static func smpList(_ target: [JSON], _ patch: [JSON], field: String, parent: String) throws(StatusError) -> JSON {
        // A `{"$patch": "replace"}` element replaces the whole list.
        if patch.contains(where: { $0["$patch"].stringValue == "replace" }) {
            return .array(patch.filter { $0["$patch"].stringValue != "replace" }.map(stripDirectives))
        }
        switch listStrategy(field: field, parent: parent, sample: patch.first ?? target.first) {
        case .replace:
            return .array(patch.map(stripDirectives))
        case .mergePrimitives:
            var out = target
            for v in patch where !out.contains(v) { out.append(v) }
            return .array(out)
        case .mergeByKey(let key):
            var out = target
            for item in patch {
                guard case .object = item else { out.append(item); continue }
                let kv = item[key]
                let idx = out.firstIndex { $0[key] == kv }
                if item["$patch"].stringValue == "delete" {
                    if let i = idx { out.remove(at: i) }
                    continue
                }
                if let i = idx {
                    out[i] = try smpObject(out[i], item, parent: field)
                } else {
                    out.append(try smpObject(.null, item, parent: field))
                }
            }
            return .array(out)
        }
    }

    static func stripDirectives(_ v: JSON) -> JSON {
        switch v {
        case .object(let o):
            var r: [String: JSON] = [:]
            for (k, x) in o where !k.hasPrefix("$") { r[k] = stripDirectives(x) }
            return .object(r)
        case .array(let a): return .array(a.map(stripDirectives))
        default: return v
        }
    }
}
