import AsyncSupport
import CloudEdgeProtocol
import CloudEdgeTransport
import DefaultSettings
import Logging
import Metrics
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import KubeAPI
import ServiceLifecycle
import Synchronization

/// EdgeHub settings (KubeEdge's `edgeHub` section where it applies).
public struct EdgeHubConfiguration: Sendable {
    public var cloudHost: String
    public var cloudPort = Defaults.cloudHubPort
    public var projectID = "e632aba927ea4ac2b575ec1603d56f10"
    public var nodeName: String
    public var credentials: NodeCredentials
    /// Keepalive period (KubeEdge: 15 s; the cloud drops a node after 30 s of silence).
    public var heartbeat: Duration = .seconds(15)
    /// Reconnect back-off: from `reconnectBase`, doubling, capped, with ±50 % jitter. The cap is
    /// short (KubeEdge redials every 30 s) so a node is back within seconds of the cloud; a
    /// refused dial to a cloud that is down costs it nothing.
    public var reconnectBase: Duration = .seconds(1)
    public var reconnectMax: Duration = .seconds(2)
    /// Upstream rate limit (KubeEdge: 30 messages/s, burst 60).
    public var messageQPS = 30.0
    public var messageBurst = 60
    /// Upstream messages buffered while disconnected; older ones are dropped beyond this.
    public var upstreamBuffer = 1000

    public init(cloudHost: String, nodeName: String, credentials: NodeCredentials) {
        self.cloudHost = cloudHost; self.nodeName = nodeName; self.credentials = credentials
    }
}

/// The node's TLS identity: its certificate and key, and the cloud's CA (PEM).
public struct NodeCredentials: Sendable {
    public var certificatePEM: String
    public var privateKeyPEM: String
    public var caPEM: String
    public init(certificatePEM: String, privateKeyPEM: String, caPEM: String) {
        self.certificatePEM = certificatePEM; self.privateKeyPEM = privateKeyPEM; self.caPEM = caPEM
    }
}

extension NodeCredentials {
    /// TLS as the node talks to the cloud (CloudHub, and the certificate service when renewing):
    /// its certificate as client certificate, the cloud's CA as the only trust root.
    func clientTLSConfiguration() throws -> TLSConfiguration {
        var t = TLSConfiguration.makeClientConfiguration()
        t.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(caPEM.utf8)))
        // The CA is the cloud's private CA, pinned by the join token's hash; the cloud may be
        // reached by any address, so the chain is verified but not the host name.
        t.certificateVerification = .noHostnameVerification
        t.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(certificatePEM.utf8)).map { .certificate($0) }
        t.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(privateKeyPEM.utf8), format: .pem))
        t.minimumTLSVersion = .tlsv12
        return t
    }
}

/// EdgeHub: the edge end of the cloud–edge channel. Dials CloudHub with the node certificate,
/// keeps the connection alive, reconnects with jittered exponential back-off, hands each
/// downstream message to `deliver` and acknowledges it only after `deliver` returned (i.e. the
/// receiving component persisted it), and sends upstream messages rate-limited.
public final class EdgeHub: Service {
    public let configuration: EdgeHubConfiguration
    let logger: Logger
    let deliver: @Sendable (Message) async throws -> Void
    let inventory: (@Sendable () async throws -> [InventoryItem])?
    let tls: Mutex<NIOSSLContext>
    let upstream = Mutex<[Message]>([])
    let upstreamReady = WakeSignal()
    /// Whether the message channel to the cloud is up: the one signal the edge components follow.
    public let connection = StateSignal(false)
    /// Requests waiting for the cloud's `response` (by request id).
    let pendingRequests = Mutex<[String: CheckedContinuation<Message?, Never>]>([:])
    let currentWriter = Mutex<MessageWriter?>(nil)
    let dropped = Counter(label: "swiftedge_edgehub_upstream_dropped_total")
    let reconnects = Counter(label: "swiftedge_edgehub_reconnects_total")

    /// - Parameter inventory: what the node's store holds; sent (as ``InventoryPart``s) on every
    ///   connect so that the cloud sends exactly what is missing or stale. nil: none is sent.
    public init(configuration: EdgeHubConfiguration, logger: Logger,
                inventory: (@Sendable () async throws -> [InventoryItem])? = nil,
                deliver: @escaping @Sendable (Message) async throws -> Void) throws
    {
        self.configuration = configuration; self.logger = logger; self.deliver = deliver
        self.inventory = inventory
        tls = Mutex(try Self.tlsContext(configuration.credentials))
        current = Mutex(configuration.credentials)
    }

    let current: Mutex<NodeCredentials>
    /// The node's credentials in use (renewed ones once ``updateCredentials(_:)`` took them).
    public var credentials: NodeCredentials { current.withLock { $0 } }

