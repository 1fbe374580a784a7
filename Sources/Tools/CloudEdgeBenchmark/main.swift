import CloudEdgeProtocol
import CloudHub
import Foundation
import KubeAPI
import Logging
import PKI
import ReliableSync
import Synchronization

// Cloud–edge channel benchmark: CloudHub, the certificate service and reliable delivery run in
// this process; `swiftedge-fleet` (next to this executable) runs the nodes in another, so the
// memory figures are the cloud's alone. For each fleet size it prints: join + connect time,
// cloud memory per idle connection, acknowledged delivery rate and ack latency, and the time
// for the whole fleet to reconnect and resync after an outage.
// Sizes: BENCH_NODES (default "1000,5000"), BENCH_OBJECTS per node (default: 100,000 messages
// spread over the fleet).

/// Objects meant for nodes, in memory (the EdgeController's caches in the real cloud).
final class BenchSource: NodeObjectSource {
    let objects = Mutex<[String: [String: SyncedObject]]>([:])
    func desired(for node: String) -> [String] { objects.withLock { Array(($0[node] ?? [:]).keys) } }
    func object(_ uid: String, for node: String) -> SyncedObject? { objects.withLock { $0[node]?[uid] } }
    func put(node: String, index: Int, rv: UInt64) -> String {
        let uid = "\(node)-cm-\(index)"
        let name = "cm-\(index)"
        let o = SyncedObject(uid: uid, apiVersion: "v1", kind: "ConfigMap", namespace: "default", name: name, edgeKind: .configMap,
                             resourceVersion: rv, object: ["apiVersion": "v1", "kind": "ConfigMap",
                                                           "metadata": ["name": .string(name), "namespace": "default", "uid": .string(uid),
                                                                        "resourceVersion": .string(String(rv))],
                                                           "data": ["config.yaml": .string(String(repeating: "k: v\n", count: 40))]])
        objects.withLock { $0[node, default: [:]][uid] = o }
        return uid
    }
}

/// CloudHub, with every send→ack round trip timed.
final class TimedSender: AcknowledgedSender {
    let hub: CloudHub
    let latencies = Mutex<[Double]>([])
    let acked = Atomic<Int>(0)
    init(hub: CloudHub) { self.hub = hub }
    func sendAwaitingAck(_ message: Message, to node: String, timeout: Duration) async -> Bool {
        let start = ContinuousClock.now
        let ok = await hub.sendAwaitingAck(message, to: node, timeout: timeout)
        if ok {
            let d = ContinuousClock.now - start
            latencies.withLock { $0.append(Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18) }
            acked.wrappingAdd(1, ordering: .relaxed)
        }
        return ok
    }
}

func rssKB() -> Int {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
    }
    return 0
}

/// CPU seconds this process has used (user + system), from /proc/self/stat.
func cpuSeconds() -> Double {
    let stat = (try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8)) ?? ""
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.split(separator: ")").last?.split(separator: " ") ?? []
    guard rest.count > 13, let user = Double(rest[11]), let system = Double(rest[12]) else { return 0 }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

func percentile(_ xs: [Double], _ p: Double) -> Double {
    guard !xs.isEmpty else { return 0 }
    let s = xs.sorted()
    return s[min(s.count - 1, Int(Double(s.count) * p))]
}

/// Polls until `pred` holds (benchmark progress, not test synchronisation).
func until(_ what: String, timeout: Duration = .seconds(300), _ pred: () -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !pred() {
        if ContinuousClock.now > deadline { throw BenchError(what: "timed out: \(what)") }
        try await Task.sleep(for: .milliseconds(20))
    }
}

struct BenchError: Error { var what: String }

