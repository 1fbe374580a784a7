import Foundation
import KubeAPI
import KubeClient
import Logging

/// Benchmark of the embedded control plane, as kube's scheduler_perf measures it: an API server
/// (`swiftedge apiserver --no-controllers`) gets 1,000 nodes and 10,000 pending pods, then a
/// `swiftedge controller-manager` process starts and the time until every pod is bound is
/// measured (scheduling throughput, pods/s). Then a 10,000-replica Deployment is created and
/// the time from create to all pods bound is measured (ReplicaSet controller + scheduler).
///
/// Usage: `bash scripts/bench.sh` (builds release, then runs this with the sibling binary).
/// BENCH_NODES / BENCH_PODS change the sizes; BENCH_SERVER_ARGS adds server flags (e.g. --no-fsync).
@main
struct SchedulerBenchmark {
    static func main() async throws {
        let env = ProcessInfo.processInfo.environment
        let exeDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let bin = env["SWIFTEDGE_BIN"] ?? exeDir.appendingPathComponent("swiftedge").path
        let nodeCount = Int(env["BENCH_NODES"] ?? "1000") ?? 1000
        let podCount = Int(env["BENCH_PODS"] ?? "10000") ?? 10000
        let dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("swiftedge-sched-\(UUID().uuidString)").path
        let port = 20000 + Int.random(in: 0..<20000)
        let extra = (env["BENCH_SERVER_ARGS"] ?? "").split(separator: " ").map(String.init)
        let server = try spawn(bin, ["apiserver", "--data-dir", dataDir, "--port", String(port), "--no-controllers",
                                     "--log-level", "warning"] + extra)
        var manager: Process?
        defer {
            manager?.terminate(); manager?.waitUntilExit()
            server.terminate(); server.waitUntilExit()
            try? FileManager.default.removeItem(atPath: dataDir)
        }
        let kubeconfig = dataDir + "/admin.kubeconfig"
        while !FileManager.default.fileExists(atPath: kubeconfig) { try await Task.sleep(for: .milliseconds(50)) }
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let client = try HTTPKubeClient(config: try KubeConfig.load(path: kubeconfig), logger: logger)
        while (try? await client.list(R.namespaces, namespace: nil)) == nil { try await Task.sleep(for: .milliseconds(50)) }
        print("SwiftEdge control-plane benchmark: \(nodeCount) nodes, \(podCount) pods (server fsync \(extra.contains("--no-fsync") ? "off" : "on"))")

        // Nodes, registered as a node agent would (object, then status).
        var t0 = ContinuousClock.now
        try await concurrently(nodeCount, width: 16) { i in
            let name = "node-\(i)"
            _ = try await client.create(R.nodes, namespace: nil, ["apiVersion": "v1", "kind": "Node",
                "metadata": ["name": .string(name), "labels": ["kubernetes.io/hostname": .string(name), "zone": .string("z\(i % 10)")]]])
            let res: JSON = ["cpu": "32", "memory": "64Gi", "pods": "110"]
            let now = JSON.string(KubeTime.now().rfc3339)
            _ = try await client.patch(R.nodes, namespace: nil, name: name, ["status": [
                "capacity": res, "allocatable": res,
                "conditions": [["type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now, "lastTransitionTime": now]],
            ]], subresource: "status")
        }
        print(String(format: "nodes registered:          %8.2f s", secs(t0)))

        // Pending pods (nobody schedules them yet).
        for ns in ["pods", "deploy"] {
            _ = try await client.create(R.namespaces, namespace: nil, ["apiVersion": "v1", "kind": "Namespace", "metadata": ["name": .string(ns)]])
        }
        t0 = .now
        try await concurrently(podCount, width: 16) { i in
            _ = try await client.create(R.pods, namespace: "pods", pod("p-\(i)", labels: ["app": "direct"]))
        }
        print(String(format: "pending pods created:      %8.2f s", secs(t0)))

        // Start the control plane and time until every pod is bound.
        let watchStart = try await client.list(R.pods, namespace: "pods", limit: 1)["metadata"]["resourceVersion"].stringValue
        t0 = .now
        manager = try spawn(bin, ["controller-manager", "--kubeconfig", kubeconfig, "--log-level", "warning",
                                  "--node-monitor-grace-period", "3600"])
        let first = try await waitBound(client, namespace: "pods", count: podCount, from: watchStart)
        let total = secs(t0)
        print(String(format: "all pods bound after start: %7.2f s  (includes informer sync)", total))
        print(String(format: "scheduling throughput:     %8.0f pods/s  (first to last binding: %.2f s)",
                     Double(podCount) / first.span, first.span))
        try await checkSpread(client, namespace: "pods", nodes: nodeCount)

        // A Deployment of podCount replicas: create → all bound.
        let rv = try await client.list(R.pods, namespace: "deploy", limit: 1)["metadata"]["resourceVersion"].stringValue
        t0 = .now
        _ = try await client.create(R.deployments, namespace: "deploy", [
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": ["name": "big"],
            "spec": ["replicas": .int(Int64(podCount)), "selector": ["matchLabels": ["app": "big"]],
                     "template": ["metadata": ["labels": ["app": "big"]], "spec": pod("x", labels: [:])["spec"]]],
        ])
        _ = try await waitBound(client, namespace: "deploy", count: podCount, from: rv)
        print(String(format: "deployment create → all %d pods bound: %.2f s  (%.0f pods/s)", podCount, secs(t0), Double(podCount) / secs(t0)))
        print("server RSS: \(rssMB(server.processIdentifier)) MB, controller-manager RSS: \(rssMB(manager!.processIdentifier)) MB (\(2 * podCount) pods, \(nodeCount) nodes cached)")
        try await client.shutdown()
    }

    enum R {
        static let pods = ResourceType.pods
        static let nodes = ResourceType.nodes
        static let namespaces = ResourceType.namespaces
        static let deployments = ResourceType.deployments
    }

    static func pod(_ name: String, labels: [String: String]) -> JSON {
        var l: [String: JSON] = [:]
        for (k, v) in labels { l[k] = .string(v) }
        return ["apiVersion": "v1", "kind": "Pod", "metadata": ["name": .string(name), "labels": .object(l)],
                "spec": ["containers": [["name": "app", "image": "nginx:1.25",
                                         "resources": ["requests": ["cpu": "100m", "memory": "128Mi"]]]]]]
    }

    static func spawn(_ bin: String, _ args: [String]) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: bin)
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        return p
    }

