import DefaultSettings
import KubeAPI
import Logging
import Metrics
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import SPDY
import SPDYStreams
import ServiceLifecycle
import StreamTunnel

/// Where and how the stream server listens.
public struct KubeletStreamServerConfiguration: Sendable {
    public var host = "127.0.0.1"
    /// KubeEdge's cloudStream.streamPort.
    public var port = Defaults.streamPort
    /// Server certificate and key, and the CA whose client certificates are accepted (the
    /// cluster's: kube-apiserver presents its kubelet client certificate).
    public var tls: TLSConfiguration
    public init(tls: TLSConfiguration) { self.tls = tls }
}

/// The cloud stream server (KubeEdge's CloudStream :10003): the kubelet API paths kube-apiserver
/// calls for `kubectl logs/exec/attach/port-forward` — `/containerLogs/{ns}/{pod}/{container}`,
/// `/exec|attach/{ns}/{pod}/{container}` and `/portForward/{ns}/{pod}` (SPDY/3.1 upgrades) — served
/// through the node's stream tunnel. kube-apiserver dials `<node InternalIP>:<kubelet port>`
/// (10350, the node's `daemonEndpoints`); a DNAT rule on the cloud host sends that here, and the
/// node is found by the address the request was sent to (its `Host`). Client certificates are
/// required.
public final class KubeletStreamServer: Service {
    let configuration: KubeletStreamServerConfiguration
    let tunnels: TunnelServer
    /// The node with this InternalIP (or name).
    let nodeForAddress: @Sendable (String) -> String?
    let logger: Logger
    let onListening: @Sendable (Int) async -> Void
    let requests = Counter(label: "swiftedge_cloudstream_requests_total")

    public init(configuration: KubeletStreamServerConfiguration, tunnels: TunnelServer, logger: Logger,
                onListening: @escaping @Sendable (Int) async -> Void = { _ in },
                nodeForAddress: @escaping @Sendable (String) -> String?)
    {
        self.configuration = configuration; self.tunnels = tunnels; self.nodeForAddress = nodeForAddress; self.logger = logger
        self.onListening = onListening
    }

    /// What a connection turned into.
    enum Negotiated: Sendable {
        case spdy(NIOAsyncChannel<ByteBuffer, ByteBuffer>, HTTPRequestHead)
        case http(NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>)
    }

