import KubeAPI
import Logging
import Metrics

/// What a reconcile asks of its queue.
public enum ReconcileResult: Sendable, Equatable {
    case done
    /// Look at the key again after a while (time-based conditions such as minReadySeconds).
    case requeue(after: Duration)
}

/// The seam every controller implements: bring the world for `key` to its desired state.
/// Reconciles are level-based: they read current state from informer caches, never from events.
public protocol Reconciler: Sendable {
    /// Short name used in logs and metrics (`deployment`, `scheduler`).
    var name: String { get }
    func reconcile(_ key: String) async throws -> ReconcileResult
}

/// Runs `workers` concurrent reconcile loops over a ``WorkQueue``. A failed reconcile is retried
/// with the key's back-off; conflicts (409) are expected under concurrency and retried quietly.
public struct ControllerLoop: Sendable {
    public let reconciler: any Reconciler
    public let queue: WorkQueue
    public let workers: Int
    let logger: Logger
    let reconciles: Counter
    let failures: Counter
    let depth: Gauge
    let duration: Timer

    public init(reconciler: any Reconciler, queue: WorkQueue, workers: Int = 2, logger: Logger) {
        self.reconciler = reconciler; self.queue = queue; self.workers = max(1, workers); self.logger = logger
        let dims = [("controller", reconciler.name)]
        reconciles = Counter(label: "swiftedge_controller_reconciles_total", dimensions: dims)
        failures = Counter(label: "swiftedge_controller_reconcile_errors_total", dimensions: dims)
        depth = Gauge(label: "swiftedge_controller_queue_depth", dimensions: dims)
        duration = Timer(label: "swiftedge_controller_reconcile_duration_seconds", dimensions: dims, preferredDisplayUnit: .seconds)
    }

    /// Processes keys until cancelled.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await queue.runTimers() }
            for _ in 0..<workers { group.addTask { await worker() } }
            await group.next()
            group.cancelAll()
        }
    }

    func worker() async {
        while let key = await queue.get() {
            depth.record(queue.depth)
            let start = ContinuousClock.now
            do {
                let result = try await reconciler.reconcile(key)
                queue.forget(key)
                if case .requeue(let after) = result { queue.add(key, after: after) }
            } catch is CancellationError {
                queue.done(key)
                return
            } catch let e as StatusError where e.code == 409 || e.code == 404 {
                logger.debug("reconcile raced; retrying", metadata: ["controller": "\(reconciler.name)", "key": "\(key)", "error": "\(e)"])
                queue.addRateLimited(key)
            } catch {
                failures.increment()
                let n = queue.failureCount(key)
                logger.log(level: n < 3 ? .info : .warning, "reconcile failed; retrying with back-off",
                           metadata: ["controller": "\(reconciler.name)", "key": "\(key)", "error": "\(error)", "attempt": "\(n + 1)"])
                queue.addRateLimited(key)
            }
            reconciles.increment()
            duration.recordInterval(since: start)
            queue.done(key)
        }
    }
}

extension Timer {
    func recordInterval(since start: ContinuousClock.Instant) {
        let d = ContinuousClock.now - start
        recordNanoseconds(d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000)
    }
}
