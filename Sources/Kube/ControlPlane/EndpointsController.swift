import ControllerRuntime
import KubeAPI
import KubeClient
import Logging

/// Endpoints and EndpointSlices for every Service with a selector: the matching pods that have an
/// IP, split into ready and not-ready addresses, with each port's `targetPort` resolved (named
/// container ports included). Follows pod readiness as pods change.
final class EndpointsController: Reconciler {
    let name = "endpoints"
    let client: KubeClient
    let services: SharedInformer
    let pods: SharedInformer
    let endpoints: SharedInformer
    let slices: SharedInformer
    let logger: Logger
    static let managedBy = "endpointslice-controller.k8s.io"

    init(client: KubeClient, informers: InformerFactory, queue: WorkQueue, logger: Logger) {
        self.client = client; self.logger = logger
        services = informers.informer(R.services)
        pods = informers.informer(R.pods)
        endpoints = informers.informer(R.endpoints)
        slices = informers.informer(R.endpointSlices)
        services.enqueueKeys(into: queue)
        // A pod change affects the services in its namespace whose selector matches it (before or after).
        pods.enqueueSelecting(services, into: queue) { svc in
            guard let sel = svc["spec"]["selector"].objectValue, !sel.isEmpty else { return nil }
            return LabelSelector(requirements: sel.sorted { $0.key < $1.key }.map { .equals($0.key, $0.value.stringValue ?? "") })
        }
    }

    struct Address { var pod: JSON; var ip: String; var ready: Bool; var terminating: Bool }

    func reconcile(_ key: String) async throws -> ReconcileResult {
        let (ns, name) = splitKey(key)
        let namespace = ns ?? "default"
        guard let svc = services.cache.get(key), !svc.isDeleting else {
            // The Service is gone: its Endpoints and slices go too.
            if endpoints.cache.get(key) != nil {
                do { try await client.delete(R.endpoints, namespace: namespace, name: name) } catch let e as StatusError where e.code == 404 {}
            }
            for s in ownedSlices(namespace, name) {
                do { try await client.delete(R.endpointSlices, namespace: namespace, name: s.name) } catch let e as StatusError where e.code == 404 {}
            }
            return .done
        }
        guard let selector = svc["spec"]["selector"].objectValue, !selector.isEmpty else { return .done }
        let publishNotReady = svc["spec"]["publishNotReadyAddresses"].boolValue == true
        var addrs: [Address] = []
        for p in pods.cache.list() where p.namespace == namespace {
            guard selector.allSatisfy({ p.labels[$0.key] == $0.value.stringValue }), !PodUtil.isTerminal(p),
                  let ip = p["status"]["podIP"].stringValue, !ip.isEmpty else { continue }
            addrs.append(Address(pod: p, ip: ip, ready: (PodUtil.isReady(p) && !p.isDeleting) || publishNotReady, terminating: p.isDeleting))
        }
        addrs.sort { $0.ip < $1.ip }
        try await syncEndpoints(svc, addrs)
        try await syncSlice(svc, addrs)
        return .done
    }

    /// The port a service port reaches on `pod` (a named targetPort is looked up in the containers).
    static func targetPort(_ sp: JSON, _ pod: JSON) -> Int64? {
        switch sp["targetPort"] {
        case .int(let i): return i
        case .string(let s):
            if let i = Int64(s) { return i }
            for c in pod["spec"]["containers"].arrayValue ?? [] {
                for p in c["ports"].arrayValue ?? [] where p["name"].stringValue == s { return p["containerPort"].intValue }
            }
            return nil
        default: return sp["port"].intValue
        }
    }

