/// Subresources an API resource may serve.
public enum Subresource: String, Sendable, Hashable, CaseIterable {
    case status, scale, binding, eviction, log, exec, attach, portforward, proxy, finalize
}

/// Where a scalable resource keeps its replica counts (the `/scale` subresource).
public struct ScalePaths: Sendable, Hashable {
    public var specReplicas: [String]
    public var statusReplicas: [String]
    public var labelSelector: [String]?
    public init(specReplicas: [String], statusReplicas: [String], labelSelector: [String]?) {
        self.specReplicas = specReplicas; self.statusReplicas = statusReplicas; self.labelSelector = labelSelector
    }
    public static let apps = ScalePaths(specReplicas: ["spec", "replicas"], statusReplicas: ["status", "replicas"],
                                        labelSelector: ["status", "selector"])
}

/// One served API resource: its names, scope, verbs and subresources.
public struct ResourceType: Sendable, Hashable {
    public var group: String
    public var version: String
    /// Plural resource name as it appears in URLs (`pods`).
    public var resource: String
    public var singular: String
    public var kind: String
    public var listKind: String
    public var namespaced: Bool
    public var shortNames: [String]
    public var categories: [String]
    public var verbs: [String]
    public var subresources: Set<Subresource>
    public var scale: ScalePaths?
    /// Whether spec changes bump `metadata.generation`.
    public var tracksGeneration: Bool
    /// Defined by a CustomResourceDefinition.
    public var isCustom: Bool

    public init(group: String, version: String, resource: String, singular: String? = nil, kind: String,
                namespaced: Bool, shortNames: [String] = [], categories: [String] = [],
                verbs: [String] = ResourceType.allVerbs, subresources: Set<Subresource> = [],
                scale: ScalePaths? = nil, tracksGeneration: Bool = false, isCustom: Bool = false)
    {
        self.group = group; self.version = version; self.resource = resource
        self.singular = singular ?? kind.lowercased()
        self.kind = kind; self.listKind = kind + "List"; self.namespaced = namespaced
        self.shortNames = shortNames; self.categories = categories; self.verbs = verbs
        self.subresources = subresources; self.scale = scale; self.tracksGeneration = tracksGeneration
        self.isCustom = isCustom
    }

    public static let allVerbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]

    public var groupVersion: String { group.isEmpty ? version : "\(group)/\(version)" }
    public var apiVersion: String { groupVersion }
    /// `pods`, `deployments.apps`: the name used in error messages.
    public var qualifiedResource: String { group.isEmpty ? resource : "\(resource).\(group)" }
    /// Storage is per group and resource, shared by all served versions.
    public var storagePrefix: String { "/\(group.isEmpty ? "core" : group)/\(resource)/" }

    public func storageKey(namespace: String?, name: String) -> String {
        storagePrefix + (namespaced ? (namespace ?? "") : "") + "/" + name
    }

    public func storagePrefix(namespace: String?) -> String {
        if namespaced, let ns = namespace { return storagePrefix + ns + "/" }
        return storagePrefix
    }
}

