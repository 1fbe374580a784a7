import Foundation
import KubeAPI
import Testing
import TestSupport
import StreamTunnel
@testable import CloudHub
@testable import EdgeHub
import PKI
import Synchronization

/// KubeEdge's cloudcore takes a second WebSocket on its message port for a new session of the
/// node (interop finding: the session flapped every 1–3 s). The edge opens its stream tunnel
/// there only when the cloud advertised it; a hub without tunnels advertises nothing.
extension ChannelTests {
    struct NoStreams: StreamProvider {
        func serve(_ request: StreamRequest, input: TunnelStreamData, write: @escaping @Sendable ([UInt8]) async throws -> Void) async throws {}
    }

    @Test func noTunnelIsDialledWhereTheCloudDoesNotAdvertiseOne() async throws {
        try await withCloud { cloud in
            let token = try JoinToken(parsing: try JoinToken.issue(ca: cloud.ca, expires: Date().addingTimeInterval(3600)).string)
            let creds = try await join(cloud, node: "node-t", token: token, dir: Self.tempDir())
            var cfg = EdgeHubConfiguration(cloudHost: "127.0.0.1", nodeName: "node-t", credentials: creds)
            cfg.cloudPort = cloud.hubPort
            let edge = try EdgeHub(configuration: cfg, logger: Self.logger) { _ in }
            let streams = EdgeStreamClient(hub: edge, provider: NoStreams(), logger: Self.logger)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await edge.run() }
                group.addTask { try await streams.run() }
                _ = await nextEvent(cloud.events) { if case .connected("node-t") = $0 { return true }; return false }
                try await eventually("the edge learnt the cloud serves no tunnel") { edge.cloudServesStreamTunnel.value == false }
                // Before the fix the edge dialled `/stream` here; this hub refuses that path.
                let refusals = Refusals()
                let watcher = Task { for await e in cloud.events { if case .refused(let why) = e { refusals.add(why) } } }
                try await consistently(for: .seconds(1), "no second connection") { refusals.count == 0 && cloud.hub.connectedNodes == ["node-t"] }
                watcher.cancel()
                group.cancelAll()
            }
        }
    }
}

final class Refusals: Sendable {
    let items = Mutex<[String]>([])
    func add(_ s: String) { items.withLock { $0.append(s) } }
    var count: Int { items.withLock { $0.count } }
}
