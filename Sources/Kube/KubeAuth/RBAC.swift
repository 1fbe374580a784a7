import KubeAPI

/// `rbac.authorization.k8s.io/v1 PolicyRule`.
public struct PolicyRule: Codable, Sendable, Hashable {
    public var verbs: [String]
    public var apiGroups: [String]?
    public var resources: [String]?
    public var resourceNames: [String]?
    public var nonResourceURLs: [String]?

    public init(verbs: [String], apiGroups: [String]? = nil, resources: [String]? = nil, resourceNames: [String]? = nil,
                nonResourceURLs: [String]? = nil) {
        self.verbs = verbs; self.apiGroups = apiGroups; self.resources = resources
        self.resourceNames = resourceNames; self.nonResourceURLs = nonResourceURLs
    }

    public var isResourceRule: Bool { !(resources ?? []).isEmpty }

    /// Whether this rule allows `a` (kube's RuleAllows: verb, group, resource/subresource, name; or path).
    public func allows(_ a: RequestAttributes) -> Bool {
        guard verbs.contains("*") || verbs.contains(a.verb) else { return false }
        guard a.isResourceRequest else {
            return (nonResourceURLs ?? []).contains { url in
                url == "*" || url == a.path || (url.hasSuffix("*") && a.path.hasPrefix(url.dropLast()))
            }
        }
        let groups = apiGroups ?? []
        guard groups.contains("*") || groups.contains(a.apiGroup) else { return false }
        let combined = a.subresource.isEmpty ? a.resource : a.resource + "/" + a.subresource
        let resourceMatches = (resources ?? []).contains { r in
            r == "*" || r == combined || (!a.subresource.isEmpty && r == "*/" + a.subresource)
        }
        guard resourceMatches else { return false }
        let names = resourceNames ?? []
        return names.isEmpty || names.contains(a.name)
    }

    public var json: JSON {
        var o: [String: JSON] = ["verbs": .array(verbs.map { .string($0) })]
        if let apiGroups { o["apiGroups"] = .array(apiGroups.map { .string($0) }) }
        if let resources { o["resources"] = .array(resources.map { .string($0) }) }
        if let resourceNames { o["resourceNames"] = .array(resourceNames.map { .string($0) }) }
        if let nonResourceURLs { o["nonResourceURLs"] = .array(nonResourceURLs.map { .string($0) }) }
        return .object(o)
    }
}

/// What a request asks to do, as kube's authorizers see it (`authorizer.Attributes`).
public struct RequestAttributes: Sendable, Hashable {
    public var user: UserInfo
    public var verb: String
    public var isResourceRequest: Bool
    /// The URL path (non-resource requests).
    public var path: String
    public var apiGroup: String
    public var apiVersion: String
    public var resource: String
    public var subresource: String
    public var namespace: String
    public var name: String

    public init(user: UserInfo, verb: String, apiGroup: String, apiVersion: String = "", resource: String, subresource: String = "",
                namespace: String = "", name: String = "") {
        self.user = user; self.verb = verb; self.isResourceRequest = true; self.path = ""
        self.apiGroup = apiGroup; self.apiVersion = apiVersion; self.resource = resource; self.subresource = subresource
        self.namespace = namespace; self.name = name
    }

    public init(user: UserInfo, verb: String, path: String) {
        self.user = user; self.verb = verb; self.isResourceRequest = false; self.path = path
        self.apiGroup = ""; self.apiVersion = ""; self.resource = ""; self.subresource = ""; self.namespace = ""; self.name = ""
    }

    /// kube-apiserver's wording of a refusal (`User "u" cannot list resource "pods" in API group "" in the namespace "x"`).
    public var forbiddenReason: String {
        guard isResourceRequest else { return "User \"\(user.username)\" cannot \(verb) path \"\(path)\"" }
        let r = subresource.isEmpty ? resource : resource + "/" + subresource
        if !namespace.isEmpty {
            return "User \"\(user.username)\" cannot \(verb) resource \"\(r)\" in API group \"\(apiGroup)\" in the namespace \"\(namespace)\""
        }
        return "User \"\(user.username)\" cannot \(verb) resource \"\(r)\" in API group \"\(apiGroup)\" at the cluster scope"
    }

    /// The 403 kube-apiserver answers with (`pods "x" is forbidden: User …`).
    public var forbidden: StatusError { forbidden(reason: "") }

    /// The 403 with an authorizer's reason appended (`…: no relationship found between node …`).
    public func forbidden(reason: String) -> StatusError {
        let why = reason.isEmpty ? forbiddenReason : forbiddenReason + ": " + reason
        guard isResourceRequest else { return StatusError(.forbidden, "forbidden: " + why) }
        let qualified = apiGroup.isEmpty ? resource : resource + "." + apiGroup
        let head = name.isEmpty ? qualified : "\(qualified) \"\(name)\""
        return StatusError(.forbidden, "\(head) is forbidden: \(why)", name: name.isEmpty ? nil : name, group: apiGroup, kind: resource)
    }
}

/// A binding's subject (User, Group or ServiceAccount).
public struct Subject: Codable, Sendable, Hashable {
    public var kind: String
    public var name: String
    public var namespace: String?
    public var apiGroup: String?