    static func tlsContext(_ credentials: NodeCredentials) throws -> NIOSSLContext {
        try NIOSSLContext(configuration: credentials.clientTLSConfiguration())
    }

    /// Switches to renewed credentials: the connection is re-established with them.
    public func updateCredentials(_ credentials: NodeCredentials) async throws {
        let context = try Self.tlsContext(credentials)
        tls.withLock { $0 = context }
        current.withLock { $0 = credentials }
        await dropConnection(reason: "node certificate renewed")
    }

    public var isConnected: Bool { connection.value }

    /// Closes the current connection (it is redialled after the usual back-off); for operators
    /// and fleet simulations.
    public func dropConnection(reason: String) async {
        guard let w = currentWriter.withLock({ $0 }) else { return }
        await w.close(.goingAway, reason: reason)
    }

    /// Sends a request the cloud answers (`sync`, as edgecore's SendSync) and waits for its
    /// `response`; nil when none comes within `timeout` (disconnected, or a cloud that does not answer).
    public func request(_ message: Message, timeout: Duration = .seconds(10)) async -> Message? {
        var m = message
        m.sync = true
        let id = m.id
        return await withTaskGroup(of: Void.self) { group -> Message? in
            let answer = await withCheckedContinuation { (c: CheckedContinuation<Message?, Never>) in
                pendingRequests.withLock { $0[id] = c }
                send(m)
                group.addTask {
                    try? await Task.sleep(for: timeout)
                    self.pendingRequests.withLock { $0.removeValue(forKey: id) }?.resume(returning: nil)
                }
            }
            group.cancelAll()
            return answer
        }
    }

    /// Queues an upstream message (sent when connected, within the rate limit).
    public func send(_ message: Message) {
        upstream.withLock { q in
            q.append(message)
            if q.count > configuration.upstreamBuffer { q.removeFirst(); dropped.increment() }
        }
        upstreamReady.signal()
    }

    enum Upgrade { case websocket(NIOAsyncChannel<WebSocketFrame, WebSocketFrame>, streamTunnel: Bool), refused(HTTPResponseStatus) }

    /// The header a SwiftEdge cloud adds to the message channel's upgrade response when it serves
    /// the stream tunnel on the same port (KubeEdge's cloudcore does not: a second WebSocket there
    /// would replace the node's session).
    static let streamTunnelHeader = "X-SwiftEdge-Stream-Tunnel"

    /// Whether the cloud this node last connected to serves the stream tunnel (nil: not known yet).
    public let cloudServesStreamTunnel = StateSignal<Bool?>(nil)

