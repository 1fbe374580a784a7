import ControllerRuntime
import KubeAPI
import KubeClient
import Logging
import ServiceLifecycle

/// Which controllers run and how.
public struct ControllerManagerOptions: Sendable {
    /// Take the `kube-system/swiftedge-controller-manager` Lease before acting.
    public var leaderElect = true
    public var identity: String
    public var leaseDuration: Duration = .seconds(15)
    public var renewDeadline: Duration = .seconds(10)
    public var retryPeriod: Duration = .seconds(2)
    public var nodeLifecycle = NodeLifecycleOptions()
    /// First retry delay after a Job's pod fails (doubles per failure).
    public var jobBackoff: Duration = .seconds(10)
    /// Concurrent binding workers of the scheduler.
    public var schedulerWorkers = 16
    public var workers = 4
    /// Signs approved CertificateSigningRequests (nil: no csrsigning controller, as without cluster-signing files).
    public var certificateSigner: (any CertificateSigner)?
    /// Gives every Node a pod subnet (nil: nodes keep what they have, as without --allocate-node-cidrs).
    public var nodeIPAM: NodeIPAMOptions?

    public init(identity: String) { self.identity = identity }
}

/// The embedded control plane: scheduler and controllers (Deployment, ReplicaSet, DaemonSet,
/// StatefulSet, Job, Endpoints/EndpointSlices, disruption budgets, resource quotas,
/// PersistentVolume binding, node lifecycle) behind one leader election.
/// Everything goes through the Kubernetes API, so it runs the same against any cluster; it is
/// meant for the embedded API server, whose own controllers do not exist otherwise.
public struct ControllerManager: Service {
    let makeClient: @Sendable () async throws -> KubeClient
    let options: ControllerManagerOptions
    let logger: Logger

    /// `makeClient` is called once the service starts (the embedded server's port may only be
    /// known then).
    public init(options: ControllerManagerOptions, logger: Logger, makeClient: @escaping @Sendable () async throws -> KubeClient) {
        self.options = options; self.logger = logger; self.makeClient = makeClient
    }

    public func run() async throws {
        let client = try await makeClient()
        do { try await runElected(client) } catch {
            try? await client.shutdown()
            throw error
        }
        logger.debug("controllers stopped; closing client")
        try? await client.shutdown()
        logger.info("controller manager stopped")
    }

    func runElected(_ client: KubeClient) async throws {
        if options.leaderElect {
            let election = LeaderElection(client: client, name: "swiftedge-controller-manager", identity: options.identity,
                                          leaseDuration: options.leaseDuration, renewDeadline: options.renewDeadline,
                                          retryPeriod: options.retryPeriod, logger: logger)
            try await election.run { try await runControllers(client) }
        } else {
            try await cancelWhenGracefulShutdown { try await runControllers(client) }
        }
    }

    /// Builds fresh informers and controllers (state never outlives a leadership term) and runs them.
    func runControllers(_ client: KubeClient) async throws {
        let informers = InformerFactory(client: client, logger: logger)
        let podsByOwner = InformerIndex.byControllerUID()
        informers.informer(R.pods).addHandler { podsByOwner.handle($0) }
        let schedulerEvents = EventRecorder(client: client, component: Scheduler.schedulerName, logger: logger)
        // One recorder per controller, named as kube-controller-manager's (`kubectl describe` shows the source).
        let rsEvents = EventRecorder(client: client, component: "replicaset-controller", logger: logger)
        let deploymentEvents = EventRecorder(client: client, component: "deployment-controller", logger: logger)
        let daemonSetEvents = EventRecorder(client: client, component: "daemonset-controller", logger: logger)
        let statefulSetEvents = EventRecorder(client: client, component: "statefulset-controller", logger: logger)
        let jobEvents = EventRecorder(client: client, component: "job-controller", logger: logger)
        let nodeEvents = EventRecorder(client: client, component: "node-controller", logger: logger)
        let ipamEvents = EventRecorder(client: client, component: "cidrAllocator", logger: logger)
        let volumeEvents = EventRecorder(client: client, component: PersistentVolumeController.manager, logger: logger)

        var loops: [ControllerLoop] = []
        func add(_ workers: Int, _ make: (WorkQueue) -> any Reconciler) -> WorkQueue {
            let q = WorkQueue()
            loops.append(ControllerLoop(reconciler: make(q), queue: q, workers: workers, logger: logger))
            return q
        }
        _ = add(options.schedulerWorkers) { Scheduler(client: client, informers: informers, events: schedulerEvents, queue: $0, logger: logger) }
        _ = add(options.workers) { ReplicaSetController(client: client, informers: informers, podsByOwner: podsByOwner, events: rsEvents, queue: $0, logger: logger) }
        _ = add(options.workers) { DeploymentController(client: client, informers: informers, events: deploymentEvents, queue: $0, logger: logger) }
        _ = add(2) { DaemonSetController(client: client, informers: informers, podsByOwner: podsByOwner, events: daemonSetEvents, queue: $0, logger: logger) }
        _ = add(2) { StatefulSetController(client: client, informers: informers, podsByOwner: podsByOwner, events: statefulSetEvents, queue: $0, logger: logger) }
        _ = add(2) { JobController(client: client, informers: informers, podsByOwner: podsByOwner, events: jobEvents, queue: $0,
                                   backoffBase: options.jobBackoff, logger: logger) }
        _ = add(options.workers) { EndpointsController(client: client, informers: informers, queue: $0, logger: logger) }
        _ = add(2) { DisruptionController(client: client, informers: informers, queue: $0, logger: logger) }
        _ = add(2) { PersistentVolumeController(client: client, informers: informers, events: volumeEvents, queue: $0, logger: logger) }
        _ = add(2) { ResourceQuotaController(client: client, informers: informers, queue: $0, logger: logger) }
        _ = add(1) { ClusterRoleAggregationController(client: client, informers: informers, queue: $0, logger: logger) }
        if let signer = options.certificateSigner {
            _ = add(1) { CertificateSigningController(client: client, informers: informers, queue: $0, signer: signer, logger: logger) }
        }
        if let ipam = options.nodeIPAM {
            _ = add(1) { NodeIPAMController(client: client, informers: informers, events: ipamEvents, queue: $0, options: ipam, logger: logger) }
        }
        var lifecycle: NodeLifecycleController?
        _ = add(2) { q in
            let c = NodeLifecycleController(client: client, informers: informers, events: nodeEvents, queue: q,
                                            options: options.nodeLifecycle, logger: logger)
            lifecycle = c
            return c
        }
        let monitor = lifecycle
        let allLoops = loops
        logger.info("controllers starting", metadata: ["controllers": "\(allLoops.map(\.reconciler.name).joined(separator: ","))"])
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await informers.run() }
            for r in [schedulerEvents, rsEvents, deploymentEvents, daemonSetEvents, statefulSetEvents, jobEvents, nodeEvents, ipamEvents, volumeEvents] { group.addTask { await r.run() } }
            group.addTask {
                await informers.waitForSync()
                guard !Task.isCancelled else { return }  // stopped before the caches synced
                logger.info("caches synced; reconciling")
                try await withThrowingTaskGroup(of: Void.self) { inner in
                    for l in allLoops { inner.addTask { await l.run() } }
                    if let monitor { inner.addTask { await monitor.runMonitor() } }
                    try await inner.waitForAll()
                }
            }
            try await group.next()
            group.cancelAll()
        }
        logger.debug("controllers returned")
    }
}