    public init(kind: String, name: String, namespace: String? = nil, apiGroup: String? = nil) {
        self.kind = kind; self.name = name; self.namespace = namespace; self.apiGroup = apiGroup
    }

    /// kube's appliesTo: ServiceAccount subjects without a namespace take the binding's.
    public func applies(to user: UserInfo, bindingNamespace: String) -> Bool {
        switch kind {
        case "User": return user.username == name
        case "Group": return user.groups.contains(name)
        case "ServiceAccount":
            let ns = (namespace ?? "").isEmpty ? bindingNamespace : namespace!
            return !ns.isEmpty && user.username == ServiceAccountName.username(namespace: ns, name: name)
        default: return false
        }
    }
}

struct RoleRef: Codable, Sendable, Hashable {
    var apiGroup: String?
    var kind: String
    var name: String
}

struct ObjectMetaView: Codable, Sendable {
    var name: String?
    var namespace: String?
    var labels: [String: String]?
}

struct RoleObject: Decodable, Sendable {
    struct Aggregation: Decodable, Sendable { var clusterRoleSelectors: [JSON]? }
    var metadata: ObjectMetaView
    var rules: [PolicyRule]?
    var aggregationRule: Aggregation?
}

struct BindingObject: Decodable, Sendable {
    var metadata: ObjectMetaView
    var subjects: [Subject]?
    var roleRef: RoleRef
}

/// A snapshot of the RBAC objects and the decisions they imply (kube's RBAC authorizer and
/// rule resolver). Aggregated ClusterRoles take the rules of every ClusterRole their selectors
/// match, whether or not the aggregation controller has written them yet.
public struct RBACPolicy: Sendable {
    struct Binding: Sendable {
        var namespace: String
        var subjects: [Subject]
        var roleRef: RoleRef
    }

    var clusterRoleRules: [String: [PolicyRule]] = [:]
    var roleRules: [String: [PolicyRule]] = [:]
    var clusterBindings: [Binding] = []
    var namespaceBindings: [String: [Binding]] = [:]

    public init() {}

    /// Builds the snapshot from stored objects; objects that do not decode are skipped (kube
    /// validates them at write, so they grant nothing here). With `aggregate` false, aggregated
    /// ClusterRoles keep the rules the aggregation controller wrote (a node holds only some of
    /// the ClusterRoles an aggregation selects).
    public init(clusterRoles: [JSON], roles: [JSON], clusterRoleBindings: [JSON], roleBindings: [JSON], aggregate: Bool = true) {
        let decoder = JSONValueDecoder()
        let cluster = clusterRoles.compactMap { try? decoder.decode(RoleObject.self, from: $0) }
        for role in cluster {
            guard let name = role.metadata.name else { continue }
            clusterRoleRules[name] = aggregate ? Self.effectiveRules(role, all: cluster) : role.rules ?? []
        }
        for role in roles.compactMap({ try? decoder.decode(RoleObject.self, from: $0) }) {
            guard let name = role.metadata.name, let ns = role.metadata.namespace else { continue }
            roleRules[ns + "/" + name] = role.rules ?? []
        }
        for b in clusterRoleBindings.compactMap({ try? decoder.decode(BindingObject.self, from: $0) }) where b.roleRef.kind == "ClusterRole" {
            clusterBindings.append(Binding(namespace: "", subjects: b.subjects ?? [], roleRef: b.roleRef))
        }
        for b in roleBindings.compactMap({ try? decoder.decode(BindingObject.self, from: $0) }) {
            guard let ns = b.metadata.namespace else { continue }
            namespaceBindings[ns, default: []].append(Binding(namespace: ns, subjects: b.subjects ?? [], roleRef: b.roleRef))
        }
    }

    /// Whether a RoleBinding or ClusterRoleBinding names any of `users` among its subjects, and
    /// the role it grants (`kind`, `name`); nil for an object that is not a binding.
    public static func binding(_ object: JSON, appliesToAnyOf users: [UserInfo]) -> (applies: Bool, roleKind: String, roleName: String)? {
        guard let b = try? JSONValueDecoder().decode(BindingObject.self, from: object) else { return nil }
        let ns = b.metadata.namespace ?? ""
        let applies = (b.subjects ?? []).contains { s in users.contains { s.applies(to: $0, bindingNamespace: ns) } }
        return (applies, b.roleRef.kind, b.roleRef.name)
    }

    /// The rules of a ClusterRole with an aggregation rule: those of every other ClusterRole a
    /// selector matches (kube's clusterrole-aggregation controller), in name order, deduplicated.
    static func effectiveRules(_ role: RoleObject, all: [RoleObject]) -> [PolicyRule] {
        guard let selectors = role.aggregationRule?.clusterRoleSelectors, !selectors.isEmpty else { return role.rules ?? [] }
        let parsed = selectors.compactMap { try? LabelSelector.from(object: $0) }
        var out: [PolicyRule] = []
        for other in all.sorted(by: { ($0.metadata.name ?? "") < ($1.metadata.name ?? "") })
        where other.metadata.name != role.metadata.name && other.aggregationRule == nil {
            let labels = other.metadata.labels ?? [:]
            guard parsed.contains(where: { $0.matches(labels) }) else { continue }
            for rule in other.rules ?? [] where !out.contains(rule) { out.append(rule) }
        }
        return out
    }

