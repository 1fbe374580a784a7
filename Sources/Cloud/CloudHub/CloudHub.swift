import AsyncSupport
import CloudEdgeProtocol
import CloudEdgeTransport
import DefaultSettings
import Foundation
import KubeAPI
import Logging
import Metrics
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import PKI
import ServiceLifecycle
import StreamTunnel
import Synchronization
import X509

/// CloudHub settings (KubeEdge's `cloudHub` section where it applies).
public struct CloudHubConfiguration: Sendable {
    public var host = "127.0.0.1"
    /// WebSocket port (KubeEdge: 10000).
    public var port = Defaults.cloudHubPort
    /// Maximum connected nodes; further connections are refused.
    public var nodeLimit = 1000
    /// A node silent for this long is disconnected (KubeEdge: 30 s; edges ping every 15 s).
    public var keepaliveTimeout: Duration = .seconds(30)
    /// The certificate's node name must match the connecting node, and upstream messages may only
    /// concern the node itself and its pods (KubeEdge ships this off; SwiftEdge on).
    public var nodeAuthorization = true
    public init() {}
}

/// What CloudHub tells the rest of the cloud.
public enum HubEvent: Sendable {
    case connected(node: String)
    case disconnected(node: String, reason: String)
    /// An upstream report (not an ack or keepalive) from an authenticated, authorised node.
    case report(node: String, UpstreamReport, request: Message)
    /// A connection that was refused (bad path, certificate of another node, node limit).
    case refused(reason: String)
    /// A router message (group `user`: an eventbus event, a servicebus request or answer) from a
    /// node; with node authorization, one that names another node never gets here.
    case router(node: String, RouterMessage, message: Message)
}

/// Decides whether a node may send a message about a resource (node authorization). It sees
/// every message of the resource group, whatever its operation, before any component does.
public protocol UpstreamAuthorizer: Sendable {
    /// Nil when allowed, else why not.
    func authorize(_ resource: ResourceRef, from node: String) -> String?
}

/// The default rule: a node may speak about its own Node, Lease and node status, and not about
/// pods bound to other nodes (`podNode` answers which node a pod is bound to).
public struct NodeAuthorizer: UpstreamAuthorizer {
    let podNode: @Sendable (_ namespace: String, _ name: String) -> String?
    public init(podNode: @escaping @Sendable (String, String) -> String?) { self.podNode = podNode }

    public func authorize(_ ref: ResourceRef, from node: String) -> String? {
        switch ref.kind {
        case .node, .nodeStatus, .nodePatch, .lease, .csiNode:
            if let name = ref.name, name != node { return "node \(node) may not write \(ref.kind) of node \(name)" }
        case .pod, .podStatus, .podPatch:
            guard let name = ref.name, let ns = ref.namespace else { return nil }
            // A pod bound to another node is a violation; a pod the cloud does not know (yet, or
            // any more: a late status or deletion confirmation) is not — the upstream handler
            // checks the binding itself and ignores it.
            if let owner = podNode(ns, name), owner != node { return "node \(node) may not write pod \(ns)/\(name) bound to \(owner)" }
        case .configMap, .secret, .service, .endpoints, .device, .deviceModel, .event, .deviceStatus, .objectSync,
             .serviceAccountToken, .caCertificate, .certificateSigningRequest, .apiRequest, .role, .roleBinding, .clusterRole, .clusterRoleBinding,
             .persistentVolumeClaim, .persistentVolume, .volumeAttachment, .csiDriver, .volume:
            break
        }
        return nil
    }
}

