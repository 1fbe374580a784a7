import AsyncSupport
import CloudEdgeProtocol
import KubeAPI
import Logging
import Metrics
import ServiceLifecycle
import Synchronization

/// Which objects belong on which node (the EdgeController's knowledge), read at send time so
/// that only the newest version of an object is ever sent.
public protocol NodeObjectSource: Sendable {
    /// UIDs of the objects meant for `node` now.
    func desired(for node: String) -> [String]
    /// The current state of an object, or nil if it is gone (or no longer meant for `node`).
    func object(_ uid: String, for node: String) -> SyncedObject?
}

/// Sends a message to a node and reports whether it was acknowledged in time (CloudHub).
public protocol AcknowledgedSender: Sendable {
    func sendAwaitingAck(_ message: Message, to node: String, timeout: Duration) async -> Bool
}

/// Records acknowledged versions durably (ObjectSync / ClusterObjectSync).
public protocol DeliveryRecorder: Sendable {
    func record(node: String, _ action: SyncAction)
}

/// Settings of reliable delivery.
public struct ReliableSyncOptions: Sendable {
    /// Messages awaiting an ack per node at once.
    public var window = 32
    /// How long to wait for an ack (KubeEdge: 5 s).
    public var ackTimeout: Duration = .seconds(5)
    /// Sends in a row before an object backs off (KubeEdge: 5).
    public var attemptsBeforeBackoff = 5
    public var maxBackoff: Duration = .seconds(60)
    public init() {}
}

/// Reliable cloud→edge delivery, level-based: for each connected node, a worker compares what
/// the node acknowledged (per object UID and resourceVersion) with what it should have, and
/// sends only the difference — the newest version of changed objects, deletes for vanished ones.
/// On (re)connect the whole comparison runs once, so a resync sends only what changed while the
/// node was away, never a full relist. Nothing is queued for disconnected nodes (memory stays
/// bounded by the objects a node has); acknowledged versions are recorded through a
/// ``DeliveryRecorder`` so the comparison survives a cloud restart.
public final class ReliableSync: Service {
    let source: any NodeObjectSource
    let sender: any AcknowledgedSender
    let recorder: (any DeliveryRecorder)?
    let options: ReliableSyncOptions
    let logger: Logger
    let nodes = Mutex<[String: NodeDeliveryState]>([:])
    let signals = LazyMap<String, WakeSignal>()
    let starts: AsyncStream<String>
    let startSink: AsyncStream<String>.Continuation
    let workerNodes = Mutex<Set<String>>([])
    /// Nodes whose post-connect comparison has not been reported yet.
    let resyncing = Mutex<Set<String>>([])
    let delayed = Mutex<[(node: String, uid: String, at: ContinuousClock.Instant)]>([])
    let stats = Mutex<[String: (sent: Int, deleted: Int, skipped: Int)]>([:])
    /// Inventory parts received per node since it connected.
    let inventories = Mutex<[String: (session: String, parts: Int, got: [Int: [DeliveredRecord]])]>([:])
    let sent = Counter(label: "swiftedge_sync_messages_sent_total")
    let acked = Counter(label: "swiftedge_sync_messages_acked_total")
    let retries = Counter(label: "swiftedge_sync_retries_total")
    let ackLatency = Timer(label: "swiftedge_sync_ack_latency_seconds", preferredDisplayUnit: .seconds)
    let resyncs = Counter(label: "swiftedge_sync_resyncs_total")
    let resyncSent = Counter(label: "swiftedge_sync_resync_sent_total")
    let resyncDeleted = Counter(label: "swiftedge_sync_resync_deleted_total")
    let resyncUnchanged = Counter(label: "swiftedge_sync_resync_unchanged_total")
    let perNode = LazyMap<String, NodeSyncMetrics>()

    /// Per-node delivery metrics (label `node`).
    struct NodeSyncMetrics: Sendable {
        let queueDepth: Gauge
        let retries, acked: Counter
        let ackLatency: Timer
        init(node: String) {
            let d = [("node", node)]
            queueDepth = Gauge(label: "swiftedge_sync_node_queue_depth", dimensions: d)
            retries = Counter(label: "swiftedge_sync_node_retries_total", dimensions: d)
            acked = Counter(label: "swiftedge_sync_node_messages_acked_total", dimensions: d)
            ackLatency = Timer(label: "swiftedge_sync_node_ack_latency_seconds", dimensions: d, preferredDisplayUnit: .seconds)
        }
    }