    func syncEndpoints(_ svc: JSON, _ addrs: [Address]) async throws {
        // Group addresses by their resolved port set, as Kubernetes does.
        var subsets: [[JSON]: (ready: [JSON], notReady: [JSON])] = [:]
        for a in addrs where !a.terminating || a.ready {
            var ports: [JSON] = []
            for sp in svc["spec"]["ports"].arrayValue ?? [] {
                guard let port = Self.targetPort(sp, a.pod) else { continue }
                var ep: JSON = ["port": .int(port), "protocol": sp["protocol"].isNull ? "TCP" : sp["protocol"]]
                if let n = sp["name"].stringValue, !n.isEmpty { ep["name"] = .string(n) }
                if !sp["appProtocol"].isNull { ep["appProtocol"] = sp["appProtocol"] }
                ports.append(ep)
            }
            var address: JSON = ["ip": .string(a.ip), "targetRef": ["kind": "Pod", "namespace": .string(a.pod.namespace),
                                                                  "name": .string(a.pod.name), "uid": .string(a.pod.uid)]]
            if let node = a.pod["spec"]["nodeName"].stringValue, !node.isEmpty { address["nodeName"] = .string(node) }
            if a.ready { subsets[ports, default: ([], [])].ready.append(address) } else { subsets[ports, default: ([], [])].notReady.append(address) }
        }
        let list: [JSON] = subsets.sorted { $0.key.description < $1.key.description }.map { ports, a in
            var s: JSON = ["ports": .array(ports)]
            if !a.ready.isEmpty { s["addresses"] = .array(a.ready) }
            if !a.notReady.isEmpty { s["notReadyAddresses"] = .array(a.notReady) }
            return s
        }
        var labels = svc["metadata"]["labels"]
        labels["endpoints.kubernetes.io/managed-by"] = "endpoint-controller"
        let key = InformerCache.key(svc)
        if var existing = endpoints.cache.get(key) {
            if existing["subsets"] == .array(list) || (existing["subsets"].isNull && list.isEmpty), existing["metadata"]["labels"] == labels { return }
            existing["subsets"] = list.isEmpty ? .null : .array(list)
            existing["metadata"]["labels"] = labels
            _ = try await client.update(R.endpoints, namespace: svc.namespace, existing, fieldManager: "endpoint-controller")
        } else {
            var ep: JSON = ["apiVersion": "v1", "kind": "Endpoints",
                            "metadata": ["name": .string(svc.name), "namespace": .string(svc.namespace), "labels": labels]]
            if !list.isEmpty { ep["subsets"] = .array(list) }
            do { _ = try await client.create(R.endpoints, namespace: svc.namespace, ep, fieldManager: "endpoint-controller") } catch let e as StatusError where e.code == 409 {
                throw e  // exists but not yet in the cache: retry with it
            }
        }
    }

    func ownedSlices(_ namespace: String, _ service: String) -> [JSON] {
        slices.cache.list().filter {
            $0.namespace == namespace && $0.labels["kubernetes.io/service-name"] == service
                && $0.labels["endpointslice.kubernetes.io/managed-by"] == Self.managedBy
        }
    }

    func syncSlice(_ svc: JSON, _ addrs: [Address]) async throws {
        var ports: [JSON] = []
        for sp in svc["spec"]["ports"].arrayValue ?? [] {
            var p: JSON = ["protocol": sp["protocol"].isNull ? "TCP" : sp["protocol"], "name": sp["name"].isNull ? "" : sp["name"]]
            if let pod = addrs.first?.pod, let port = Self.targetPort(sp, pod) { p["port"] = .int(port) }
            else if case .int(let i) = sp["targetPort"] { p["port"] = .int(i) }
            if !sp["appProtocol"].isNull { p["appProtocol"] = sp["appProtocol"] }
            ports.append(p)
        }
        let eps: [JSON] = addrs.map { a in
            var e: JSON = ["addresses": [.string(a.ip)],
                           "conditions": ["ready": .bool(a.ready && !a.terminating), "serving": .bool(a.ready || PodUtil.isReady(a.pod)),
                                          "terminating": .bool(a.terminating)],
                           "targetRef": ["kind": "Pod", "namespace": .string(a.pod.namespace), "name": .string(a.pod.name), "uid": .string(a.pod.uid)]]
            if let node = a.pod["spec"]["nodeName"].stringValue, !node.isEmpty { e["nodeName"] = .string(node) }
            return e
        }
        let labels: JSON = ["kubernetes.io/service-name": .string(svc.name), "endpointslice.kubernetes.io/managed-by": .string(Self.managedBy)]
        let existing = ownedSlices(svc.namespace, svc.name).sorted { $0.name < $1.name }
        if var s = existing.first {
            for extra in existing.dropFirst() {
                do { try await client.delete(R.endpointSlices, namespace: svc.namespace, name: extra.name) } catch let e as StatusError where e.code == 404 {}
            }
            if s["endpoints"] == .array(eps) && s["ports"] == .array(ports) { return }
            s["endpoints"] = .array(eps)
            s["ports"] = .array(ports)
            _ = try await client.update(R.endpointSlices, namespace: svc.namespace, s, fieldManager: Self.managedBy)
        } else {
            let slice: JSON = ["apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                               "metadata": ["generateName": .string(svc.name + "-"), "namespace": .string(svc.namespace), "labels": labels,
                                            "ownerReferences": [svc.asControllerRef]],
                               "addressType": "IPv4", "endpoints": .array(eps), "ports": .array(ports)]
            _ = try await client.create(R.endpointSlices, namespace: svc.namespace, slice, fieldManager: Self.managedBy)
        }
    }
}