    public func run() async throws {
        let ssl = try NIOSSLContext(configuration: configuration.tls)
        let upgrader = SPDYUpgrader()
        let server: NIOAsyncChannel<EventLoopFuture<Negotiated>, Never> = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: configuration.host, port: configuration.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: ssl))
                    let upgrade = NIOTypedHTTPServerUpgradeConfiguration<Negotiated>(upgraders: [upgrader]) { ch in
                        ch.eventLoop.makeCompletedFuture {
                            return .http(try NIOAsyncChannel(wrappingChannelSynchronously: ch))
                        }
                    }
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: .init(upgradeConfiguration: upgrade))
                }
            }
        let port = server.channel.localAddress?.port ?? configuration.port
        logger.info("cloud stream server listening", metadata: ["address": "\(configuration.host):\(port)"])
        await onListening(port)
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { inbound in
                    for try await negotiated in inbound {
                        group.addTask { await self.handle(negotiated) }
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
        }
    }

    func handle(_ negotiated: EventLoopFuture<Negotiated>) async {
        do {
            switch try await negotiated.get() {
            case .spdy(let channel, let head): try await serveSPDY(channel, head)
            case .http(let channel): try await serveHTTP(channel)
            }
        } catch {
            logger.debug("stream connection ended", metadata: ["error": "\(error)"])
        }
    }

    /// The request's path segments and query (repeated keys kept: `command` repeats).
    static func parse(_ uri: String) -> (path: [String], query: [(String, String)]) {
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = parts[0].split(separator: "/").map { URLQuery.percentDecode($0) }
        return (path, parts.count > 1 ? URLQuery.pairs(parts[1]).map { ($0.key, $0.value) } : [])
    }

    /// The node a request is for: the address it was sent to (`Host`, the node's kubelet address).
    func node(for head: HTTPRequestHead) -> String? {
        guard var host = head.headers["host"].first else { return nil }
        if host.hasPrefix("["), let end = host.firstIndex(of: "]") {
            host = String(host[host.index(after: host.startIndex)..<end])
        } else if let colon = host.lastIndex(of: ":"), host.firstIndex(of: ":") == colon {
            host = String(host[..<colon])
        }
        return nodeForAddress(host)
    }

    /// Why a request cannot be served: its address is no edge node's.
    static func unknownAddress(_ head: HTTPRequestHead) -> String {
        "no edge node has the address \(head.headers["host"].first ?? "(no Host header)")"
    }

    /// What a kubelet exec/attach URL asks for (`input`, `output`, `error`, `tty`, `command`).
    static func execRequest(_ kind: StreamRequest.Kind, _ path: [String], _ query: [(String, String)]) -> StreamRequest? {
        guard path.count == 4 else { return nil }
        func flag(_ k: String) -> Bool { query.contains { $0.0 == k && ($0.1 == "1" || $0.1 == "true") } }
        let options = ExecOptions(command: query.filter { $0.0 == "command" }.map(\.1), stdin: flag("input"), stdout: flag("output"),
                                  stderr: flag("error"), tty: flag("tty"))
        return StreamRequest(kind: kind, namespace: path[1], pod: path[2], container: path[3], exec: options)
    }

    func serveSPDY(_ channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>, _ head: HTTPRequestHead) async throws {
        requests.increment()
        let (path, query) = Self.parse(head.uri)
        let node = node(for: head)
        let ch = channel.channel
        try await channel.executeThenClose { inbound, outbound in
            let input = inbound.map { Array($0.readableBytesView) }
            let send: @Sendable (SPDYFrame) async throws -> Void = { try await outbound.write(ByteBuffer(bytes: $0.encoded())) }
            let open: @Sendable (StreamRequest) async throws -> TunnelStream = { r in
                guard let node else { throw TunnelError(Self.unknownAddress(head)) }
                return try await self.tunnels.open(node: node, r)
            }
            switch path.first {
            case "exec", "attach":
                let kind: StreamRequest.Kind = path.first == "exec" ? .exec : .attach
                let request = Self.execRequest(kind, path, query)
                var refusal: String?
                if request == nil { refusal = "expected /\(kind.rawValue)/{namespace}/{pod}/{container}" }
                else if kind == .exec, request!.exec.command.isEmpty { refusal = "you must specify at least one command for the container" }
                else if node == nil { refusal = Self.unknownAddress(head) }
                logger.info("pod stream", metadata: ["kind": "\(kind.rawValue)", "pod": "\(path.dropFirst().prefix(2).joined(separator: "/"))",
                                                     "node": "\(node ?? "-")", "via": "cloud stream server"])
                try await SPDYExec.serve(input: input, send: send, request: request, refusal: refusal, open: open,
                                         close: { try? await ch.close() }, logger: logger)
            case "portForward" where path.count == 3:
                logger.info("pod stream", metadata: ["kind": "portforward", "pod": "\(path[1])/\(path[2])", "node": "\(node ?? "-")",
                                                     "via": "cloud stream server"])
                try await SPDYPortForward.serve(input: input, send: send, namespace: path[1], pod: path[2], node: node ?? "-",
                                                open: open, logger: logger)
            default:
                try await send(.goAway(lastGoodStream: 0, status: 1))
            }
        }
    }

    func serveHTTP(_ channel: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async throws {
        try await channel.executeThenClose { inbound, outbound in
            var head: HTTPRequestHead?
            for try await part in inbound {
                switch part {
                case .head(let h): head = h
                case .body: continue
                case .end:
                    guard let h = head else { return }
                    requests.increment()
                    try await respond(h, outbound)
                    return  // one request per connection (streams are long; kube-apiserver dials again)
                }
            }
        }
    }

    func respond(_ head: HTTPRequestHead, _ out: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>) async throws {
        func plain(_ status: HTTPResponseStatus, _ text: String, contentType: String = "text/plain; charset=utf-8") async throws {
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: contentType)
            headers.add(name: "Content-Length", value: String(text.utf8.count))
            headers.add(name: "Connection", value: "close")
            try await out.write(.head(HTTPResponseHead(version: head.version, status: status, headers: headers)))
            try await out.write(.body(.byteBuffer(ByteBuffer(string: text))))
            try await out.write(.end(nil))
        }
        let (path, query) = Self.parse(head.uri)
        switch (head.method, path.first) {
        case (.GET, "healthz"):
            try await plain(.ok, "ok")
        case (.GET, "containerLogs") where path.count == 4:
            guard let node = node(for: head) else {
                try await plain(.notFound, Self.unknownAddress(head) + "\n")
                return
            }
            func int(_ k: String) -> Int64? { query.last { $0.0 == k }.flatMap { Int64($0.1) } }
            func flag(_ k: String) -> Bool { query.contains { $0.0 == k && ($0.1 == "true" || $0.1 == "1") } }
            let options = LogOptions(follow: flag("follow"), previous: flag("previous"), timestamps: flag("timestamps"),
                                     tailLines: int("tailLines"), sinceSeconds: int("sinceSeconds"), limitBytes: int("limitBytes"))
            let stream: TunnelStream
            do {
                stream = try await tunnels.open(node: node, StreamRequest(kind: .log, namespace: path[1], pod: path[2], container: path[3], log: options))
            } catch {
                try await plain(.internalServerError, "\(error)\n")
                return
            }
            logger.info("pod stream", metadata: ["kind": "log", "pod": "\(path[1])/\(path[2])", "node": "\(node)", "via": "cloud stream server"])
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "text/plain")
            headers.add(name: "Transfer-Encoding", value: "chunked")
            headers.add(name: "Connection", value: "close")
            var started = false
            do {
                for try await chunk in stream.data where chunk.count > 1 {
                    if chunk[0] == 3 {
                        // The node could not serve it (no such container, no previous log…).
                        if !started { try await plain(.notFound, String(decoding: chunk.dropFirst(), as: UTF8.self) + "\n") }
                        await stream.close()
                        return
                    }
                    if !started {
                        try await out.write(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers)))
                        started = true
                    }
                    try await out.write(.body(.byteBuffer(ByteBuffer(bytes: chunk.dropFirst()))))
                }
            } catch {
                if !started { try await plain(.internalServerError, "\(error)\n"); return }
            }
            if !started { try await out.write(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers))) }
            try await out.write(.end(nil))
            await stream.close()
        case (.GET, "metrics") where path == ["metrics", "resource"]:
            guard let node = node(for: head) else {
                try await plain(.notFound, Self.unknownAddress(head) + "\n")
                return
            }
            do {
                let stream = try await tunnels.open(node: node, StreamRequest(kind: .stats, namespace: "", pod: "", container: ""))
                var bytes: [UInt8] = []
                for try await chunk in stream.data where chunk.first == 1 { bytes += chunk.dropFirst() }
                let usage = try NodeUsage(json: try JSON.parse(bytes))
                try await plain(.ok, ResourceMetrics.text(usage), contentType: "text/plain; version=0.0.4")
            } catch {
                try await plain(.serviceUnavailable, "no usage from node \(node): \(error)\n")
            }
        case (_, "exec"), (_, "attach"), (_, "portForward"):
            try await plain(.badRequest, "Upgrade request required: SPDY/3.1\n")
        default:
            try await plain(.notFound, "404 page not found\n")
        }
    }
}

