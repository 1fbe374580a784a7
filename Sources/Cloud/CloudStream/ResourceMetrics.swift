import KubeAPI
import StreamTunnel

/// kubelet's `/metrics/resource` (what metrics-server scrapes for `kubectl top`), in the
/// Prometheus text format, from a node's ``NodeUsage``: cumulative CPU seconds and working-set
/// memory for the node, its pods and containers, container start times, `scrape_error`.
public enum ResourceMetrics {
    public static func text(_ u: NodeUsage) -> String {
        let ms = KubeTime.parse(u.timestamp).map { $0.micros / 1000 } ?? 0
        var out = ""
        func family(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: String)]) {
            guard !samples.isEmpty else { return }
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for s in samples { out += "\(name)\(s.labels) \(s.value) \(ms)\n" }
        }
        func seconds(_ ns: UInt64) -> String { String(Double(ns) / 1e9) }
        func labels(_ pairs: [(String, String)]) -> String {
            "{" + pairs.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",") + "}"
        }
        var containerCPU: [(String, String)] = [], containerMemory: [(String, String)] = [], containerStart: [(String, String)] = []
        var podCPU: [(String, String)] = [], podMemory: [(String, String)] = []
        for p in u.pods {
            var cpu: UInt64 = 0, mem: UInt64 = 0, cpuKnown = true
            for c in p.containers {
                let l = labels([("container", c.name), ("namespace", p.namespace), ("pod", p.name)])
                if let t = c.cpuTotalNanoSeconds { containerCPU.append((l, seconds(t))); cpu += t } else { cpuKnown = false }
                containerMemory.append((l, String(c.memoryBytes)))
                if let s = c.startTimeSeconds { containerStart.append((l, String(s))) }
                mem += c.memoryBytes
            }
            let l = labels([("namespace", p.namespace), ("pod", p.name)])
            if cpuKnown { podCPU.append((l, seconds(cpu))) }
            podMemory.append((l, String(mem)))
        }
        family("container_cpu_usage_seconds_total", "counter", "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
               containerCPU.map { (labels: $0.0, value: $0.1) })
        family("container_memory_working_set_bytes", "gauge", "[STABLE] Current working set of the container in bytes",
               containerMemory.map { (labels: $0.0, value: $0.1) })
        family("container_start_time_seconds", "gauge", "[STABLE] Start time of the container since unix epoch in seconds",
               containerStart.map { (labels: $0.0, value: $0.1) })
        if let t = u.cpuTotalNanoSeconds {
            family("node_cpu_usage_seconds_total", "counter", "[STABLE] Cumulative cpu time consumed by the node in core-seconds", [("", seconds(t))])
        }
        family("node_memory_working_set_bytes", "gauge", "[STABLE] Current working set of the node in bytes", [("", String(u.memoryBytes))])
        family("pod_cpu_usage_seconds_total", "counter", "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
               podCPU.map { (labels: $0.0, value: $0.1) })
        family("pod_memory_working_set_bytes", "gauge", "[STABLE] Current working set of the pod in bytes",
               podMemory.map { (labels: $0.0, value: $0.1) })
        out += "# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise\n# TYPE scrape_error gauge\nscrape_error 0\n"
        return out
    }

    static func escape(_ s: String) -> String {
        var o = ""
        for ch in s {
            switch ch {
            case "\\": o += "\\\\"
            case "\"": o += "\\\""
            case "\n": o += "\\n"
            default: o.append(ch)
            }
        }
        return o
    }
}