/// CloudHub: the WebSocket server (TLS, client certificates) edge nodes dial into on
/// `/<projectID>/<node>/events`, speaking KubeEdge's message JSON. One session per node; a new
/// connection of a node replaces its old one. Delivers upstream messages as ``HubEvent``s and
/// sends downstream messages, optionally awaiting the node's `"OK"` ack.
public final class CloudHub: Service {
    public let configuration: CloudHubConfiguration
    let tls: NIOSSLContext
    let logger: Logger
    let authorizer: (any UpstreamAuthorizer)?
    let tunnels: TunnelServer?
    let onEvent: @Sendable (HubEvent) async -> Void
    let onRunning: @Sendable (Int) async -> Void
    let sessions = Mutex<[String: Session]>([:])
    let acks = AckTracker()
    /// Calls to nodes awaiting their answer (``request(_:to:timeout:)``), by message id, with the
    /// node that must give it.
    let pendingReplies = Mutex<[String: (node: String, waiter: CheckedContinuation<Message?, Never>)]>([:])
    /// Connected/disconnected events, queued in the order the session table changed (under its
    /// lock) and handed to `onEvent` by one task, so a node's quick reconnect is never seen as
    /// "connected, then disconnected".
    let lifecycle: AsyncStream<HubEvent>
    let lifecycleSink: AsyncStream<HubEvent>.Continuation
    let boundPort = Mutex<Int?>(nil)
    let connectedGauge = Gauge(label: "swiftedge_cloudhub_connected_nodes")
    let refused = Counter(label: "swiftedge_cloudhub_refused_connections_total")
    let malformedReports = Counter(label: "swiftedge_cloudhub_malformed_reports_total")

    /// Per-node traffic counters (label `node`), created once per node.
    struct NodeCounters: Sendable {
        let bytesOut, bytesIn, messagesOut, messagesIn: Counter
        init(node: String) {
            let d = [("node", node)]
            bytesOut = Counter(label: "swiftedge_cloudhub_node_bytes_sent_total", dimensions: d)
            bytesIn = Counter(label: "swiftedge_cloudhub_node_bytes_received_total", dimensions: d)
            messagesOut = Counter(label: "swiftedge_cloudhub_node_messages_sent_total", dimensions: d)
            messagesIn = Counter(label: "swiftedge_cloudhub_node_messages_received_total", dimensions: d)
        }
    }
    let counters = LazyMap<String, NodeCounters>()

    final class Session: Sendable {
        let id: UInt64
        let writer: MessageWriter
        let channel: any Channel
        let counters: NodeCounters
        let lastSeen = Mutex(ContinuousClock.now)
        /// Why the cloud closed it (keepalive timeout), if it did.
        let closeReason = Mutex<String?>(nil)
        /// Messages waiting to be written (batched: one flush per batch).
        let outbox = MessageOutbox()
        init(id: UInt64, writer: MessageWriter, channel: any Channel, counters: NodeCounters) {
            self.id = id; self.writer = writer; self.channel = channel; self.counters = counters
        }
        /// Closes the connection at once (no close handshake: the peer may be gone).
        func abort(_ reason: String) {
            closeReason.withLock { $0 = $0 ?? reason }
            channel.close(promise: nil)
        }
    }

    /// - Parameters:
    ///   - ca: the CA that signed the nodes' certificates (client certificates are verified against it).
    ///   - serverCertificate: CloudHub's serving certificate and key.
    /// - Parameter tunnels: serves nodes' stream tunnels (`/<projectID>/<node>/stream`, for logs
    ///   and exec), authenticated like the message channel.
    public init(configuration: CloudHubConfiguration, ca: CertificateAuthority, serverCertificate: CertificateAndKey,
                authorizer: (any UpstreamAuthorizer)?, tunnels: TunnelServer? = nil, logger: Logger,
                onRunning: @escaping @Sendable (Int) async -> Void = { _ in },
                onEvent: @escaping @Sendable (HubEvent) async -> Void) throws
    {
        self.configuration = configuration; self.logger = logger; self.authorizer = authorizer; self.onEvent = onEvent
        self.tunnels = tunnels
        self.onRunning = onRunning
        (lifecycle, lifecycleSink) = AsyncStream<HubEvent>.makeStream()
        var t = try serverCertificate.serverTLSConfiguration(trusting: ca.certificatePEM)
        t.certificateVerification = .noHostnameVerification
        t.minimumTLSVersion = .tlsv12
        tls = try NIOSSLContext(configuration: t)
    }

