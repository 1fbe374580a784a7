import KubeAPI
import KubeAuth

/// The review kinds: answered from the caller's identity and the RBAC policy, never stored.
enum Reviews {
    static func answered(_ type: ResourceType) -> Bool {
        switch (type.group, type.resource) {
        case ("authorization.k8s.io", "selfsubjectaccessreviews"), ("authorization.k8s.io", "subjectaccessreviews"),
             ("authorization.k8s.io", "localsubjectaccessreviews"), ("authorization.k8s.io", "selfsubjectrulesreviews"),
             ("authentication.k8s.io", "selfsubjectreviews"), ("authentication.k8s.io", "tokenreviews"):
            return true
        default:
            return false
        }
    }

    /// `spec.resourceAttributes` / `spec.nonResourceAttributes` of an access review as attributes.
    static func attributes(_ spec: JSON, user: UserInfo, namespace: String?) throws(StatusError) -> RequestAttributes {
        let r = spec["resourceAttributes"], n = spec["nonResourceAttributes"]
        if r.isNull == n.isNull {
            throw StatusError(.invalid, "spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
                              code: 422)
        }
        if !n.isNull { return RequestAttributes(user: user, verb: n["verb"].stringValue ?? "", path: n["path"].stringValue ?? "") }
        return RequestAttributes(user: user, verb: r["verb"].stringValue ?? "", apiGroup: r["group"].stringValue ?? "",
                                 apiVersion: r["version"].stringValue ?? "", resource: r["resource"].stringValue ?? "",
                                 subresource: r["subresource"].stringValue ?? "", namespace: namespace ?? r["namespace"].stringValue ?? "",
                                 name: r["name"].stringValue ?? "")
    }

    /// The user a SubjectAccessReview asks about (`spec.user`, `groups`, `uid`, `extra`), as given.
    static func subject(_ spec: JSON) throws(StatusError) -> UserInfo {
        let user = spec["user"].stringValue ?? "", groups = (spec["groups"].arrayValue ?? []).compactMap(\.stringValue)
        if user.isEmpty && groups.isEmpty {
            throw StatusError(.invalid, "spec.user: Invalid value: \"\": at least one of user or group must be specified", code: 422)
        }
        var extra: [String: [String]] = [:]
        for (k, v) in spec["extra"].objectValue ?? [:] { extra[k] = (v.arrayValue ?? []).compactMap(\.stringValue) }
        return UserInfo(username: user, uid: spec["uid"].stringValue ?? "", groups: groups, extra: extra)
    }

    static func rulesStatus(_ rules: [PolicyRule]) -> JSON {
        var resource: [JSON] = [], nonResource: [JSON] = []
        for rule in rules {
            if rule.isResourceRule {
                var o: [String: JSON] = ["verbs": .array(rule.verbs.map { .string($0) }),
                                         "apiGroups": .array((rule.apiGroups ?? []).map { .string($0) }),
                                         "resources": .array((rule.resources ?? []).map { .string($0) })]
                if let names = rule.resourceNames, !names.isEmpty { o["resourceNames"] = .array(names.map { .string($0) }) }
                resource.append(.object(o))
            } else if let urls = rule.nonResourceURLs, !urls.isEmpty {
                nonResource.append(["verbs": .array(rule.verbs.map { .string($0) }), "nonResourceURLs": .array(urls.map { .string($0) })])
            }
        }
        return ["resourceRules": .array(resource), "nonResourceRules": .array(nonResource), "incomplete": false]
    }
}

extension APIHandler {
    /// The `status` of a review posted by `user` (LocalSubjectAccessReview: in `namespace`).
    func answerReview(_ type: ResourceType, _ review: JSON, user: UserInfo, namespace: String?) async throws -> JSON {
        let spec = review["spec"]
        switch type.resource {
        case "selfsubjectaccessreviews":
            return try await accessStatus(Reviews.attributes(spec, user: user, namespace: nil))
        case "subjectaccessreviews":
            return try await accessStatus(Reviews.attributes(spec, user: Reviews.subject(spec), namespace: nil))
        case "localsubjectaccessreviews":
            let ns = spec["resourceAttributes"]["namespace"].stringValue ?? ""
            if !ns.isEmpty && ns != namespace {
                throw StatusError(.invalid, "spec.resourceAttributes.namespace: Invalid value: \"\(ns)\": must match metadata.namespace", code: 422)
            }
            return try await accessStatus(Reviews.attributes(spec, user: Reviews.subject(spec), namespace: namespace ?? ""))
        case "selfsubjectrulesreviews":
            guard options.access.enforceRBAC else {
                return Reviews.rulesStatus([PolicyRule(verbs: ["*"], apiGroups: ["*"], resources: ["*"]), PolicyRule(verbs: ["*"], nonResourceURLs: ["*"])])
            }
            return Reviews.rulesStatus(try await policies.policy().rules(for: user, namespace: spec["namespace"].stringValue ?? ""))
        case "selfsubjectreviews":
            return ["userInfo": user.json]
        default:  // tokenreviews
            let audiences = (spec["audiences"].arrayValue ?? []).compactMap(\.stringValue)
            switch await authenticateToken(spec["token"].stringValue ?? "") {
            case .success(let who):
                return ["authenticated": true, "user": who.json,
                        "audiences": .array((audiences.isEmpty ? options.access.apiAudiences : audiences).map { .string($0) })]
            case .failure(let why):
                return ["authenticated": false, "error": .string("\(why)"), "user": .emptyObject]
            }
        }
    }

    func accessStatus(_ a: RequestAttributes) async throws -> JSON {
        let yes = try await allowed(a)
        return yes ? ["allowed": true] : ["allowed": false]
    }
}