    func metrics(_ node: String) -> NodeSyncMetrics { perNode.value(for: node) { NodeSyncMetrics(node: node) } }

    public init(source: any NodeObjectSource, sender: any AcknowledgedSender, recorder: (any DeliveryRecorder)?,
                options: ReliableSyncOptions = .init(), logger: Logger)
    {
        self.source = source; self.sender = sender; self.recorder = recorder; self.options = options; self.logger = logger
        (starts, startSink) = AsyncStream<String>.makeStream()
    }

    /// Restores acknowledged versions (after a cloud restart), before nodes connect.
    public func restore(node: String, _ records: [DeliveredRecord]) {
        nodes.withLock { n in for r in records { n[node, default: .init()].restore(r) } }
    }

    /// The node connected: compare everything once, then follow changes.
    public func connected(_ node: String) {
        let desired = source.desired(for: node)
        nodes.withLock { n in
            var s = n[node] ?? .init()
            s.connected = true
            s.beginSession()
            s.markAll(desired: desired)
            n[node] = s
        }
        stats.withLock { $0[node] = (0, 0, 0) }
        resyncing.withLock { _ = $0.insert(node) }
        if workerNodes.withLock({ $0.insert(node).inserted }) { startSink.yield(node) } else { wake(node) }
    }

    /// Part `part` (1-based) of `parts` of the inventory a node sent on connecting (`session`
    /// tells one connection's inventory from another's); once all parts are in, it is reconciled
    /// with what the cloud believed the node holds.
    public func inventory(_ node: String, session: String, part: Int, parts: Int, records: [DeliveredRecord]) {
        let complete = inventories.withLock { inv -> [DeliveredRecord]? in
            var e = inv[node] ?? (session, parts, [:])
            if e.session != session || e.parts != parts { e = (session, parts, [:]) }
            e.got[part] = records
            guard e.got.count >= parts else { inv[node] = e; return nil }
            inv[node] = nil
            return (1...parts).flatMap { e.got[$0] ?? [] }
        }
        guard let complete else { return }
        nodes.withLock { $0[node, default: .init()].reconcile(inventory: complete) }
        logger.info("node inventory reconciled", metadata: ["node": "\(node)", "held": "\(complete.count)"])
        wake(node)
    }

    public func disconnected(_ node: String) {
        nodes.withLock { $0[node]?.disconnected() }
        wake(node)
    }

    /// An object meant for (or removed from) `node` changed.
    public func changed(_ uid: String, node: String) {
        let live = nodes.withLock { n -> Bool in
            guard n[node]?.connected == true else { return false }
            n[node]!.markDirty(uid)
            return true
        }
        if live { wake(node) }
    }

    /// Since the last connect of `node`: objects sent, deletes sent, and objects found unchanged.
    public func counts(_ node: String) -> (sent: Int, deleted: Int, skipped: Int) { stats.withLock { $0[node] ?? (0, 0, 0) } }

    /// Versions the node acknowledged.
    public func delivered(_ node: String) -> [String: DeliveredRecord] { nodes.withLock { $0[node]?.delivered ?? [:] } }

    /// Objects waiting to be looked at for `node`, or sent and not yet acknowledged.
    public func pending(_ node: String) -> Int { nodes.withLock { ($0[node]?.pendingCount ?? 0) + ($0[node]?.inFlightCount ?? 0) } }

    func signal(for node: String) -> WakeSignal { signals.value(for: node) { WakeSignal() } }

