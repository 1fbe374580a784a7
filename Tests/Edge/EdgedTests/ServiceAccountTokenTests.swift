import Foundation
import KubeAPI
import Logging
import MetaStore
import Synchronization
import Testing
@testable import Edged

/// Edged's token manager: a bound token per projected source, asked of the cloud once, kept in
/// the node's store, replaced after 80 % of the stated lifetime, used offline until its own `exp`.
@Suite struct ServiceAccountTokenTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("edged-tokens-\(UUID().uuidString)").path

    /// A JWT-shaped token whose payload carries `exp` (Edged reads, not verifies, it).
    static func jwt(exp: Date, n: Int) -> String {
        let payload = Data("{\"exp\":\(Int(exp.timeIntervalSince1970)),\"n\":\(n)}".utf8).base64EncodedString()
            .replacingOccurrences(of: "=", with: "").replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        return "eyJhbGciOiJFUzI1NiJ9.\(payload).c2ln"
    }

    /// A cloud that answers TokenRequests (stated lifetime 3607 s, the token valid a year) until told to go away.
    final class Cloud: Sendable {
        let state = Mutex<(requests: [JSON], online: Bool)>(([], true))
        func answer(_ namespace: String, _ account: String, _ request: JSON, now: Date) throws -> JSON {
            let (n, online) = state.withLock { s in s.requests.append(request); return (s.requests.count, s.online) }
            guard online else { throw TokenRequestError("the cloud did not answer the token request (offline?)") }
            return ["status": ["token": .string(ServiceAccountTokenTests.jwt(exp: now.addingTimeInterval(365 * 86400), n: n)),
                               "expirationTimestamp": .string(KubeTime(seconds: Int64(now.timeIntervalSince1970) + 3607).rfc3339)]]
        }
    }

    @Test func tokensAreKeptRefreshedAndUsedOfflineUntilTheyExpire() async throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try SQLiteMetaStore(path: directory + "/edge.db", recover: false, logger: Logger(label: "test"))
        let t0 = Date(timeIntervalSince1970: Double(Int(Date().timeIntervalSince1970)))
        let clock = Mutex(t0)
        let cloud = Cloud()
        let source = ServiceAccountTokenSource(store: PodTokenStore(storage: store)) { ns, sa, request in
            try cloud.answer(ns, sa, request, now: clock.withLock { $0 })
        }
        let pod = try PodModel(["metadata": ["name": "p", "namespace": "shop", "uid": "uid-1"],
                                "spec": ["serviceAccountName": "reader", "containers": [["name": "c", "image": "busybox"]]]])
        let projection = try JSONValueDecoder().decode(Core.ServiceAccountTokenProjection.self, from: ["expirationSeconds": 3607, "path": "token"])
        func token(at t: Date) async throws -> String {
            clock.withLock { $0 = t }
            return try await source.token(pod, volume: "kube-api-access-x", projection, now: t)
        }

        let first = try await token(at: t0)
        let asked = try #require(cloud.state.withLock { $0.requests.first })
        #expect(asked["spec"]["boundObjectRef"] == ["apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "uid-1"])
        #expect(asked["spec"]["expirationSeconds"] == .int(3607) && asked["spec"]["audiences"].isNull)
        // Reused until 80 % of the stated 3607 s, then replaced.
        #expect(try await token(at: t0.addingTimeInterval(2800)) == first)
        #expect(cloud.state.withLock { $0.requests.count } == 1)
        let second = try await token(at: t0.addingTimeInterval(2900))
        #expect(second != first && cloud.state.withLock { $0.requests.count } == 2)

        // Offline: the current token goes on being used (a fresh store reads it back: it survives restarts)…
        cloud.state.withLock { $0.online = false }
        let restarted = ServiceAccountTokenSource(store: PodTokenStore(storage: store)) { ns, sa, request in
            try cloud.answer(ns, sa, request, now: clock.withLock { $0 })
        }
        clock.withLock { $0 = t0.addingTimeInterval(30 * 86400) }
        #expect(try await restarted.token(pod, volume: "kube-api-access-x", projection, now: t0.addingTimeInterval(30 * 86400)) == second)
        // …and MetaServer finds it, until its own exp has passed.
        let found = try await PodTokenStore(storage: store).find(second, now: t0.addingTimeInterval(30 * 86400))
        #expect(found?.podUID == "uid-1" && found?.serviceAccount == "reader" && found?.audiences == [])
        #expect(try await PodTokenStore(storage: store).find(second, now: t0.addingTimeInterval(400 * 86400)) == nil)
        #expect(try await PodTokenStore(storage: store).find(first) == nil)  // replaced: no longer the pod's
        // Past its exp and offline: no token, with the reason (the container waits in CreateContainerConfigError).
        await #expect(throws: ConfigError.self) {
            _ = try await restarted.token(pod, volume: "kube-api-access-x", projection, now: t0.addingTimeInterval(400 * 86400))
        }
        // The pod leaves the node: its tokens go.
        try await restarted.store.remove(podUID: "uid-1")
        #expect(try await PodTokenStore(storage: store).all().isEmpty)
    }
}
