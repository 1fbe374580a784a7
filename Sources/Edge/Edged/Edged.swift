import AsyncSupport
import CloudEdgeProtocol
import ContainerRuntime
import Foundation
import KubeAPI
import Logging
import MetaStore
import Metrics
import ServiceLifecycle
import Synchronization

/// Edged's counters (`swiftedge_edged_*`).
struct EdgedMetrics: Sendable {
    let containerStarts = Counter(label: "swiftedge_edged_container_starts_total")
    let restarts = Counter(label: "swiftedge_edged_container_restarts_total")
    let sandboxStarts = Counter(label: "swiftedge_edged_sandbox_starts_total")
    let syncErrors = Counter(label: "swiftedge_edged_sync_errors_total")
    let statusSent = Counter(label: "swiftedge_edged_pod_status_sent_total")
    let pods = Gauge(label: "swiftedge_edged_pods")
    let probeFailureCounters = LazyMap<String, Counter>()
    func probeFailures(_ kind: String) -> Counter {
        probeFailureCounters.value(for: kind) { Counter(label: "swiftedge_edged_probe_failures_total", dimensions: [("probe", kind)]) }
    }
}

/// Where Edged keeps pod files, and how it names itself to the cloud.
public struct EdgedConfiguration: Sendable {
    public var nodeName: String
    public var nodeIP: String
    /// Pod volumes (`<podsDirectory>/<uid>/volumes/...`).
    public var podsDirectory: String
    /// Container logs (kubelet's `/var/log/pods` layout).
    public var logDirectory: String
    /// How often the runtime is relisted to notice exited containers (kubelet's PLEG: 1 s).
    public var relistPeriod: Duration = .seconds(1)
    /// What pods' in-cluster clients are pointed at (the node's MetaServer), if it serves them.
    public var inClusterAPI: InClusterAPI?
    /// The pod network Edged configures from the node's `spec.podCIDR` (nil: the runtime's own
    /// CNI configuration is used as it is).
    public var podNetwork: PodNetworkConfiguration?
    /// Resolver of `ClusterFirst` pods (nil: pods use the node's resolv.conf).
    public var clusterDNS: ClusterDNSConfiguration?
    /// CSI volumes (the node's CSI plugins; nil: pods with CSI volumes wait with an error).
    public var csiVolumes: (any PodVolumePublisher)?
    public init(nodeName: String, nodeIP: String, podsDirectory: String, logDirectory: String) {
        self.nodeName = nodeName; self.nodeIP = nodeIP; self.podsDirectory = podsDirectory; self.logDirectory = logDirectory
    }
}

/// Runs the pods the node's store holds through a CRI runtime (KubeEdge's edged): one worker
/// per pod, a relist loop that wakes the worker of a pod whose containers changed, and pod
/// statuses sent upstream (`<ns>/podstatus/<name>`, KubeEdge's PodStatusRequest) while
/// connected — all of them again after each reconnect. Works from the store alone, so pods are
/// started, supervised and adopted after a restart while the cloud is unreachable. Stopping
/// Edged leaves containers running (the next start adopts them).
public final class Edged: Service {
    let configuration: EdgedConfiguration
    let runtime: any ContainerRuntime
    let store: any MetaStorage
    let upstream: @Sendable (Message) -> Void
    let tokens: ServiceAccountTokenSource?
    let logger: Logger
    let metrics = EdgedMetrics()
    let handles = Mutex<[String: PodHandle]>([:])
    let statuses = StatusBoard()
    let connected = Atomic<Bool>(false)
    let runtimeReadyFlag = Atomic<Bool>(false)
    /// Set when the node stops: workers finish the round they are in (a runtime call cancelled
    /// halfway can leave containerd with a task it no longer tracks) and start no other.
    let stopping = Atomic<Bool>(false)
    /// Pod syncs under way.
    let syncsInFlight = Atomic<Int>(0)
    let runtimeVersion = Mutex<String>("")
    /// CPU/memory samples for `kubectl top`.
    let usage = Mutex(UsageSampler())
    /// Pods from the store not yet synced since start (for the "restored" report).
    let restoring = Mutex<(pending: Set<String>, since: ContinuousClock.Instant)>(([], .now))
    /// The subnet the pod network is configured for (with ``EdgedConfiguration/podNetwork``).
    let network = PodNetworkState()

    final class PodHandle: Sendable {
        let uid: String
        let desired: Mutex<PodModel?>
        let wake = WakeSignal()
        init(uid: String, pod: PodModel) { self.uid = uid; desired = Mutex(pod) }
    }

