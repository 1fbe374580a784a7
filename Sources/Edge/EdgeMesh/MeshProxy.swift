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
        let server: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
        do {
            server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelOption(.backlog, value: 1024)
                .bind(host: k.ip.description, port: k.port) { c in
                    c.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: c, configuration: .init(isOutboundHalfClosureEnabled: true))
                    }
                }
        } catch {
            logger.error("cannot listen for a Service", metadata: ["service": "\(l.namespace)/\(l.name)", "address": "\(k)", "error": "\(error)"])
            servers.withLock { s in if let cur = s[k], cur.1 == nil { s[k] = nil } }
            return
        }
        guard register(k, l, server.channel) else {
            try? await server.channel.close()
            return
        }
        logger.debug("proxying", metadata: ["service": "\(l.namespace)/\(l.name)", "address": "\(k)"])
        try? await server.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { conns in
                for try await conn in inbound {
                    conns.addTask { await self.serve(conn, l) }
                }
            }
        }
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
        let server: Datagrams
        do {
            server = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(host: k.ip.description, port: k.port) { c in c.eventLoop.makeCompletedFuture { try Datagrams(wrappingChannelSynchronously: c) } }
        } catch {
            logger.error("cannot listen for a Service", metadata: ["service": "\(l.namespace)/\(l.name)", "address": "\(k)", "error": "\(error)"])
            servers.withLock { s in if let cur = s[k], cur.1 == nil { s[k] = nil } }
            return
        }
        guard register(k, l, server.channel) else {
            try? await server.channel.close()
            return
        }
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

    /// One client connection: to the endpoint picked for it, bytes both ways, half-closes passed on.
    func serve(_ client: NIOAsyncChannel<ByteBuffer, ByteBuffer>, _ l: Listener) async {
        connections.increment()
        let clientIP = client.channel.remoteAddress?.ipAddress.flatMap { IPv4Address($0) }
        guard let target = directory.pick(namespace: l.namespace, name: l.name, port: l.port, client: clientIP) else {
            failures.increment()
            try? await client.channel.close()
            return
        }
        let e = target.endpoint
        if let node = e.nodeName, node != nodeName, let pod = e.podName, let relay {
            relayed.increment()
            await serveRelayed(client, node: node, namespace: e.podNamespace ?? l.namespace, pod: pod, port: target.port, relay: relay)
            return
        }
        let upstream: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            upstream = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(5))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connect(host: e.ip.description, port: target.port) { c in
                    c.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: c, configuration: .init(isOutboundHalfClosureEnabled: true))
                    }
                }
        } catch {
            failures.increment()
            logger.debug("endpoint unreachable", metadata: ["service": "\(l.namespace)/\(l.name)", "endpoint": "\(e.ip):\(target.port)", "error": "\(error)"])
            try? await client.channel.close()
            return
        }
        try? await client.executeThenClose { cin, cout in
            try await upstream.executeThenClose { uin, uout in
                try await withThrowingTaskGroup(of: Void.self) { g in
                    g.addTask {
                        for try await b in cin { try await uout.write(b) }
                        uout.finish()
                    }
                    g.addTask {
                        for try await b in uin { try await cout.write(b) }
                        cout.finish()
                    }
                    try await g.waitForAll()
                }
            }
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
