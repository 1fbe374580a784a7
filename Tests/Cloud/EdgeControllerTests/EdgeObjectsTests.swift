import KubeAPI
import Logging
import ReliableSync
import Testing
import TestSupport
@testable import ControllerRuntime
@testable import EdgeController

/// What each node is sent (``EdgeObjects``), from informers over the in-memory API: its bound pods,
/// the ConfigMaps and Secrets those pods reference and nothing else, its own Node, Services and
/// Endpoints only on edge-labelled nodes, its Devices and their DeviceModels.
@Suite struct EdgeObjectsTests {
    typealias T = TestResources

    /// The cluster of every test: three nodes, pods referencing ConfigMaps/Secrets every way a
    /// pod can, shared Services/Endpoints, devices on two edge nodes sharing a model.
    static func seed(_ c: InMemoryKubeClient) {
        c.seed(T.nodes, Fixtures.edgeNode("edge-1"))
        c.seed(T.nodes, Fixtures.edgeNode("edge-2"))
        c.seed(T.nodes, Fixtures.node("cloud-1"))
        for n in ["cm-vol", "cm-proj", "cm-env", "cm-envfrom", "cm-cloud", "cm-unused"] { c.seed(T.configMaps, Fixtures.configMap(n)) }
        for n in ["s-vol", "s-proj", "s-env", "s-envfrom", "s-pull", "s-pending", "s-unused"] { c.seed(T.secrets, Fixtures.secret(n)) }
        c.seed(T.configMaps, Fixtures.configMap("cm-vol", namespace: "other"))  // same name, another namespace
        var app = Fixtures.pod("app", nodeName: "edge-1")
        app["spec"]["volumes"] = [
            ["name": "a", "configMap": ["name": "cm-vol"]],
            ["name": "b", "secret": ["secretName": "s-vol"]],
            ["name": "c", "projected": ["sources": [["configMap": ["name": "cm-proj"]], ["secret": ["name": "s-proj"]]]]],
        ]
        app["spec"]["containers"] = [[
            "name": "app", "image": "nginx",
            "env": [["name": "A", "valueFrom": ["configMapKeyRef": ["name": "cm-env", "key": "key"]]],
                    ["name": "B", "valueFrom": ["secretKeyRef": ["name": "s-env", "key": "key"]]],
                    ["name": "C", "value": "plain"]],
            "envFrom": [["configMapRef": ["name": "cm-envfrom"]], ["secretRef": ["name": "s-envfrom"]]],
        ]]
        app["spec"]["imagePullSecrets"] = [["name": "s-pull"]]
        c.seed(T.pods, app)
        var cloud = Fixtures.pod("cloud-app", nodeName: "cloud-1")
        cloud["spec"]["volumes"] = [["name": "a", "configMap": ["name": "cm-cloud"]]]
        c.seed(T.pods, cloud)
        var pending = Fixtures.pod("pending")
        pending["spec"]["imagePullSecrets"] = [["name": "s-pending"]]
        c.seed(T.pods, pending)
        c.seed(T.services, Fixtures.service("svc", selector: ["app": "app"]))
        c.seed(T.endpoints, Fixtures.endpoints("svc"))
        c.seed(T.deviceModels, Fixtures.deviceModel("m1"))
        c.seed(T.deviceModels, Fixtures.deviceModel("m2"))
        c.seed(T.devices, Fixtures.device("dev-1", nodeName: "edge-1", model: "m1"))
        c.seed(T.devices, Fixtures.device("dev-2", nodeName: "edge-2", model: "m1"))
    }

    static let kinds: [(ResourceType, String)] = [
        (T.nodes, "node"), (T.pods, "pod"), (T.configMaps, "configmap"), (T.secrets, "secret"), (T.services, "service"),
        (T.endpoints, "endpoints"), (T.devices, "device"), (T.deviceModels, "devicemodel"), (ResourceType.roles, "role"),
        (ResourceType.roleBindings, "rolebinding"), (ResourceType.clusterRoles, "clusterrole"), (ResourceType.clusterRoleBindings, "clusterrolebinding"),
    ]

    /// `kind/name` (`kind/namespace/name` outside `default`) of every object stored, by uid.
    static func names(_ c: InMemoryKubeClient) -> [String: String] {
        var out: [String: String] = [:]
        for (t, kind) in kinds {
            for o in c.objects(t) {
                let ns = o["metadata"]["namespace"].stringValue ?? "default"
                out[o["metadata"]["uid"].stringValue ?? ""] = "\(kind)/\(ns == "default" ? "" : ns + "/")\(o["metadata"]["name"].stringValue ?? "")"
            }
        }
        return out
    }

