import AsyncSupport
import KubeAPI
import Logging
import Metrics
import NIOCore
import NIOPosix
import StreamTunnel
import Synchronization

/// How the proxy reaches an endpoint on another node: a relayed stream (through the cloud's
/// tunnel) carrying a port-forward to the pod.
public typealias MeshRelay = @Sendable (_ node: String, _ namespace: String, _ pod: String, _ port: Int) async throws -> TunnelStream

/// EdgeMesh's EdgeProxy, for TCP: one listener per ClusterIP:port of the Services the node holds
/// (the ClusterIPs are local addresses of the node, see ``MeshRoutes``); each connection goes to a
/// ready endpoint the ``ServiceDirectory`` picks — dialled directly when the pod is on this node,
/// relayed through the cloud otherwise. A port with no ready endpoint has no listener, so a client
/// is refused at once instead of hanging.
final class MeshProxy: Sendable {
    struct ListenerKey: Hashable, Sendable, CustomStringConvertible {
        var ip: IPv4Address
        var port: Int
        var proto: MeshProtocol = .tcp
        var description: String { "\(ip):\(port)" + (proto == .tcp ? "" : "/\(proto.rawValue.lowercased())") }
    }

    struct Listener: Sendable {
        var namespace: String
        var name: String
        var port: MeshService.Port
    }

    let directory: ServiceDirectory
    let nodeName: String
    let relay: MeshRelay?
    let logger: Logger
    let servers = Mutex<[ListenerKey: (Listener, (any Channel)?)]>([:])
    let connections = Counter(label: "swiftedge_edgemesh_proxy_connections_total")
    let failures = Counter(label: "swiftedge_edgemesh_proxy_failures_total")
    let relayed = Counter(label: "swiftedge_edgemesh_proxy_relayed_total")
    /// Reads of up to 256 KB for bulk transfers (NIO's default stops at 64 KB): fewer system calls per byte.
    static let reads = AdaptiveRecvByteBufferAllocator(minimum: 2048, initial: 16384, maximum: 262_144)

    init(directory: ServiceDirectory, nodeName: String, relay: MeshRelay?, logger: Logger) {
        self.directory = directory; self.nodeName = nodeName; self.relay = relay; self.logger = logger
    }

    /// The listeners the directory calls for: TCP ports of Services with a ClusterIP and at least
    /// one ready endpoint.
    func desired() -> [ListenerKey: Listener] {
        var out: [ListenerKey: Listener] = [:]
        for svc in directory.services {
            guard let ip = svc.clusterIP else { continue }
            let eps = directory.endpoints(namespace: svc.namespace, name: svc.name).filter(\.ready)
            for p in svc.ports where p.proto == .tcp || p.proto == .udp {
                guard eps.contains(where: { $0.ports[p.name] != nil || ($0.ports.count == 1 && svc.ports.count == 1) }) else { continue }
                out[ListenerKey(ip: ip, port: p.port, proto: p.proto)] = Listener(namespace: svc.namespace, name: svc.name, port: p)
            }
        }
        return out
    }

    /// Follows the directory until cancelled, opening and closing listeners; all are closed at the end.
    func run() async {
        await withDiscardingTaskGroup { (group: inout DiscardingTaskGroup) -> Void in
            var seen = -1
            while !Task.isCancelled {
                let next: Int? = await directory.changed.wait(until: { $0 != seen })
                guard let v = next else { break }
                seen = v
                let toOpen: [(ListenerKey, Listener)] = reconcile()
                for (k, l) in toOpen { group.addTask { await self.listen(k, l) } }
            }
            closeAll()
        }
    }

    func closeAll() {
        let all = servers.withLock { s -> [(any Channel)?] in
            defer { s = [:] }
            return s.values.map { $0.1 }
        }
        for ch in all { ch?.close(promise: nil) }
    }

    /// Closes listeners no longer wanted; returns those to open (marked as binding).
    func reconcile() -> [(ListenerKey, Listener)] {
        let want = desired()
        let stale = servers.withLock { s -> [any Channel] in
            var out: [any Channel] = []
            for (k, (l, ch)) in s where want[k].map({ $0.namespace != l.namespace || $0.name != l.name || $0.port != l.port }) ?? true {
                if let ch { out.append(ch) }
                s[k] = nil  // a listener still binding sees it is no longer wanted
            }
            return out
        }
        for ch in stale { ch.close(promise: nil) }
        return want.filter { k, l in
            servers.withLock { s in
                guard s[k] == nil else { return false }
                s[k] = (l, nil)  // bound by its task
                return true
            }
        }.map { ($0.key, $0.value) }
    }

