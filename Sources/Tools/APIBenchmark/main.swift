import AsyncHTTPClient
import Foundation
import KubeAPI
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import NIOSSL

/// Benchmark of the embedded API server, run as a separate `swiftedge apiserver` process over
/// HTTPS (so RSS is the server's own): creates/s (1 and 8 clients), list of 10k pods (p50/p99),
/// watch delivery latency with 500 watchers, and server RSS idle and with 10k pods.
///
/// Usage: `bash scripts/bench.sh` (builds release, then runs this with the sibling binary).

@main
struct APIBenchmark {
    static func main() async throws {
        let exeDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let serverBin = ProcessInfo.processInfo.environment["SWIFTEDGE_BIN"] ?? exeDir.appendingPathComponent("swiftedge").path
        let pods = Int(ProcessInfo.processInfo.environment["BENCH_PODS"] ?? "10000") ?? 10000
        let watchers = Int(ProcessInfo.processInfo.environment["BENCH_WATCHERS"] ?? "500") ?? 500
        let dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("swiftedge-bench-\(UUID().uuidString)").path
        let port = 20000 + Int.random(in: 0..<20000)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: serverBin)
        let extra = (ProcessInfo.processInfo.environment["BENCH_SERVER_ARGS"] ?? "").split(separator: " ").map(String.init)
        server.arguments = ["apiserver", "--data-dir", dataDir, "--port", String(port), "--log-level", "warning", "--no-controllers"] + extra
        server.standardOutput = FileHandle.nullDevice
        try server.run()
        defer {
            server.terminate()
            server.waitUntilExit()
            try? FileManager.default.removeItem(atPath: dataDir)
        }
        let kubeconfig = dataDir + "/admin.kubeconfig"
        while !FileManager.default.fileExists(atPath: kubeconfig) { try await Task.sleep(for: .milliseconds(50)) }
        let token = try String(contentsOfFile: dataDir + "/admin.token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(dataDir + "/pki/ca.crt"))
        var config = HTTPClient.Configuration(tlsConfiguration: tls)
        config.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: watchers + 16)
        config.timeout = .init(connect: .seconds(10), read: .seconds(120))
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
        let api = API(client: client, base: "https://127.0.0.1:\(port)", token: token)
        // Wait for readiness.
        while (try? await api.request(.GET, "/readyz").0) != 200 { try await Task.sleep(for: .milliseconds(50)) }
        print("SwiftEdge API server benchmark (server process \(server.processIdentifier), HTTPS, fsync \(extra.contains("--no-fsync") ? "off" : "on"))")
        print("server RSS idle: \(rssMB(server.processIdentifier)) MB")

