import AsyncSupport
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import NIOWebSocket
import PKI
import ServiceLifecycle
import StreamTunnel
import Synchronization
import X509

/// A node's TLS identity: its certificate (`CN=system:node:<name>`), key, and the cloud's CA
/// that signed every node's certificate.
public struct MeshIdentity: Sendable {
    public var certificatePEM: String
    public var privateKeyPEM: String
    public var caPEM: String
    public init(certificatePEM: String, privateKeyPEM: String, caPEM: String) {
        self.certificatePEM = certificatePEM; self.privateKeyPEM = privateKeyPEM; self.caPEM = caPEM
    }
}

/// A relay node as other nodes are told of it (EdgeMesh's `relayNodes`: name and address).
public struct MeshRelayPeer: Sendable, Equatable, CustomStringConvertible {
    public var nodeName: String
    public var host: String
    public var port: Int

    /// `<node name>=<host>:<port>`.
    public init?(_ text: String) {
        let parts = text.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2, !parts[0].isEmpty, let colon = parts[1].lastIndex(of: ":"),
              let port = Int(parts[1][parts[1].index(after: colon)...]), (1...65535).contains(port) else { return nil }
        nodeName = parts[0]
        host = String(parts[1][..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        self.port = port
        guard !host.isEmpty else { return nil }
    }

    public var description: String { "\(nodeName)=\(host):\(port)" }
}

/// Mesh relay frames travel as WebSocket frames straight on TLS (no HTTP handshake: both ends
/// are SwiftEdge nodes), carrying the stream tunnel's frames.
enum MeshRelayWire {
    static let maxFrame = 1 << 20

    static func addCodec(_ channel: any Channel) throws {
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: maxFrame)))
        try channel.pipeline.syncOperations.addHandler(WebSocketFrameEncoder())
    }

    /// The node name of a node certificate (`CN=system:node:<name>`), nil for anything else.
    static func nodeName(ofDER der: [UInt8]) -> String? {
        guard let cn = (try? Certificate(derEncoded: der))?.subject.commonName, cn.hasPrefix("system:node:") else { return nil }
        let name = String(cn.dropFirst("system:node:".count))
        return name.isEmpty ? nil : name
    }

    /// Whether `leaf` is a currently valid certificate of node `expected`, signed by `ca`.
    /// (Node certificates are client certificates; a relay presents its own, so the chain is
    /// checked here instead of by TLS's server-purpose verification.)
    static func verify(leafDER: [UInt8], caPEM: String, expected: String, now: Date = Date()) -> Bool {
        guard let leaf = try? Certificate(derEncoded: leafDER), let ca = try? Certificate(pemEncoded: caPEM) else { return false }
        guard leaf.issuer == ca.subject, ca.publicKey.isValidSignature(leaf.signature, for: leaf) else { return false }
        guard leaf.notValidBefore <= now, now <= leaf.notValidAfter else { return false }
        return nodeName(ofDER: leafDER) == expected
    }
}

/// The relay end (on a node others can reach; EdgeMesh's relay node): nodes connect with their
/// certificates and keep a tunnel open; a node's relay stream to a pod is opened on the tunnel of
/// the pod's node, as the cloud does — but without the cloud, so pods on nodes that cannot dial
/// each other keep talking while the cloud is down.
public struct MeshRelayServer: Service {
    let host: String
    let port: Int
    let identity: @Sendable () -> MeshIdentity
    /// The tunnels of the nodes connected to this relay.
    public let tunnels: TunnelServer
    let logger: Logger
    /// Told the bound port once listening (tests pass 0).
    let bound: (@Sendable (Int) -> Void)?

    public init(host: String, port: Int, identity: @escaping @Sendable () -> MeshIdentity, logger: Logger, bound: (@Sendable (Int) -> Void)? = nil) {
        self.host = host; self.port = port; self.identity = identity; self.logger = logger; self.bound = bound
        tunnels = TunnelServer(logger: logger)
    }

