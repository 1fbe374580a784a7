import APIServer
import Foundation
import KubeAPI
import Logging
import ServiceLifecycle
import Synchronization
import Testing
@testable import KubeClient

/// Runs a real embedded API server (HTTPS, random port) for the duration of `body`.
func withServer(historyLimit: Int = 10_000, nameSuffix: (@Sendable () -> String)? = nil, _ body: @Sendable (HTTPKubeClient) async throws -> Void) async throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kc-\(UUID().uuidString)").path
    let logger = Logger(label: "test")
    let (portStream, portCont) = AsyncStream<Int>.makeStream()
    var config = EmbeddedAPIServerConfiguration(dataDirectory: dir, port: 0, kubeconfigPath: dir + "/admin.kubeconfig",
                                                historyLimit: historyLimit)
    if let nameSuffix { config.generatedNameSuffix = nameSuffix }
    let server = try await EmbeddedAPIServer.open(config, logger: logger) { port in portCont.yield(port) }
    let group = ServiceGroup(configuration: .init(services: server.services.map { .init(service: $0) }, logger: logger))
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        var it = portStream.makeAsyncIterator()
        let port = await it.next()!
        var kc = try KubeConfig.load(path: dir + "/admin.kubeconfig")
        kc.server = "https://127.0.0.1:\(port)"
        let client = try HTTPKubeClient(config: kc, logger: logger)
        do { try await body(client) } catch {
            try await client.shutdown()
            await group.triggerGracefulShutdown()
            throw error
        }
        try await client.shutdown()
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
    }
    try await server.store.close()
}

let configMaps = BuiltinResources.all.first { $0.resource == "configmaps" }!

func cm(_ name: String, _ v: String = "1") -> JSON {
    ["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": .string(name)], "data": ["k": .string(v)]]
}

@Suite(.serialized) struct KubeClientTests {
    @Test func kubeconfigAndCRUD() async throws {
        try await withServer { client in
            // The admin kubeconfig carries the admin's client certificate (as kubeadm's admin.conf).
            #expect(client.config.clientCertificatePEM != nil && client.config.clientKeyPEM != nil && client.config.caPEM != nil
                && client.config.namespace == "default")
            let created = try await client.create(configMaps, namespace: "default", cm("a"))
            #expect(created["metadata"]["uid"].stringValue != nil)
            var got = try await client.get(configMaps, namespace: "default", name: "a")
            got["data"]["k"] = "2"
            let updated = try await client.update(configMaps, namespace: "default", got)
            #expect(updated["data"]["k"] == "2")
            let patched = try await client.patch(configMaps, namespace: "default", name: "a", ["data": ["x": "y"]])
            #expect(patched["data"] == ["k": "2", "x": "y"])
            let list = try await client.list(configMaps, namespace: "default", labelSelector: "missing notin (a)")
            #expect(list["items"].arrayValue?.compactMap { $0["metadata"]["name"].stringValue }.sorted() == ["a", "kube-root-ca.crt"])
            try await client.delete(configMaps, namespace: "default", name: "a")
            await #expect(throws: StatusError.self) { try await client.get(configMaps, namespace: "default", name: "a") }
            do {
                _ = try await client.update(configMaps, namespace: "default", got)
                Issue.record("update of a deleted object succeeded")
            } catch let e as StatusError {
                #expect(e.code == 404 && e.reason.rawValue == "NotFound")
            }
        }
    }

    @Test func watchDeliversEventsAndExpiredIs410() async throws {
        try await withServer(historyLimit: 20) { client in
            let rv = try await client.list(configMaps, namespace: "default")["metadata"]["resourceVersion"].stringValue
            _ = try await client.create(configMaps, namespace: "default", cm("w"))
            _ = try await client.patch(configMaps, namespace: "default", name: "w", ["data": ["k": "2"]])
            try await client.delete(configMaps, namespace: "default", name: "w")
            var types: [KubeWatchEvent.EventType] = []
            for try await ev in try await client.watch(configMaps, namespace: "default", resourceVersion: rv, labelSelector: nil, fieldSelector: nil, timeoutSeconds: 5) {
                types.append(ev.type)
                if types.count == 3 { break }
            }
            #expect(types == [.added, .modified, .deleted])
            for i in 0..<30 { _ = try await client.create(configMaps, namespace: "default", cm("c\(i)")) }
            do {
                for try await _ in try await client.watch(configMaps, namespace: "default", resourceVersion: rv, labelSelector: nil, fieldSelector: nil, timeoutSeconds: 5) {}
                Issue.record("watch from a compacted resourceVersion did not fail")
            } catch let e as StatusError {
                #expect(e.code == 410)
            }
        }
    }
}


/// kube-apiserver retries a taken generated name (RetryGenerateName); the client never sees the
/// collision unless every attempt collides.
@Test func generateNameCollisionsAreRetried() async throws {
    let suffixes = Mutex<[String]>(["taken", "taken", "taken", "fresh"] + Array(repeating: "taken", count: 8))
    let next: @Sendable () -> String = { suffixes.withLock { $0.isEmpty ? "later" : $0.removeFirst() } }
    try await withServer(nameSuffix: next) { client in
        let generated: JSON = ["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["generateName": "gen-"]]
        let first = try await client.create(configMaps, namespace: "default", generated)
        #expect(first["metadata"]["name"].stringValue == "gen-taken")
        let second = try await client.create(configMaps, namespace: "default", generated)
        #expect(second["metadata"]["name"].stringValue == "gen-fresh")
        // Eight collisions in a row: the conflict is reported, nothing is stored.
        do {
            _ = try await client.create(configMaps, namespace: "default", generated)
            Issue.record("a create whose every generated name collides must fail")
        } catch let e as StatusError {
            #expect(e.code == 409)
        }
        #expect(suffixes.withLock { $0.isEmpty })
        let names = (try await client.list(configMaps, namespace: "default")["items"].arrayValue ?? []).compactMap { $0["metadata"]["name"].stringValue }
        #expect(Set(names) == ["gen-taken", "gen-fresh", "kube-root-ca.crt"])
    }
}
