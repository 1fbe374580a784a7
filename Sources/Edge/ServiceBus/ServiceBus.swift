import AsyncSupport
import CloudEdgeProtocol
import Foundation
import HTTPService
import HTTPTypes
import Hummingbird
import Logging
import Metrics
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

/// KubeEdge's servicebus on a node: carries the cloud's REST calls (a Rule rest→servicebus) to
/// HTTP apps on the node (`http://127.0.0.1:<port><path>`) and their answers back, and serves
/// apps on 127.0.0.1:9060 that call a REST endpoint in the cloud through a Rule
/// servicebus→rest (only URLs a Rule allows). Bodies are bounded, calls have deadlines.
public final class ServiceBus: Service {
    public struct Configuration: Sendable {
        public var host = "127.0.0.1"
        /// KubeEdge's servicebus port (0: no server for apps; cloud calls still work).
        public var port = 9060
        public var bodyLimit = 4 << 20
        public var callTimeout: Duration = .seconds(30)
        public init() {}
    }

    let nodeName: String
    let configuration: Configuration
    let upstream: @Sendable (Message) -> Void
    /// Sends a request to the cloud and waits for its answer (nil: no answer, offline).
    let request: @Sendable (Message, Duration) async -> Message?
    let logger: Logger
    let allowed = Mutex<Set<String>>([])
    /// The cloud's calls, made concurrently by ``run()`` (never in the channel's read loop).
    let calls = Counter(label: "swiftedge_servicebus_calls_total")
    struct Call: Sendable { var message: Message; var port: Int; var path: String; var request: RouterHTTPRequest }
    let inbox: AsyncStream<Call>
    let inboxSink: AsyncStream<Call>.Continuation
    let dropped = Counter(label: "swiftedge_servicebus_dropped_total")
    let callFailures = Counter(label: "swiftedge_servicebus_call_failures_total")

    public init(nodeName: String, configuration: Configuration = Configuration(), logger: Logger,
                upstream: @escaping @Sendable (Message) -> Void, request: @escaping @Sendable (Message, Duration) async -> Message?)
    {
        self.nodeName = nodeName; self.configuration = configuration; self.logger = logger; self.upstream = upstream; self.request = request
        (inbox, inboxSink) = AsyncStream<Call>.makeStream(bufferingPolicy: .bufferingOldest(1000))
    }

