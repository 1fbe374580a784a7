import KubeAPI

/// Server-side apply's field ownership, after kube-apiserver's rules: each manager owns a set of
/// leaf fields (`metadata.managedFields`, FieldsV1). An apply conflicts when it would change a
/// field another manager owns (409, unless forced, which takes the field over); fields the
/// applier applied before and no longer applies are removed unless someone else owns them; an
/// update (PUT/PATCH) takes the fields it changes from whoever owned them. Pure functions, no I/O.
enum FieldManager {
    /// A path of FieldsV1 tokens: `f:<field>`, `k:{"<mergeKey>":<value>}` (a list item), `v:<json>` (a set member).
    typealias Path = [String]

    struct Entry: Equatable {
        var manager: String
        var operation: String
        var apiVersion: String
        var subresource: String?
        var time: String
        var fields: Set<Path>
    }

    struct Conflict: Equatable { var manager: String; var apiVersion: String; var path: Path }

    // MARK: leaves of an object

    /// The leaf fields an object sets. `keyed`: lists of built-in kinds merge by key (items are
    /// identified by it); custom resources' lists are atomic.
    static func leaves(of obj: JSON, keyed: Bool, includeStatus: Bool) -> Set<Path> {
        var out = Set<Path>()
        guard case .object(let o) = obj else { return out }
        for (k, v) in o {
            switch k {
            case "apiVersion", "kind": continue
            case "status" where !includeStatus: continue
            case "metadata":
                for mk in ["labels", "annotations"] {
                    for (lk, _) in v[mk].objectValue ?? [:] { out.insert(["f:metadata", "f:\(mk)", "f:\(lk)"]) }
                }
                for f in v["finalizers"].arrayValue ?? [] { out.insert(["f:metadata", "f:finalizers", "v:" + String(decoding: f.serialized(), as: UTF8.self)]) }
                for r in v["ownerReferences"].arrayValue ?? [] {
                    if let uid = r["uid"].stringValue { out.insert(["f:metadata", "f:ownerReferences", itemToken("uid", .string(uid))]) }
                }
            default:
                collect(v, path: ["f:\(k)"], field: k, parent: "", keyed: keyed, into: &out)
            }
        }
        return out
    }

    static func collect(_ v: JSON, path: Path, field: String, parent: String, keyed: Bool, into out: inout Set<Path>) {
        switch v {
        case .object(let o) where !o.isEmpty:
            for (k, x) in o { collect(x, path: path + ["f:\(k)"], field: k, parent: field, keyed: keyed, into: &out) }
        case .array(let items) where keyed && !items.isEmpty:
            switch Patch.listStrategy(field: field, parent: parent, sample: items.first) {
            case .mergeByKey(let key) where items.allSatisfy({ !$0[key].isNull }):
                for item in items {
                    let p = path + [itemToken(key, item[key])]
                    if case .object(let o) = item {
                        for (k, x) in o { collect(x, path: p + ["f:\(k)"], field: k, parent: field, keyed: keyed, into: &out) }
                    } else {
                        out.insert(p)
                    }
                }
            case .mergePrimitives:
                for item in items { out.insert(path + ["v:" + String(decoding: item.serialized(), as: UTF8.self)]) }
            default:
                out.insert(path)
            }
        default:
            out.insert(path)
        }
    }

    static func itemToken(_ key: String, _ value: JSON) -> String {
        "k:{\"\(key)\":" + String(decoding: value.serialized(), as: UTF8.self) + "}"
    }

    /// The value at a path (nil: absent).
    static func value(at path: Path, in obj: JSON) -> JSON? {
        var cur = obj
        for token in path {
            if token.hasPrefix("f:") {
                guard case .object(let o) = cur, let next = o[String(token.dropFirst(2))] else { return nil }
                cur = next
            } else if token.hasPrefix("k:") {
                guard let (key, want) = parseItemToken(token), let items = cur.arrayValue,
                      let item = items.first(where: { $0[key] == want }) else { return nil }
                cur = item
            } else if token.hasPrefix("v:") {
                guard let items = cur.arrayValue, let want = try? JSON.parse(Array(token.dropFirst(2).utf8)), items.contains(want) else { return nil }
                cur = want
            } else {
                return nil
            }
        }
        return cur
    }

