import CloudEdgeProtocol
import CloudHub
import EdgeHub
import Crypto
import Foundation
import KubeAPI
import NIOCore
import NIOPosix
import NIOSSL
import PKI
import Synchronization
import Testing

/// A hand-rolled WebSocket client over TLS that writes raw bytes, so that tests can send what a
/// real client library never would: broken JSON, oversized frames, half a frame.
final class RawPeer: Sendable {
    let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>

    init(channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>) { self.channel = channel }
    // The writer must be finished before it goes away (NIO traps otherwise), whichever path a
    // test leaves by: closing is idempotent.
    deinit { close() }

    static func connect(port: Int, credentials: CertificateAndKey, ca: CertificateAuthority, path: String, nodeHeader: String) async throws -> RawPeer {
        var t = TLSConfiguration.makeClientConfiguration()
        t.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(ca.certificatePEM.utf8)))
        t.certificateVerification = .noHostnameVerification
        t.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(credentials.certificatePEM.utf8)).map { .certificate($0) }
        t.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(credentials.privateKeyPEM.utf8), format: .pem))
        let ctx = try NIOSSLContext(configuration: t)
        let channel = try await ClientBootstrap(group: .singletonMultiThreadedEventLoopGroup).connect(host: "127.0.0.1", port: port) { ch in
            ch.eventLoop.makeCompletedFuture {
                try ch.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: ctx, serverHostname: nil))
                return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch)
            }
        }
        let peer = RawPeer(channel: channel)
        try await channel.outbound.write(ByteBuffer(string: """
            GET \(path) HTTP/1.1\r
            Host: 127.0.0.1\r
            Upgrade: websocket\r
            Connection: Upgrade\r
            Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r
            Sec-WebSocket-Version: 13\r
            node_id: \(nodeHeader)\r
            \r

            """))
        return peer
    }

    /// A masked client frame; `declaredLength` lets a test lie about the payload size.
    static func frame(opcode: UInt8 = 0x1, payload: [UInt8], declaredLength: Int? = nil) -> [UInt8] {
        let n = declaredLength ?? payload.count
        var out: [UInt8] = [0x80 | opcode]
        if n < 126 { out.append(0x80 | UInt8(n)) } else if n < 65536 {
            out += [0x80 | 126, UInt8(n >> 8), UInt8(n & 0xff)]
        } else {
            out.append(0x80 | 127)
            for i in (0..<8).reversed() { out.append(UInt8((n >> (i * 8)) & 0xff)) }
        }
        let mask: [UInt8] = [1, 2, 3, 4]
        out += mask
        out += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        return out
    }

    func write(_ bytes: [UInt8]) async throws { try await channel.outbound.write(ByteBuffer(bytes: bytes)) }
    func close() {
        channel.outbound.finish()
        channel.channel.close(promise: nil)
    }
}

/// Bad peers are disconnected with a logged reason; the other nodes keep their sessions and
/// their acknowledged deliveries.
extension ChannelTests {
    @Test func badPeersAreDisconnectedAndOthersUnaffected() async throws {
        try await withCloud(keepaliveTimeout: .seconds(2)) { cloud in
            let good = try cloud.ca.issue(commonName: "system:node:node-a", server: false, client: true)
            let bad = try cloud.ca.issue(commonName: "system:node:node-b", server: false, client: true)
            let stored = StoredMessages()
            var cfg = EdgeHubConfiguration(cloudHost: "127.0.0.1", nodeName: "node-a",
                                           credentials: NodeCredentials(certificatePEM: good.certificatePEM, privateKeyPEM: good.privateKeyPEM, caPEM: cloud.ca.certificatePEM))
            cfg.cloudPort = cloud.hubPort
            cfg.heartbeat = .milliseconds(500)
            let edge = try EdgeHub(configuration: cfg, logger: Self.logger) { stored.add($0) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await edge.run() }
                _ = await nextEvent(cloud.events) { if case .connected("node-a") = $0 { return true }; return false }

                var delivered = 0
                func deliverToGoodNode() async {
                    delivered += 1
                    let m = Message(resourceVersion: "\(delivered)", route: Route(source: "edgecontroller", group: "resource", operation: .update,
                                                                                   resource: "default/configmap/c\(delivered)"),
                                    content: ["metadata": ["name": .string("c\(delivered)")]])
                    #expect(await cloud.hub.sendAwaitingAck(m, to: "node-a", timeout: .seconds(10)), "delivery \(delivered) to the good node")
                }
                await deliverToGoodNode()

                let path = "/e632aba927ea4ac2b575ec1603d56f10/node-b/events"
                let huge = Array(repeating: UInt8(ascii: "a"), count: (1 << 20) + 10)
                let unknownOp = Array(#"{"header":{"msg_id":"1","timestamp":1},"route":{"source":"x","group":"resource","operation":"explode","resource":"node-b"},"content":""}"#.utf8)
                let cases: [(what: String, bytes: [UInt8], thenClose: Bool, reason: String)] = [
                    ("malformed JSON", RawPeer.frame(payload: Array("{not json".utf8)), false, "bad message"),
                    // An operation outside the vocabulary is skipped (edgecore's task manager sends
                    // some); the malformed frame after it is what ends the session.
                    ("unknown operation, then malformed JSON", RawPeer.frame(payload: unknownOp) + RawPeer.frame(payload: Array("{not json".utf8)),
                     false, "bad message"),
                    ("frame over 1 MiB", RawPeer.frame(payload: huge), false, "1048576-byte limit"),
                    ("stops mid-frame", Array(RawPeer.frame(payload: Array(repeating: UInt8(ascii: "x"), count: 4000)).prefix(1000)), false, "no message or keepalive"),
                    ("disconnects mid-frame", Array(RawPeer.frame(payload: Array(repeating: UInt8(ascii: "x"), count: 4000)).prefix(1000)), true, "connection closed"),
                ]
                for c in cases {
                    let peer = try await RawPeer.connect(port: cloud.hubPort, credentials: bad, ca: cloud.ca, path: path, nodeHeader: "node-b")
                    _ = await nextEvent(cloud.events) { if case .connected("node-b") = $0 { return true }; return false }
                    try await peer.write(c.bytes)
                    if c.thenClose { peer.close() }
                    let gone = await nextEvent(cloud.events) { if case .disconnected("node-b", _) = $0 { return true }; return false }
                    guard case .disconnected(_, let reason) = gone else { Issue.record("\(c.what): not disconnected"); continue }
                    #expect(reason.contains(c.reason), "\(c.what): reason \(reason)")
                    peer.close()
                    #expect(cloud.hub.connectedNodes == ["node-a"], "\(c.what): the good node lost its session")
                    await deliverToGoodNode()
                }

                // A node_id header naming another node than the path is refused before a session exists.
                let liar = try await RawPeer.connect(port: cloud.hubPort, credentials: bad, ca: cloud.ca, path: path, nodeHeader: "node-a")
                let refused = await nextEvent(cloud.events) { if case .refused = $0 { return true }; return false }
                guard case .refused(let why) = refused else { Issue.record("mismatched node_id accepted"); return }
                #expect(why.contains("node_id header node-a does not match path node node-b"))
                liar.close()
                await deliverToGoodNode()
                // Nothing acknowledged was lost.
                #expect(stored.names == Set((1...delivered).map { "c\($0)" }))
                group.cancelAll()
            }
        }
    }
}

