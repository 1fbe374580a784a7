import CSI
import Logging
import Metrics
import ServiceLifecycle
import Synchronization

/// kubelet's volume stats for the node's CSI volumes: every `period`, `NodeGetVolumeStats` on each
/// published volume whose driver has GET_VOLUME_STATS, exported as kubelet exports them
/// (`kubelet_volume_stats_{capacity,available,used}_bytes` and `…_inodes{,_free,_used}`, labelled
/// `namespace` and `persistentvolumeclaim`), so a Prometheus alert on a filling claim works as
/// on any cluster. A volume that goes loses its series.
public final class CSIVolumeStats: Service {
    let volumes: CSIVolumeManager
    let period: Duration
    let logger: Logger
    /// The series of each claim (`<ns>/<claim>`), by metric name.
    let series = Mutex<[String: [String: Gauge]]>([:])
    let failures = Counter(label: "swiftedge_csi_volume_stats_failures_total")

    public init(volumes: CSIVolumeManager, period: Duration = .seconds(60), logger: Logger) {
        self.volumes = volumes; self.period = period; self.logger = logger
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            await sample()
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.period) }
        }
    }

    static let names = ["kubelet_volume_stats_capacity_bytes", "kubelet_volume_stats_available_bytes", "kubelet_volume_stats_used_bytes",
                        "kubelet_volume_stats_inodes", "kubelet_volume_stats_inodes_free", "kubelet_volume_stats_inodes_used"]

    /// One round: every published volume's stats recorded, the series of gone volumes removed.
    func sample() async {
        var seen = Set<String>()
        for v in volumes.published() {
            guard let ns = v.namespace, let claim = v.claim, let plugin = volumes.registry.plugin(v.driver) else { continue }
            let client = CSIPluginClient(endpoint: plugin.endpoint)
            do {
                let caps = try await client.node(timeout: .seconds(10)) { c, o in try await c.nodeGetCapabilities(.init(), options: o) }
                guard caps.capabilities.contains(where: { if case .rpc(let r)? = $0.type { r.type == .getVolumeStats } else { false } }) else { continue }
                var req = Csi_V1_NodeGetVolumeStatsRequest()
                req.volumeID = v.handle
                req.volumePath = v.target
                let r = req
                let stats = try await client.node(timeout: .seconds(10)) { c, o in try await c.nodeGetVolumeStats(r, options: o) }
                let key = "\(ns)/\(claim)"
                seen.insert(key)
                var values: [String: Int64] = [:]
                for u in stats.usage {
                    switch u.unit {
                    case .bytes:
                        values["kubelet_volume_stats_capacity_bytes"] = u.total
                        values["kubelet_volume_stats_available_bytes"] = u.available
                        values["kubelet_volume_stats_used_bytes"] = u.used
                    case .inodes:
                        values["kubelet_volume_stats_inodes"] = u.total
                        values["kubelet_volume_stats_inodes_free"] = u.available
                        values["kubelet_volume_stats_inodes_used"] = u.used
                    default: continue
                    }
                }
                let gauges = series.withLock { s -> [String: Gauge] in
                    if let g = s[key] { return g }
                    var g: [String: Gauge] = [:]
                    for n in Self.names { g[n] = Gauge(label: n, dimensions: [("namespace", ns), ("persistentvolumeclaim", claim)]) }
                    s[key] = g
                    return g
                }
                for (n, value) in values { gauges[n]?.record(value) }
            } catch {
                failures.increment()
                logger.debug("volume stats failed", metadata: ["claim": "\(ns)/\(claim)", "driver": "\(v.driver)", "error": "\(error)"])
            }
        }
        let gone = series.withLock { s -> [Gauge] in
            let keys = s.keys.filter { !seen.contains($0) }
            var out: [Gauge] = []
            for k in keys { out += s.removeValue(forKey: k)?.values.map { $0 } ?? [] }
            return out
        }
        for g in gone { g.destroy() }
    }
}
