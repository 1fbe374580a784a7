import Foundation
import KubeAPI
import Logging
import Testing
@testable import ObjectStore

func tempPath() -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("store-\(UUID().uuidString)")
    try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir.appendingPathComponent("state.db").path
}

func openStore(_ path: String, history: Int = 100) throws -> SQLiteObjectStore {
    try SQLiteObjectStore(configuration: .init(path: path, historyLimit: history), indexer: { _, obj in
        var labels: [String: String] = [:]
        for (k, v) in obj["metadata"]["labels"].objectValue ?? [:] { labels[k] = v.stringValue ?? "" }
        return IndexedAttributes(labels: labels)
    }, logger: Logger(label: "test"))
}

func cm(_ name: String, _ value: String = "v", labels: JSON = [:]) -> JSON {
    ["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": .string(name), "namespace": "ns", "labels": labels], "data": ["k": .string(value)]]
}

func key(_ name: String) -> String { "/core/configmaps/ns/\(name)" }

@Suite struct SQLiteObjectStoreTests {
    @Test func revisionsIncreaseAndAreStamped() async throws {
        let store = try openStore(tempPath())
        let a = try await store.write(key("a")) { _ in .put(cm("a")) }
        let b = try await store.write(key("b")) { _ in .put(cm("b")) }
        #expect(a.object!.revision < b.object!.revision)
        #expect(try a.object!.decode()["metadata"]["resourceVersion"] == .string(String(a.object!.revision)))
        #expect(await store.currentRevision() == b.object!.revision)
        let unchanged = try await store.write(key("a")) { _ in .unchanged }
        #expect(!unchanged.changed)
        #expect(await store.currentRevision() == b.object!.revision)
    }

    @Test func failingBodyWritesNothing() async throws {
        let store = try openStore(tempPath())
        struct Boom: Error {}
        await #expect(throws: Boom.self) { try await store.write(key("x")) { _ in throw Boom() } }
        #expect(await store.get(key("x")) == nil)
        #expect(await store.currentRevision() == 0)
    }

    @Test func listPaginatesAtOneRevision() async throws {
        let store = try openStore(tempPath())
        for i in 0..<5 { _ = try await store.write(key("o\(i)")) { _ in .put(cm("o\(i)")) } }
        let p1 = try await store.list(prefix: "/core/configmaps/ns/", startAfter: nil, limit: 2, revision: nil, filter: nil)
        #expect(p1.items.map(\.key) == [key("o0"), key("o1")])
        #expect(p1.remaining == 3)
        _ = try await store.write(key("o2")) { _ in .delete }
        _ = try await store.write(key("o11")) { _ in .put(cm("o11")) }
        let p2 = try await store.list(prefix: "/core/configmaps/ns/", startAfter: p1.continueAfter, limit: 10, revision: p1.revision, filter: nil)
        #expect(p2.items.map(\.key) == [key("o2"), key("o3"), key("o4")])
        let now = try await store.list(prefix: "/core/configmaps/ns/", startAfter: nil, limit: nil, revision: nil, filter: nil)
        #expect(now.items.map(\.key) == [key("o0"), key("o1"), key("o11"), key("o3"), key("o4")])
    }

    @Test func watchReplaysThenStreamsInOrder() async throws {
        let store = try openStore(tempPath())
        let first = try await store.write(key("a")) { _ in .put(cm("a")) }
        _ = try await store.write(key("a")) { _ in .put(cm("a", "2")) }
        let sub = try await store.watch(prefix: "/core/configmaps/", after: first.object!.revision)
        _ = try await store.write(key("a")) { _ in .delete }
        var types: [StoreEventType] = []
        for await item in sub.stream {
            if case .event(let ev) = item { types.append(ev.type) }
            if types.count == 2 { break }
        }
        #expect(types == [.modified, .deleted])
        await store.cancelWatch(sub.id)
    }

    @Test func compactedRevisionsAreRefused() async throws {
        let store = try openStore(tempPath(), history: 10)
        for i in 0..<30 { _ = try await store.write(key("c")) { _ in .put(cm("c", "\(i)")) } }
        await #expect(throws: StorageError.self) { try await store.watch(prefix: "/", after: 2) }
        await #expect(throws: StorageError.self) {
            try await store.list(prefix: "/core/configmaps/", startAfter: nil, limit: 1, revision: 2, filter: nil)
        }
        _ = try await store.watch(prefix: "/", after: 25)
        try await store.compact()
        let stats = await store.stats()
        #expect(stats.objectCount == 1 && stats.historyEvents == 10 && stats.databaseBytes > 0)
    }

    @Test func reopenKeepsObjectsRevisionAndHistory() async throws {
        let path = tempPath()
        var rev: Int64 = 0
        do {
            let store = try openStore(path)
            for i in 0..<20 { rev = try await store.write(key("k\(i % 4)")) { _ in .put(cm("k\(i % 4)", "\(i)")) }.object!.revision }
            _ = try await store.write(key("k0")) { _ in .delete }
            try await store.close()
        }
        let store = try openStore(path)
        #expect(await store.currentRevision() == rev + 1)
        #expect(await store.get(key("k0")) == nil)
        #expect(try await store.get(key("k3"))!.decode()["data"]["k"] == "19")
        // History survives: a watch from an older revision replays.
        let sub = try await store.watch(prefix: "/core/", after: rev - 1)
        var n = 0
        for await item in sub.stream { if case .event = item { n += 1 }; if n == 2 { break } }
        #expect(n == 2)
    }

    @Test func corruptDatabaseIsAClearError() throws {
        let path = tempPath()
        FileManager.default.createFile(atPath: path, contents: Data(repeating: 0x42, count: 8192))
        #expect(throws: StorageError.self) { try openStore(path) }
    }
}