final class StoredMessages: Sendable {
    let items = Mutex<[Message]>([])
    func add(_ m: Message) { items.withLock { $0.append(m) } }
    var names: Set<String> { Set(items.withLock { $0.compactMap { $0.content["metadata"]["name"].stringValue } }) }
}

extension ChannelTests {
    /// A cloud may write its first message in the same TCP segment as the 101 response (busy
    /// machines coalesce them; seen in the fleet benchmark); the edge must not drop those bytes,
    /// which NIO's client upgrade does by default. A hand-written server sends both in one write.
    @Test func aFrameCoalescedWithThe101ResponseArrives() async throws {
        let ca = try CertificateAuthority.generate(commonName: "test-ca")
        let serverCert = try ca.issue(commonName: "cloudcore", ipAddresses: ["127.0.0.1"], server: true, client: false)
        let nodeCert = try ca.issue(commonName: "system:node:node-a", server: false, client: true)
        var t = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(serverCert.certificatePEM.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(serverCert.privateKeyPEM.utf8), format: .pem)))
        t.certificateVerification = .none
        let ctx = try NIOSSLContext(configuration: t)
        let server = try await ServerBootstrap(group: .singletonMultiThreadedEventLoopGroup).bind(host: "127.0.0.1", port: 0) { ch in
            ch.eventLoop.makeCompletedFuture {
                try ch.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: ctx))
                return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch)
            }
        }
        let port = server.channel.localAddress!.port!
        let message = Message(resourceVersion: "1", route: Route(source: "edgecontroller", group: "resource", operation: .insert,
                                                                  resource: "default/configmap/first"), content: ["metadata": ["name": "first"]])
        let stored = StoredMessages()
        let (arrivals, arrived) = AsyncStream<Void>.makeStream()
        var cfg = EdgeHubConfiguration(cloudHost: "127.0.0.1", nodeName: "node-a",
                                       credentials: NodeCredentials(certificatePEM: nodeCert.certificatePEM, privateKeyPEM: nodeCert.privateKeyPEM, caPEM: ca.certificatePEM))
        cfg.cloudPort = port
        let edge = try EdgeHub(configuration: cfg, logger: Self.logger) { stored.add($0); arrived.yield() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await server.executeThenClose { inbound in
                    for try await conn in inbound {
                        try await conn.executeThenClose { input, output in
                            var request = ""
                            var reader = input.makeAsyncIterator()
                            while !request.contains("\r\n\r\n"), let chunk = try await reader.next() { request += String(buffer: chunk) }
                            let key = request.split(separator: "\r\n").first { $0.lowercased().hasPrefix("sec-websocket-key:") }?
                                .split(separator: ":", maxSplits: 1).last?.trimmingCharacters(in: .whitespaces) ?? ""
                            var reply = ByteBuffer(string: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                + "Sec-WebSocket-Accept: \(Self.websocketAccept(key))\r\n\r\n")
                            let payload = message.encoded()
                            reply.writeBytes([0x81, 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xff)] + payload)
                            try await output.write(reply)  // one write: the frame rides with the 101
                            while try await reader.next() != nil {}
                        }
                    }
                }
            }
            group.addTask { try await edge.run() }
            let got = await withTaskGroup(of: Bool.self) { race in
                race.addTask { var it = arrivals.makeAsyncIterator(); return await it.next() != nil }
                race.addTask { try? await Task.sleep(for: .seconds(10)); return false }
                let first = await race.next() ?? false
                race.cancelAll()
                return first
            }
            #expect(got, "the frame that came with the 101 response was dropped")
            #expect(stored.names == ["first"])
            group.cancelAll()
        }
    }

    static func websocketAccept(_ key: String) -> String {
        Data(Insecure.SHA1.hash(data: Data((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8))).base64EncodedString()
    }
}