    /// The port actually bound (after ``run()`` started; useful with port 0).
    public var port: Int? { boundPort.withLock { $0 } }

    public var connectedNodes: [String] { sessions.withLock { Array($0.keys) } }

    enum Upgrade {
        case websocket(NIOAsyncChannel<WebSocketFrame, WebSocketFrame>, path: String, nodeHeader: String?, certCN: String?)
        case refused(NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>)
    }

    /// The upgrade response header with which this cloud tells edges it serves the stream tunnel.
    public static let streamTunnelHeader = "X-SwiftEdge-Stream-Tunnel"

    public func run() async throws {
        let tls = self.tls
        let servesTunnels = tunnels != nil
        let server: NIOAsyncChannel<EventLoopFuture<Upgrade>, Never> = try await ServerBootstrap(group: .singletonMultiThreadedEventLoopGroup)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 1024)
            .bind(host: configuration.host, port: configuration.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                    let upgrader = NIOTypedWebSocketServerUpgrader<Upgrade>(
                        maxFrameSize: maxMessageBytes,
                        shouldUpgrade: { channel, head in
                            // Advertised on the message channel: this cloud serves the stream tunnel on
                            // its own port (KubeEdge's cloudcore does not; an edge must not dial it there).
                            var h = HTTPHeaders()
                            if servesTunnels { h.add(name: Self.streamTunnelHeader, value: "/stream") }
                            return channel.eventLoop.makeSucceededFuture(h)
                        },
                        upgradePipelineHandler: { channel, head in
                            channel.eventLoop.makeCompletedFuture {
                                let cn = try? channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self).peerCertificate
                                    .flatMap { try? Certificate(derEncoded: $0.toDERBytes()) }?.subject.commonName
                                try channel.pipeline.syncOperations.addHandler(NIOWebSocketFrameAggregator(
                                    minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 64, maxAccumulatedFrameSize: maxMessageBytes))
                                let ws = try NIOAsyncChannel<WebSocketFrame, WebSocketFrame>(wrappingChannelSynchronously: channel)
                                return Upgrade.websocket(ws, path: head.uri, nodeHeader: head.headers.first(name: "node_id"), certCN: cn)
                            }
                        })
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: .init(
                        upgradeConfiguration: .init(upgraders: [upgrader], notUpgradingCompletionHandler: { channel in
                            channel.eventLoop.makeCompletedFuture {
                                Upgrade.refused(try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel))
                            }
                        })))
                }
            }
        boundPort.withLock { $0 = server.channel.localAddress?.port }
        logger.info("CloudHub listening", metadata: ["address": "\(configuration.host):\(port ?? 0)", "nodeLimit": "\(configuration.nodeLimit)"])
        await onRunning(port ?? 0)
        try await withGracefulShutdownHandler {
            try await withThrowingTaskGroup(of: Void.self) { sweepers in
                sweepers.addTask { await self.acks.run() }
                sweepers.addTask { await self.keepaliveSweeper() }
                sweepers.addTask { for await e in self.lifecycle { await self.onEvent(e) } }
                defer { sweepers.cancelAll() }
                try await withThrowingDiscardingTaskGroup { group in
                    try await server.executeThenClose { inbound in
                        for try await upgrade in inbound {
                            group.addTask { await self.handle(upgrade) }
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
            for s in self.sessions.withLock({ Array($0.values) }) { s.abort("cloud shutting down") }
        }
    }

    /// One task for all sessions: a node silent for longer than the keepalive timeout is cut off.
    func keepaliveSweeper() async {
        let period = min(Duration.seconds(1), configuration.keepaliveTimeout / 4)
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do { try await Task.sleep(for: period) } catch { return }
            let now = ContinuousClock.now
            for s in sessions.withLock({ Array($0.values) }) where now - s.lastSeen.withLock({ $0 }) > configuration.keepaliveTimeout {
                s.abort("no message or keepalive for \(configuration.keepaliveTimeout)")
            }
        }
    }

    func handle(_ upgrade: EventLoopFuture<Upgrade>) async {
        let result: Upgrade
        do { result = try await upgrade.get() } catch {
            refused.increment()
            logger.info("connection failed before upgrade", metadata: ["error": "\(error)"])
            return
        }
        switch result {
        case .refused(let http):
            do { try await http.executeThenClose { _, outbound in
                let body = "CloudHub speaks WebSocket on /<projectID>/<node>/events\n"
                var headers = HTTPHeaders()
                headers.add(name: "Content-Length", value: String(body.utf8.count))
                headers.add(name: "Connection", value: "close")
                try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: .badRequest, headers: headers)))
                try await outbound.write(.body(.byteBuffer(ByteBuffer(string: body))))
                try await outbound.write(.end(nil))
            } } catch {}
        case .websocket(let ws, let path, let header, let cn):
            await serve(ws, path: path, nodeHeader: header, certCN: cn)
        }
    }

    /// Checks who connects; returns the node name or why it is refused.
    func admit(path: String, nodeHeader: String?, certCN: String?, endpoint: String = "events") -> Result<String, ConnectionClosed> {
        let parts = path.split(separator: "?").first.map { $0.split(separator: "/").map(String.init) } ?? []
        guard parts.count == 3, parts[2] == endpoint, !parts[1].isEmpty else {
            return .failure(ConnectionClosed("bad path \(path): expected /<projectID>/<node>/events or /stream"))
        }
        let node = parts[1]
        if let h = nodeHeader, h != node { return .failure(ConnectionClosed("node_id header \(h) does not match path node \(node)")) }
        if configuration.nodeAuthorization {
            guard certCN == "system:node:\(node)" else {
                return .failure(ConnectionClosed("certificate of \(certCN ?? "nobody") may not connect as node \(node)"))
            }
        }
        return .success(node)
    }

    static let sessionIDs = Atomic<UInt64>(0)

    func serve(_ ws: NIOAsyncChannel<WebSocketFrame, WebSocketFrame>, path: String, nodeHeader: String?, certCN: String?) async {
        try? await ws.executeThenClose { inbound, outbound in
            let writer = MessageWriter(outbound: outbound, isClient: false)
            if let tunnels, path.split(separator: "?").first?.hasSuffix("/stream") == true {
                switch admit(path: path, nodeHeader: nodeHeader, certCN: certCN, endpoint: "stream") {
                case .failure(let why):
                    refused.increment()
                    logger.warning("stream tunnel refused", metadata: ["reason": "\(why)", "cert": "\(certCN ?? "")"])
                    await writer.close(.policyViolation, reason: why.reason)
                case .success(let node):
                    await withGracefulShutdownHandler {
                        await tunnels.serve(node: node, inbound: inbound, outbound: outbound)
                    } onGracefulShutdown: {
                        ws.channel.close(promise: nil)
                    }
                }
                return
            }
            let node: String
            switch admit(path: path, nodeHeader: nodeHeader, certCN: certCN) {
            case .failure(let why):
                refused.increment()
                logger.warning("edge connection refused", metadata: ["reason": "\(why)", "cert": "\(certCN ?? "")"])
                await writer.close(.policyViolation, reason: why.reason)
                await onEvent(.refused(reason: why.reason))
                return
            case .success(let n): node = n
            }
            let id = Self.sessionIDs.wrappingAdd(1, ordering: .relaxed).newValue
            let session = Session(id: id, writer: writer, channel: ws.channel, counters: counters.value(for: node) { NodeCounters(node: node) })
            let (admitted, replaced) = sessions.withLock { s -> (Bool, Session?) in
                let old = s[node]
                if old == nil && s.count >= configuration.nodeLimit { return (false, nil) }
                s[node] = session
                lifecycleSink.yield(.connected(node: node))
                return (true, old)
            }
            guard admitted else {
                refused.increment()
                logger.warning("edge connection refused: node limit reached", metadata: ["node": "\(node)", "limit": "\(configuration.nodeLimit)"])
                await writer.close(.policyViolation, reason: "node limit \(configuration.nodeLimit) reached")
                await onEvent(.refused(reason: "node limit \(configuration.nodeLimit) reached"))
                return
            }
            if let replaced { await replaced.writer.close(.normalClosure, reason: "replaced by a new connection") }
            connectedGauge.record(sessions.withLock { $0.count })
            logger.info("edge node connected", metadata: ["node": "\(node)", "session": "\(id)"])
            var reason = "connection closed"
            do {
                try await withGracefulShutdownHandler {
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            try await session.outbox.drain(to: writer) { n, bytes in
                                session.counters.bytesOut.increment(by: bytes)
                                session.counters.messagesOut.increment(by: n)
                            }
                        }
                        try await MessageReader(inbound: inbound, writer: writer).run { message, bytes in
                            session.lastSeen.withLock { $0 = .now }
                            session.counters.bytesIn.increment(by: bytes)
                            session.counters.messagesIn.increment()
                            try await self.received(message, from: node)
                        }
                        group.cancelAll()
                    }
                } onGracefulShutdown: {
                    // Finishing the writer alone leaves the inbound side open while the node
                    // keeps sending keepalives: close the connection.
                    session.abort("cloud shutting down")
                }
                if let r = session.closeReason.withLock({ $0 }) {
                    reason = r
                    logger.log(level: Task.isShuttingDownGracefully ? .info : .warning, "edge connection closed",
                               metadata: ["node": "\(node)", "reason": "\(reason)"])
                }
            } catch let e as ConnectionClosed {
                reason = e.reason
                logger.warning("edge connection closed", metadata: ["node": "\(node)", "reason": "\(e.reason)"])
                await writer.close(.policyViolation, reason: e.reason)
            } catch {
                // Errors of the WebSocket codec (an oversized or malformed frame) end up here, and
                // the channel error of a connection the keepalive sweeper aborted.
                reason = session.closeReason.withLock { $0 } ?? Self.describe(error)
                logger.warning("edge connection closed", metadata: ["node": "\(node)", "reason": "\(reason)"])
                await writer.close(.policyViolation, reason: reason)
            }
            session.outbox.close()
            acks.sessionEnded(id)
            let removed = sessions.withLock { s -> Bool in
                guard s[node]?.id == id else { return false }
                s[node] = nil
                lifecycleSink.yield(.disconnected(node: node, reason: reason))
                return true
            }
            connectedGauge.record(sessions.withLock { $0.count })
            if removed { logger.info("edge node disconnected", metadata: ["node": "\(node)", "reason": "\(reason)"]) }
        }
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case NIOWebSocketError.invalidFrameLength: "frame longer than the \(maxMessageBytes)-byte limit"
        case let e as NIOWebSocketError: "invalid WebSocket frame: \(e)"
        default: "\(error)"
        }
    }

    func received(_ message: Message, from node: String) async throws {
        if message.isAck, let parent = message.parentID {
            ackArrived(parent)
            return
        }
        if message.route.group == RouterMessage.group {
            let routed: RouterMessage?
            do { routed = try RouterMessage(message) } catch {
                malformedReports.increment()
                logger.warning("router message refused", metadata: ["node": "\(node)", "resource": "\(message.route.resource)", "error": "\(error)"])
                return
            }
            guard let routed else { return }
            if configuration.nodeAuthorization, let named = routed.node, named != node {
                throw ConnectionClosed("unauthorized: node \(node) may not send router messages of node \(named)")
            }
            await onEvent(.router(node: node, routed, message: message))
            return
        }
        if message.route.operation == .response || message.route.operation == .error, let parent = message.parentID,
           let waiter = pendingReplies.withLock({ p -> CheckedContinuation<Message?, Never>? in
               guard p[parent]?.node == node else { return nil }  // only the node asked answers
               return p.removeValue(forKey: parent)?.waiter
           })
        {
            waiter.resume(returning: message)
            return
        }
        if message.route.operation == .keepalive || message.route.operation == .response { return }
        guard MessageGroup.carriesResources(message.route.group) else {
            logger.debug("upstream message not handled", metadata: ["node": "\(node)", "group": "\(message.route.group)"])
            return
        }
        // Decoded once, here: the authorizer sees the resource of every message, the components
        // get the typed report.
        let ref: ResourceRef
        do { ref = try ResourceRef(parsing: message.route.resource) } catch let e where e.reason == .unknownKind {
            logger.debug("upstream message of an unknown kind dropped", metadata: ["node": "\(node)", "resource": "\(message.route.resource)"])
            return
        } catch {
            // A malformed resource string ends an authorised session (a broken or hostile node).
            if configuration.nodeAuthorization { throw ConnectionClosed("unauthorized: \(error.message)") }
            malformedReports.increment()
            return
        }
        if configuration.nodeAuthorization, let authorizer, let why = authorizer.authorize(ref, from: node) {
            throw ConnectionClosed("unauthorized: \(why)")
        }
        let report: UpstreamReport
        do {
            guard let r = try UpstreamReport(ref: ref, operation: message.route.operation, content: message.content) else {
                logger.debug("upstream message not handled", metadata: ["node": "\(node)", "resource": "\(message.route.resource)",
                                                                          "operation": "\(message.route.operation.rawValue)"])
                return
            }
            report = r
        } catch {
            // Malformed content of a known report: dropped and counted, the session goes on.
            malformedReports.increment()
            logger.warning("upstream message refused", metadata: ["node": "\(node)", "resource": "\(message.route.resource)", "error": "\(error)"])
            return
        }
        await onEvent(.report(node: node, report, request: message))
    }

    /// Closes a node's connection (it will reconnect); for operators and tests.
    public func disconnect(_ node: String, reason: String) async {
        guard let s = sessions.withLock({ $0[node] }) else { return }
        await s.writer.close(.goingAway, reason: reason)
    }

    /// Queues a message for a connected node (written in order, batched with others). Throws
    /// if the node is not connected.
    public func send(_ message: Message, to node: String) async throws {
        guard let s = sessions.withLock({ $0[node] }) else { throw ConnectionClosed("node \(node) is not connected") }
        try s.outbox.enqueue(message)
    }

    /// Sends and waits for the node's ack (true), or the timeout, a closed connection or a node
    /// that is not connected (false).
    public func sendAwaitingAck(_ message: Message, to node: String, timeout: Duration) async -> Bool {
        guard let s = sessions.withLock({ $0[node] }) else { return false }
        acks.register(message.id, session: s.id, timeout: timeout)
        do { try s.outbox.enqueue(message) } catch {
            acks.cancel(message.id)
            return false
        }
        let ok = await acks.wait(message.id)
        if !ok { logger.debug("not acknowledged", metadata: ["node": "\(node)", "message": "\(message.id)", "resource": "\(message.route.resource)"]) }
        return ok
    }

    /// Sends a call to a node and waits for its answer (`response` or `error` with the call's id
    /// as parent): nil when the node is not connected, the write fails or no answer comes in time.
    public func request(_ message: Message, to node: String, timeout: Duration) async -> Message? {
        guard let s = sessions.withLock({ $0[node] }) else { return nil }
        let id = message.id
        return await withTaskGroup(of: Void.self) { group -> Message? in
            let answer = await withCheckedContinuation { (c: CheckedContinuation<Message?, Never>) in
                pendingReplies.withLock { $0[id] = (node, c) }
                do { try s.outbox.enqueue(message) } catch {
                    pendingReplies.withLock { $0.removeValue(forKey: id) }?.waiter.resume(returning: nil)
                    return
                }
                group.addTask {
                    try? await Task.sleep(for: timeout)
                    self.pendingReplies.withLock { $0.removeValue(forKey: id) }?.waiter.resume(returning: nil)
                }
            }
            group.cancelAll()
            return answer
        }
    }

    func ackArrived(_ parent: String) {
        if !acks.acked(parent) { logger.trace("ack without a waiter", metadata: ["message": "\(parent)"]) }
    }
}