    public func run() async throws {
        let id = identity()
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(id.certificatePEM.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(id.privateKeyPEM.utf8), format: .pem)))
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(id.caPEM.utf8)))
        tls.certificateVerification = .noHostnameVerification  // a client certificate of the cloud's CA is required
        tls.minimumTLSVersion = .tlsv12
        let context = try NIOSSLContext(configuration: tls)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { c in
                c.eventLoop.makeCompletedFuture {
                    let handshake = c.eventLoop.makePromise(of: Void.self)
                    try c.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try c.pipeline.syncOperations.addHandler(HandshakeWaiter(done: handshake))
                    try MeshRelayWire.addCodec(c)
                    return RelayConnection(channel: try NIOAsyncChannel<WebSocketFrame, WebSocketFrame>(wrappingChannelSynchronously: c),
                                           handshake: handshake.futureResult)
                }
            }
        let actual = server.channel.localAddress?.port ?? port
        logger.info("EdgeMesh relay listening", metadata: ["address": "\(host):\(actual)"])
        bound?(actual)
        try await withGracefulShutdownHandler {
            try await server.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await conn in inbound {
                        group.addTask { await self.serve(conn) }
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
        }
    }

    func serve(_ accepted: RelayConnection) async {
        let conn = accepted.channel
        try? await conn.executeThenClose { inbound, outbound in
            // The client's certificate is known once the handshake is done (bounded by the TLS handler's own timeout).
            guard (try? await accepted.handshake.get()) != nil,
                  let der = try? await conn.channel.nioSSL_peerCertificate().get()?.toDERBytes(), let node = MeshRelayWire.nodeName(ofDER: der)
            else {
                logger.warning("relay connection without a node certificate refused")
                return
            }
            await withGracefulShutdownHandler {
                await tunnels.serve(node: node, inbound: inbound, outbound: outbound)
            } onGracefulShutdown: {
                conn.channel.close(promise: nil)
            }
        }
    }
}

/// An accepted relay connection and its TLS handshake.
struct RelayConnection: Sendable {
    var channel: NIOAsyncChannel<WebSocketFrame, WebSocketFrame>
    var handshake: EventLoopFuture<Void>
}

/// Completes `done` when the TLS handshake has completed (fails it if the channel closes first).
final class HandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = NIOAny
    let done: EventLoopPromise<Void>
    init(done: EventLoopPromise<Void>) { self.done = done }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? TLSUserEvent, case .handshakeCompleted = e { done.succeed(()) }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        done.fail(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }
}

/// A node's connection to a relay node: kept open (redialled with back-off), serving the streams
/// the relay opens on this node (relayed traffic to its pods) and carrying the relay streams this
/// node opens (``dialer``).
public struct MeshRelayClient: Service {
    let peer: MeshRelayPeer
    let identity: @Sendable () -> MeshIdentity
    let provider: any StreamProvider
    public let dialer = TunnelDialer()
    let logger: Logger

    public init(peer: MeshRelayPeer, identity: @escaping @Sendable () -> MeshIdentity, provider: any StreamProvider, logger: Logger) {
        self.peer = peer; self.identity = identity; self.provider = provider; self.logger = logger
    }

    public func run() async throws {
        var backoff = Backoff(base: .milliseconds(500), max: .seconds(30))
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let started = ContinuousClock.now
            do {
                try await cancelWhenGracefulShutdown {
                    let ws = try await dial()
                    logger.info("EdgeMesh relay connected", metadata: ["relay": "\(peer)"])
                    try await ws.executeThenClose { inbound, outbound in
                        try await serveTunnel(inbound: inbound, outbound: outbound, provider: provider, dialer: dialer, logger: logger)
                    }
                }
            } catch is CancellationError {
                return
            } catch {
                logger.debug("EdgeMesh relay connection ended", metadata: ["relay": "\(peer)", "error": "\(error)"])
            }
            if Task.isShuttingDownGracefully { return }
            backoff.attemptEnded(after: ContinuousClock.now - started, healthy: .seconds(60))
            let delay = backoff.next()
            do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) } } catch { return }
        }
    }

    func dial() async throws -> NIOAsyncChannel<WebSocketFrame, WebSocketFrame> {
        let id = identity()
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(id.certificatePEM.utf8)).map { .certificate($0) }
        tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(id.privateKeyPEM.utf8), format: .pem))
        tls.minimumTLSVersion = .tlsv12
        // The relay presents its node certificate (a client certificate): verified below, by
        // CA signature, validity and node name.
        tls.certificateVerification = .none
        let context = try NIOSSLContext(configuration: tls)
        let ca = id.caPEM, expected = peer.nodeName
        return try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(10))
            .connect(host: peer.host, port: peer.port) { c in
                c.eventLoop.makeCompletedFuture {
                    let handler = try NIOSSLClientHandler(context: context, serverHostname: nil) { certificates, promise in
                        let ok = certificates.first.flatMap { try? $0.toDERBytes() }.map { MeshRelayWire.verify(leafDER: $0, caPEM: ca, expected: expected) } ?? false
                        promise.succeed(ok ? .certificateVerified : .failed)
                    }
                    try c.pipeline.syncOperations.addHandler(handler)
                    try MeshRelayWire.addCodec(c)
                    return try NIOAsyncChannel<WebSocketFrame, WebSocketFrame>(wrappingChannelSynchronously: c)
                }
            }
    }
}