    public func run() async throws {
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask {
                await withDiscardingTaskGroup { calling in
                    for await c in self.inbox.cancelOnGracefulShutdown() {
                        calling.addTask { await self.serve(c) }
                    }
                }
            }
            if configuration.port > 0 {
                let server = HTTPService(responder: AppRequests(bus: self), host: configuration.host, port: configuration.port,
                                         serverName: "swiftedge-servicebus", logger: logger) { [logger, configuration] channel in
                    logger.info("servicebus listening", metadata: ["address": "\(configuration.host):\(channel.localAddress?.port ?? 0)"])
                }
                group.addTask { try await server.run() }
            }
            try await gracefulShutdown()
            group.cancelAll()
        }
    }

    /// Makes one of the cloud's calls and sends the answer up.
    func serve(_ c: Call) async {
        calls.increment()
        let answer: RouterHTTPResponse
        do {
            answer = try await call(port: c.port, path: c.path, request: c.request)
        } catch {
            callFailures.increment()
            logger.info("servicebus call failed", metadata: ["port": "\(c.port)", "path": "\(c.path)", "error": "\(error)"])
            answer = RouterHTTPResponse(statusCode: 502, header: ["Content-Type": ["text/plain"]], body: Array("servicebus: \(error)\n".utf8))
        }
        upstream(RouterMessage.serviceResponse(answer).message(parentID: c.message.id))
    }

    /// A router message from the cloud for this node.
    public func handle(_ m: RouterMessage, message: Message) async {
        switch m {
        case .allowTarget(_, let url): _ = allowed.withLock { $0.insert(url) }
        case .disallowTarget(_, let url): _ = allowed.withLock { $0.remove(url) }
        case .serviceCall(_, let port, let path, let req):
            // Queued: the call may take its whole timeout, the channel's other messages may not wait.
            if case .dropped = inboxSink.yield(Call(message: message, port: port, path: path, request: req)) {
                dropped.increment()
                upstream(RouterMessage.serviceResponse(RouterHTTPResponse(statusCode: 503, body: Array("servicebus: too many calls at once\n".utf8)))
                    .message(parentID: message.id))
            }
        case .subscribe, .unsubscribe, .publish, .event, .serviceRequest, .serviceResponse:
            break
        }
    }

    /// One HTTP/1.1 request to an app on the node.
    func call(port: Int, path: String, request req: RouterHTTPRequest) async throws -> RouterHTTPResponse {
        guard path.hasPrefix("/"), !path.contains(" "), !path.contains("\r"), !path.contains("\n") else { throw ServiceBusError("invalid path \(path)") }
        let limit = configuration.bodyLimit
        return try await withTimeLimit(configuration.callTimeout, expired: ServiceBusError("no answer from 127.0.0.1:\(port) within \(configuration.callTimeout)")) {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(5))
                .connect(host: "127.0.0.1", port: port) { c in
                    c.eventLoop.makeCompletedFuture {
                        try c.pipeline.syncOperations.addHTTPClientHandlers()
                        return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: c)
                    }
                }
            return try await channel.executeThenClose { inbound, outbound in
                var headers = HTTPHeaders()
                for (k, v) in req.forwardedHeaders where !v.contains("\r") && !v.contains("\n") { headers.add(name: k, value: v) }
                headers.replaceOrAdd(name: "Host", value: "127.0.0.1:\(port)")
                headers.replaceOrAdd(name: "Connection", value: "close")
                let body = req.bodyBytes
                headers.replaceOrAdd(name: "Content-Length", value: "\(body.count)")
                try await outbound.write(.head(HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: req.method.uppercased()), uri: path, headers: headers)))
                if !body.isEmpty { try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: body)))) }
                try await outbound.write(.end(nil))
                var status = 0
                var out: [String: [String]] = [:]
                var bytes: [UInt8] = []
                for try await part in inbound {
                    switch part {
                    case .head(let h):
                        status = Int(h.status.code)
                        for (k, v) in h.headers { out[k, default: []].append(v) }
                    case .body(let b):
                        guard bytes.count + b.readableBytes <= limit else { throw ServiceBusError("the answer is larger than \(limit) bytes") }
                        bytes += b.readableBytesView
                    case .end:
                        out.removeValue(forKey: "Transfer-Encoding")
                        return RouterHTTPResponse(statusCode: status, header: out, body: bytes)
                    }
                }
                throw ServiceBusError("127.0.0.1:\(port) closed the connection before answering")
            }
        }
    }

    /// An app's request for a cloud URL (`{"targetURL", "method", "header", "body"}` on :9060).
    struct AppRequests: HTTPResponder {
        typealias Context = ConnectionRequestContext
        let bus: ServiceBus

        struct Call: Decodable {
            var targetURL: String
            var method: String?
            var header: [String: [String]]?
            var body: String?
        }

        func respond(to request: Request, context: ConnectionRequestContext) async throws -> Response {
            func text(_ status: HTTPResponse.Status, _ s: String) -> Response {
                Response(status: status, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: s + "\n")))
            }
            var request = request
            let raw: ByteBuffer
            do { raw = try await request.collectBody(upTo: bus.configuration.bodyLimit) } catch {
                return text(.contentTooLarge, "the body is larger than \(bus.configuration.bodyLimit) bytes")
            }
            let call: Call
            do { call = try JSONDecoder().decode(Call.self, from: Data(raw.readableBytesView)) } catch {
                return text(.badRequest, "expected {\"targetURL\": …, \"method\": …, \"header\": …, \"body\": …}: \(error)")
            }
            guard bus.allowed.withLock({ $0.contains(call.targetURL) }) else {
                return text(.forbidden, "no rule lets this node call \(call.targetURL)")
            }
            let req = RouterHTTPRequest(method: call.method ?? "POST", header: call.header ?? [:], body: Array((call.body ?? "").utf8))
            let m = RouterMessage.serviceRequest(node: bus.nodeName, url: call.targetURL, request: req).message()
            guard let answer = await bus.request(m, bus.configuration.callTimeout) else {
                return text(.serviceUnavailable, "the cloud did not answer (offline?)")
            }
            guard case .serviceResponse(let r)? = try? RouterMessage(answer) else { return text(.badGateway, "the cloud's answer is not a response") }
            var h = HTTPFields()
            for (k, vs) in r.header where k.lowercased() != "content-length" && k.lowercased() != "transfer-encoding" {
                if let name = HTTPField.Name(k) { for v in vs { h.append(HTTPField(name: name, value: v)) } }
            }
            return Response(status: .init(code: r.statusCode), headers: h, body: .init(byteBuffer: ByteBuffer(bytes: r.bodyBytes)))
        }
    }
}

/// A servicebus failure with what happened.
struct ServiceBusError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
