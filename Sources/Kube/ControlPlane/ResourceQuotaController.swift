import ControllerRuntime
import KubeAPI
import KubeClient
import Logging

/// Keeps every ResourceQuota's `status` true: `hard` from the spec, `used` recomputed from the
/// objects of its namespace (kube-controller-manager's resourcequota controller). The API
/// server's quota admission charges each create as it happens; this corrects what it cannot
/// know (deletions, finished pods, creates that failed after the charge). Runs when a quota's
/// spec changes, when pods of its namespace come, go or finish, and every `resync`.
final class ResourceQuotaController: Reconciler {
    let name = "resourcequota"
    let client: KubeClient
    let quotas: SharedInformer
    let resync: Duration
    let logger: Logger

    init(client: KubeClient, informers: InformerFactory, queue: WorkQueue, resync: Duration = .seconds(10), logger: Logger) {
        self.client = client; self.resync = resync; self.logger = logger
        quotas = informers.informer(R.resourceQuotas)
        // Status writes (ours and admission's) do not need a recount; spec changes do.
        quotas.addHandler { ev in
            switch ev {
            case .added(let q): queue.add(InformerCache.key(q))
            case .updated(let old, let new) where old["spec"] != new["spec"]: queue.add(InformerCache.key(new))
            default: break
            }
        }
        let all = quotas
        informers.informer(R.pods).addHandler { ev in
            let pod: JSON
            switch ev {
            case .added(let p), .deleted(let p): pod = p
            case .updated(let old, let new):
                guard ResourceQuotaUsage.counts(old, type: R.pods) != ResourceQuotaUsage.counts(new, type: R.pods) else { return }
                pod = new
            case .synced: return
            }
            for q in all.cache.list() where q.namespace == pod.namespace { queue.add(InformerCache.key(q)) }
        }
    }

    func reconcile(_ key: String) async throws -> ReconcileResult {
        guard let quota = quotas.cache.get(key), !quota.isDeleting else { return .done }
        let hard = quota["spec"]["hard"].objectValue ?? [:]
        let names = Set(hard.keys)
        var used: [String: Int64] = [:]
        for n in names { used[n] = 0 }
        for type in Self.trackedTypes where ResourceQuotaUsage.isTracked(type, in: names) {
            for o in try await listAll(type, namespace: quota.namespace) {
                for (n, v) in ResourceQuotaUsage.usage(of: o, type: type, names: names) { used[n, default: 0] += v }
            }
        }
        var status = quota["status"]
        status["hard"] = quota["spec"]["hard"]
        status["used"] = .object(used.reduce(into: [:]) { $0[$1.key] = .string(ResourceQuotaUsage.render($1.key, $1.value)) })
        if status != quota["status"] {
            var updated = quota
            updated["status"] = status
            _ = try await client.update(R.resourceQuotas, namespace: quota.namespace, updated, subresource: "status",
                                        fieldManager: "resourcequota-controller")
        }
        return .requeue(after: resync)
    }

    /// Every object of a type in the namespace, page by page.
    func listAll(_ type: ResourceType, namespace: String) async throws -> [JSON] {
        var out: [JSON] = []
        var token: String?
        repeat {
            let page = try await client.list(type, namespace: namespace, limit: 500, continueToken: token)
            out += page["items"].arrayValue ?? []
            token = page["metadata"]["continue"].stringValue.flatMap { $0.isEmpty ? nil : $0 }
        } while token != nil
        return out
    }

    /// The namespaced built-in kinds a quota can count (`count/<resource>.<group>` and the legacy names).
    static let trackedTypes = BuiltinResources.all.filter { $0.namespaced && $0.verbs.contains("list") }
}