    /// The cloud connection Edged follows (``connectionChanged(_:)`` on every change).
    let connection: StateSignal<Bool>?

    public init(configuration: EdgedConfiguration, runtime: any ContainerRuntime, store: any MetaStorage,
                upstream: @escaping @Sendable (Message) -> Void, connection: StateSignal<Bool>? = nil,
                tokens: ServiceAccountTokenSource? = nil, logger: Logger)
    {
        self.configuration = configuration; self.runtime = runtime; self.store = store; self.upstream = upstream; self.logger = logger
        self.tokens = tokens
        self.connection = connection
    }

    /// Whether the runtime answered the last relist (the node's Ready condition).
    public var runtimeReady: Bool { runtimeReadyFlag.load(ordering: .relaxed) }
    /// `containerd://1.6.20` once known.
    public var containerRuntimeVersion: String { runtimeVersion.withLock { $0 } }

    /// Tells Edged the cloud connection changed; on connect every pod status is sent again.
    public func connectionChanged(_ up: Bool) {
        connected.store(up, ordering: .relaxed)
        if up { statuses.markAllDirty() }
    }

    public func run() async throws {
        let version = try await waitForRuntime()
        let runtimeName = version.runtimeName
        runtimeVersion.withLock { $0 = "\(version.runtimeName)://\(version.runtimeVersion)" }
        logger.info("container runtime ready", metadata: ["runtime": "\(version.runtimeName)", "version": "\(version.runtimeVersion)"])
        let builder = RuntimeConfigBuilder(nodeName: configuration.nodeName, nodeIP: configuration.nodeIP,
                                           podsDirectory: configuration.podsDirectory, logDirectory: configuration.logDirectory,
                                           lookup: { [store] key in try await store.get(key)?.value }, tokens: tokens,
                                           inClusterAPI: configuration.inClusterAPI, clusterDNS: configuration.clusterDNS,
                                           network: configuration.podNetwork == nil ? nil : network, csiVolumes: configuration.csiVolumes)
        var changes = store.changes()
        let stored = try await store.list(type: .pod)
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await self.relist() }
            group.addTask { await self.sendStatuses() }
            group.addTask { await self.sampleUsage() }
            if let net = configuration.podNetwork { group.addTask { await self.followPodCIDR(net) } }
            if let connection {
                group.addTask { for await up in connection.updates().cancelOnGracefulShutdown() { self.connectionChanged(up) } }
            }
            let known = runnable(stored)
            // Pods the runtime has for this node but the store no longer holds (deleted while
            // the node was down): removed.
            let wanted = Set(known.map(\.uid))
            let orphans = Set(try await runtime.listPodSandboxes(labels: [RuntimeLabels.node: configuration.nodeName])
                .map { $0.labels[RuntimeLabels.podUID] ?? "" }).subtracting(wanted).subtracting([""])
            for uid in orphans {
                group.addTask { await self.work(uid: uid, builder: builder, runtimeName: runtimeName, orphan: true) }
            }
            restoring.withLock { $0 = (Set(known.filter { !$0.deleting }.map(\.uid)), .now) }
            if !known.isEmpty { logger.info("restoring pods from the local store", metadata: ["pods": "\(known.count)"]) }
            for pod in known { self.dispatch(pod, group: &group, builder: builder, runtimeName: runtimeName) }
            while true {
                for await change in changes.cancelOnGracefulShutdown() {
                    guard change.record.type == .pod else {
                        wakePods(using: change.record)
                        continue
                    }
                    if change.kind == .deleted {
                        guard let h = handles.withLock({ $0[change.record.uid] }) else { continue }
                        h.desired.withLock { $0 = nil }
                        h.wake.signal()
                        continue
                    }
                    do { self.dispatch(try PodModel(change.record.value), group: &group, builder: builder, runtimeName: runtimeName) } catch {
                        logger.warning("pod cannot run", metadata: ["key": "\(change.record.key)", "error": "\(error)"])
                    }
                }
                if Task.isCancelled || Task.isShuttingDownGracefully { break }
                // The feed ended this subscriber (it fell behind): subscribe again, then re-read
                // every pod, so nothing committed in between is missed.
                logger.warning("fell behind the local store's changes; re-reading the pods")
                changes = store.changes()
                do {
                    let now = runnable(try await store.list(type: .pod))
                    for pod in now { self.dispatch(pod, group: &group, builder: builder, runtimeName: runtimeName) }
                    let present = Set(now.map(\.uid))
                    for h in handles.withLock({ Array($0.values) }) where !present.contains(h.uid) {
                        h.desired.withLock { $0 = nil }
                        h.wake.signal()
                    }
                } catch {
                    logger.error("cannot re-read the pods from the local store", metadata: ["error": "\(error)"])
                }
            }
            // Shutting down: workers finish the round they are in (up to 10 s), then stop;
            // containers keep running.
            stopping.store(true, ordering: .relaxed)
            for h in handles.withLock({ Array($0.values) }) { h.wake.signal() }
            let deadline = ContinuousClock.now + .seconds(10)
            while syncsInFlight.load(ordering: .relaxed) > 0 && ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(20))
            }
            group.cancelAll()
        }
    }

    /// An object a pod may use changed (a ConfigMap, Secret, claim or volume): the workers of the
    /// pods that use it look again (their files follow within a sync; a waiting pod may start).
    func wakePods(using record: MetaRecord) {
        let kind = record.type
        guard [.configMap, .secret, .persistentVolumeClaim, .persistentVolume, .volumeAttachment, .csiDriver].contains(kind) else { return }
        for h in handles.withLock({ Array($0.values) }) {
            guard let pod = h.desired.withLock({ $0 }) else { continue }
            let uses: Bool
            switch kind {
            case .persistentVolume, .volumeAttachment, .csiDriver:
                uses = pod.volumes.contains { $0.persistentVolumeClaim != nil }
            default:
                let name = record.value["metadata"]["name"].stringValue ?? ""
                guard pod.namespace == record.value["metadata"]["namespace"].stringValue else { continue }
                let refs = PodReferences(pod: pod.object)
                uses = kind == .configMap ? refs.configMaps.contains(name)
                    : kind == .secret ? refs.secrets.contains(name) : refs.persistentVolumeClaims.contains(name)
            }
            if uses { h.wake.signal() }
        }
    }

    /// The stored pods that can run; one that cannot is logged and left out.
    func runnable(_ records: [MetaRecord]) -> [PodModel] {
        records.compactMap { r in
            do { return try PodModel(r.value) } catch {
                logger.warning("stored pod cannot run", metadata: ["key": "\(r.key)", "error": "\(error)"])
                return nil
            }
        }
    }

    /// Keeps the pod network list in step with the node's `spec.podCIDR` (from the node's
    /// store, so a restart offline configures it again); pods waiting for it are woken.
    func followPodCIDR(_ net: PodNetworkConfiguration) async {
        let key = ResourceRef(namespace: nil, kind: .node, name: configuration.nodeName).description
        func apply(_ node: JSON?) {
            guard let text = node?["spec"]["podCIDR"].stringValue, !text.isEmpty else { return }
            guard let subnet = IPv4Network(text) else {
                logger.error("the node's spec.podCIDR is not an IPv4 network; pods off the host network cannot start", metadata: ["podCIDR": "\(text)"])
                return
            }
            guard network.subnet.withLock({ $0 }) != subnet else { return }
            do {
                if try net.write(subnet: subnet) {
                    logger.info("pod network configured", metadata: ["podCIDR": "\(subnet)", "bridge": "\(net.bridge)",
                                                                     "file": "\(net.cniConfDirectory)/\(PodNetworkConfiguration.fileName)"])
                }
            } catch {
                logger.error("cannot write the pod network configuration", metadata: ["error": "\(error)"])
                return
            }
            network.subnet.withLock { $0 = subnet }
            for h in handles.withLock({ Array($0.values) }) { h.wake.signal() }
        }
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let changes = store.changes()  // subscribed before the read: no change falls between
            apply(try? await store.get(key)?.value)
            for await c in changes.cancelOnGracefulShutdown() where c.record.key == key && c.kind != .deleted { apply(c.record.value) }
        }
    }

    func dispatch(_ pod: PodModel, group: inout ThrowingDiscardingTaskGroup<any Error>, builder: RuntimeConfigBuilder, runtimeName: String) {
        let (handle, isNew) = handles.withLock { h -> (PodHandle, Bool) in
            if let existing = h[pod.uid] {
                existing.desired.withLock { current in
                    if current == nil || current!.resourceVersion <= pod.resourceVersion { current = pod }
                }
                return (existing, false)
            }
            let n = PodHandle(uid: pod.uid, pod: pod)
            h[pod.uid] = n
            return (n, true)
        }
        metrics.pods.record(handles.withLock { $0.count })
        if isNew {
            group.addTask { await self.work(uid: pod.uid, builder: builder, runtimeName: runtimeName, orphan: false) }
        } else {
            handle.wake.signal()
        }
    }

    /// One pod's loop: sync while it should run, tear down once it should not.
    func work(uid: String, builder: RuntimeConfigBuilder, runtimeName: String, orphan: Bool) async {
        let worker = PodWorker(uid: uid, runtime: runtime, builder: builder, runtimeName: runtimeName, metrics: metrics, logger: logger)
        worker.events = { [weak self] e in self?.record(e) }
        let handle = handles.withLock { $0[uid] }
        var failures = 0
        while !Task.isCancelled && !stopping.load(ordering: .relaxed) {
            let pod = handle?.desired.withLock { $0 }
            if let pod, !pod.deleting {
                do {
                    syncsInFlight.add(1, ordering: .relaxed)
                    let status: JSON, wake: Date
                    do {
                        (status, wake) = try await worker.sync(pod)
                        syncsInFlight.subtract(1, ordering: .relaxed)
                    } catch {
                        syncsInFlight.subtract(1, ordering: .relaxed)
                        throw error
                    }
                    failures = 0
                    restored(uid)
                    statuses.update(uid: uid, namespace: pod.namespace, name: pod.name, status: status)
                    if wake > Date(), !stopping.load(ordering: .relaxed) { await handle!.wake.wait(until: .now + .seconds(wake.timeIntervalSinceNow)) }
                } catch {
                    if Task.isCancelled { return }
                    failures += 1
                    metrics.syncErrors.increment()
                    logger.warning("pod sync failed", metadata: ["pod": "\(pod.namespace)/\(pod.name)", "error": "\(error)"])
                    await handle!.wake.wait(until: .now + .milliseconds(min(200 << min(failures, 5), 5000)))
                }
                continue
            }
            // Deleted (or terminating): stop and remove everything; a terminating pod is then
            // confirmed to the cloud (which deletes it), and the worker leaves once the store drops it.
            do {
                try await worker.teardown(grace: pod?.terminationGracePeriodSeconds ?? 30)
            } catch {
                if Task.isCancelled { return }
                failures += 1
                logger.warning("pod teardown failed", metadata: ["podUID": "\(uid)", "error": "\(error)"])
                try? await Task.sleep(for: .milliseconds(min(200 << min(failures, 5), 5000)))
                continue
            }
            if let pod, pod.deleting {
                statuses.finalize(uid: uid, namespace: pod.namespace, name: pod.name)
            } else {
                statuses.remove(uid: uid)
            }
            guard let handle else { return }
            let done = handles.withLock { h -> Bool in
                guard handle.desired.withLock({ $0 == nil }) else { return false }
                h[uid] = nil
                return true
            }
            if done { statuses.remove(uid: uid); metrics.pods.record(handles.withLock { $0.count }); return }
            if pod?.deleting == true { await handle.wake.wait() }
        }
    }

    /// Sends a pod event upstream (`<ns>/event/<name>` insert with a core/v1 Event).
    func record(_ e: PodEvent) {
        let now = KubeTime.now()
        let name = "\(e.name).\(String(UInt64(now.micros) &* 1000 &+ UInt64.random(in: 0..<1000), radix: 16))"
        var involved: JSON = ["apiVersion": "v1", "kind": "Pod", "namespace": .string(e.namespace), "name": .string(e.name), "uid": .string(e.uid)]
        if let c = e.container { involved["fieldPath"] = .string("spec.containers{\(c)}") }
        let event: JSON = [
            "apiVersion": "v1", "kind": "Event",
            "metadata": ["name": .string(name), "namespace": .string(e.namespace)],
            "involvedObject": involved, "reason": .string(e.reason), "message": .string(e.message), "type": .string(e.type.rawValue),
            "source": ["component": "kubelet", "host": .string(configuration.nodeName)],
            "firstTimestamp": .string(now.rfc3339), "lastTimestamp": .string(now.rfc3339), "count": 1,
            "reportingComponent": "kubelet", "reportingInstance": .string(configuration.nodeName),
        ]
        upstream(UpstreamReport.event(namespace: e.namespace, name: name, event: event).message(source: MessageSource.edged))
    }

    func restored(_ uid: String) {
        let done = restoring.withLock { r -> (Int, Duration)? in
            guard r.pending.remove(uid) != nil, r.pending.isEmpty else { return nil }
            return (0, ContinuousClock.now - r.since)
        }
        if let (_, elapsed) = done {
            logger.info("pods restored from the local store", metadata: ["elapsedMs": "\(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000)"])
        }
    }

    func waitForRuntime() async throws -> Runtime_V1_VersionResponseView {
        var attempt = 0
        while true {
            do {
                let v = try await runtime.version()
                runtimeReadyFlag.store(true, ordering: .relaxed)
                return Runtime_V1_VersionResponseView(runtimeName: v.runtimeName, runtimeVersion: v.runtimeVersion)
            } catch {
                attempt += 1
                if attempt == 1 || attempt % 30 == 0 {
                    logger.warning("container runtime not reachable; retrying", metadata: ["error": "\(error)"])
                }
                try await Task.sleep(for: .seconds(1))
                try Task.checkCancellation()
                if Task.isShuttingDownGracefully { throw CancellationError() }
            }
        }
    }

    /// Relists the node's containers every `relistPeriod` and wakes the worker of each pod whose
    /// containers changed state (kubelet's PLEG); the runtime's health follows the answers.
    func relist() async {
        var previous: [String: (uid: String, state: Int)] = [:]
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                let containers = try await runtime.listContainers(labels: [RuntimeLabels.node: configuration.nodeName])
                if !runtimeReadyFlag.exchange(true, ordering: .relaxed) { logger.info("container runtime answers again") }
                var now: [String: (uid: String, state: Int)] = [:]
                var changed = Set<String>()
                for c in containers {
                    let uid = c.labels[RuntimeLabels.podUID] ?? ""
                    now[c.id] = (uid, c.state.rawValue)
                    if previous[c.id]?.state != c.state.rawValue { changed.insert(uid) }
                }
                for (id, p) in previous where now[id] == nil { changed.insert(p.uid) }
                previous = now
                if !changed.isEmpty {
                    let hs = handles.withLock { h in changed.compactMap { h[$0] } }
                    for h in hs { h.wake.signal() }
                }
            } catch {
                if runtimeReadyFlag.exchange(false, ordering: .relaxed) {
                    logger.warning("container runtime stopped answering", metadata: ["error": "\(error)"])
                }
            }
            try? await Task.sleep(for: configuration.relistPeriod)
        }
    }

    /// Sends changed pod statuses while connected (latest only; statuses that changed while
    /// offline go out once on reconnect).
    func sendStatuses() async {
        while !Task.isCancelled {
            await statuses.changed.wait()
            guard connected.load(ordering: .relaxed) else { continue }
            for s in statuses.takeDirty() {
                if s.terminated {
                    // The pod's containers are gone: the cloud may delete it (kubelet's final
                    // delete with grace period 0 and the pod's UID as precondition).
                    let options: JSON = ["kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                                         "preconditions": ["uid": .string(s.uid)]]
                    upstream(UpstreamReport.pod(namespace: s.namespace, name: s.name, operation: .delete, content: options)
                        .message(source: MessageSource.edged))
                    continue
                }
                let content: JSON = ["UID": .string(s.uid), "Name": .string(s.name), "Status": s.status]
                upstream(UpstreamReport.podStatus(namespace: s.namespace, name: s.name, content: content).message(source: MessageSource.edged))
                metrics.statusSent.increment()
            }
        }
    }
}

