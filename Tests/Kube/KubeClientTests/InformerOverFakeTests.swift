import KubeAPI
import Logging
import Synchronization
import Testing
import TestSupport
@testable import ControllerRuntime

/// The Informer's reflector paths, driven deterministically through the in-memory API: list then
/// watch, re-watch from the last version when the server closes the watch (missed changes
/// replayed, no relist), relist when the version has expired (410), reconciling the cache.
@Suite struct InformerOverFakeTests {
    typealias T = TestResources

    /// What the handler was told, in order.
    final class Log: Sendable {
        let items = Mutex<[String]>([])
        func add(_ s: String) { items.withLock { $0.append(s) } }
        var all: [String] { items.withLock { $0 } }
        func reset() { items.withLock { $0 = [] } }
    }

    static func describe(_ ev: InformerEvent) -> String {
        switch ev {
        case .added(let o): "added \(o["metadata"]["name"].stringValue ?? "")"
        case .updated(_, let n): "updated \(n["metadata"]["name"].stringValue ?? "") \(n["data"]["k"].stringValue ?? "-")"
        case .deleted(let o): "deleted \(o["metadata"]["name"].stringValue ?? "")"
        case .synced: "synced"
        }
    }

    func withInformer(_ client: InMemoryKubeClient, _ body: (Informer, Log) async throws -> Void) async throws {
        var logger = Logger(label: "informer-test")
        logger.logLevel = .error
        let informer = Informer(client: client, type: T.configMaps, namespace: "default", logger: logger)
        let log = Log()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await informer.run { log.add(Self.describe($0)) } }
            try await body(informer, log)
            group.cancelAll()
        }
    }

    @Test func listsThenWatchesAndKeepsTheCache() async throws {
        let c = InMemoryKubeClient()
        c.seed(T.configMaps, Fixtures.configMap("before"))
        c.seed(T.configMaps, Fixtures.configMap("elsewhere", namespace: "other"))
        try await withInformer(c) { informer, log in
            try await eventually("initial list") { log.all == ["added before", "synced"] }
            try await eventually("watch open") { c.openWatches == 1 }
            _ = try await c.create(T.configMaps, namespace: "default", Fixtures.configMap("a"))
            _ = try await c.patch(T.configMaps, namespace: "default", name: "a", ["data": ["k": "2"]])
            _ = try await c.create(T.configMaps, namespace: "other", Fixtures.configMap("b", namespace: "other"))
            try await c.delete(T.configMaps, namespace: "default", name: "before")
            try await eventually("changes in order") { log.all == ["added before", "synced", "added a", "updated a 2", "deleted before"] }
            #expect(informer.cache.get("default/a")?["data"]["k"] == "2")
            #expect(informer.cache.get("default/before") == nil && informer.cache.count == 1)
            #expect(c.calls("list").count == 1 && c.calls("watch").count == 1)
        }
    }

    @Test func reWatchesFromTheLastVersionWhenTheWatchCloses() async throws {
        let c = InMemoryKubeClient()
        c.seed(T.configMaps, Fixtures.configMap("keep"))
        c.seed(T.configMaps, Fixtures.configMap("drop"))
        try await withInformer(c) { informer, log in
            try await eventually("synced and watching") { log.all.last == "synced" && c.openWatches == 1 }
            // The server closes the watch; the next one waits while changes happen unseen.
            c.holdWatches()
            c.closeWatches()
            try await eventually("re-watch requested") { c.calls("watch").count == 2 }
            _ = try await c.create(T.configMaps, namespace: "default", Fixtures.configMap("missed"))
            _ = try await c.patch(T.configMaps, namespace: "default", name: "keep", ["data": ["k": "x"]])
            try await c.delete(T.configMaps, namespace: "default", name: "drop")
            #expect(!log.all.contains("added missed"))
            c.releaseWatches()
            // Replayed from the last version seen: exactly the three changes, no relist, no duplicates.
            try await eventually("missed changes replayed") { log.all.suffix(3) == ["added missed", "updated keep x", "deleted drop"] }
            #expect(c.calls("list").count == 1)
            #expect(log.all.filter { $0 == "synced" }.count == 1)
            #expect(Set(informer.cache.list().compactMap { $0["metadata"]["name"].stringValue }) == ["keep", "missed"])
            // And it keeps watching live.
            try await eventually("watch open") { c.openWatches == 1 }
            _ = try await c.create(T.configMaps, namespace: "default", Fixtures.configMap("live"))
            try await eventually("live event") { log.all.last == "added live" }
        }
    }

    @Test func relistsWhenTheVersionExpired() async throws {
        let c = InMemoryKubeClient()
        c.seed(T.configMaps, Fixtures.configMap("keep"))
        c.seed(T.configMaps, Fixtures.configMap("drop"))
        try await withInformer(c) { informer, log in
            try await eventually("synced and watching") { log.all.last == "synced" && c.openWatches == 1 }
            c.holdWatches()
            c.closeWatches()
            try await eventually("re-watch requested") { c.calls("watch").count == 2 }
            _ = try await c.create(T.configMaps, namespace: "default", Fixtures.configMap("new"))
            _ = try await c.patch(T.configMaps, namespace: "default", name: "keep", ["data": ["k": "y"]])
            try await c.delete(T.configMaps, namespace: "default", name: "drop")
            c.compact()  // the informer's version is now too old: 410
            log.reset()
            c.releaseWatches()
            // The relist tells the difference to the cache, then synced again, then watches from the list's version.
            try await eventually("relisted") { log.all.count == 4 && log.all.last == "synced" }
            #expect(Set(log.all.dropLast()) == ["added new", "updated keep y", "deleted drop"])
            #expect(c.calls("list").count == 2)
            #expect(Set(informer.cache.list().compactMap { $0["metadata"]["name"].stringValue }) == ["keep", "new"])
            try await eventually("watching again") { c.calls("watch").count == 3 && c.openWatches == 1 }
            try await c.delete(T.configMaps, namespace: "default", name: "new")
            try await eventually("live event after relist") { log.all.last == "deleted new" }
        }
    }
}
