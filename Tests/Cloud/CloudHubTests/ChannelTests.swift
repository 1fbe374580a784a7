import CloudEdgeProtocol
import CloudHub
import EdgeHub
import Foundation
import KubeAPI
import Logging
import NIOPosix
import PKI
import Synchronization
import Testing

/// CloudHub and EdgeHub on loopback with real TLS: joining with tokens, acknowledged delivery,
/// and node authorization.
@Suite struct ChannelTests {
    struct Cloud: Sendable {
        let ca: CertificateAuthority
        let hub: CloudHub
        let hubPort: Int
        let certPort: Int
        let events: AsyncStream<HubEvent>
    }

    static var logger: Logger { var l = Logger(label: "test"); l.logLevel = .warning; return l }

    /// Pods the authorizer considers bound to each node.
    static let podNodes: [String: String] = ["default/p-a": "node-a", "default/p-b": "node-b"]

    func withCloud(keepaliveTimeout: Duration = .seconds(30), certificateValidity: Duration = .seconds(365 * 86400),
                   _ body: @Sendable (Cloud) async throws -> Void) async throws {
        let ca = try CertificateAuthority.generate(commonName: "test-ca")
        let serverCert = try ca.issue(commonName: "cloudcore", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"], server: true, client: false)
        var config = CloudHubConfiguration()
        config.port = 0
        config.keepaliveTimeout = keepaliveTimeout
        let (events, sink) = AsyncStream<HubEvent>.makeStream()
        let (ports, portSink) = AsyncStream<(String, Int)>.makeStream()
        let hub = try CloudHub(configuration: config, ca: ca, serverCertificate: serverCert,
                               authorizer: NodeAuthorizer { ns, name in Self.podNodes["\(ns)/\(name)"] }, logger: Self.logger,
                               onRunning: { portSink.yield(("hub", $0)) }, onEvent: { sink.yield($0) })
        let certs = CertificateServer(host: "127.0.0.1", port: 0, ca: ca, serverCertificate: serverCert,
                                      certificateValidity: certificateValidity, logger: Self.logger,
                                      onRunning: { portSink.yield(("cert", $0)) })
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await hub.run() }
            group.addTask { try await certs.run() }
            var found: [String: Int] = [:]
            for await (k, v) in ports {
                found[k] = v
                if found.count == 2 { break }
            }
            try await body(Cloud(ca: ca, hub: hub, hubPort: found["hub"]!, certPort: found["cert"]!, events: events))
            group.cancelAll()
        }
    }

    func join(_ cloud: Cloud, node: String, token: JoinToken, dir: String) async throws -> NodeCredentials {
        try await NodeBootstrap(certServer: "127.0.0.1:\(cloud.certPort)", nodeName: node, directory: dir, logger: Self.logger).join(token: token)
    }

    static func tempDir() -> String {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("swiftedge-hub-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    func nextEvent(_ events: AsyncStream<HubEvent>, where pred: (HubEvent) -> Bool) async -> HubEvent? {
        for await e in events where pred(e) { return e }
        return nil
    }

    @Test func joinConnectAndExchangeAcknowledgedMessages() async throws {
        try await withCloud { cloud in
            let token = try JoinToken.issue(ca: cloud.ca, expires: Date().addingTimeInterval(3600))
            let parsed = try JoinToken(parsing: token.string)
            let dir = Self.tempDir()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let creds = try await join(cloud, node: "node-a", token: parsed, dir: dir)
            #expect(creds.certificatePEM.contains("BEGIN CERTIFICATE"))
            let (received, receivedSink) = AsyncStream<Message>.makeStream()
            var cfg = EdgeHubConfiguration(cloudHost: "127.0.0.1", nodeName: "node-a", credentials: creds)
            cfg.cloudPort = cloud.hubPort
            let edge = try EdgeHub(configuration: cfg, logger: Self.logger) { receivedSink.yield($0) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await edge.run() }
                let connected = await nextEvent(cloud.events) { if case .connected = $0 { return true }; return false }
                guard case .connected(let node) = connected else { Issue.record("no connection"); return }
                #expect(node == "node-a")

                // Downstream: the edge acks after delivery.
                let pod: JSON = ["apiVersion": "v1", "kind": "Pod", "metadata": ["name": "p-a", "namespace": "default", "resourceVersion": "7"]]
                let msg = Message(resourceVersion: "7", route: Route(source: "edgecontroller", group: "resource", operation: .insert,
                                                                       resource: "default/pod/p-a"), content: pod)
                #expect(await cloud.hub.sendAwaitingAck(msg, to: "node-a", timeout: .seconds(10)))
                var it = received.makeAsyncIterator()
                let got = await it.next()
                #expect(got?.id == msg.id)
                #expect(got?.content["metadata"]["name"] == "p-a")
                #expect(got?.route.resource == "default/pod/p-a")

                // Upstream: a status of its own pod arrives as an event.
                edge.send(Message(route: Route(source: "edged", group: "resource", operation: .update, resource: "default/podstatus/p-a"),
                                  content: ["phase": "Running"]))
                let up = await nextEvent(cloud.events) { if case .report = $0 { return true }; return false }
                guard case .report(let from, .podStatus("default", "p-a", let content), _) = up else { Issue.record("no pod status report: \(String(describing: up))"); return }
                #expect(from == "node-a")
                #expect(content["phase"] == "Running")

                // A node writing another node's pod is disconnected.
                edge.send(Message(route: Route(source: "edged", group: "resource", operation: .update, resource: "default/podstatus/p-b"),
                                  content: ["phase": "Failed"]))
                let gone = await nextEvent(cloud.events) { if case .disconnected = $0 { return true }; return false }
                guard case .disconnected(_, let reason) = gone else { Issue.record("not disconnected"); return }
                #expect(reason.contains("may not write pod default/p-b"))
                group.cancelAll()
            }
        }
    }

    @Test func badTokensAreRefusedWithClearMessages() async throws {
        try await withCloud { cloud in
            let dir = Self.tempDir()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            // Expired.
            let expired = try JoinToken.issue(ca: cloud.ca, expires: Date().addingTimeInterval(-10))
            await #expect(throws: JoinError.self) { try await join(cloud, node: "n1", token: expired, dir: dir) }
            do { _ = try await join(cloud, node: "n1", token: expired, dir: dir) } catch {
                #expect("\(error)".contains("token expired"))
            }
            // Forged: right CA hash, JWT signed by another key.
            let other = try CertificateAuthority.generate(commonName: "other")
            let forgedJWT = try JoinToken.issue(ca: other, expires: Date().addingTimeInterval(3600)).jwt
            let forged = JoinToken(caHash: try certificateSHA256Hex(cloud.ca.certificate), jwt: forgedJWT)
            do { _ = try await join(cloud, node: "n1", token: forged, dir: dir); Issue.record("forged token accepted") } catch {
                #expect("\(error)".contains("signature invalid"))
            }
            // Wrong CA hash: the edge refuses to trust the cloud.
            let wrongHash = try JoinToken.issue(ca: other, expires: Date().addingTimeInterval(3600))
            do { _ = try await join(cloud, node: "n1", token: wrongHash, dir: dir); Issue.record("CA of another cloud trusted") } catch {
                #expect("\(error)".contains("CA hash mismatch"))
            }
            #expect(throws: JoinError.self) { try JoinToken(parsing: "not-a-token") }
            // Unreachable certificate service.
            // (A port that was just free: connecting is refused at once.)
            let probe = try await ServerBootstrap(group: .singletonMultiThreadedEventLoopGroup).bind(host: "127.0.0.1", port: 0).get()
            let freePort = probe.localAddress!.port!
            try await probe.close()
            var nowhere = NodeBootstrap(certServer: "127.0.0.1:\(freePort)", nodeName: "n1", directory: dir, logger: Self.logger)
            nowhere.connectTimeout = .seconds(1)
            do { _ = try await nowhere.join(token: expired); Issue.record("joined nowhere") } catch {
                #expect("\(error)".contains("cannot reach 127.0.0.1:\(freePort)"))
            }
        }
    }

    @Test func aNodeCannotImpersonateAnother() async throws {
        try await withCloud { cloud in
            let token = try JoinToken.issue(ca: cloud.ca, expires: Date().addingTimeInterval(3600))
            let dir = Self.tempDir()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let creds = try await join(cloud, node: "node-a", token: token, dir: dir)
            var cfg = EdgeHubConfiguration(cloudHost: "127.0.0.1", nodeName: "node-b", credentials: creds)
            cfg.cloudPort = cloud.hubPort
            let impostor = try EdgeHub(configuration: cfg, logger: Self.logger) { _ in }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await impostor.run() }
                let refused = await nextEvent(cloud.events) {
                    if case .refused = $0 { return true }
                    if case .connected = $0 { return true }
                    return false
                }
                guard case .refused(let reason) = refused else { Issue.record("impostor connected: \(String(describing: refused))"); return }
                #expect(reason.contains("system:node:node-a may not connect as node node-b"))
                #expect(cloud.hub.connectedNodes.isEmpty)
                group.cancelAll()
            }
        }
    }

    @Test func wireFormatAndBadInput() throws {
        let m = Message(id: "id-1", timestamp: 5, resourceVersion: "9",
                        route: Route(source: "edgecontroller", group: "resource", operation: .update, resource: "ns/pod/p"), content: ["a": 1])
        let wire = m.wireJSON
        #expect(wire["header"]["msg_id"] == "id-1")
        #expect(wire["header"]["resourceversion"] == "9")
        #expect(wire["route"]["operation"] == "update")
        #expect(try Message(wire: wire) == m)
        let ack = m.ack()
        #expect(ack.isAck && ack.parentID == "id-1" && ack.content == "OK" && ack.route.resource == "ns/pod/p")
        #expect(throws: ProtocolError.self) { try Message(bytes: Array("{not json".utf8)) }
        #expect(throws: ProtocolError.self) { try Message(bytes: Array(#"{"header":{"msg_id":"x"},"route":{"operation":"explode"}}"#.utf8)) }
        #expect(throws: ProtocolError.self) { try Message(bytes: Array(#"{"route":{"operation":"insert"}}"#.utf8)) }
        #expect(try ResourceRef(parsing: "null/node/n1") == ResourceRef(namespace: nil, kind: .node, name: "n1"))
        #expect(throws: ProtocolError.self) { try ResourceRef(parsing: "a/b/c/d") }
    }
}