/// Accepts `Upgrade: SPDY/3.1` for the kubelet streaming paths, answering with the stream
/// protocol it speaks (`X-Stream-Protocol-Version`).
struct SPDYUpgrader: NIOTypedHTTPServerProtocolUpgrader {
    typealias UpgradeResult = KubeletStreamServer.Negotiated
    var supportedProtocol: String { "SPDY/3.1" }
    var requiredUpgradeHeaders: [String] { [] }

    func buildUpgradeResponse(channel: any Channel, upgradeRequest: HTTPRequestHead, initialResponseHeaders: HTTPHeaders) -> EventLoopFuture<HTTPHeaders> {
        let offered = upgradeRequest.headers["X-Stream-Protocol-Version"].flatMap { $0.split(separator: ",") }
            .map { String($0.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed()) }
        let path = KubeletStreamServer.parse(upgradeRequest.uri).path
        let wanted = path.first == "portForward" ? SPDYPortForward.protocolVersion : SPDYExec.protocolVersion
        var headers = initialResponseHeaders
        // A client that offers no version gets the one this server speaks (kubelet does the same
        // for the oldest clients); one that offers others but not ours is refused.
        guard offered.isEmpty || offered.contains(wanted) else {
            return channel.eventLoop.makeFailedFuture(TunnelError("none of the offered stream protocols \(offered) is \(wanted)"))
        }
        headers.add(name: "X-Stream-Protocol-Version", value: wanted)
        return channel.eventLoop.makeSucceededFuture(headers)
    }

    func upgrade(channel: any Channel, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<UpgradeResult> {
        channel.eventLoop.makeCompletedFuture {
            .spdy(try NIOAsyncChannel(wrappingChannelSynchronously: channel), upgradeRequest)
        }
    }
}