    static func secs(_ t0: ContinuousClock.Instant) -> Double { seconds(t0.duration(to: .now)) }

    static func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

    static func concurrently(_ n: Int, width: Int, _ body: @escaping @Sendable (Int) async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { g in
            for w in 0..<width {
                g.addTask { var i = w; while i < n { try await body(i); i += width } }
            }
            try await g.waitForAll()
        }
    }

    /// Watches a namespace until `count` pods have a node; returns the first-to-last binding span.
    static func waitBound(_ client: KubeClient, namespace: String, count: Int, from rv: String?) async throws -> (span: Double, last: Double) {
        var bound = Set<String>()
        var first: ContinuousClock.Instant?
        var resourceVersion = rv
        let start = ContinuousClock.now
        while bound.count < count {
            let stream = try await client.watch(R.pods, namespace: namespace, resourceVersion: resourceVersion, labelSelector: nil, fieldSelector: nil, timeoutSeconds: 120)
            for try await ev in stream {
                if let v = ev.object["metadata"]["resourceVersion"].stringValue { resourceVersion = v }
                guard ev.type == .added || ev.type == .modified, let node = ev.object["spec"]["nodeName"].stringValue, !node.isEmpty else { continue }
                if bound.insert(ev.object["metadata"]["name"].stringValue ?? "").inserted, first == nil { first = .now }
                if bound.count >= count { break }
            }
        }
        let end = ContinuousClock.now
        return (seconds((first ?? start).duration(to: end)), seconds(start.duration(to: end)))
    }

    /// Reports how evenly pods were spread (max and min pods per node).
    static func checkSpread(_ client: KubeClient, namespace: String, nodes: Int) async throws {
        var perNode: [String: Int] = [:]
        var token: String?
        repeat {
            let page = try await client.list(R.pods, namespace: namespace, limit: 2000, continueToken: token)
            for p in page["items"].arrayValue ?? [] { perNode[p["spec"]["nodeName"].stringValue ?? "", default: 0] += 1 }
            token = page["metadata"]["continue"].stringValue.flatMap { $0.isEmpty ? nil : $0 }
        } while token != nil
        let counts = perNode.values
        print("pods per node: min \(perNode.count < nodes ? 0 : counts.min() ?? 0), max \(counts.max() ?? 0) over \(perNode.count) nodes")
    }

    static func rssMB(_ pid: Int32) -> Int {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return -1 }
        for line in s.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
        }
        return -1
    }
}

