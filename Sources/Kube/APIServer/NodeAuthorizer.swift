import KubeAPI
import KubeAuth
import ObjectStore

/// kube's Node authorizer for node identities (`system:node:<name>` in `system:nodes`): a node
/// reads only the Secrets, ConfigMaps and claims its pods use, gets tokens only for their
/// ServiceAccounts, changes only its own Node, Lease and pods' status (NodeRestriction), and
/// otherwise has the node rules. Other callers: no opinion (RBAC decides).
enum NodeDecision: Equatable {
    case allow
    /// Not allowed by node rules: RBAC decides, and a refusal carries this reason.
    case noOpinion(reason: String)
}

extension APIHandler {
    func nodeDecision(_ a: RequestAttributes) async throws -> NodeDecision? {
        guard let node = NodeIdentity.nodeName(of: a.user) else { return nil }
        if a.isResourceRequest {
            switch (a.apiGroup, a.resource, a.subresource) {
            case ("", "secrets", ""), ("", "configmaps", ""), ("", "persistentvolumeclaims", ""):
                guard a.verb == "get", !a.name.isEmpty else { return .noOpinion(reason: "can only get individual resources of this type") }
                let used = try await podsOn(node, namespace: a.namespace).contains { pod in
                    let refs = PodReferences(pod: pod)
                    switch a.resource {
                    case "secrets": return refs.secrets.contains(a.name)
                    case "configmaps": return refs.configMaps.contains(a.name)
                    default: return refs.persistentVolumeClaims.contains(a.name)
                    }
                }
                return used ? .allow : .noOpinion(reason: "no relationship found between node '\(node)' and this object")
            case ("", "serviceaccounts", "token"):
                let used = try await podsOn(node, namespace: a.namespace).contains { PodReferences(pod: $0).serviceAccount == a.name }
                return used && a.verb == "create" ? .allow : .noOpinion(reason: "no relationship found between node '\(node)' and this object")
            case ("", "nodes", _) where ["update", "patch", "delete"].contains(a.verb) && a.name != node:
                return .noOpinion(reason: "node '\(node)' cannot modify node '\(a.name)'")
            case ("coordination.k8s.io", "leases", _) where a.namespace != "kube-node-lease" || (!a.name.isEmpty && a.name != node):
                return .noOpinion(reason: "node '\(node)' can only access its own lease in kube-node-lease")
            case ("", "pods", "status"):
                guard let pod = await store.get(ResourceType.pods.storageKey(namespace: a.namespace, name: a.name)),
                      pod.attributes.fields["spec.nodeName"] == node else {
                    return .noOpinion(reason: "node '\(node)' can only update the status of pods bound to it")
                }
            default:
                break
            }
        }
        return BootstrapPolicy.nodeRules.contains { $0.allows(a) } ? .allow : .noOpinion(reason: "")
    }

    /// The pods bound to `node` in `namespace` (the store's field index, no decoding of others).
    func podsOn(_ node: String, namespace: String) async throws -> [JSON] {
        let page = try await store.list(prefix: ResourceType.pods.storagePrefix(namespace: namespace), startAfter: nil, limit: nil, revision: nil,
                                        filter: { $0.attributes.fields["spec.nodeName"] == node })
        return page.items.compactMap { try? $0.decode() }
    }
}