    func wake(_ node: String) { signal(for: node).signal() }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.retryLoop() }
            group.addTask {
                try? await gracefulShutdown()
                self.startSink.finish()
                for node in self.nodes.withLock({ Array($0.keys) }) { self.nodes.withLock { $0[node]?.disconnected() }; self.wake(node) }
            }
            for await node in starts {
                group.addTask { await self.worker(node) }
            }
            group.cancelAll()
        }
    }

    func retryLoop() async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: .milliseconds(200)) } catch { return }
            let now = ContinuousClock.now
            let due = delayed.withLock { d -> [(node: String, uid: String, at: ContinuousClock.Instant)] in
                let ready = d.filter { $0.at <= now }
                d.removeAll { $0.at <= now }
                return ready
            }
            for item in due { changed(item.uid, node: item.node) }
        }
    }

    /// Sends what `node` lacks while it is connected, up to `window` messages at a time (each
    /// batch goes out with one flush; the next is taken once the batch is acknowledged — measured
    /// faster than refilling per ack, which sends one message per flush); parks when idle.
    func worker(_ node: String) async {
        let parked = signal(for: node)
        let m = metrics(node)
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let (batch, connected, depth) = nodes.withLock { n -> ([String], Bool, Int) in
                guard n[node]?.connected == true else { return ([], false, n[node]?.pendingCount ?? 0) }
                let b = n[node]!.take(options.window)
                return (b, true, n[node]!.pendingCount + n[node]!.inFlightCount)
            }
            m.queueDepth.record(depth)
            if batch.isEmpty {
                if connected, resyncing.withLock({ $0.remove(node) }) != nil {
                    let c = counts(node)
                    resyncs.increment()
                    resyncSent.increment(by: c.sent)
                    resyncDeleted.increment(by: c.deleted)
                    resyncUnchanged.increment(by: c.skipped)
                    logger.info("resync complete", metadata: ["node": "\(node)", "sent": "\(c.sent)", "deleted": "\(c.deleted)", "unchanged": "\(c.skipped)"])
                }
                await parked.wait()
                continue
            }
            await withTaskGroup(of: Void.self) { group in
                for uid in batch { group.addTask { await self.deliver(uid, to: node) } }
            }
        }
    }

    func deliver(_ uid: String, to node: String) async {
        let current = source.object(uid, for: node)
        let action = nodes.withLock { $0[node]?.action(for: uid, current: current) ?? .none }
        let message: Message
        switch action {
        case .none:
            nodes.withLock { $0[node]?.settled(uid) }
            stats.withLock { $0[node, default: (0, 0, 0)].skipped += 1 }
            return
        case .send(let o, let first):
            // A Node always goes as `update`, as cloudcore sends it: edgecore's metamanager hands
            // a Node `insert` to edged ("resType is not pod or volume") instead of only storing it.
            message = ObjectSync(ref: ResourceRef(namespace: o.namespace, kind: o.edgeKind, name: o.name),
                                 change: first && o.edgeKind != .node ? .insert : .update,
                                 resourceVersion: String(o.resourceVersion), object: o.object).message
        case .delete(let r):
            var meta: JSON = ["name": .string(r.name), "uid": .string(r.uid)]
            if let ns = r.namespace { meta["namespace"] = .string(ns) }
            message = ObjectSync(ref: ResourceRef(namespace: r.namespace, kind: r.edgeKind, name: r.name), change: .delete,
                                 resourceVersion: String(r.resourceVersion),
                                 object: ["apiVersion": .string(r.apiVersion), "kind": .string(r.kind), "metadata": meta]).message
        }
        sent.increment()
        let start = ContinuousClock.now
        if await sender.sendAwaitingAck(message, to: node, timeout: options.ackTimeout) {
            acked.increment()
            let d = ContinuousClock.now - start
            let nanos = d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000
            ackLatency.recordNanoseconds(nanos)
            let m = metrics(node)
            m.acked.increment()
            m.ackLatency.recordNanoseconds(nanos)
            nodes.withLock { $0[node]?.acknowledged(action) }
            stats.withLock { s in if case .delete = action { s[node, default: (0, 0, 0)].deleted += 1 } else { s[node, default: (0, 0, 0)].sent += 1 } }
            recorder?.record(node: node, action)
        } else {
            retries.increment()
            metrics(node).retries.increment()
            let n = nodes.withLock { $0[node]?.failed(uid) ?? 0 }
            if n < options.attemptsBeforeBackoff {
                changed(uid, node: node)
            } else {
                let backoff = min(options.maxBackoff, .seconds(1 << min(n - options.attemptsBeforeBackoff, 6)))
                logger.info("object not acknowledged; backing off", metadata: ["node": "\(node)", "uid": "\(uid)", "attempts": "\(n)"])
                delayed.withLock { $0.append((node, uid, ContinuousClock.now + backoff)) }
            }
        }
    }
}
