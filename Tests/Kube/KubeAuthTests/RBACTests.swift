import KubeAPI
import KubeAuth
import Testing

/// The RBAC evaluator against kube's rule semantics (verbs, groups, subresources, names,
/// non-resource paths, subjects, aggregation), without a server.
@Suite struct RBACTests {
    static func role(_ name: String, namespace: String? = nil, rules: [PolicyRule], labels: [String: String] = [:]) -> JSON {
        var md: [String: JSON] = ["name": .string(name), "labels": .object(labels.mapValues { .string($0) })]
        if let namespace { md["namespace"] = .string(namespace) }
        return ["metadata": .object(md), "rules": .array(rules.map(\.json))]
    }

    static func binding(_ name: String, namespace: String? = nil, role: String, kind: String = "ClusterRole", subjects: [JSON]) -> JSON {
        var md: [String: JSON] = ["name": .string(name)]
        if let namespace { md["namespace"] = .string(namespace) }
        return ["metadata": .object(md), "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": .string(kind), "name": .string(role)],
                "subjects": .array(subjects)]
    }

    let jane = UserInfo(username: "jane", groups: ["devs", UserInfo.authenticatedGroup])
    let bot = UserInfo(username: "system:serviceaccount:team:bot", groups: ServiceAccountName.groups(namespace: "team"))

    var policy: RBACPolicy {
        RBACPolicy(
            clusterRoles: BootstrapPolicy.clusterRoles + [
                Self.role("pod-exec", rules: [PolicyRule(verbs: ["create"], apiGroups: [""], resources: ["pods/exec"])]),
                Self.role("status-only", rules: [PolicyRule(verbs: ["get"], apiGroups: ["*"], resources: ["*/status"])]),
            ],
            roles: [Self.role("one-cm", namespace: "team", rules: [PolicyRule(verbs: ["get", "update"], apiGroups: [""], resources: ["configmaps"], resourceNames: ["settings"])])],
            clusterRoleBindings: BootstrapPolicy.clusterRoleBindings + [
                Self.binding("devs-view", role: "view", subjects: [["kind": "Group", "name": "devs", "apiGroup": "rbac.authorization.k8s.io"]]),
            ],
            roleBindings: [
                Self.binding("bot-cm", namespace: "team", role: "one-cm", kind: "Role", subjects: [["kind": "ServiceAccount", "name": "bot"]]),
                Self.binding("jane-exec", namespace: "team", role: "pod-exec", subjects: [["kind": "User", "name": "jane", "apiGroup": "rbac.authorization.k8s.io"]]),
                Self.binding("status", namespace: "team", role: "status-only", subjects: [["kind": "ServiceAccount", "name": "bot", "namespace": "team"]]),
            ])
    }

    func can(_ user: UserInfo, _ verb: String, _ resource: String, group: String = "", sub: String = "", ns: String = "", name: String = "") -> Bool {
        policy.allows(RequestAttributes(user: user, verb: verb, apiGroup: group, resource: resource, subresource: sub, namespace: ns, name: name))
    }

    @Test func aggregatedViewGrantsReadsNotWritesNorSecrets() {
        #expect(can(jane, "list", "pods", ns: "anywhere"))
        #expect(can(jane, "watch", "deployments", group: "apps", ns: "x"))
        #expect(!can(jane, "delete", "pods", ns: "x"))
        #expect(!can(jane, "get", "secrets", ns: "x"))
        #expect(!can(jane, "list", "pods", group: "apps", ns: "x"))  // the group must match too
    }

    @Test func subresourcesAreSeparateFromTheirResource() {
        #expect(can(jane, "create", "pods", sub: "exec", ns: "team"))
        #expect(!can(jane, "create", "pods", sub: "exec", ns: "other"))  // a RoleBinding holds in its namespace only
        #expect(!can(jane, "create", "pods", ns: "team"))
        #expect(can(bot, "get", "deployments", group: "apps", sub: "status", ns: "team"))  // "*/status"
        #expect(!can(bot, "get", "deployments", group: "apps", ns: "team"))
    }

    @Test func resourceNamesLimitToNamedObjects() {
        #expect(can(bot, "get", "configmaps", ns: "team", name: "settings"))
        #expect(!can(bot, "get", "configmaps", ns: "team", name: "other"))
        #expect(!can(bot, "list", "configmaps", ns: "team"))  // a list names no object
        let other = UserInfo(username: "system:serviceaccount:elsewhere:bot", groups: ServiceAccountName.groups(namespace: "elsewhere"))
        #expect(!can(other, "get", "configmaps", ns: "team", name: "settings"))  // the subject's namespace is the binding's
    }

    @Test func nonResourcePathsAndSelfReviews() {
        let a = RequestAttributes(user: bot, verb: "get", path: "/apis/apps/v1")
        #expect(policy.allows(a))
        #expect(!policy.allows(RequestAttributes(user: bot, verb: "get", path: "/metrics")))
        #expect(policy.allows(RequestAttributes(user: bot, verb: "create", apiGroup: "authorization.k8s.io", resource: "selfsubjectaccessreviews")))
        #expect(policy.allows(RequestAttributes(user: bot, verb: "get", path: "/openid/v1/jwks")))
    }

    @Test func mastersMayDoEverythingWithoutBindings() {
        #expect(policy.allows(RequestAttributes(user: .admin, verb: "delete", apiGroup: "x.example.com", resource: "things", namespace: "n")))
        #expect(!policy.allows(RequestAttributes(user: UserInfo(username: "nobody", groups: [UserInfo.authenticatedGroup]),
                                                 verb: "get", apiGroup: "", resource: "pods", namespace: "n")))
    }

    @Test func rulesReviewListsWhatApplies() {
        let rules = policy.rules(for: bot, namespace: "team")
        #expect(rules.contains(PolicyRule(verbs: ["get", "update"], apiGroups: [""], resources: ["configmaps"], resourceNames: ["settings"])))
        #expect(rules.contains { $0.nonResourceURLs?.contains("/api") == true })
        #expect(!policy.rules(for: bot, namespace: "other").contains { $0.resources == ["configmaps"] })
        let admin = policy.rules(for: .admin, namespace: "x")
        #expect(admin.contains(PolicyRule(verbs: ["*"], apiGroups: ["*"], resources: ["*"])))
    }

    @Test func forbiddenMessagesAreKubes() {
        let list = RequestAttributes(user: bot, verb: "list", apiGroup: "", resource: "configmaps", namespace: "team")
        #expect(list.forbidden.message == #"configmaps is forbidden: User "system:serviceaccount:team:bot" cannot list resource "configmaps" in API group "" in the namespace "team""#)
        let get = RequestAttributes(user: jane, verb: "get", apiGroup: "apps", resource: "deployments", subresource: "scale", name: "web")
        #expect(get.forbidden.message == #"deployments.apps "web" is forbidden: User "jane" cannot get resource "deployments/scale" in API group "apps" at the cluster scope"#)
        #expect(get.forbidden.code == 403)
        #expect(RequestAttributes(user: jane, verb: "get", path: "/metrics").forbidden.message == #"forbidden: User "jane" cannot get path "/metrics""#)
    }

    @Test func aggregationFollowsLabels() {
        let roles = BootstrapPolicy.clusterRoles + [Self.role("crd-view", rules: [PolicyRule(verbs: ["get"], apiGroups: ["x.io"], resources: ["widgets"])],
                                                              labels: ["rbac.authorization.k8s.io/aggregate-to-view": "true"])]
        let view = RBACPolicy.aggregatedRules(of: "view", clusterRoles: roles) ?? []
        #expect(view.contains(PolicyRule(verbs: ["get"], apiGroups: ["x.io"], resources: ["widgets"])))
        let edit = RBACPolicy.aggregatedRules(of: "edit", clusterRoles: roles) ?? []
        #expect(!edit.contains(PolicyRule(verbs: ["get"], apiGroups: ["x.io"], resources: ["widgets"])))
        #expect(RBACPolicy.aggregatedRules(of: "cluster-admin", clusterRoles: roles) == nil)
    }
}
