import ControllerRuntime
import KubeAPI
import KubeAuth
import KubeClient
import Logging

/// kube-controller-manager's clusterrole-aggregation controller: a ClusterRole with an
/// `aggregationRule` gets the rules of every ClusterRole its selectors match, rewritten when any
/// ClusterRole changes.
final class ClusterRoleAggregationController: Reconciler {
    let name = "clusterrole-aggregation"
    let client: KubeClient
    let roles: SharedInformer
    let logger: Logger

    init(client: KubeClient, informers: InformerFactory, queue: WorkQueue, logger: Logger) {
        self.client = client; self.logger = logger
        roles = informers.informer(R.clusterRoles)
        let all = roles
        roles.addHandler { ev in
            if case .synced = ev { return }
            // Any change can alter what an aggregating role should hold: recheck them all.
            for r in all.cache.list() where !r["aggregationRule"].isNull { queue.add(InformerCache.key(r)) }
        }
    }

    func reconcile(_ key: String) async throws -> ReconcileResult {
        guard let role = roles.cache.get(key), !role.isDeleting,
              let rules = RBACPolicy.aggregatedRules(of: role.name, clusterRoles: roles.cache.list()) else { return .done }
        let want = JSON.array(rules.map(\.json))
        guard role["rules"] != want else { return .done }
        var updated = role
        updated["rules"] = want
        _ = try await client.update(R.clusterRoles, namespace: nil, updated, fieldManager: "clusterrole-aggregation-controller")
        return .done
    }
}
