import CloudEdgeProtocol
import CloudHub
import EdgeHub
import Foundation
import KubeAPI
import Logging
import PKI
import ReliableSync
import Synchronization
import Testing

/// Objects meant for nodes, kept in memory (test-only stand-in for the EdgeController's caches).
final class MemorySource: NodeObjectSource {
    let objects = Mutex<[String: (node: String, object: SyncedObject)]>([:])
    func desired(for node: String) -> [String] { objects.withLock { $0.filter { $0.value.node == node }.map(\.key) } }
    func object(_ uid: String, for node: String) -> SyncedObject? {
        objects.withLock { $0[uid].flatMap { $0.node == node ? $0.object : nil } }
    }
    func put(_ uid: String, node: String, rv: UInt64) {
        let o = SyncedObject(uid: uid, apiVersion: "v1", kind: "ConfigMap", namespace: "default", name: uid, edgeKind: .configMap,
                             resourceVersion: rv, object: ["apiVersion": "v1", "kind": "ConfigMap",
                                                           "metadata": ["name": .string(uid), "namespace": "default", "uid": .string(uid),
                                                                        "resourceVersion": .string(String(rv))]])
        objects.withLock { $0[uid] = (node, o) }
    }
    /// The node's own Node object.
    func putNode(_ name: String, rv: UInt64) {
        let o = SyncedObject(uid: "node-\(name)", apiVersion: "v1", kind: "Node", namespace: nil, name: name, edgeKind: .node,
                             resourceVersion: rv, object: ["apiVersion": "v1", "kind": "Node",
                                                           "metadata": ["name": .string(name), "uid": .string("node-\(name)"),
                                                                        "resourceVersion": .string(String(rv))]])
        objects.withLock { $0["node-\(name)"] = (name, o) }
    }
    func remove(_ uid: String) -> String? { objects.withLock { $0.removeValue(forKey: uid)?.node } }
    func expected(_ node: String) -> [String: UInt64] {
        objects.withLock { d in
            var out: [String: UInt64] = [:]
            for (k, v) in d where v.node == node { out[k] = v.object.resourceVersion }
            return out
        }
    }
}

/// What a simulated edge node persisted: uid → resourceVersion (newest wins, as MetaManager does).
final class EdgeStoreSim: Sendable {
    let items = Mutex<[String: UInt64]>([:])
    func apply(_ m: Message) {
        let uid = m.content["metadata"]["uid"].stringValue ?? ""
        let rv = UInt64(m.resourceVersion ?? "0") ?? 0
        items.withLock { i in
            if m.route.operation == .delete { i[uid] = nil } else if (i[uid] ?? 0) <= rv { i[uid] = rv }
        }
    }
    var snapshot: [String: UInt64] { items.withLock { $0 } }
}



extension CloudHub: AcknowledgedSender {}

/// Many edge connections in one process, updates with random disconnects: every node ends with
/// exactly the newest version of each of its objects, and a resync sends only what changed.
@Suite struct FleetTests {
    static var logger: Logger { var l = Logger(label: "fleet"); l.logLevel = .error; return l }

    @Test func fleetConvergesThroughDisconnectsAndResyncSendsOnlyChanges() async throws {
        let nodeCount = 20, objectsPerNode = 10, updates = 2000
        let ca = try CertificateAuthority.generate(commonName: "fleet-ca")
        let serverCert = try ca.issue(commonName: "cloudcore", ipAddresses: ["127.0.0.1"], server: true, client: false)
        let source = MemorySource()
        let (changes, changeSink) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let syncBox = Mutex<ReliableSync?>(nil)
        let connects = Mutex<[String: Int]>([:])
        let (ports, portSink) = AsyncStream<Int>.makeStream()
        var config = CloudHubConfiguration()
        config.port = 0
        let hub = try CloudHub(configuration: config, ca: ca, serverCertificate: serverCert, authorizer: nil, logger: Self.logger,
                               onRunning: { portSink.yield($0) }) { event in
            guard let sync = syncBox.withLock({ $0 }) else { return }
            switch event {
            case .connected(let node): connects.withLock { $0[node, default: 0] += 1 }; sync.connected(node)
            case .disconnected(let node, _): sync.disconnected(node)
            default: break
            }
        }
        var options = ReliableSyncOptions()
        options.ackTimeout = .seconds(2)
        let sync = ReliableSync(source: source, sender: hub, recorder: nil, options: options, logger: Self.logger)
        syncBox.withLock { $0 = sync }
        let nodes = (0..<nodeCount).map { "edge-\($0)" }
        for (i, n) in nodes.enumerated() { for j in 0..<objectsPerNode { source.put("o-\(i)-\(j)", node: n, rv: 1) } }
        let stores = Dictionary(uniqueKeysWithValues: nodes.map { ($0, EdgeStoreSim()) })

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await hub.run() }
            group.addTask { try await sync.run() }
            var it = ports.makeAsyncIterator()
            let port = await it.next() ?? 0
            for n in nodes {
                let cert = try ca.issue(commonName: "system:node:\(n)", server: false, client: true)
                var cfg = EdgeHubConfiguration(cloudHost: "127.0.0.1", nodeName: n,
                                               credentials: NodeCredentials(certificatePEM: cert.certificatePEM, privateKeyPEM: cert.privateKeyPEM, caPEM: ca.certificatePEM))
                cfg.cloudPort = port
                cfg.reconnectBase = .milliseconds(20)
                cfg.reconnectMax = .milliseconds(200)
                let store = stores[n]!
                let edge = try EdgeHub(configuration: cfg, logger: Self.logger) { m in store.apply(m); changeSink.yield() }
                group.addTask { try await edge.run() }
            }

