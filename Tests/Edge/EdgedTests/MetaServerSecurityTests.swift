import CloudEdgeProtocol
import Foundation
import KubeAPI
import Logging
import KubeAuth
import MetaStore
import Testing
@testable import MetaServer

/// MetaServer's authentication and authorization from the node's store alone: a token the node
/// issued to a pod still on it is that pod's ServiceAccount; RBAC objects the cloud synced decide
/// what it may read, with kube's 403 wording; the node's own identity reads everything.
@Suite struct MetaServerSecurityTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("metaserver-sec-\(UUID().uuidString)").path

    func put(_ store: SQLiteMetaStore, _ kind: EdgeResourceKind, _ namespace: String?, _ object: JSON, delete: Bool = false) async throws {
        let name = object["metadata"]["name"].stringValue ?? ""
        try await store.apply(ObjectSync(ref: ResourceRef(namespace: namespace, kind: kind, name: name), change: delete ? .delete : .insert,
                                         resourceVersion: "1", object: object).message)
    }

    @Test func tokensOfThePodsOnTheNodeAndRBACFromItsStore() async throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try SQLiteMetaStore(path: directory + "/edge.db", recover: false, logger: Logger(label: "test"))
        let tokens = PodTokenStore(storage: store)
        let security = MetaServerSecurity(nodeName: "shop-1", clientCAPEM: "", tokens: tokens) { ("", "") }
        let pod: JSON = ["apiVersion": "v1", "kind": "Pod", "metadata": ["name": "app", "namespace": "shop", "uid": "uid-app"],
                         "spec": ["nodeName": "shop-1", "serviceAccountName": "reader"]]
        try await put(store, .pod, "shop", pod)
        try await put(store, .role, "shop", ["apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                                             "metadata": ["name": "svc", "namespace": "shop", "uid": "r1"],
                                             "rules": [["apiGroups": [""], "resources": ["services"], "verbs": ["get", "list"]]]])
        try await put(store, .roleBinding, "shop", ["apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                                                    "metadata": ["name": "svc", "namespace": "shop", "uid": "b1"],
                                                    "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "svc"],
                                                    "subjects": [["kind": "ServiceAccount", "name": "reader"]]])
        let now = Date()
        try await tokens.save(["uid-app/kube-api-access/token": PodToken(token: "tok-app", namespace: "shop", pod: "app", podUID: "uid-app",
                                                                        serviceAccount: "reader", audiences: [], refreshAt: now.addingTimeInterval(60),
                                                                        expires: now.addingTimeInterval(3600)),
                               "uid-app/vault/token": PodToken(token: "tok-vault", namespace: "shop", pod: "app", podUID: "uid-app",
                                                               serviceAccount: "reader", audiences: ["vault"], refreshAt: now.addingTimeInterval(60),
                                                               expires: now.addingTimeInterval(3600))])

        let user = try #require(try await security.authenticate(authorization: "Bearer tok-app", peerCertificateDER: nil, store: store))
        #expect(user.username == "system:serviceaccount:shop:reader")
        #expect(Set(user.groups) == ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"])
        // Unknown, other-audience, malformed and missing credentials authenticate nobody.
        for header in ["Bearer tok-other", "Bearer tok-vault", "Basic abc", "Bearer "] {
            #expect(try await security.authenticate(authorization: header, peerCertificateDER: nil, store: store) == nil, "\(header)")
        }
        #expect(try await security.authenticate(authorization: nil, peerCertificateDER: nil, store: store) == nil)

        #expect(try await security.authorize(user, .list(.services, namespace: "shop"), watch: false, store: store) == nil)
        #expect(try await security.authorize(user, .get(.services, namespace: "shop", name: "web"), watch: false, store: store) == nil)
        let watch = try #require(try await security.authorize(user, .list(.services, namespace: "shop"), watch: true, store: store))
        #expect(watch.code == 403 && watch.message == "services is forbidden: User \"system:serviceaccount:shop:reader\" cannot watch resource \"services\" in API group \"\" in the namespace \"shop\"")
        let secret = try #require(try await security.authorize(user, .get(.secrets, namespace: "shop", name: "db"), watch: false, store: store))
        #expect(secret.message == "secrets \"db\" is forbidden: User \"system:serviceaccount:shop:reader\" cannot get resource \"secrets\" in API group \"\" in the namespace \"shop\"")
        #expect(try await security.authorize(user, .list(.services, namespace: "other"), watch: false, store: store)?.code == 403)
        #expect(try await security.authorize(user, .list(.services, namespace: nil), watch: false, store: store)?.code == 403)
        // The node itself reads everything it holds.
        let node = UserInfo(username: "system:node:shop-1", groups: ["system:nodes", "system:authenticated"])
        #expect(try await security.authorize(node, .list(.secrets, namespace: nil), watch: true, store: store) == nil)
        let otherNode = UserInfo(username: "system:node:shop-2", groups: ["system:nodes", "system:authenticated"])
        #expect(try await security.authorize(otherNode, .list(.secrets, namespace: nil), watch: false, store: store)?.code == 403)

        // The pod gone from the node (or replaced by one with another uid): its token is nobody's.
        try await put(store, .pod, "shop", pod, delete: true)
        #expect(try await security.authenticate(authorization: "Bearer tok-app", peerCertificateDER: nil, store: store) == nil)
    }
}
