import KubeAPI

/// The ClusterRoles and ClusterRoleBindings a new cluster starts with (kube-apiserver's RBAC
/// bootstrap policy, the parts users meet: cluster-admin, admin/edit/view and their aggregated
/// pieces, discovery and self-review for every authenticated user).
public enum BootstrapPolicy {
    static let readVerbs = ["get", "list", "watch"]
    static let writeVerbs = ["create", "delete", "deletecollection", "patch", "update"]

    /// Resources `view` reads, by API group.
    static let viewed: [(String, [String])] = [
        ("", ["configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "pods", "replicationcontrollers",
              "replicationcontrollers/scale", "serviceaccounts", "services", "services/status", "bindings", "events", "limitranges",
              "namespaces/status", "pods/log", "pods/status", "replicationcontrollers/status", "resourcequotas", "resourcequotas/status",
              "namespaces"]),
        ("discovery.k8s.io", ["endpointslices"]),
        ("apps", ["controllerrevisions", "daemonsets", "daemonsets/status", "deployments", "deployments/scale", "deployments/status",
                  "replicasets", "replicasets/scale", "replicasets/status", "statefulsets", "statefulsets/scale", "statefulsets/status"]),
        ("autoscaling", ["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
        ("batch", ["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
        ("policy", ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
        ("networking.k8s.io", ["ingresses", "ingresses/status", "networkpolicies"]),
        ("events.k8s.io", ["events"]),
    ]

    /// Resources `edit` writes, by API group.
    static let edited: [(String, [String])] = [
        ("", ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "configmaps", "endpoints", "persistentvolumeclaims",
              "replicationcontrollers", "replicationcontrollers/scale", "secrets", "serviceaccounts", "services", "services/proxy"]),
        ("apps", ["daemonsets", "deployments", "deployments/rollback", "deployments/scale", "replicasets", "replicasets/scale",
                  "statefulsets", "statefulsets/scale"]),
        ("autoscaling", ["horizontalpodautoscalers"]),
        ("batch", ["cronjobs", "jobs"]),
        ("policy", ["poddisruptionbudgets"]),
        ("networking.k8s.io", ["ingresses", "networkpolicies"]),
        ("discovery.k8s.io", ["endpointslices"]),
    ]

    static func aggregated(_ name: String, to: [String], _ rules: [PolicyRule]) -> JSON {
        var labels: [String: JSON] = ["kubernetes.io/bootstrapping": "rbac-defaults"]
        for t in to { labels["rbac.authorization.k8s.io/aggregate-to-\(t)"] = "true" }
        return clusterRole(name, rules, labels: labels)
    }

    static func clusterRole(_ name: String, _ rules: [PolicyRule], labels: [String: JSON]? = nil) -> JSON {
        ["apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": ["name": .string(name), "labels": .object(labels ?? ["kubernetes.io/bootstrapping": "rbac-defaults"]),
                      "annotations": ["rbac.authorization.kubernetes.io/autoupdate": "true"]],
         "rules": .array(rules.map(\.json))]
    }

    static func aggregating(_ name: String) -> JSON {
        var role = clusterRole(name, [])
        role["aggregationRule"] = ["clusterRoleSelectors": [["matchLabels": .object(["rbac.authorization.k8s.io/aggregate-to-\(name)": "true"])]]]
        return role
    }

    /// The default ClusterRoles.
    public static var clusterRoles: [JSON] {
        let discovery = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"]
        return [
            clusterRole("cluster-admin", [PolicyRule(verbs: ["*"], apiGroups: ["*"], resources: ["*"]), PolicyRule(verbs: ["*"], nonResourceURLs: ["*"])]),
            aggregating("admin"), aggregating("edit"), aggregating("view"),
            aggregated("system:aggregate-to-view", to: ["admin", "edit", "view"],
                       viewed.map { PolicyRule(verbs: readVerbs, apiGroups: [$0.0], resources: $0.1) }),
            aggregated("system:aggregate-to-edit", to: ["admin", "edit"],
                       edited.map { PolicyRule(verbs: writeVerbs, apiGroups: [$0.0], resources: $0.1) } + [
                           PolicyRule(verbs: readVerbs, apiGroups: [""], resources: ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"]),
                           PolicyRule(verbs: ["impersonate"], apiGroups: [""], resources: ["serviceaccounts"]),
                           PolicyRule(verbs: ["create"], apiGroups: [""], resources: ["pods/eviction", "serviceaccounts/token"]),
                       ]),
            aggregated("system:aggregate-to-admin", to: ["admin"], [
                PolicyRule(verbs: readVerbs + writeVerbs, apiGroups: ["rbac.authorization.k8s.io"], resources: ["rolebindings", "roles"]),
                PolicyRule(verbs: ["create"], apiGroups: ["authorization.k8s.io"], resources: ["localsubjectaccessreviews"]),
            ]),
            clusterRole("system:discovery", [PolicyRule(verbs: ["get"], nonResourceURLs: discovery)]),
            clusterRole("system:public-info-viewer", [PolicyRule(verbs: ["get"], nonResourceURLs: ["/healthz", "/livez", "/readyz", "/version", "/version/"])]),
            clusterRole("system:basic-user", [
                PolicyRule(verbs: ["create"], apiGroups: ["authorization.k8s.io"], resources: ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
                PolicyRule(verbs: ["create"], apiGroups: ["authentication.k8s.io"], resources: ["selfsubjectreviews"]),
            ]),
            clusterRole("system:service-account-issuer-discovery", [
                PolicyRule(verbs: ["get"], nonResourceURLs: ["/.well-known/openid-configuration", "/.well-known/openid-configuration/",
                                                             "/openid/v1/jwks", "/openid/v1/jwks/"]),
            ]),
            clusterRole("system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", [
                PolicyRule(verbs: ["create"], apiGroups: ["certificates.k8s.io"], resources: ["certificatesigningrequests/selfnodeclient"]),
            ]),
        ]
    }

    /// What every node may do besides reading what its pods use (kube's NodeRules, applied by the
    /// Node authorizer; which node and pod objects a node may change is checked there too).
    public static let nodeRules: [PolicyRule] = [
        PolicyRule(verbs: ["create", "get", "list", "watch", "update", "patch", "delete"], apiGroups: [""], resources: ["nodes", "nodes/status"]),
        PolicyRule(verbs: ["create", "update", "patch"], apiGroups: ["", "events.k8s.io"], resources: ["events"]),
        PolicyRule(verbs: ["get", "list", "watch"], apiGroups: [""], resources: ["pods", "services", "endpoints"]),
        PolicyRule(verbs: ["create", "delete"], apiGroups: [""], resources: ["pods"]),
        PolicyRule(verbs: ["update", "patch"], apiGroups: [""], resources: ["pods/status"]),
        PolicyRule(verbs: ["create"], apiGroups: [""], resources: ["pods/eviction"]),
        PolicyRule(verbs: ["get", "list", "watch"], apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"]),
        PolicyRule(verbs: ["create", "get", "list", "watch"], apiGroups: ["certificates.k8s.io"], resources: ["certificatesigningrequests"]),
        PolicyRule(verbs: ["get", "create", "update", "patch", "delete"], apiGroups: ["coordination.k8s.io"], resources: ["leases"]),
        PolicyRule(verbs: ["get", "create", "update", "patch", "delete"], apiGroups: ["storage.k8s.io"], resources: ["csinodes"]),
        PolicyRule(verbs: ["get", "list", "watch"], apiGroups: ["storage.k8s.io"], resources: ["csidrivers", "storageclasses", "volumeattachments"]),
        PolicyRule(verbs: ["get", "list", "watch"], apiGroups: ["node.k8s.io"], resources: ["runtimeclasses"]),
        PolicyRule(verbs: ["create"], apiGroups: ["authentication.k8s.io"], resources: ["tokenreviews"]),
        PolicyRule(verbs: ["create"], apiGroups: ["authorization.k8s.io"], resources: ["subjectaccessreviews", "localsubjectaccessreviews"]),
    ]

    static func binding(_ name: String, role: String, groups: [String]) -> JSON {
        ["apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": ["name": .string(name), "labels": ["kubernetes.io/bootstrapping": "rbac-defaults"],
                      "annotations": ["rbac.authorization.kubernetes.io/autoupdate": "true"]],
         "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": .string(role)],
         "subjects": .array(groups.map { ["apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": .string($0)] })]
    }

    /// The default ClusterRoleBindings.
    public static var clusterRoleBindings: [JSON] {
        [
            binding("cluster-admin", role: "cluster-admin", groups: [UserInfo.mastersGroup]),
            binding("system:discovery", role: "system:discovery", groups: [UserInfo.authenticatedGroup]),
            binding("system:basic-user", role: "system:basic-user", groups: [UserInfo.authenticatedGroup]),
            binding("system:public-info-viewer", role: "system:public-info-viewer", groups: [UserInfo.authenticatedGroup, UserInfo.unauthenticatedGroup]),
            binding("system:service-account-issuer-discovery", role: "system:service-account-issuer-discovery", groups: ["system:serviceaccounts"]),
        ]
    }
}