        _ = try await api.request(.POST, "/api/v1/namespaces", body: #"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"bench"}}"#)

        // 1. creates/s, one client.
        let n1 = 2000
        var t0 = ContinuousClock.now
        for i in 0..<n1 {
            let (code, _) = try await api.request(.POST, "/api/v1/namespaces/bench/configmaps", body: configMap("one-\(i)"))
            precondition(code == 201, "create failed: \(code)")
        }
        print(String(format: "creates/s, 1 client:   %8.0f  (%d configmaps)", Double(n1) / seconds(t0.duration(to: .now)), n1))

        // 2. creates/s, 8 clients.
        let n8 = 4000
        t0 = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { g in
            for c in 0..<8 {
                g.addTask {
                    for i in 0..<(n8 / 8) {
                        let (code, _) = try await api.request(.POST, "/api/v1/namespaces/bench/configmaps", body: configMap("eight-\(c)-\(i)"))
                        precondition(code == 201, "create failed: \(code)")
                    }
                }
            }
            try await g.waitForAll()
        }
        print(String(format: "creates/s, 8 clients:  %8.0f  (%d configmaps)", Double(n8) / seconds(t0.duration(to: .now)), n8))

        // 3. 10k pods, then list them.
        t0 = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { g in
            for c in 0..<8 {
                g.addTask {
                    var i = c
                    while i < pods {
                        let (code, _) = try await api.request(.POST, "/api/v1/namespaces/bench/pods", body: pod("pod-\(i)", node: "edge-\(i % 50)"))
                        precondition(code == 201, "pod create failed: \(code)")
                        i += 8
                    }
                }
            }
            try await g.waitForAll()
        }
        print(String(format: "created %d pods in %.1f s", pods, seconds(t0.duration(to: .now))))
        print("server RSS with \(pods) pods: \(rssMB(server.processIdentifier)) MB")
        var listTimes: [Double] = []
        var bytes = 0
        for _ in 0..<30 {
            let s = ContinuousClock.now
            let (code, body) = try await api.request(.GET, "/api/v1/namespaces/bench/pods")
            listTimes.append(seconds(s.duration(to: .now)) * 1000)
            precondition(code == 200)
            bytes = body.count
        }
        print(String(format: "list %d pods (JSON, %.1f MB): p50 %.1f ms  p99 %.1f ms", pods, Double(bytes) / 1e6,
                     percentile(listTimes, 0.5), percentile(listTimes, 0.99)))
        var selTimes: [Double] = []
        for i in 0..<30 {
            let s = ContinuousClock.now
            _ = try await api.request(.GET, "/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-\(i % 50)")
            selTimes.append(seconds(s.duration(to: .now)) * 1000)
        }
        print(String(format: "list pods of one node (field selector over %d): p50 %.1f ms  p99 %.1f ms", pods,
                     percentile(selTimes, 0.5), percentile(selTimes, 0.99)))

        // 4. watch delivery latency with N watchers.
        _ = try await api.request(.POST, "/api/v1/namespaces", body: #"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"watch"}}"#)
        let (_, listBody) = try await api.request(.GET, "/api/v1/namespaces/watch/configmaps")
        let rv = try JSON.parse(listBody)["metadata"]["resourceVersion"].stringValue ?? "0"
        let events = 100
        let latencies = LatencyBox()
        let ready = Counter()
        try await withThrowingTaskGroup(of: Void.self) { g in
            for _ in 0..<watchers {
                g.addTask {
                    var req = HTTPClientRequest(url: api.base + "/api/v1/namespaces/watch/configmaps?watch=true&resourceVersion=\(rv)&timeoutSeconds=120")
                    req.headers.add(name: "Authorization", value: "Bearer \(api.token)")
                    let resp = try await api.client.execute(req, timeout: .seconds(180))
                    await ready.add()
                    var buffer: [UInt8] = []
                    var seen = 0
                    for try await chunk in resp.body {
                        buffer.append(contentsOf: chunk.readableBytesView)
                        while let nl = buffer.firstIndex(of: 0x0A) {
                            let line = Array(buffer[..<nl])
                            buffer.removeFirst(nl + 1)
                            let now = Date().timeIntervalSince1970
                            if let ev = try? JSON.parse(line), let sent = ev["object"]["data"]["sent"].stringValue.flatMap(Double.init) {
                                await latencies.add((now - sent) * 1000)
                                seen += 1
                            }
                        }
                        if seen == events { return }
                    }
                }
            }
            g.addTask {
                while await ready.value < watchers { try await Task.sleep(for: .milliseconds(20)) }
                for i in 0..<events {
                    let body = #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"w-\#(i)"},"data":{"sent":"\#(Date().timeIntervalSince1970)"}}"#
                    _ = try await api.request(.POST, "/api/v1/namespaces/watch/configmaps", body: body)
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
            try await g.waitForAll()
        }
        let l = await latencies.values
        print(String(format: "watch delivery, %d watchers x %d events: p50 %.1f ms  p99 %.1f ms (%d deliveries)", watchers, events,
                     percentile(l, 0.5), percentile(l, 0.99), l.count))
        print("server RSS with 500 watches open: \(rssMB(server.processIdentifier)) MB")
        let size = (try? FileManager.default.attributesOfItem(atPath: dataDir + "/state.db")[.size] as? Int) ?? 0
        let wal = (try? FileManager.default.attributesOfItem(atPath: dataDir + "/state.db-wal")[.size] as? Int) ?? 0
        print(String(format: "database: %.1f MB (+ WAL %.1f MB)", Double(size ?? 0) / 1e6, Double(wal ?? 0) / 1e6))
        try await client.shutdown()
    }

    static func configMap(_ name: String) -> String {
        #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"\#(name)","labels":{"app":"bench"}},"data":{"key":"value-\#(name)"}}"#
    }

    static func pod(_ name: String, node: String) -> String {
        #"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"\#(name)","labels":{"app":"bench","tier":"edge"}},"spec":{"nodeName":"\#(node)","containers":[{"name":"app","image":"registry.local/app:1.0","ports":[{"containerPort":8080}],"env":[{"name":"MODE","value":"edge"}],"resources":{"requests":{"cpu":"100m","memory":"64Mi"}}}]}}"#
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    static func percentile(_ xs: [Double], _ p: Double) -> Double {
        guard !xs.isEmpty else { return .nan }
        let s = xs.sorted()
        return s[min(s.count - 1, Int((Double(s.count) * p).rounded(.up)) - 1)]
    }

    /// Total RSS, and its anonymous (heap) and file-backed (code, shared libraries) parts.
    static func rssMB(_ pid: Int32) -> String {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return "?" }
        func kb(_ field: String) -> Double {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }) else { return .nan }
            return Double(line.split(separator: " ").dropFirst().first ?? "") ?? .nan
        }
        return String(format: "%.1f (heap %.1f, code/libraries %.1f)", kb("VmRSS") / 1024, kb("RssAnon") / 1024, kb("RssFile") / 1024)
    }
}

struct API: Sendable {
    let client: HTTPClient
    let base: String
    let token: String

    func request(_ method: HTTPMethod, _ path: String, body: String? = nil) async throws -> (Int, [UInt8]) {
        var req = HTTPClientRequest(url: base + path)
        req.method = method
        req.headers.add(name: "Authorization", value: "Bearer \(token)")
        if let body {
            req.headers.add(name: "Content-Type", value: "application/json")
            req.body = .bytes(ByteBuffer(string: body))
        }
        let resp = try await client.execute(req, timeout: .seconds(60))
        let buf = try await resp.body.collect(upTo: 512 * 1024 * 1024)
        return (Int(resp.status.code), Array(buf.readableBytesView))
    }
}

actor LatencyBox {
    var values: [Double] = []
    func add(_ v: Double) { values.append(v) }
}

actor Counter {
    var value = 0
    func add() { value += 1 }
}