    /// The aggregated rules of the ClusterRole `name` (what the aggregation controller writes).
    public static func aggregatedRules(of name: String, clusterRoles: [JSON]) -> [PolicyRule]? {
        let decoder = JSONValueDecoder()
        let all = clusterRoles.compactMap { try? decoder.decode(RoleObject.self, from: $0) }
        guard let role = all.first(where: { $0.metadata.name == name }), role.aggregationRule != nil else { return nil }
        return effectiveRules(role, all: all)
    }

    func rules(of binding: Binding) -> [PolicyRule] {
        switch binding.roleRef.kind {
        case "ClusterRole": return clusterRoleRules[binding.roleRef.name] ?? []
        case "Role": return roleRules[binding.namespace + "/" + binding.roleRef.name] ?? []
        default: return []
        }
    }

    func bindings(for user: UserInfo, namespace: String) -> [Binding] {
        var out = clusterBindings.filter { b in b.subjects.contains { $0.applies(to: user, bindingNamespace: "") } }
        if !namespace.isEmpty {
            out += (namespaceBindings[namespace] ?? []).filter { b in b.subjects.contains { $0.applies(to: user, bindingNamespace: namespace) } }
        }
        return out
    }

    /// Whether RBAC allows `a`. Members of `system:masters` are allowed everything (kube's
    /// privileged-group authorizer, consulted before RBAC).
    public func allows(_ a: RequestAttributes) -> Bool {
        if a.user.isMaster { return true }
        for b in bindings(for: a.user, namespace: a.namespace) where rules(of: b).contains(where: { $0.allows(a) }) {
            return true
        }
        return false
    }

    /// Every rule that applies to `user` in `namespace` (SelfSubjectRulesReview), cluster-wide
    /// bindings first, without duplicates.
    public func rules(for user: UserInfo, namespace: String) -> [PolicyRule] {
        var out: [PolicyRule] = []
        for b in bindings(for: user, namespace: namespace) {
            for r in rules(of: b) where !out.contains(r) { out.append(r) }
        }
        return out
    }
}

extension RBACPolicy {
    /// The rules a Role (`Role` in `namespace`) or ClusterRole holds; nil if it does not exist.
    public func rules(ofRole kind: String, name: String, namespace: String) -> [PolicyRule]? {
        kind == "ClusterRole" ? clusterRoleRules[name] : kind == "Role" ? roleRules[namespace + "/" + name] : nil
    }

    /// The parts of `rules` that `user` does not hold in `namespace` ("" = cluster-wide), one
    /// atomic rule (one verb, group, resource, name or path) each: kube's escalation check, by
    /// which nobody grants what they could not do themselves. Wildcards are covered only by wildcards.
    public func uncovered(_ rules: [PolicyRule], user: UserInfo, namespace: String) -> [PolicyRule] {
        if user.isMaster { return [] }
        var out: [PolicyRule] = []
        for rule in rules {
            for verb in rule.verbs {
                if let urls = rule.nonResourceURLs, !urls.isEmpty {
                    for url in urls where !allows(RequestAttributes(user: user, verb: verb, path: url)) {
                        out.append(PolicyRule(verbs: [verb], nonResourceURLs: [url]))
                    }
                    continue
                }
                for group in rule.apiGroups ?? [] {
                    for resource in rule.resources ?? [] {
                        let slash = resource.firstIndex(of: "/")
                        let base = slash.map { String(resource[..<$0]) } ?? resource
                        let sub = slash.map { String(resource[resource.index(after: $0)...]) } ?? ""
                        let names = (rule.resourceNames ?? []).isEmpty ? [""] : rule.resourceNames!
                        for name in names {
                            let a = RequestAttributes(user: user, verb: verb, apiGroup: group, resource: base, subresource: sub, namespace: namespace, name: name)
                            if !allows(a) {
                                out.append(PolicyRule(verbs: [verb], apiGroups: [group], resources: [resource], resourceNames: name.isEmpty ? nil : [name]))
                            }
                        }
                    }
                }
            }
        }
        return out
    }
}

extension PolicyRule {
    /// kube's compact rendering in escalation errors (`{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}`).
    public var compactDescription: String {
        func list(_ v: [String]) -> String { "[" + v.map { "\"\($0)\"" }.joined(separator: " ") + "]" }
        var parts: [String] = []
        if let g = apiGroups, !g.isEmpty { parts.append("APIGroups:\(list(g))") }
        if let r = resources, !r.isEmpty { parts.append("Resources:\(list(r))") }
        if let n = resourceNames, !n.isEmpty { parts.append("ResourceNames:\(list(n))") }
        if let u = nonResourceURLs, !u.isEmpty { parts.append("NonResourceURLs:\(list(u))") }
        parts.append("Verbs:\(list(verbs))")
        return "{" + parts.joined(separator: ", ") + "}"
    }
}