    static func parseItemToken(_ token: String) -> (String, JSON)? {
        guard let j = try? JSON.parse(Array(token.dropFirst(2).utf8)), let o = j.objectValue, o.count == 1, let (k, v) = o.first else { return nil }
        return (k, v)
    }

    /// The object without the field at `path` (a member, a list item, a set member).
    static func removing(_ path: Path, from obj: JSON) -> JSON {
        guard let token = path.first else { return .null }
        let rest = Array(path.dropFirst())
        if token.hasPrefix("f:") {
            guard case .object(var o) = obj else { return obj }
            let k = String(token.dropFirst(2))
            guard let child = o[k] else { return obj }
            if rest.isEmpty { o.removeValue(forKey: k) } else {
                let c = removing(rest, from: child)
                // A map left empty by the removal goes too.
                if c.objectValue?.isEmpty == true, child.objectValue?.isEmpty == false { o.removeValue(forKey: k) } else { o[k] = c }
            }
            return .object(o)
        }
        guard var items = obj.arrayValue else { return obj }
        if token.hasPrefix("k:"), let (key, want) = parseItemToken(token), let i = items.firstIndex(where: { $0[key] == want }) {
            if rest.isEmpty { items.remove(at: i) } else { items[i] = removing(rest, from: items[i]) }
        } else if token.hasPrefix("v:"), let want = try? JSON.parse(Array(token.dropFirst(2).utf8)) {
            items.removeAll { $0 == want }
        }
        return .array(items)
    }

    // MARK: FieldsV1

    static func encode(_ fields: Set<Path>) -> JSON {
        var root: JSON = .emptyObject
        for p in fields { insert(p[...], into: &root) }
        return root
    }

    static func insert(_ p: ArraySlice<String>, into node: inout JSON) {
        guard let first = p.first else { return }
        var child = node[first]
        if child.isNull { child = .emptyObject }
        if p.count == 1 {
            if child.objectValue?.isEmpty == false { child["."] = .emptyObject }
        } else {
            insert(p.dropFirst(), into: &child)
        }
        node[first] = child
    }

    static func decode(_ v: JSON, prefix: Path = []) -> Set<Path> {
        guard case .object(let o) = v else { return [] }
        if o.isEmpty { return prefix.isEmpty ? [] : [prefix] }
        var out = Set<Path>()
        for (k, x) in o {
            if k == "." { out.insert(prefix); continue }
            out.formUnion(decode(x, prefix: prefix + [k]))
        }
        return out
    }

    static func entries(of obj: JSON) -> [Entry] {
        (obj["metadata"]["managedFields"].arrayValue ?? []).compactMap { e in
            guard let m = e["manager"].stringValue else { return nil }
            return Entry(manager: m, operation: e["operation"].stringValue ?? "Update", apiVersion: e["apiVersion"].stringValue ?? "",
                         subresource: e["subresource"].stringValue, time: e["time"].stringValue ?? "", fields: decode(e["fieldsV1"]))
        }
    }

    static func encode(_ entries: [Entry]) -> JSON {
        .array(entries.filter { !$0.fields.isEmpty }.map { e in
            var j: JSON = ["manager": .string(e.manager), "operation": .string(e.operation), "apiVersion": .string(e.apiVersion),
                           "time": .string(e.time), "fieldsType": "FieldsV1", "fieldsV1": encode(e.fields)]
            if let s = e.subresource { j["subresource"] = .string(s) }
            return j
        })
    }

    // MARK: the two operations

