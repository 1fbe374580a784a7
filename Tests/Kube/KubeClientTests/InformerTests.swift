import KubeAPI
import Logging
import Testing
@testable import ControllerRuntime
@testable import KubeClient

@Suite(.serialized) struct InformerTests {
    @Test func listThenWatchKeepsTheCacheAndReportsChanges() async throws {
        try await withServer { client in
            _ = try await client.create(configMaps, namespace: "default", cm("before"))
            let informer = Informer(client: client, type: configMaps, namespace: "default", logger: Logger(label: "test"))
            let (events, sink) = AsyncStream<String>.makeStream()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await informer.run { ev in
                        if isRootCA(ev) { return }
                        switch ev {
                        case .added(let o): sink.yield("added \(o["metadata"]["name"].stringValue ?? "")")
                        case .updated(_, let n): sink.yield("updated \(n["metadata"]["name"].stringValue ?? "") \(n["data"]["k"].stringValue ?? "")")
                        case .deleted(let o): sink.yield("deleted \(o["metadata"]["name"].stringValue ?? "")")
                        case .synced: sink.yield("synced")
                        }
                    }
                }
                var it = events.makeAsyncIterator()
                #expect(await it.next() == "added before")
                #expect(await it.next() == "synced")
                _ = try await client.create(configMaps, namespace: "default", cm("a"))
                #expect(await it.next() == "added a")
                _ = try await client.patch(configMaps, namespace: "default", name: "a", ["data": ["k": "2"]])
                #expect(await it.next() == "updated a 2")
                try await client.delete(configMaps, namespace: "default", name: "a")
                #expect(await it.next() == "deleted a")
                #expect(informer.cache.get("default/before") != nil && informer.cache.get("default/a") == nil)
                group.cancelAll()
            }
        }
    }

    @Test func relistReconcilesAStaleCache() async throws {
        try await withServer { client in
            _ = try await client.create(configMaps, namespace: "default", cm("live"))
            let informer = Informer(client: client, type: configMaps, namespace: "default", logger: Logger(label: "test"))
            informer.cache.items.withLock { $0["default/gone"] = cm("gone") }
            let seen = Box()
            _ = try await informer.relist { ev in
                if isRootCA(ev) { return }
                switch ev {
                case .added(let o): await seen.add("added \(o["metadata"]["name"].stringValue ?? "")")
                case .deleted(let o): await seen.add("deleted \(o["metadata"]["name"].stringValue ?? "")")
                default: break
                }
            }
            #expect(await seen.items.sorted() == ["added live", "deleted gone"])
            #expect(informer.cache.list().compactMap { $0["metadata"]["name"].stringValue }.sorted() == ["kube-root-ca.crt", "live"])
        }
    }
}

actor Box {
    var items: [String] = []
    func add(_ s: String) { items.append(s) }
}

/// Every namespace holds the cluster CA ConfigMap (as on kube-apiserver); not these tests' objects.
func isRootCA(_ ev: InformerEvent) -> Bool {
    switch ev {
    case .added(let o), .deleted(let o), .updated(_, let o): return o["metadata"]["name"] == "kube-root-ca.crt"
    case .synced: return false
    }
}
