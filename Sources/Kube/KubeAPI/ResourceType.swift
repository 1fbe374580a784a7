/// Subresources an API resource may serve.
public enum Subresource: String, Sendable, Hashable, CaseIterable {
    case status, scale, binding, eviction, log, exec, attach, portforward, proxy, finalize
    /// A CertificateSigningRequest's approval conditions (`kubectl certificate approve|deny`).
    case approval
    /// A ServiceAccount's bound tokens (TokenRequest, `kubectl create token`).
    case token
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

    /// `object` with this type's `apiVersion` and `kind` (lists and some clients leave them out;
    /// edgecore's metaserver keys objects by them).
    public func withTypeMeta(_ object: JSON) -> JSON {
        var o = object
        o["apiVersion"] = .string(apiVersion)
        o["kind"] = .string(kind)
        return o
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
        .namespaces,
        .pods,
        ResourceType(group: "", version: "v1", resource: "bindings", kind: "Binding", namespaced: true, verbs: ["create"]),
        .nodes,
        .configMaps,
        .secrets,
        .services,
        .endpoints,
        .events,
        .serviceAccounts,
        .persistentVolumeClaims,
        .persistentVolumes,
        .resourceQuotas,
        ResourceType(group: "", version: "v1", resource: "limitranges", singular: "limitrange", kind: "LimitRange",
                     namespaced: true, shortNames: ["limits"]),
        ResourceType(group: "", version: "v1", resource: "podtemplates", singular: "podtemplate", kind: "PodTemplate", namespaced: true),
        // Stored and scalable; no replication controller runs (Deployments are the way).
        ResourceType(group: "", version: "v1", resource: "replicationcontrollers", singular: "replicationcontroller",
                     kind: "ReplicationController", namespaced: true, shortNames: ["rc"], categories: ["all"],
                     subresources: [.status, .scale],
                     scale: ScalePaths(specReplicas: ["spec", "replicas"], statusReplicas: ["status", "replicas"], labelSelector: nil),
                     tracksGeneration: true),
        // apps/v1
        .deployments,
        .replicaSets,
        .daemonSets,
        .statefulSets,
        .controllerRevisions,
        // batch/v1
        .jobs,
        .cronJobs,
        // autoscaling/v2 (stored; no autoscaler acts on it yet)
        ResourceType(group: "autoscaling", version: "v2", resource: "horizontalpodautoscalers", singular: "horizontalpodautoscaler",
                     kind: "HorizontalPodAutoscaler", namespaced: true, shortNames: ["hpa"], categories: ["all"], subresources: [.status]),
        // certificates.k8s.io/v1 (approved or denied through /approval, signed by the control plane's signer)
        .certificateSigningRequests,
        // networking.k8s.io/v1 (stored)
        ResourceType(group: "networking.k8s.io", version: "v1", resource: "ingresses", singular: "ingress", kind: "Ingress",
                     namespaced: true, shortNames: ["ing"], subresources: [.status]),
        ResourceType(group: "networking.k8s.io", version: "v1", resource: "ingressclasses", singular: "ingressclass",
                     kind: "IngressClass", namespaced: false),
        ResourceType(group: "networking.k8s.io", version: "v1", resource: "networkpolicies", singular: "networkpolicy",
                     kind: "NetworkPolicy", namespaced: true, shortNames: ["netpol"]),
        // scheduling.k8s.io/v1, node.k8s.io/v1 (stored)
        .priorityClasses,
        ResourceType(group: "node.k8s.io", version: "v1", resource: "runtimeclasses", singular: "runtimeclass",
                     kind: "RuntimeClass", namespaced: false),
        // storage.k8s.io/v1 (the control plane binds claims; CSI through the cloud's driver)
        .storageClasses, .csiDrivers, .csiNodes, .volumeAttachments,
        // coordination.k8s.io/v1
        .leases,
        // discovery.k8s.io/v1
        .endpointSlices,
        // events.k8s.io/v1
        ResourceType(group: "events.k8s.io", version: "v1", resource: "events", kind: "Event", namespaced: true,
                     shortNames: ["ev"]),
        // policy/v1
        .podDisruptionBudgets,
        // rbac.authorization.k8s.io/v1
        .roles, .roleBindings, .clusterRoles, .clusterRoleBindings,
        // metrics.k8s.io/v1beta1 (measured by the nodes when asked, not stored; `kubectl top`)
        ResourceType(group: "metrics.k8s.io", version: "v1beta1", resource: "nodes", singular: "", kind: "NodeMetrics",
                     namespaced: false, verbs: ["get", "list"]),
        ResourceType(group: "metrics.k8s.io", version: "v1beta1", resource: "pods", singular: "", kind: "PodMetrics",
                     namespaced: true, verbs: ["get", "list"]),
        // authorization.k8s.io/v1 (answered, not stored)
        ResourceType(group: "authorization.k8s.io", version: "v1", resource: "selfsubjectaccessreviews",
                     singular: "selfsubjectaccessreview", kind: "SelfSubjectAccessReview", namespaced: false, verbs: ["create"]),
        ResourceType(group: "authorization.k8s.io", version: "v1", resource: "selfsubjectrulesreviews",
                     singular: "selfsubjectrulesreview", kind: "SelfSubjectRulesReview", namespaced: false, verbs: ["create"]),
        ResourceType(group: "authorization.k8s.io", version: "v1", resource: "subjectaccessreviews",
                     singular: "subjectaccessreview", kind: "SubjectAccessReview", namespaced: false, verbs: ["create"]),
        ResourceType(group: "authorization.k8s.io", version: "v1", resource: "localsubjectaccessreviews",
                     singular: "localsubjectaccessreview", kind: "LocalSubjectAccessReview", namespaced: true, verbs: ["create"]),
        // authentication.k8s.io/v1 (answered, not stored: `kubectl auth whoami`)
        ResourceType(group: "authentication.k8s.io", version: "v1", resource: "selfsubjectreviews",
                     singular: "selfsubjectreview", kind: "SelfSubjectReview", namespaced: false, verbs: ["create"]),
        ResourceType(group: "authentication.k8s.io", version: "v1", resource: "tokenreviews",
                     singular: "tokenreview", kind: "TokenReview", namespaced: false, verbs: ["create"]),
        // admissionregistration.k8s.io/v1 (the API server calls the webhooks they name)
        .validatingWebhookConfigurations, .mutatingWebhookConfigurations,
        // apiextensions.k8s.io/v1
        ResourceType(group: "apiextensions.k8s.io", version: "v1", resource: "customresourcedefinitions",
                     singular: "customresourcedefinition", kind: "CustomResourceDefinition", namespaced: false,
                     shortNames: ["crd", "crds"], categories: ["api-extensions"], subresources: [.status],
                     tracksGeneration: true),
    ]
}

