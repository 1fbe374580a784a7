import CRI
import ContainerRuntime
import Foundation
import KubeAPI
import StreamTunnel

/// What one usage sample measured: cumulative CPU time (node and each running container) and
/// memory in use, at a monotonic time.
struct UsageSample: Sendable {
    struct Container: Sendable {
        var namespace: String, pod: String, podUID: String, name: String
        var cpuNanoSeconds: UInt64
        var memoryBytes: UInt64
        /// Creation time, nanoseconds since the epoch (CRI `created_at`).
        var createdAt: Int64 = 0
    }
    var time: ContinuousClock.Instant
    var wallTime: KubeTime
    var nodeCPUNanoSeconds: UInt64
    var nodeMemoryBytes: UInt64
    var containers: [String: Container]
}

/// Turns successive samples into rates (`kubectl top` shows CPU as cores used over a window):
/// a value type, fed by the sampling loop and by stats requests.
struct UsageSampler: Sendable {
    static let minimumWindow: Duration = .seconds(1)
    var previous: UsageSample?
    var latest: NodeUsage?

    /// Takes a sample in; computes usage against the previous one when at least
    /// ``minimumWindow`` separates them.
    mutating func record(_ s: UsageSample) {
        guard let p = previous else { previous = s; return }
        let window = s.time - p.time
        guard window >= Self.minimumWindow else { return }
        let seconds = Double(window.components.seconds) + Double(window.components.attoseconds) / 1e18
        func rate(_ now: UInt64, _ before: UInt64) -> UInt64 { now >= before ? UInt64(Double(now - before) / seconds) : 0 }
        var pods: [String: NodeUsage.Pod] = [:]
        for (id, c) in s.containers.sorted(by: { $0.key < $1.key }) {
            // A container seen for the first time counts from its start (its whole CPU time is inside
            // the window only if it started after the previous sample; then this is exact).
            let cpu = rate(c.cpuNanoSeconds, p.containers[id]?.cpuNanoSeconds ?? 0)
            pods[c.podUID, default: NodeUsage.Pod(namespace: c.namespace, name: c.pod, uid: c.podUID, containers: [])]
                .containers.append(NodeUsage.Container(name: c.name, cpuNanoCores: cpu, memoryBytes: c.memoryBytes, cpuTotalNanoSeconds: c.cpuNanoSeconds,
                                                      startTimeSeconds: c.createdAt > 0 ? Double(c.createdAt) / 1e9 : nil))
        }
        latest = NodeUsage(timestamp: s.wallTime.rfc3339, windowSeconds: seconds,
                           cpuNanoCores: rate(s.nodeCPUNanoSeconds, p.nodeCPUNanoSeconds), memoryBytes: s.nodeMemoryBytes,
                           pods: pods.values.sorted { ($0.namespace, $0.name) < ($1.namespace, $1.name) },
                           cpuTotalNanoSeconds: s.nodeCPUNanoSeconds)
        previous = s
    }
}

/// The node's CPU time and memory in use from `/proc` (what the kernel accounts to everything).
enum ProcStats {
    /// Busy CPU time in nanoseconds since boot (`/proc/stat`, USER_HZ = 100).
    static func cpuNanoSeconds(procStat: String) -> UInt64? {
        guard let line = procStat.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") }) else { return nil }
        let f = line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
        guard f.count >= 4 else { return nil }
        // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
        let busy = f.enumerated().prefix(8).filter { $0.offset != 3 && $0.offset != 4 }.reduce(0) { $0 + $1.element }
        return busy * 10_000_000
    }

    /// MemTotal − MemAvailable in bytes (`/proc/meminfo`).
    static func memoryInUse(meminfo: String) -> UInt64? {
        var total: UInt64?, available: UInt64?
        for line in meminfo.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 2, let kb = UInt64(f[1]) else { continue }
            if f[0] == "MemTotal:" { total = kb * 1024 } else if f[0] == "MemAvailable:" { available = kb * 1024 }
        }
        guard let total, let available else { return nil }
        return total > available ? total - available : 0
    }
}

extension Edged {
    /// Seconds between background usage samples (the longest window `kubectl top` reports).
    static let usagePeriod: Duration = .seconds(10)

    /// One sample: `/proc` for the node, the CRI's container stats for this node's running containers.
    func takeUsageSample() async throws -> UsageSample {
        let procStat = (try? String(contentsOfFile: "/proc/stat", encoding: .utf8)) ?? ""
        let meminfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        let labels = [RuntimeLabels.node: configuration.nodeName]
        var running: [String: Int64] = [:]  // id → created at
        for c in try await runtime.listContainers(labels: labels) where c.state == .containerRunning { running[c.id] = c.createdAt }
        var containers: [String: UsageSample.Container] = [:]
        for s in try await runtime.listContainerStats(labels: labels) where running[s.attributes.id] != nil {
            let l = s.attributes.labels
            containers[s.attributes.id] = UsageSample.Container(
                namespace: l[RuntimeLabels.podNamespace] ?? "", pod: l[RuntimeLabels.podName] ?? "", podUID: l[RuntimeLabels.podUID] ?? "",
                name: l[RuntimeLabels.containerName] ?? s.attributes.metadata.name,
                cpuNanoSeconds: s.cpu.usageCoreNanoSeconds.value, memoryBytes: s.memory.workingSetBytes.value,
                createdAt: running[s.attributes.id] ?? 0)
        }
        return UsageSample(time: .now, wallTime: .now(), nodeCPUNanoSeconds: ProcStats.cpuNanoSeconds(procStat: procStat) ?? 0,
                           nodeMemoryBytes: ProcStats.memoryInUse(meminfo: meminfo) ?? 0, containers: containers)
    }

    /// Samples in the background so a usage figure over a recent window is always at hand.
    func sampleUsage() async {
        while !Task.isCancelled {
            do {
                let sample = try await takeUsageSample()
                usage.withLock { $0.record(sample) }
            } catch {
                logger.debug("usage sample failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: Self.usagePeriod)
        }
    }

    /// Serves `kubectl top`: a fresh sample against the previous one (waiting out the minimum
    /// window right after start).
    func streamStats(write: @escaping @Sendable ([UInt8]) async throws -> Void) async throws {
        var sample = try await takeUsageSample()
        usage.withLock { $0.record(sample) }
        if usage.withLock({ $0.latest }) == nil {
            try await Task.sleep(for: UsageSampler.minimumWindow)
            sample = try await takeUsageSample()
            usage.withLock { $0.record(sample) }
        }
        guard let latest = usage.withLock({ $0.latest }) else { throw TunnelError("no usage measured yet on node \(configuration.nodeName)") }
        try await write([1] + latest.json.serialized())
    }
}