    public func run() async throws {
        var backoff = Backoff(base: configuration.reconnectBase, max: configuration.reconnectMax)
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let started = ContinuousClock.now
            do {
                try await cancelWhenGracefulShutdown { try await self.connectOnce() }
            } catch is CancellationError {
                break
            } catch {
                logger.warning("cloud connection ended", metadata: ["cloud": "\(configuration.cloudHost):\(configuration.cloudPort)", "error": "\(error)"])
            }
            connection.set(false)
            if Task.isShuttingDownGracefully { break }
            backoff.attemptEnded(after: ContinuousClock.now - started, healthy: .seconds(60))
            let delay = backoff.next()
            reconnects.increment()
            do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) } } catch { break }
        }
        connection.set(false)
    }

    /// Dials the cloud over mTLS and upgrades to a WebSocket on `uri` (the message channel's
    /// `/<project>/<node>/events`, or the stream tunnel's `/stream`).
    func dial(uri: String) async throws -> NIOAsyncChannel<WebSocketFrame, WebSocketFrame> {
        try await dialAdvertising(uri: uri).channel
    }

    /// Dials and also tells whether the cloud advertised the stream tunnel in its upgrade response.
    func dialAdvertising(uri: String) async throws -> (channel: NIOAsyncChannel<WebSocketFrame, WebSocketFrame>, streamTunnel: Bool) {
        let c = configuration
        let tls = self.tls.withLock { $0 }
        let host = c.cloudHost
        let upgrade: EventLoopFuture<Upgrade> = try await ClientBootstrap(group: .singletonMultiThreadedEventLoopGroup)
            .connectTimeout(.seconds(10))
            .connect(host: host, port: c.cloudPort) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sni = host.contains(where: \.isLetter) ? host : nil
                    try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: sni))
                    let upgrader = NIOTypedWebSocketClientUpgrader<Upgrade>(maxFrameSize: maxMessageBytes) { channel, response in
                        let advertised = response.headers.contains(name: Self.streamTunnelHeader)
                        return channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(NIOWebSocketFrameAggregator(
                                minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 64, maxAccumulatedFrameSize: maxMessageBytes))
                            return Upgrade.websocket(try NIOAsyncChannel(wrappingChannelSynchronously: channel), streamTunnel: advertised)
                        }
                    }
                    var headers = HTTPHeaders()
                    headers.add(name: "Host", value: "\(host):\(c.cloudPort)")
                    headers.add(name: "node_id", value: c.nodeName)
                    headers.add(name: "project_id", value: c.projectID)
                    headers.add(name: "ConnectionUse", value: "msg")
                    headers.add(name: "Content-Length", value: "0")
                    let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: headers)
                    var pipeline = NIOUpgradableHTTPClientPipelineConfiguration<Upgrade>(
                        upgradeConfiguration: .init(upgradeRequestHead: head, upgraders: [upgrader], notUpgradingCompletionHandler: { channel in
                            channel.eventLoop.makeSucceededFuture(Upgrade.refused(.badRequest))
                        }))
                    // The cloud may send its first message in the same TCP segment as the 101
                    // response; NIO's default drops such bytes when the HTTP decoder is removed.
                    pipeline.leftOverBytesStrategy = .forwardBytes
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(configuration: pipeline)
                }
            }
        guard case .websocket(let ws, let tunnel) = try await upgrade.get() else { throw ConnectionClosed("the cloud refused the WebSocket upgrade") }
        return (ws, tunnel)
    }

    func connectOnce() async throws {
        let c = configuration
        let host = c.cloudHost
        let (ws, tunnel) = try await dialAdvertising(uri: "/\(c.projectID)/\(c.nodeName)/events")
        cloudServesStreamTunnel.set(tunnel)
        try await ws.executeThenClose { inbound, outbound in
            let writer = MessageWriter(outbound: outbound, isClient: true)
            currentWriter.withLock { $0 = writer }
            defer { currentWriter.withLock { $0 = nil } }
            logger.notice("connected to the cloud", metadata: ["cloud": "\(host):\(c.cloudPort)", "node": "\(c.nodeName)"])
            if let inventory {
                do { for m in InventoryPart.messages(node: c.nodeName, items: try await inventory()) { send(m) } } catch {
                    logger.error("cannot read the inventory of the edge store", metadata: ["error": "\(error)"])
                }
            }
            connection.set(true)
            let acks = MessageOutbox()
            defer { acks.close() }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await acks.drain(to: writer) }
                group.addTask {
                    try await MessageReader(inbound: inbound, writer: writer).run { message, _ in
                        self.logger.trace("downstream message", metadata: ["message": "\(message.id)", "resource": "\(message.route.resource)"])
                        if message.route.operation == .response, let parent = message.parentID {
                            // The answer to one of this node's requests, or an answer nobody waits for.
                            self.pendingRequests.withLock { $0.removeValue(forKey: parent) }?.resume(returning: message)
                            return
                        }
                        do { try await self.deliver(message) } catch let e as ProtocolError where e.reason == .unknownKind {
                            // Well-formed but outside this node's vocabulary: not stored, so not
                            // acknowledged (the cloud keeps it pending); the session goes on.
                            self.logger.warning("downstream message not handled", metadata: ["resource": "\(message.route.resource)", "reason": "\(e.message)"])
                            return
                        }
                        if message.route.operation != .keepalive { try acks.enqueue(message.ack()) }
                    }
                    throw ConnectionClosed("the cloud closed the connection")
                }
                group.addTask {
                    while true {
                        let ping = Message(route: Route(source: MessageSource.websocket, group: MessageGroup.resource, operation: .keepalive,
                                                            resource: EdgeResourceKind.node.wireName), content: "ping")
                        try await writer.send(ping)
                        try await Task.sleep(for: c.heartbeat)
                    }
                }
                group.addTask { try await self.drainUpstream(writer) }
                try await group.next()
                group.cancelAll()
            }
        }
    }

    /// Sends queued upstream messages within the token-bucket rate limit.
    func drainUpstream(_ writer: MessageWriter) async throws {
        var tokens = Double(configuration.messageBurst)
        var last = ContinuousClock.now
        while true {
            var next = upstream.withLock { q in q.isEmpty ? nil : q.removeFirst() }
            if next == nil {
                await upstreamReady.wait()
                next = upstream.withLock { q in q.isEmpty ? nil : q.removeFirst() }
            }
            try Task.checkCancellation()
            guard let message = next else { continue }
            let now = ContinuousClock.now
            let elapsed = now - last
            last = now
            tokens = min(Double(configuration.messageBurst), tokens + configuration.messageQPS * (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18))
            if tokens < 1 {
                try await Task.sleep(for: .seconds((1 - tokens) / configuration.messageQPS))
                tokens = 1
            }
            tokens -= 1
            do { try await writer.send(message) } catch {
                upstream.withLock { $0.insert(message, at: 0) }  // not lost: resent after reconnect
                throw error
            }
        }
    }
}