/// The resource types every component names: one definition each (the embedded server serves
/// them from ``BuiltinResources/all``; clients, controllers and the cloud–edge vocabulary use the same values).
extension ResourceType {
    public static let namespaces = ResourceType(group: "", version: "v1", resource: "namespaces", kind: "Namespace", namespaced: false, shortNames: ["ns"], subresources: [.status, .finalize])
    public static let pods = ResourceType(group: "", version: "v1", resource: "pods", kind: "Pod", namespaced: true, shortNames: ["po"], categories: ["all"], subresources: [.status, .binding, .eviction, .log, .exec, .attach, .portforward, .proxy])
    public static let nodes = ResourceType(group: "", version: "v1", resource: "nodes", kind: "Node", namespaced: false, shortNames: ["no"], subresources: [.status, .proxy])
    public static let configMaps = ResourceType(group: "", version: "v1", resource: "configmaps", singular: "configmap", kind: "ConfigMap", namespaced: true, shortNames: ["cm"])
    public static let secrets = ResourceType(group: "", version: "v1", resource: "secrets", kind: "Secret", namespaced: true)
    public static let services = ResourceType(group: "", version: "v1", resource: "services", kind: "Service", namespaced: true, shortNames: ["svc"], categories: ["all"], subresources: [.status, .proxy])
    public static let endpoints = ResourceType(group: "", version: "v1", resource: "endpoints", singular: "endpoints", kind: "Endpoints", namespaced: true, shortNames: ["ep"])
    public static let certificateSigningRequests = ResourceType(group: "certificates.k8s.io", version: "v1", resource: "certificatesigningrequests",
                                                                singular: "certificatesigningrequest", kind: "CertificateSigningRequest", namespaced: false,
                                                                shortNames: ["csr"], subresources: [.status, .approval])
    public static let clusterRoles = ResourceType(group: "rbac.authorization.k8s.io", version: "v1", resource: "clusterroles", singular: "clusterrole",
                                                  kind: "ClusterRole", namespaced: false)
    public static let validatingWebhookConfigurations = ResourceType(
        group: "admissionregistration.k8s.io", version: "v1", resource: "validatingwebhookconfigurations", singular: "validatingwebhookconfiguration",
        kind: "ValidatingWebhookConfiguration", namespaced: false, categories: ["api-extensions"])
    public static let mutatingWebhookConfigurations = ResourceType(
        group: "admissionregistration.k8s.io", version: "v1", resource: "mutatingwebhookconfigurations", singular: "mutatingwebhookconfiguration",
        kind: "MutatingWebhookConfiguration", namespaced: false, categories: ["api-extensions"])
    public static let roles = ResourceType(group: "rbac.authorization.k8s.io", version: "v1", resource: "roles", kind: "Role", namespaced: true)
    public static let roleBindings = ResourceType(group: "rbac.authorization.k8s.io", version: "v1", resource: "rolebindings", singular: "rolebinding",
                                                  kind: "RoleBinding", namespaced: true)
    public static let clusterRoleBindings = ResourceType(group: "rbac.authorization.k8s.io", version: "v1", resource: "clusterrolebindings",
                                                         singular: "clusterrolebinding", kind: "ClusterRoleBinding", namespaced: false)
    public static let podDisruptionBudgets = ResourceType(group: "policy", version: "v1", resource: "poddisruptionbudgets",
                                                          singular: "poddisruptionbudget", kind: "PodDisruptionBudget", namespaced: true,
                                                          shortNames: ["pdb"], subresources: [.status], tracksGeneration: true)
    public static let resourceQuotas = ResourceType(group: "", version: "v1", resource: "resourcequotas", singular: "resourcequota",
                                                    kind: "ResourceQuota", namespaced: true, shortNames: ["quota"], subresources: [.status])
    public static let events = ResourceType(group: "", version: "v1", resource: "events", kind: "Event", namespaced: true, shortNames: ["ev"])
    public static let serviceAccounts = ResourceType(group: "", version: "v1", resource: "serviceaccounts", singular: "serviceaccount", kind: "ServiceAccount", namespaced: true, shortNames: ["sa"], subresources: [.token])
    public static let persistentVolumeClaims = ResourceType(group: "", version: "v1", resource: "persistentvolumeclaims", singular: "persistentvolumeclaim", kind: "PersistentVolumeClaim", namespaced: true, shortNames: ["pvc"], subresources: [.status])
    public static let persistentVolumes = ResourceType(group: "", version: "v1", resource: "persistentvolumes", singular: "persistentvolume", kind: "PersistentVolume", namespaced: false, shortNames: ["pv"], subresources: [.status])
    public static let storageClasses = ResourceType(group: "storage.k8s.io", version: "v1", resource: "storageclasses", singular: "storageclass",
                                                    kind: "StorageClass", namespaced: false, shortNames: ["sc"])
    public static let csiDrivers = ResourceType(group: "storage.k8s.io", version: "v1", resource: "csidrivers", singular: "csidriver", kind: "CSIDriver", namespaced: false)
    public static let csiNodes = ResourceType(group: "storage.k8s.io", version: "v1", resource: "csinodes", singular: "csinode", kind: "CSINode", namespaced: false)
    public static let volumeAttachments = ResourceType(group: "storage.k8s.io", version: "v1", resource: "volumeattachments", singular: "volumeattachment",
                                                       kind: "VolumeAttachment", namespaced: false, subresources: [.status])
    public static let deployments = ResourceType(group: "apps", version: "v1", resource: "deployments", kind: "Deployment", namespaced: true, shortNames: ["deploy"], categories: ["all"], subresources: [.status, .scale], scale: .apps, tracksGeneration: true)
    public static let replicaSets = ResourceType(group: "apps", version: "v1", resource: "replicasets", singular: "replicaset", kind: "ReplicaSet", namespaced: true, shortNames: ["rs"], categories: ["all"], subresources: [.status, .scale], scale: .apps, tracksGeneration: true)
    public static let daemonSets = ResourceType(group: "apps", version: "v1", resource: "daemonsets", singular: "daemonset", kind: "DaemonSet", namespaced: true, shortNames: ["ds"], categories: ["all"], subresources: [.status], tracksGeneration: true)
    public static let statefulSets = ResourceType(group: "apps", version: "v1", resource: "statefulsets", singular: "statefulset", kind: "StatefulSet", namespaced: true, shortNames: ["sts"], categories: ["all"], subresources: [.status, .scale], scale: .apps, tracksGeneration: true)
    public static let controllerRevisions = ResourceType(group: "apps", version: "v1", resource: "controllerrevisions", singular: "controllerrevision", kind: "ControllerRevision", namespaced: true)
    public static let jobs = ResourceType(group: "batch", version: "v1", resource: "jobs", kind: "Job", namespaced: true, categories: ["all"], subresources: [.status], tracksGeneration: true)
    public static let cronJobs = ResourceType(group: "batch", version: "v1", resource: "cronjobs", singular: "cronjob", kind: "CronJob", namespaced: true, shortNames: ["cj"], categories: ["all"], subresources: [.status], tracksGeneration: true)
    public static let priorityClasses = ResourceType(group: "scheduling.k8s.io", version: "v1", resource: "priorityclasses", singular: "priorityclass", kind: "PriorityClass", namespaced: false, shortNames: ["pc"])
    public static let leases = ResourceType(group: "coordination.k8s.io", version: "v1", resource: "leases", kind: "Lease", namespaced: true)
    public static let endpointSlices = ResourceType(group: "discovery.k8s.io", version: "v1", resource: "endpointslices", singular: "endpointslice", kind: "EndpointSlice", namespaced: true)
    // KubeEdge's devices (served through its CustomResourceDefinitions).
    public static let devices = ResourceType(group: "devices.kubeedge.io", version: "v1beta1", resource: "devices", kind: "Device", namespaced: true)
    public static let deviceModels = ResourceType(group: "devices.kubeedge.io", version: "v1beta1", resource: "devicemodels", kind: "DeviceModel", namespaced: true)
    public static let deviceStatuses = ResourceType(group: "devices.kubeedge.io", version: "v1beta1", resource: "devicestatuses", kind: "DeviceStatus", namespaced: true)
}
