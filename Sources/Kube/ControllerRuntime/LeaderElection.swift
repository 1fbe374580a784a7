import KubeAPI
import KubeClient
import Logging
import ServiceLifecycle

/// Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it: a candidate takes
/// the Lease when it is free or when its holder has not renewed it for `leaseDuration` (measured
/// on the candidate's own clock, so clock skew between machines does not matter), the leader
/// renews every `retryPeriod` and steps down if it cannot renew within `renewDeadline`. Writes use
/// the Lease's resourceVersion, so two candidates can never both win.
public struct LeaderElection: Sendable {
    public var namespace: String
    public var name: String
    public var identity: String
    public var leaseDuration: Duration
    public var renewDeadline: Duration
    public var retryPeriod: Duration
    let client: KubeClient
    let logger: Logger

    static let leases = ResourceType.leases

    public init(client: KubeClient, namespace: String = "kube-system", name: String, identity: String,
                leaseDuration: Duration = .seconds(15), renewDeadline: Duration = .seconds(10),
                retryPeriod: Duration = .seconds(2), logger: Logger)
    {
        self.client = client; self.namespace = namespace; self.name = name; self.identity = identity
        self.leaseDuration = leaseDuration; self.renewDeadline = min(renewDeadline, leaseDuration)
        self.retryPeriod = retryPeriod; self.logger = logger
    }

    struct LostLeadership: Error {}

    /// Campaigns for the lease and runs `lead` while holding it. If leadership is lost, `lead` is
    /// cancelled and the campaign starts again. On graceful shutdown `lead` is cancelled, the lease
    /// is released (so a standby takes over at once) and `run` returns.
    public func run(_ lead: @escaping @Sendable () async throws -> Void) async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do { try await cancelWhenGracefulShutdown { try await campaign() } } catch { return }
            if Task.isShuttingDownGracefully { break }
            logger.notice("started leading", metadata: ["lease": "\(namespace)/\(name)", "identity": "\(identity)"])
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await cancelWhenGracefulShutdown { try await lead() } }
                    group.addTask { try await renewLoop() }
                    try await group.next()
                    group.cancelAll()
                }
            } catch is LostLeadership {
                logger.warning("leadership lost; controllers stopped", metadata: ["lease": "\(namespace)/\(name)", "identity": "\(identity)"])
                continue
            } catch {
                if !(error is CancellationError) { await release(); throw error }
            }
            break
        }
        await release()
    }

    func campaign() async throws {
        var observed: (record: String, at: ContinuousClock.Instant)? = nil
        var waiting = false
        while true {
            do { if try await tryAcquireOrRenew(observed: &observed) { return } } catch is CancellationError {
                throw CancellationError()
            } catch {
                logger.info("lease not acquired", metadata: ["lease": "\(namespace)/\(name)", "error": "\(error)"])
            }
            if !waiting {
                waiting = true
                logger.notice("waiting to acquire lease", metadata: ["lease": "\(namespace)/\(name)", "identity": "\(identity)"])
            }
            try await Task.sleep(for: retryPeriod)
        }
    }

    func renewLoop() async throws {
        var lastRenew = ContinuousClock.now
        var observed: (record: String, at: ContinuousClock.Instant)? = nil
        while true {
            try await Task.sleep(for: retryPeriod)
            do {
                if try await tryAcquireOrRenew(observed: &observed) { lastRenew = .now; continue }
                throw LostLeadership()
            } catch is CancellationError {
                throw CancellationError()
            } catch is LostLeadership {
                throw LostLeadership()
            } catch {
                logger.info("lease renewal failed", metadata: ["lease": "\(namespace)/\(name)", "error": "\(error)"])
                if ContinuousClock.now - lastRenew > renewDeadline { throw LostLeadership() }
            }
        }
    }

    /// One attempt; true when this candidate holds the lease afterwards.
    func tryAcquireOrRenew(observed: inout (record: String, at: ContinuousClock.Instant)?) async throws -> Bool {
        let now = KubeTime.now().rfc3339Micro
        let seconds = Int64(leaseDuration.components.seconds)
        let current: JSON
        do {
            current = try await client.get(Self.leases, namespace: namespace, name: name)
        } catch let e as StatusError where e.code == 404 {
            let lease: JSON = ["apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                               "metadata": ["name": .string(name), "namespace": .string(namespace)],
                               "spec": ["holderIdentity": .string(identity), "leaseDurationSeconds": .int(seconds),
                                        "acquireTime": .string(now), "renewTime": .string(now), "leaseTransitions": 0]]
            do { _ = try await client.create(Self.leases, namespace: namespace, lease) } catch let e as StatusError where e.code == 409 {
                return false
            }
            return true
        }
        let spec = current["spec"]
        let holder = spec["holderIdentity"].stringValue ?? ""
        let record = "\(holder)|\(spec["renewTime"].stringValue ?? "")"
        let clock = ContinuousClock.now
        if observed?.record != record { observed = (record, clock) }
        if !holder.isEmpty, holder != identity {
            let held = Duration.seconds(spec["leaseDurationSeconds"].intValue ?? seconds)
            if let o = observed, clock - o.at < held { return false }
        }
        var lease = current
        lease["spec"]["holderIdentity"] = .string(identity)
        lease["spec"]["leaseDurationSeconds"] = .int(seconds)
        lease["spec"]["renewTime"] = .string(now)
        if holder != identity {
            lease["spec"]["acquireTime"] = .string(now)
            lease["spec"]["leaseTransitions"] = .int((spec["leaseTransitions"].intValue ?? 0) + 1)
        }
        do { _ = try await client.update(Self.leases, namespace: namespace, lease) } catch let e as StatusError where e.code == 409 {
            return false
        }
        observed = nil
        return true
    }

    /// Gives the lease up so that another candidate can take it at once.
    func release() async {
        guard var lease = try? await client.get(Self.leases, namespace: namespace, name: name),
              lease["spec"]["holderIdentity"].stringValue == identity else { return }
        lease["spec"]["holderIdentity"] = .null
        lease["spec"]["leaseDurationSeconds"] = 1
        lease["spec"]["renewTime"] = .string(KubeTime.now().rfc3339Micro)
        if (try? await client.update(Self.leases, namespace: namespace, lease)) != nil {
            logger.notice("released lease", metadata: ["lease": "\(namespace)/\(name)", "identity": "\(identity)"])
        }
    }
}