    func uid(_ c: InMemoryKubeClient, _ t: ResourceType, _ name: String, namespace: String? = nil) -> String {
        c.object(t, namespace: namespace, name: name)?["metadata"]["uid"].stringValue ?? "missing"
    }

    func withEdgeObjects(seed more: (InMemoryKubeClient) -> Void = { _ in },
                         _ body: (InMemoryKubeClient, EdgeObjects) async throws -> Void) async throws {
        let client = InMemoryKubeClient(types: [T.devices, T.deviceModels])
        Self.seed(client)
        more(client)
        var logger = Logger(label: "edgeobjects-test")
        logger.logLevel = .error
        let informers = InformerFactory(client: client, logger: logger)
        let objects = EdgeObjects(informers: informers)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await informers.run() }
            try await eventually("caches synced") { informers.informers.all.allSatisfy(\.hasSynced) }
            try await body(client, objects)
            group.cancelAll()
        }
    }

    func desired(_ c: InMemoryKubeClient, _ o: EdgeObjects, _ node: String) -> [String] {
        let names = Self.names(c)
        return o.desired(for: node).map { names[$0] ?? "unknown \($0)" }.sorted()
    }

    @Test func eachNodeGetsItsPodsTheirReferencesItsNodeAndItsDevices() async throws {
        try await withEdgeObjects { c, o in
            #expect(desired(c, o, "edge-1") == [
                "configmap/cm-env", "configmap/cm-envfrom", "configmap/cm-proj", "configmap/cm-vol",
                "device/dev-1", "devicemodel/m1", "endpoints/svc", "node/edge-1", "pod/app",
                "secret/s-env", "secret/s-envfrom", "secret/s-proj", "secret/s-pull", "secret/s-vol", "service/svc",
            ])
            // Not edge-labelled: no Services/Endpoints.
            #expect(desired(c, o, "cloud-1") == ["configmap/cm-cloud", "node/cloud-1", "pod/cloud-app"])
            #expect(desired(c, o, "edge-2") == ["device/dev-2", "devicemodel/m1", "endpoints/svc", "node/edge-2", "service/svc"])
            #expect(desired(c, o, "no-such-node").isEmpty)

            // object(_:for:) agrees: what a node is not meant to have is nil for it.
            #expect(o.object(uid(c, T.pods, "app", namespace: "default"), for: "edge-1")?.edgeKind == .pod)
            #expect(o.object(uid(c, T.pods, "app", namespace: "default"), for: "edge-2") == nil)
            #expect(o.object(uid(c, T.configMaps, "cm-vol", namespace: "default"), for: "edge-1")?.edgeKind == .configMap)
            #expect(o.object(uid(c, T.configMaps, "cm-vol", namespace: "default"), for: "edge-2") == nil)
            #expect(o.object(uid(c, T.configMaps, "cm-vol", namespace: "other"), for: "edge-1") == nil)
            #expect(o.object(uid(c, T.configMaps, "cm-unused", namespace: "default"), for: "edge-1") == nil)
            #expect(o.object(uid(c, T.secrets, "s-pending", namespace: "default"), for: "edge-1") == nil)
            #expect(o.object(uid(c, T.services, "svc", namespace: "default"), for: "edge-2")?.edgeKind == .service)
            #expect(o.object(uid(c, T.services, "svc", namespace: "default"), for: "cloud-1") == nil)
            #expect(o.object(uid(c, T.endpoints, "svc", namespace: "default"), for: "cloud-1") == nil)
            #expect(o.object(uid(c, T.nodes, "edge-1"), for: "edge-1")?.edgeKind == .node)
            #expect(o.object(uid(c, T.nodes, "edge-1"), for: "edge-2") == nil)
            #expect(o.object(uid(c, T.devices, "dev-1", namespace: "default"), for: "edge-2") == nil)
            #expect(o.object(uid(c, T.deviceModels, "m1", namespace: "default"), for: "edge-2")?.edgeKind == .deviceModel)
            #expect(o.object(uid(c, T.deviceModels, "m2", namespace: "default"), for: "edge-1") == nil)
            #expect(o.object(uid(c, T.deviceModels, "m1", namespace: "default"), for: "cloud-1") == nil)
            let sent = o.object(uid(c, T.secrets, "s-pull", namespace: "default"), for: "edge-1")
            #expect(sent?.resourceVersion == UInt64(c.object(T.secrets, namespace: "default", name: "s-pull")?["metadata"]["resourceVersion"].stringValue ?? ""))
        }
    }

    @Test func referenceChangesMoveWhatANodeGets() async throws {
        try await withEdgeObjects { c, o in
            let cmVol = uid(c, T.configMaps, "cm-vol", namespace: "default")
            // The pod now references only cm-unused.
            _ = try await c.patch(T.pods, namespace: "default", name: "app", [
                "spec": ["volumes": [["name": "a", "configMap": ["name": "cm-unused"]]], "imagePullSecrets": nil,
                         "containers": [["name": "app", "image": "nginx"]]],
            ])
            try await eventually("edge-1 follows the pod's references") {
                desired(c, o, "edge-1") == ["configmap/cm-unused", "device/dev-1", "devicemodel/m1", "endpoints/svc", "node/edge-1",
                                            "pod/app", "service/svc"]
            }
            #expect(o.object(cmVol, for: "edge-1") == nil)
            #expect(o.object(uid(c, T.configMaps, "cm-unused", namespace: "default"), for: "edge-1")?.edgeKind == .configMap)

            // Scheduling the pending pod to edge-2 brings it and its pull secret there.
            _ = try await c.post(T.pods, namespace: "default", name: "pending", subresource: "binding", ["target": ["name": "edge-2"]])
            try await eventually("edge-2 gets the bound pod and its secret") {
                desired(c, o, "edge-2") == ["device/dev-2", "devicemodel/m1", "endpoints/svc", "node/edge-2", "pod/pending",
                                            "secret/s-pending", "service/svc"]
            }

            // The pod deleted: its references leave edge-1 too; the device moved: it and its model follow.
            try await c.delete(T.pods, namespace: "default", name: "app", options: ["gracePeriodSeconds": 0])
            _ = try await c.patch(T.devices, namespace: "default", name: "dev-1", ["spec": ["nodeName": "cloud-1"]])
            try await eventually("edge-1 left with its node and the shared objects") {
                desired(c, o, "edge-1") == ["endpoints/svc", "node/edge-1", "service/svc"]
            }
            #expect(desired(c, o, "cloud-1") == ["configmap/cm-cloud", "device/dev-1", "devicemodel/m1", "node/cloud-1", "pod/cloud-app"])

            // A node losing the edge label stops getting Services and Endpoints.
            _ = try await c.patch(T.nodes, namespace: nil, name: "edge-2", ["metadata": ["labels": ["node-role.kubernetes.io/edge": nil]]])
            try await eventually("edge-2 without services") { !desired(c, o, "edge-2").contains("service/svc") }
            #expect(!desired(c, o, "edge-2").contains("endpoints/svc"))
            #expect(o.object(uid(c, T.services, "svc", namespace: "default"), for: "edge-2") == nil)
        }
    }

    static func binding(_ kind: String, _ name: String, namespace: String? = nil, role: (String, String), subjects: [JSON]) -> JSON {
        var b: JSON = ["apiVersion": "rbac.authorization.k8s.io/v1", "kind": .string(kind), "metadata": ["name": .string(name)],
                       "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": .string(role.0), "name": .string(role.1)],
                       "subjects": .array(subjects)]
        if let namespace { b["metadata"]["namespace"] = .string(namespace) }
        return b
    }

    static func role(_ kind: String, _ name: String, namespace: String? = nil) -> JSON {
        var r: JSON = ["apiVersion": "rbac.authorization.k8s.io/v1", "kind": .string(kind), "metadata": ["name": .string(name)],
                       "rules": [["apiGroups": [""], "resources": ["services"], "verbs": ["get", "list"]]]]
        if let namespace { r["metadata"]["namespace"] = .string(namespace) }
        return r
    }

    /// RBAC objects go to a node only while they grant a ServiceAccount of its pods a read of
    /// something MetaServer serves (directly, or through the ServiceAccount groups), with the
    /// roles those bindings name.
    @Test func rbacObjectsFollowTheServiceAccountsOfTheNodesPods() async throws {
        try await withEdgeObjects(seed: { c in
            c.seed(ResourceType.roles, Self.role("Role", "reader", namespace: "default"))
            c.seed(ResourceType.clusterRoles, Self.role("ClusterRole", "viewer"))
            c.seed(ResourceType.clusterRoles, Self.role("ClusterRole", "admin-ish"))
            c.seed(ResourceType.roleBindings, Self.binding("RoleBinding", "app-sa-reads", namespace: "default", role: ("Role", "reader"),
                                                           subjects: [["kind": "ServiceAccount", "name": "app-sa"]]))
            c.seed(ResourceType.roleBindings, Self.binding("RoleBinding", "other-sa-reads", namespace: "default", role: ("Role", "reader"),
                                                           subjects: [["kind": "ServiceAccount", "name": "other-sa"]]))
            c.seed(ResourceType.clusterRoleBindings, Self.binding("ClusterRoleBinding", "ns-accounts-view", role: ("ClusterRole", "viewer"),
                                                                  subjects: [["kind": "Group", "name": "system:serviceaccounts:shop"]]))
            c.seed(ResourceType.clusterRoleBindings, Self.binding("ClusterRoleBinding", "alice-admin", role: ("ClusterRole", "admin-ish"),
                                                                  subjects: [["kind": "User", "name": "alice"]]))
            // What every account holds (kube's system:basic-user kind): nothing MetaServer serves, never sent.
            var reviewer = Self.role("ClusterRole", "reviewer")
            reviewer["rules"] = [["apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews"], "verbs": ["create"]]]
            c.seed(ResourceType.clusterRoles, reviewer)
            c.seed(ResourceType.clusterRoleBindings, Self.binding("ClusterRoleBinding", "everyone-reviews", role: ("ClusterRole", "reviewer"),
                                                                  subjects: [["kind": "Group", "name": "system:authenticated"]]))
            var p = Fixtures.pod("sa-pod", nodeName: "edge-2")
            p["spec"]["serviceAccountName"] = "app-sa"
            c.seed(T.pods, p)
        }) { c, o in
            let rbac: Set<String> = ["role/reader", "rolebinding/app-sa-reads", "rolebinding/other-sa-reads", "clusterrole/viewer",
                                     "clusterrole/admin-ish", "clusterrolebinding/ns-accounts-view", "clusterrolebinding/alice-admin",
                                     "clusterrole/reviewer", "clusterrolebinding/everyone-reviews"]
            func grants(_ node: String) -> [String] { desired(c, o, node).filter { rbac.contains($0) } }
            #expect(grants("edge-2") == ["role/reader", "rolebinding/app-sa-reads"])
            #expect(grants("edge-1").isEmpty)  // its pod runs as default/default: nothing grants that account anything
            #expect(o.object(uid(c, ResourceType.roles, "reader", namespace: "default"), for: "edge-2")?.edgeKind == .role)
            #expect(o.object(uid(c, ResourceType.roles, "reader", namespace: "default"), for: "edge-1") == nil)
            #expect(o.object(uid(c, ResourceType.roleBindings, "other-sa-reads", namespace: "default"), for: "edge-2") == nil)

            // The Role stops granting anything MetaServer serves: it and its binding leave edge-2; and come back.
            _ = try await c.patch(ResourceType.roles, namespace: "default", name: "reader",
                                  ["rules": [["apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]]]])
            try await eventually("edge-2 without the Role that grants no edge reads") { grants("edge-2").isEmpty }
            _ = try await c.patch(ResourceType.roles, namespace: "default", name: "reader",
                                  ["rules": [["apiGroups": [""], "resources": ["*"], "verbs": ["watch"]]]])
            try await eventually("edge-2 with the Role again") { grants("edge-2") == ["role/reader", "rolebinding/app-sa-reads"] }

            // A pod of namespace `shop` on edge-1: the group binding and its ClusterRole follow it there.
            _ = try await c.create(T.pods, namespace: "shop", Fixtures.pod("shop-pod", namespace: "shop", nodeName: "edge-1"))
            try await eventually("edge-1 gets the group's grant") {
                grants("edge-1") == ["clusterrole/viewer", "clusterrolebinding/ns-accounts-view"]
            }
            // The binding stops naming app-sa: it leaves edge-2, and so does the Role nothing else grants.
            _ = try await c.patch(ResourceType.roleBindings, namespace: "default", name: "app-sa-reads",
                                  ["subjects": [["kind": "ServiceAccount", "name": "someone-else"]]])
            try await eventually("edge-2 loses what no longer grants its accounts anything") { grants("edge-2").isEmpty }
            #expect(o.object(uid(c, ResourceType.roleBindings, "app-sa-reads", namespace: "default"), for: "edge-2") == nil)
            // The pod leaves edge-1: so does its account's grant.
            try await c.delete(T.pods, namespace: "shop", name: "shop-pod", options: ["gracePeriodSeconds": 0])
            try await eventually("edge-1 without the group's grant") { grants("edge-1").isEmpty }
        }
    }
}
