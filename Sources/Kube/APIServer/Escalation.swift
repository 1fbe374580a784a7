import KubeAPI
import KubeAuth

extension APIHandler {
    /// For writes of Roles, ClusterRoles and their bindings by a caller RBAC governs: a check of
    /// the object about to be stored (kube's escalation prevention: a role may only hold, and a
    /// binding only grant, what the caller holds, unless the caller may `escalate` / `bind`).
    /// nil for other writes. The policy is read before the write; the check runs on the final object.
    func escalationGuard(_ req: APIRequest, _ t: RequestTarget) async throws -> (@Sendable (JSON) throws -> Void)? {
        guard t.type.group == "rbac.authorization.k8s.io", t.subresource == nil, options.access.enforceRBAC,
              let user = req.user, !user.isMaster else { return nil }
        let policy = try await policies.policy()
        let namespace = t.namespace ?? "", type = t.type
        @Sendable func refuse(_ obj: JSON, _ missing: [PolicyRule]) -> StatusError {
            let name = obj["metadata"]["name"].stringValue ?? t.name ?? ""
            let groups = user.groups.map { "\"\($0)\"" }.joined(separator: " ")
            let message = "\(type.qualifiedResource) \"\(name)\" is forbidden: user \"\(user.username)\" (groups=[\(groups)]) is attempting to grant RBAC permissions not currently held:\n"
                + missing.map(\.compactDescription).joined(separator: "\n")
            return StatusError(.forbidden, message, name: name, group: type.group, kind: type.resource)
        }
        switch type.resource {
        case "roles", "clusterroles":
            return { obj in
                let name = obj["metadata"]["name"].stringValue ?? ""
                if policy.allows(RequestAttributes(user: user, verb: "escalate", apiGroup: type.group, resource: type.resource, namespace: namespace, name: name)) { return }
                let rules = (obj["rules"].arrayValue ?? []).compactMap { try? JSONValueDecoder().decode(PolicyRule.self, from: $0) }
                let missing = policy.uncovered(rules, user: user, namespace: namespace)
                if !missing.isEmpty { throw refuse(obj, missing) }
            }
        case "rolebindings", "clusterrolebindings":
            return { obj in
                let kind = obj["roleRef"]["kind"].stringValue ?? "", roleName = obj["roleRef"]["name"].stringValue ?? ""
                let roleResource = kind == "Role" ? "roles" : "clusterroles"
                if policy.allows(RequestAttributes(user: user, verb: "bind", apiGroup: type.group, resource: roleResource, namespace: namespace, name: roleName)) { return }
                guard let rules = policy.rules(ofRole: kind, name: roleName, namespace: namespace) else {
                    throw StatusError.notFound(roleResource, group: type.group, name: roleName)
                }
                let missing = policy.uncovered(rules, user: user, namespace: namespace)
                if !missing.isEmpty { throw refuse(obj, missing) }
            }
        default:
            return nil
        }
    }
}