    /// Binds and serves one listener until it is closed.
    func listen(_ k: ListenerKey, _ l: Listener) async {
        if k.proto == .udp { return await listenUDP(k, l) }
        let bound = await bind(k, l, { $0.channel }) {
            try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelOption(.backlog, value: 1024)
                .childChannelOption(.allowRemoteHalfClosure, value: true)  // a client's FIN is passed on, its answer still comes back
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelOption(.autoRead, value: false)  // nothing is read before the connection is wired to its endpoint
                .childChannelOption(.recvAllocator, value: MeshProxy.reads)
                .bind(host: k.ip.description, port: k.port) { c in c.eventLoop.makeSucceededFuture(c) }
        }
        guard let server = bound else { return }
        logger.debug("proxying", metadata: ["service": "\(l.namespace)/\(l.name)", "address": "\(k)"])
        try? await server.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { conns in
                for try await conn in inbound {
                    conns.addTask { await self.serve(conn, l) }
                }
            }
        }
    }

    /// Binds a listener and records it; nil when binding failed (logged) or it is no longer
    /// wanted (closed again).
    func bind<Server: Sendable>(_ k: ListenerKey, _ l: Listener, _ channel: (Server) -> any Channel,
                                _ make: () async throws -> Server) async -> Server? {
        let server: Server
        do { server = try await make() } catch {
            logger.error("cannot listen for a Service", metadata: ["service": "\(l.namespace)/\(l.name)", "address": "\(k)", "error": "\(error)"])
            servers.withLock { s in if let cur = s[k], cur.1 == nil { s[k] = nil } }
            return nil
        }
        guard register(k, l, channel(server)) else {
            try? await channel(server).close()
            return nil
        }
        return server
    }

    /// Marks a listener bound; false when it is no longer wanted (closed by the caller then).
    func register(_ k: ListenerKey, _ l: Listener, _ channel: any Channel) -> Bool {
        servers.withLock { s -> Bool in
            guard let cur = s[k], cur.1 == nil, cur.0.name == l.name, cur.0.namespace == l.namespace, cur.0.port == l.port else { return false }
            s[k] = (l, channel)
            return true
        }
    }

    /// A UDP port: each client address gets a session (its own socket to the endpoint picked for
    /// it, replies sent back from the ClusterIP), closed after a minute without traffic. Only
    /// endpoints this node can dial are used: the relay carries TCP.
    func listenUDP(_ k: ListenerKey, _ l: Listener) async {
        typealias Datagrams = NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>
        let bound = await bind(k, l, { $0.channel }) {
            try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(host: k.ip.description, port: k.port) { c in c.eventLoop.makeCompletedFuture { try Datagrams(wrappingChannelSynchronously: c) } }
        }
        guard let server = bound else { return }
        let sessions = UDPSessions()
        try? await server.executeThenClose { inbound, outbound in
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask {
                    // Idle sessions closed (their reply loops then end).
                    while !Task.isCancelled {
                        try await Task.sleep(for: .seconds(15))
                        for ch in sessions.idle(longerThan: .seconds(60)) { try? await ch.close() }
                    }
                }
                for try await envelope in inbound {
                    let from = envelope.remoteAddress
                    if let ch = sessions.touch(from) {
                        ch.writeAndFlush(envelope.data, promise: nil)
                        continue
                    }
                    let clientIP = from.ipAddress.flatMap { IPv4Address($0) }
                    guard let target = directory.pick(namespace: l.namespace, name: l.name, port: l.port, client: clientIP) else { continue }
                    if let node = target.endpoint.nodeName, node != nodeName, relay != nil {
                        failures.increment()  // on another node: UDP is not relayed
                        continue
                    }
                    let upstream: NIOAsyncChannel<ByteBuffer, ByteBuffer>
                    do {
                        upstream = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                            .connect(host: target.endpoint.ip.description, port: target.port) { c in
                                c.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: c) }
                            }
                    } catch {
                        failures.increment()
                        continue
                    }
                    connections.increment()
                    sessions.add(from, upstream.channel)
                    upstream.channel.writeAndFlush(envelope.data, promise: nil)
                    group.addTask {
                        try? await upstream.executeThenClose { replies, _ in
                            for try await reply in replies {
                                _ = sessions.touch(from)
                                try await outbound.write(AddressedEnvelope(remoteAddress: from, data: reply))
                            }
                        }
                        sessions.remove(from)
                    }
                }
            }
        }
    }

    /// One client connection: to the endpoint picked for it, bytes both ways, half-closes passed
    /// on. An endpoint this node dials directly is joined to the client in the event loop (a
    /// `GlueHandler` pair: no copies through tasks, back-pressure by read gating); one on
    /// another node goes through a relay stream.
    func serve(_ client: any Channel, _ l: Listener) async {
        connections.increment()
        let clientIP = client.remoteAddress?.ipAddress.flatMap { IPv4Address($0) }
        guard let target = directory.pick(namespace: l.namespace, name: l.name, port: l.port, client: clientIP) else {
            failures.increment()
            try? await client.close()
            return
        }
        let e = target.endpoint
        if let node = e.nodeName, node != nodeName, let pod = e.podName, let relay {
            relayed.increment()
            let wrapped: NIOAsyncChannel<ByteBuffer, ByteBuffer>
            do {
                wrapped = try await client.eventLoop.submit {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: client, configuration: .init(isOutboundHalfClosureEnabled: true))
                }.get()
                try await client.setOption(.autoRead, value: true).get()
            } catch {
                try? await client.close()
                return
            }
            await serveRelayed(wrapped, node: node, namespace: e.podNamespace ?? l.namespace, pod: pod, port: target.port, relay: relay)
            return
        }
        let (near, far) = GlueHandler.matchedPair()
        do {
            let upstream = try await ClientBootstrap(group: client.eventLoop)  // the same loop: the pair never crosses threads
                .connectTimeout(.seconds(5))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .channelOption(.recvAllocator, value: MeshProxy.reads)
                .channelInitializer { c in c.eventLoop.makeCompletedFuture { try c.pipeline.syncOperations.addHandler(far) } }
                .connect(host: e.ip.description, port: target.port).get()
            try await client.eventLoop.submit { try client.pipeline.syncOperations.addHandler(near) }.get()
            try await client.setOption(.autoRead, value: true).get()
            try? await client.closeFuture.get()
            try? await upstream.closeFuture.get()
        } catch {
            failures.increment()
            logger.debug("endpoint unreachable", metadata: ["service": "\(l.namespace)/\(l.name)", "endpoint": "\(e.ip):\(target.port)", "error": "\(error)"])
            try? await client.close()
        }
    }

    func serveRelayed(_ client: NIOAsyncChannel<ByteBuffer, ByteBuffer>, node: String, namespace: String, pod: String, port: Int,
                      relay: MeshRelay) async
    {
        let stream: TunnelStream
        do { stream = try await relay(node, namespace, pod, port) } catch {
            failures.increment()
            logger.debug("relay failed", metadata: ["node": "\(node)", "pod": "\(namespace)/\(pod)", "error": "\(error)"])
            try? await client.channel.close()
            return
        }
        try? await client.executeThenClose { cin, cout in
            try await withThrowingTaskGroup(of: Void.self) { g in
                g.addTask {
                    for try await b in cin { try await stream.send(channel: 0, Array(b.readableBytesView)) }
                    try await stream.send(channel: 255, [0])  // the client sends no more: half-closed toward the pod
                }
                // Until the pod's side ends; then the client's sending stops too.
                for try await chunk in stream.data where chunk.first == 1 { try await cout.write(ByteBuffer(bytes: chunk.dropFirst())) }
                cout.finish()
                g.cancelAll()
            }
        }
        await stream.close()
    }
}

