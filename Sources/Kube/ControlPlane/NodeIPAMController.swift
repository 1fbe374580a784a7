import ControllerRuntime
import KubeAPI
import KubeClient
import Logging
import Synchronization

/// kube-controller-manager's node IPAM (`--allocate-node-cidrs`, range allocator): every Node
/// without `spec.podCIDR` gets the first free subnet of the cluster CIDR, so each node's pods
/// have addresses no other node hands out. A deleted node's subnet is free again (nothing but
/// the Nodes themselves records what is in use).
public struct NodeIPAMOptions: Sendable {
    /// The pods' address range (`--cluster-cidr`).
    public var clusterCIDR: IPv4Network
    /// Prefix length of each node's subnet (`--node-cidr-mask-size`, kube's default 24).
    public var nodeMaskSize: Int

    public init(clusterCIDR: IPv4Network, nodeMaskSize: Int = 24) {
        self.clusterCIDR = clusterCIDR; self.nodeMaskSize = nodeMaskSize
    }
}

/// Hands out node subnets: the state machine of ``NodeIPAMController``, without I/O.
struct NodeCIDRAllocator: Sendable {
    let options: NodeIPAMOptions
    /// Subnets handed out whose Node update the cache may not show yet (node → subnet).
    var pending: [String: IPv4Network] = [:]

    init(options: NodeIPAMOptions) { self.options = options }

    /// The subnet for `node`: the one already pending for it, else the first one that no node in
    /// `used` (node → its podCIDR) overlaps. Pending subnets of nodes `existing` no longer lists,
    /// or that `used` now shows, are forgotten. nil when the range is full.
    mutating func allocate(for node: String, used: [String: IPv4Network], existing: Set<String>) -> IPv4Network? {
        pending = pending.filter { existing.contains($0.key) && used[$0.key] == nil }
        if let p = pending[node] { return p }
        let taken = Array(used.filter { $0.key != node }.values) + Array(pending.values)
        let count = UInt64(1) << UInt64(max(0, options.nodeMaskSize - options.clusterCIDR.prefix))
        var i: UInt64 = 0
        while i < count {
            guard let candidate = options.clusterCIDR.subnet(i, prefix: options.nodeMaskSize) else { return nil }
            if !taken.contains(where: { $0.overlaps(candidate) }) {
                pending[node] = candidate
                return candidate
            }
            i += 1
        }
        return nil
    }

    /// The node's podCIDR is in the cache (or its update failed): the cache is the record from now on.
    mutating func settle(_ node: String) { pending[node] = nil }
}

final class NodeIPAMController: Reconciler {
    let name = "nodeipam"
    let client: KubeClient
    let nodes: SharedInformer
    let events: EventRecorder
    let allocator: Mutex<NodeCIDRAllocator>
    let logger: Logger

    init(client: KubeClient, informers: InformerFactory, events: EventRecorder, queue: WorkQueue, options: NodeIPAMOptions, logger: Logger) {
        self.client = client; self.events = events; self.logger = logger
        allocator = Mutex(NodeCIDRAllocator(options: options))
        nodes = informers.informer(R.nodes)
        nodes.enqueueKeys(into: queue)
    }

    func reconcile(_ key: String) async throws -> ReconcileResult {
        guard let node = nodes.cache.get(key), !node.isDeleting else { return .done }
        if let cidr = node["spec"]["podCIDR"].stringValue, !cidr.isEmpty {
            allocator.withLock { $0.settle(node.name) }
            return .done
        }
        var used: [String: IPv4Network] = [:]
        var existing = Set<String>()
        for n in nodes.cache.list() {
            existing.insert(n.name)
            if let c = n["spec"]["podCIDR"].stringValue.flatMap({ IPv4Network($0) }) { used[n.name] = c }
        }
        guard let subnet = allocator.withLock({ $0.allocate(for: node.name, used: used, existing: existing) }) else {
            let size = allocator.withLock { $0.options.nodeMaskSize }
            events.record(node, .warning, reason: "CIDRNotAvailable",
                          message: "Node \(node.name) status is now: CIDRNotAvailable (no free /\(size) left in the cluster CIDR)")
            return .requeue(after: .seconds(30))
        }
        let patch: JSON = ["spec": ["podCIDR": .string(subnet.description), "podCIDRs": [.string(subnet.description)]]]
        do {
            // Kept pending until the cache shows it, so the next node is not handed the same one.
            _ = try await client.patch(R.nodes, namespace: nil, name: node.name, patch, fieldManager: "node-ipam-controller")
        } catch let e as StatusError where e.code == 404 {
            allocator.withLock { $0.settle(node.name) }
            return .done
        } catch {
            allocator.withLock { $0.settle(node.name) }
            throw error
        }
        logger.info("node pod CIDR allocated", metadata: ["node": "\(node.name)", "podCIDR": "\(subnet)"])
        events.record(node, .normal, reason: "CIDRAssignmentSucceeded", message: "Node \(node.name) assigned pod CIDR \(subnet)")
        return .done
    }
}