    /// An apply of `config` by `manager` onto `current`: the conflicts (empty when forced: the
    /// fields are taken over), the object to merge the config into (fields the manager stopped
    /// applying removed), and the new entries.
    static func apply(config: JSON, current: JSON, manager: String, apiVersion: String, subresource: String?, force: Bool,
                      keyed: Bool, now: String) -> (conflicts: [Conflict], base: JSON, entries: [Entry])
    {
        let applied = leaves(of: config, keyed: keyed, includeStatus: subresource == "status")
        var entries = Self.entries(of: current)
        var conflicts: [Conflict] = []
        // Every other manager counts, whatever it wrote through (`kubectl scale` through /scale owns spec.replicas).
        for i in entries.indices where !(entries[i].manager == manager && entries[i].operation == "Apply" && entries[i].subresource == subresource) {
            for p in applied.intersection(entries[i].fields) {
                guard let have = value(at: p, in: current), have != value(at: p, in: config) else { continue }
                if force { entries[i].fields.remove(p) } else {
                    conflicts.append(Conflict(manager: entries[i].manager, apiVersion: entries[i].apiVersion, path: p))
                }
            }
        }
        if !conflicts.isEmpty { return (conflicts.sorted { $0.path.joined() < $1.path.joined() }, current, entries) }
        let mine = entries.firstIndex { $0.manager == manager && $0.operation == "Apply" && $0.subresource == subresource }
        let previous = mine.map { entries[$0].fields } ?? []
        let others = entries.enumerated().filter { $0.offset != mine }.reduce(into: Set<Path>()) { $0.formUnion($1.element.fields) }
        var base = current
        for p in previous.subtracting(applied) where !others.contains(p) { base = removing(p, from: base) }
        let entry = Entry(manager: manager, operation: "Apply", apiVersion: apiVersion, subresource: subresource, time: now, fields: applied)
        if let mine { entries[mine] = entry } else { entries.append(entry) }
        return ([], base, entries)
    }

    /// An update (create, PUT, PATCH) by `manager`: it owns what it changed, taken from others;
    /// fields gone from the object are owned by nobody.
    static func update(old: JSON?, new: JSON, manager: String, operation: String, apiVersion: String, subresource: String?,
                       keyed: Bool, now: String) -> [Entry]
    {
        let includeStatus = subresource == "status"
        let before = old.map { leaves(of: $0, keyed: keyed, includeStatus: includeStatus) } ?? []
        let after = leaves(of: new, keyed: keyed, includeStatus: includeStatus)
        let changed = after.filter { p in old.map { value(at: p, in: $0) != value(at: p, in: new) } ?? true }
        let gone = before.subtracting(after)
        var entries = old.map { Self.entries(of: $0) } ?? []
        for i in entries.indices {
            entries[i].fields.subtract(gone)
            if !(entries[i].manager == manager && entries[i].operation == operation && entries[i].subresource == subresource) {
                entries[i].fields.subtract(changed)
            }
        }
        if let i = entries.firstIndex(where: { $0.manager == manager && $0.operation == operation && $0.subresource == subresource }) {
            if !changed.isEmpty { entries[i].time = now }
            entries[i].fields.formUnion(changed)
        } else if !changed.isEmpty {
            entries.append(Entry(manager: manager, operation: operation, apiVersion: apiVersion, subresource: subresource, time: now, fields: changed))
        }
        return entries
    }

    /// kube's path notation for a conflict (`.spec.replicas`, `.spec.containers[name="a"].image`).
    static func display(_ p: Path) -> String {
        p.map { t -> String in
            if t.hasPrefix("f:") { return "." + t.dropFirst(2) }
            if t.hasPrefix("k:"), let (k, v) = parseItemToken(t) { return "[\(k)=\(String(decoding: v.serialized(), as: UTF8.self))]" }
            if t.hasPrefix("v:") { return "[\(t.dropFirst(2))]" }
            return t
        }.joined()
    }
}