/// The runtime's name and version, as Edged reports them.
struct Runtime_V1_VersionResponseView: Sendable {
    var runtimeName: String
    var runtimeVersion: String
}

/// The latest status of each pod and which ones the cloud has not seen yet.
final class StatusBoard: Sendable {
    struct Entry: Sendable {
        var uid: String
        var namespace: String
        var name: String
        var status: JSON
        /// Torn down for a deletion: the cloud is told so (again after each reconnect).
        var terminated = false
    }
    let state = Mutex<(entries: [String: Entry], dirty: Set<String>)>(([:], []))
    let changed = WakeSignal()

    func update(uid: String, namespace: String, name: String, status: JSON) {
        let signal = state.withLock { s -> Bool in
            if s.entries[uid]?.status == status || s.entries[uid]?.terminated == true { return false }
            s.entries[uid] = Entry(uid: uid, namespace: namespace, name: name, status: status)
            s.dirty.insert(uid)
            return true
        }
        if signal { changed.signal() }
    }

    func finalize(uid: String, namespace: String, name: String) {
        state.withLock { s in
            s.entries[uid] = Entry(uid: uid, namespace: namespace, name: name, status: s.entries[uid]?.status ?? .null, terminated: true)
            s.dirty.insert(uid)
        }
        changed.signal()
    }

    func remove(uid: String) { state.withLock { s in s.entries[uid] = nil; s.dirty.remove(uid) } }

    func markAllDirty() {
        state.withLock { s in s.dirty = Set(s.entries.keys) }
        changed.signal()
    }

    func takeDirty() -> [Entry] {
        state.withLock { s in
            let out = s.dirty.compactMap { s.entries[$0] }
            s.dirty = []
            return out
        }
    }

    /// The latest status of a pod (for local readers and tests).
    func status(uid: String) -> JSON? { state.withLock { $0.entries[uid]?.status } }
}