func runFleet(nodes: Int, objectsPerNode: Int) async throws {
    var logger = Logger(label: "bench")
    logger.logLevel = Logger.Level(rawValue: ProcessInfo.processInfo.environment["BENCH_LOG"] ?? "error") ?? .error
    let ca = try CertificateAuthority.generate(commonName: "bench-ca")
    let serverCert = try ca.issue(commonName: "cloudcore", ipAddresses: ["127.0.0.1"], server: true, client: false)
    let token = try JoinToken.issue(ca: ca, expires: Date().addingTimeInterval(3600))
    let source = BenchSource()
    let syncBox = Mutex<ReliableSync?>(nil)
    let (ports, portSink) = AsyncStream<(String, Int)>.makeStream()
    var config = CloudHubConfiguration()
    config.port = 0
    config.nodeLimit = nodes + 10
    let hub = try CloudHub(configuration: config, ca: ca, serverCertificate: serverCert, authorizer: nil, logger: logger,
                           onRunning: { portSink.yield(("hub", $0)) }) { event in
        switch event {
        case .connected(let n): syncBox.withLock { $0 }?.connected(n)
        case .disconnected(let n, _): syncBox.withLock { $0 }?.disconnected(n)
        default: break
        }
    }
    let certs = CertificateServer(host: "127.0.0.1", port: 0, ca: ca, serverCertificate: serverCert, logger: logger,
                                  onRunning: { portSink.yield(("cert", $0)) })
    let sender = TimedSender(hub: hub)
    let sync = ReliableSync(source: source, sender: sender, recorder: nil, logger: logger)
    syncBox.withLock { $0 = sync }
    let fleetBin = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("swiftedge-fleet").path
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swiftedge-bench-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }

    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await hub.run() }
        group.addTask { try await certs.run() }
        group.addTask { try await sync.run() }
        var found: [String: Int] = [:]
        for await (k, v) in ports { found[k] = v; if found.count == 2 { break } }
        let names = (0..<nodes).map { "bench-\($0)" }
        let rssBefore = rssKB()

        let statusPort = Int.random(in: 20000..<30000)
        let fleet = Process()
        fleet.executableURL = URL(fileURLWithPath: fleetBin)
        fleet.arguments = ["--nodes", "\(nodes)", "--prefix", "bench-", "--token", token.string, "--data-dir", dir,
                           "--cloudhub-port", "\(found["hub"]!)", "--cert-port", "\(found["cert"]!)", "--status-port", "\(statusPort)",
                           "--join-concurrency", "32", "--log-level", ProcessInfo.processInfo.environment["BENCH_FLEET_LOG"] ?? "error"]
        fleet.standardOutput = FileHandle.nullDevice
        let t0 = ContinuousClock.now
        try fleet.run()
        defer { fleet.terminate(); fleet.waitUntilExit() }
        try await until("\(nodes) nodes connected") { hub.connectedNodes.count == nodes }
        let joinTime = seconds(ContinuousClock.now - t0)
        // Connection memory without the joins' one-off allocations: off the network and back.
        kill(fleet.processIdentifier, SIGUSR1)
        try await until("fleet offline") { hub.connectedNodes.isEmpty }
        try await Task.sleep(for: .seconds(1))
        let rssIdle = rssKB()
        let t0b = ContinuousClock.now
        kill(fleet.processIdentifier, SIGUSR2)
        try await until("\(nodes) nodes reconnected") { hub.connectedNodes.count == nodes }
        let connectTime = seconds(ContinuousClock.now - t0b)
        try await Task.sleep(for: .seconds(2))  // let connection buffers settle before measuring
        let rssConnected = rssKB()
        let perConn = Double(rssConnected - rssIdle) / Double(nodes)
        print(String(format: "  %5d nodes: joined (CSR each) and connected in %.1f s; reconnected in %.1f s; cloud RSS %d MB before, %d MB with no node, %d MB with all connected: %.1f KB per idle connection",
                     nodes, joinTime, connectTime, rssBefore / 1024, rssIdle / 1024, rssConnected / 1024, perConn))

        // Delivery: objectsPerNode new objects for every node at once.
        let total = nodes * objectsPerNode
        sender.latencies.withLock { $0.removeAll(keepingCapacity: true) }
        let ackedBefore = sender.acked.load(ordering: .relaxed)
        let cpu1 = cpuSeconds()
        let t1 = ContinuousClock.now
        for n in names {
            for i in 0..<objectsPerNode { let uid = source.put(node: n, index: i, rv: 1); sync.changed(uid, node: n) }
        }
        try await until("\(total) acks") { sender.acked.load(ordering: .relaxed) - ackedBefore >= total }
        let deliverTime = seconds(ContinuousClock.now - t1)
        let cloudCPU = cpuSeconds() - cpu1
        let lat = sender.latencies.withLock { $0 }
        print(String(format: "  %5d nodes: %d objects delivered and acked in %.2f s = %.0f acked msgs/s; ack latency p50 %.1f ms, p99 %.1f ms",
                     nodes, total, deliverTime, Double(total) / deliverTime, percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000))
        print(String(format: "  %5d nodes: the cloud side used %.2f CPU-seconds for them = %.0f acked msgs per CPU-second (the fleet shares the 2 cores)",
                     nodes, cloudCPU, Double(total) / max(cloudCPU, 0.001)))

        // Outage: the whole fleet goes offline, one object per node changes, the fleet returns.
        kill(fleet.processIdentifier, SIGUSR1)  // the fleet goes offline
        try await until("fleet offline") { hub.connectedNodes.isEmpty }
        for n in names { _ = source.put(node: n, index: 0, rv: 2) }
        let t2 = ContinuousClock.now
        kill(fleet.processIdentifier, SIGUSR2)  // and back online
        try await until("fleet resynced") {
            hub.connectedNodes.count == nodes && names.allSatisfy { sync.counts($0).sent == 1 && sync.pending($0) == 0 }
        }
        let resyncTime = seconds(ContinuousClock.now - t2)
        let skipped = names.reduce(0) { $0 + sync.counts($1).skipped }
        print(String(format: "  %5d nodes: reconnected and resynced in %.2f s (sent %d changed, compared %d unchanged)",
                     nodes, resyncTime, nodes, skipped))
        group.cancelAll()
    }
}

let sizes = (ProcessInfo.processInfo.environment["BENCH_NODES"] ?? "1000,5000").split(separator: ",").compactMap { Int($0) }
let objects = Int(ProcessInfo.processInfo.environment["BENCH_OBJECTS"] ?? "")
print("Cloud–edge channel (CloudHub + reliable delivery in this process, nodes in swiftedge-fleet; TLS on loopback)")
for n in sizes { try await runFleet(nodes: n, objectsPerNode: objects ?? max(1, 100_000 / n)) }