/// The compiled-in resources of the embedded API server.
public enum BuiltinResources {
    public static let all: [ResourceType] = [
        // core/v1
        ResourceType(group: "", version: "v1", resource: "namespaces", kind: "Namespace", namespaced: false,
                     shortNames: ["ns"], subresources: [.status, .finalize]),
        ResourceType(group: "", version: "v1", resource: "pods", kind: "Pod", namespaced: true, shortNames: ["po"],
                     categories: ["all"],
                     subresources: [.status, .binding, .eviction, .log, .exec, .attach, .portforward, .proxy]),
        ResourceType(group: "", version: "v1", resource: "bindings", kind: "Binding", namespaced: true, verbs: ["create"]),
        ResourceType(group: "", version: "v1", resource: "nodes", kind: "Node", namespaced: false, shortNames: ["no"],
                     subresources: [.status, .proxy]),
        ResourceType(group: "", version: "v1", resource: "configmaps", singular: "configmap", kind: "ConfigMap",
                     namespaced: true, shortNames: ["cm"]),
        ResourceType(group: "", version: "v1", resource: "secrets", kind: "Secret", namespaced: true),
        ResourceType(group: "", version: "v1", resource: "services", kind: "Service", namespaced: true,
                     shortNames: ["svc"], categories: ["all"], subresources: [.status, .proxy]),
        ResourceType(group: "", version: "v1", resource: "endpoints", singular: "endpoints", kind: "Endpoints",
                     namespaced: true, shortNames: ["ep"]),
        ResourceType(group: "", version: "v1", resource: "events", kind: "Event", namespaced: true, shortNames: ["ev"]),
        ResourceType(group: "", version: "v1", resource: "serviceaccounts", singular: "serviceaccount",
                     kind: "ServiceAccount", namespaced: true, shortNames: ["sa"]),
        ResourceType(group: "", version: "v1", resource: "persistentvolumeclaims", singular: "persistentvolumeclaim",
                     kind: "PersistentVolumeClaim", namespaced: true, shortNames: ["pvc"], subresources: [.status]),
        ResourceType(group: "", version: "v1", resource: "persistentvolumes", singular: "persistentvolume",
                     kind: "PersistentVolume", namespaced: false, shortNames: ["pv"], subresources: [.status]),
        // apps/v1
        ResourceType(group: "apps", version: "v1", resource: "deployments", kind: "Deployment", namespaced: true,
                     shortNames: ["deploy"], categories: ["all"], subresources: [.status, .scale], scale: .apps,
                     tracksGeneration: true),
        ResourceType(group: "apps", version: "v1", resource: "replicasets", singular: "replicaset", kind: "ReplicaSet",
                     namespaced: true, shortNames: ["rs"], categories: ["all"], subresources: [.status, .scale],
                     scale: .apps, tracksGeneration: true),
        ResourceType(group: "apps", version: "v1", resource: "daemonsets", singular: "daemonset", kind: "DaemonSet",
                     namespaced: true, shortNames: ["ds"], categories: ["all"], subresources: [.status],
                     tracksGeneration: true),
        ResourceType(group: "apps", version: "v1", resource: "statefulsets", singular: "statefulset",
                     kind: "StatefulSet", namespaced: true, shortNames: ["sts"], categories: ["all"],
                     subresources: [.status, .scale], scale: .apps, tracksGeneration: true),
        ResourceType(group: "apps", version: "v1", resource: "controllerrevisions", singular: "controllerrevision",
                     kind: "ControllerRevision", namespaced: true),
        // batch/v1
        ResourceType(group: "batch", version: "v1", resource: "jobs", kind: "Job", namespaced: true,
                     categories: ["all"], subresources: [.status], tracksGeneration: true),
        ResourceType(group: "batch", version: "v1", resource: "cronjobs", singular: "cronjob", kind: "CronJob",
                     namespaced: true, shortNames: ["cj"], categories: ["all"], subresources: [.status],
                     tracksGeneration: true),
        // coordination.k8s.io/v1
        ResourceType(group: "coordination.k8s.io", version: "v1", resource: "leases", kind: "Lease", namespaced: true),
        // discovery.k8s.io/v1
        ResourceType(group: "discovery.k8s.io", version: "v1", resource: "endpointslices", singular: "endpointslice",
                     kind: "EndpointSlice", namespaced: true),
        // events.k8s.io/v1
        ResourceType(group: "events.k8s.io", version: "v1", resource: "events", kind: "Event", namespaced: true,
                     shortNames: ["ev"]),
        // policy/v1
        ResourceType(group: "policy", version: "v1", resource: "poddisruptionbudgets",
                     singular: "poddisruptionbudget", kind: "PodDisruptionBudget", namespaced: true,
                     shortNames: ["pdb"], subresources: [.status], tracksGeneration: true),
        // rbac.authorization.k8s.io/v1
        ResourceType(group: "rbac.authorization.k8s.io", version: "v1", resource: "roles", kind: "Role", namespaced: true),
        ResourceType(group: "rbac.authorization.k8s.io", version: "v1", resource: "rolebindings", singular: "rolebinding",
                     kind: "RoleBinding", namespaced: true),
        ResourceType(group: "rbac.authorization.k8s.io", version: "v1", resource: "clusterroles", singular: "clusterrole",
                     kind: "ClusterRole", namespaced: false),
        ResourceType(group: "rbac.authorization.k8s.io", version: "v1", resource: "clusterrolebindings",
                     singular: "clusterrolebinding", kind: "ClusterRoleBinding", namespaced: false),
        // metrics.k8s.io/v1beta1 (measured by the nodes when asked, not stored; `kubectl top`)
        ResourceType(group: "metrics.k8s.io", version: "v1beta1", resource: "nodes", singular: "", kind: "NodeMetrics",
                     namespaced: false, verbs: ["get", "list"]),
        ResourceType(group: "metrics.k8s.io", version: "v1beta1", resource: "pods", singular: "", kind: "PodMetrics",
                     namespaced: true, verbs: ["get", "list"]),
        // authorization.k8s.io/v1 (answered, not stored)
        ResourceType(group: "authorization.k8s.io", version: "v1", resource: "selfsubjectaccessreviews",
                     singular: "selfsubjectaccessreview", kind: "SelfSubjectAccessReview", namespaced: false, verbs: ["create"]),
        // apiextensions.k8s.io/v1
        ResourceType(group: "apiextensions.k8s.io", version: "v1", resource: "customresourcedefinitions",
                     singular: "customresourcedefinition", kind: "CustomResourceDefinition", namespaced: false,
                     shortNames: ["crd", "crds"], categories: ["api-extensions"], subresources: [.status],
                     tracksGeneration: true),
    ]
}