/// The UDP sessions of one Service port: client address → its socket to the endpoint.
final class UDPSessions: Sendable {
    let m = Mutex<[SocketAddress: (channel: any Channel, last: ContinuousClock.Instant)]>([:])

    /// The client's session channel, marked active.
    func touch(_ a: SocketAddress) -> (any Channel)? {
        m.withLock { s in
            guard let e = s[a] else { return nil }
            s[a] = (e.channel, .now)
            return e.channel
        }
    }

    func add(_ a: SocketAddress, _ c: any Channel) { m.withLock { $0[a] = (c, .now) } }
    func remove(_ a: SocketAddress) { _ = m.withLock { $0.removeValue(forKey: a) } }

    func idle(longerThan d: Duration) -> [any Channel] {
        let now = ContinuousClock.now
        return m.withLock { s in s.values.filter { now - $0.last > d }.map(\.channel) }
    }
}

/// Joins two channels on one event loop: what one reads the other writes, a read half-close
/// becomes a write half-close, a close closes both; a side reads only while its partner can
/// write (NIO's glue pattern).
final class GlueHandler: ChannelDuplexHandler, @unchecked Sendable {
    // Touched only on the pair's event loop (both channels share it).
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny

    private var partner: GlueHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var inputClosed = false

    static func matchedPair() -> (GlueHandler, GlueHandler) {
        let a = GlueHandler(), b = GlueHandler()
        a.partner = b
        b.partner = a
        return (a, b)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // The partner asked to read before this side existed: it may now.
        if let p = partner, p.pendingRead, context.channel.isWritable {
            p.pendingRead = false
            p.context?.read()
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { partner?.context?.write(data, promise: nil) }

    func channelReadComplete(context: ChannelHandlerContext) { partner?.context?.flush() }

    func channelInactive(context: ChannelHandlerContext) { partner?.context?.close(promise: nil) }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, case .inputClosed = e {
            inputClosed = true
            if partner?.inputClosed ?? true {
                // Both sides have sent everything: done.
                context.close(promise: nil)
                partner?.context?.close(promise: nil)
            } else {
                partner?.context?.close(mode: .output, promise: nil)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { partner?.context?.close(promise: nil) }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let p = partner, p.pendingRead {
            p.pendingRead = false
            p.context?.read()
        }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if partner?.context?.channel.isWritable ?? false { context.read() } else { pendingRead = true }
    }
}
