import CloudEdgeProtocol
import Foundation
import KubeAPI
import Logging
import MetaStore
import ReliableSync
import TestSupport
import Testing

/// Reliable delivery end to end without sockets: ReliableSync on the cloud side, the in-memory
/// channel, and a real edge store (SQLite in a temporary directory) that acknowledges only what it
/// committed. These run in parallel with each other and with everything else.
@Suite struct InMemoryChannelTests {
    static var logger: Logger { var l = Logger(label: "channel"); l.logLevel = .error; return l }

    /// A cloud with one ReliableSync and a node's store, wired through the channel.
    struct Rig {
        let source = MemorySource()
        let channel = InMemoryChannel()
        let sync: ReliableSync
        let store: SQLiteMetaStore
        let directory: String

        init() throws {
            var options = ReliableSyncOptions()
            options.ackTimeout = .seconds(2)
            sync = ReliableSync(source: source, sender: channel, recorder: nil, options: options, logger: InMemoryChannelTests.logger)
            directory = NSTemporaryDirectory() + "channel-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            store = try SQLiteMetaStore(path: directory + "/edge.db", recover: false, logger: InMemoryChannelTests.logger)
        }

        /// The node (re)connects: the channel delivers into its store, and it reports its inventory.
        func connect(_ node: String) async throws {
            let store = self.store
            channel.connect(node) { m in try await store.apply(m) }
            sync.connected(node)
            let items = try await store.inventory()
            for m in InventoryPart.messages(node: node, items: items) {
                let part = try InventoryPart(content: m.content)
                let records = part.items.compactMap(DeliveredRecord.init)
                sync.inventory(node, session: part.session, part: part.part, parts: part.parts, records: records)
            }
        }

        /// uid → resourceVersion of the ConfigMaps the node's store holds.
        func held() async throws -> [String: UInt64] {
            var out: [String: UInt64] = [:]
            for r in try await store.list(type: .configMap) { out[r.uid] = r.resourceVersion }
            return out
        }

        func cleanUp() async {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    func withRig(_ body: @Sendable (Rig) async throws -> Void) async throws {
        let rig = try Rig()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await rig.sync.run() }
            defer { group.cancelAll() }
            do { try await body(rig) } catch {
                await rig.cleanUp()
                throw error
            }
        }
        await rig.cleanUp()
    }

    /// A Node goes as `update` even the first time, as cloudcore sends it (edgecore's metamanager
    /// hands a Node insert to edged instead of only storing it); other objects start with insert.
    @Test func theNodeGoesAsUpdateAsCloudcoreSendsIt() async throws {
        try await withRig { rig in
            rig.source.putNode("n1", rv: 3)
            rig.source.put("cm-0", node: "n1", rv: 10)
            try await rig.connect("n1")
            try await eventually("both sent") { rig.channel.sent(to: "n1").count >= 2 }
            let sent = rig.channel.sent(to: "n1")
            #expect(sent.first { $0.route.resource.hasSuffix("/node/n1") }?.route.operation == .update)
            #expect(sent.first { $0.route.resource == "default/configmap/cm-0" }?.route.operation == .insert)
        }
    }

    @Test func objectsReachTheNodesStoreAndResyncSendsOnlyWhatChanged() async throws {
        try await withRig { rig in
            for i in 0..<5 { rig.source.put("cm-\(i)", node: "n1", rv: 10) }
            try await rig.connect("n1")
            try await eventually("all five stored") { try await rig.held() == rig.source.expected("n1") }
            #expect(rig.channel.sent(to: "n1").count == 5)
            #expect(rig.channel.sent(to: "n1").allSatisfy { $0.route.operation == .insert && $0.route.resource.hasPrefix("default/configmap/") })

            // Every delivery acknowledged (recorded as delivered) before the node goes away.
            try await eventually("first sync acknowledged") { rig.sync.pending("n1") == 0 && rig.sync.delivered("n1").count == 5 }
            // Offline: one object changes, one goes away, one is added.
            rig.channel.disconnect("n1")
            rig.sync.disconnected("n1")
            rig.source.put("cm-1", node: "n1", rv: 11)
            _ = rig.source.remove("cm-2")
            rig.source.put("cm-9", node: "n1", rv: 12)
            try await rig.connect("n1")
            try await eventually("the store caught up") { try await rig.held() == rig.source.expected("n1") }
            try await eventually("resync settled") { rig.sync.pending("n1") == 0 }
            let c = rig.sync.counts("n1")
            #expect(c.sent == 2 && c.deleted == 1 && c.skipped == 3, "sent \(c.sent), deleted \(c.deleted), unchanged \(c.skipped)")
            #expect(rig.channel.sent(to: "n1").count == 5 + 3)
        }
    }

    @Test func aLostMessageIsSentAgainAndNothingUnacknowledgedCountsAsDelivered() async throws {
        try await withRig { rig in
            rig.channel.dropNext(1, to: "n1")
            rig.source.put("cm-a", node: "n1", rv: 3)
            try await rig.connect("n1")
            // The first attempt is lost: not recorded as delivered until a later attempt is acked.
            try await eventually(timeout: .seconds(20), "delivered after the retry") { try await rig.held() == ["cm-a": 3] }
            try await eventually("acknowledged") { rig.sync.delivered("n1")["cm-a"]?.resourceVersion == 3 }
            #expect(rig.channel.sent(to: "n1").count >= 1)
        }
    }

    @Test func aMessageTheNodeCannotStoreIsNotAcknowledged() async throws {
        try await withRig { rig in
            let channel = rig.channel
            // The node refuses everything (a store that fails): nothing may count as delivered.
            channel.connect("n2") { _ in throw MetaStoreError("disk full") }
            rig.source.put("cm-x", node: "n2", rv: 1)
            rig.sync.connected("n2")
            // A second attempt comes only once the first one's outcome was taken (a retry), so by
            // then a wrongly acknowledged delivery would be recorded — and would not be retried.
            try await eventually(timeout: .seconds(20), "the refused message was retried") { channel.sent(to: "n2").count >= 2 }
            #expect(rig.sync.delivered("n2").isEmpty)
        }
    }
}