            func converged() -> Bool { nodes.allSatisfy { stores[$0]!.snapshot == source.expected($0) } }
            func waitConverged() async -> Bool {
                if converged() { return true }
                return await withTaskGroup(of: Bool.self) { g in
                    g.addTask { for await _ in changes { if converged() { return true } }; return false }
                    g.addTask {
                        // Re-check periodically too: the last change may land before the stream is read.
                        for _ in 0..<600 { try? await Task.sleep(for: .milliseconds(100)); if converged() { return true } }
                        return false
                    }
                    let r = await g.next() ?? false
                    g.cancelAll()
                    return r
                }
            }
            #expect(await waitConverged(), "initial delivery")

            // Updates, deletes and creations with random disconnects.
            var rng = SystemRandomNumberGenerator()
            var rvs: [String: UInt64] = [:]
            for u in 0..<updates {
                let i = Int.random(in: 0..<nodeCount, using: &rng), j = Int.random(in: 0..<(objectsPerNode + 2), using: &rng)
                let uid = "o-\(i)-\(j)"
                if u % 50 == 7, source.remove(uid) != nil {
                    sync.changed(uid, node: nodes[i])
                } else {
                    let rv = (rvs[uid] ?? 1) + 1
                    rvs[uid] = rv
                    source.put(uid, node: nodes[i], rv: rv)
                    sync.changed(uid, node: nodes[i])
                }
                if u % 200 == 100 { await hub.disconnect(nodes[Int.random(in: 0..<nodeCount, using: &rng)], reason: "test") }
            }
            #expect(await waitConverged(), "after updates and disconnects")
            var lost = 0, stale = 0
            for n in nodes {
                let have = stores[n]!.snapshot, want = source.expected(n)
                for (uid, rv) in want { if have[uid] == nil { lost += 1 } else if have[uid]! != rv { stale += 1 } }
            }
            #expect(lost == 0 && stale == 0)

            // Resync: 3 of a node's objects change without the cloud announcing them (as if they
            // changed while it was away); the reconnect comparison finds exactly those.
            let away = nodes[3]
            // A reconnect left over from the random disconnects could compare (and send) the
            // changes before the test's own disconnect: first cycle the connection once and wait
            // for that resync to finish, so the node has exactly one live connection.
            func reconnectAndSettle() async throws {
                let before = connects.withLock { $0[away] ?? 0 }
                await hub.disconnect(away, reason: "settle")
                for _ in 0..<500 {
                    let c = sync.counts(away)
                    if connects.withLock({ $0[away] ?? 0 }) > before, sync.pending(away) == 0,
                       c.sent + c.skipped == source.desired(for: away).count { return }
                    try await Task.sleep(for: .milliseconds(20))
                }
                Issue.record("node \(away) did not settle")
            }
            try await reconnectAndSettle()
            let changedUIDs = Array(source.desired(for: away).sorted().prefix(3))
            for uid in changedUIDs {
                source.put(uid, node: away, rv: (source.object(uid, for: away)?.resourceVersion ?? 1) + 100)
            }
            await hub.disconnect(away, reason: "resync test")
            #expect(await waitConverged(), "after the resync")
            // The edge stores a message before the cloud has its ack (and counts it).
            for _ in 0..<250 where sync.pending(away) > 0 { try await Task.sleep(for: .milliseconds(20)) }
            let counts = sync.counts(away)
            #expect(counts.sent == 3, "resync sent \(counts.sent) objects, expected only the 3 changed ones")
            #expect(counts.skipped == source.desired(for: away).count - 3)
            group.cancelAll()
        }
    }
}
