import AsyncHTTPClient
import AsyncSupport
import CloudEdgeProtocol
import ControllerRuntime
import Foundation
import HTTPService
import HTTPTypes
import Hummingbird
import KubeAPI
import KubeClient
import Logging
import Metrics
import NIOCore
import ServiceLifecycle
import Synchronization

/// The router's settings (KubeEdge's cloudcore `router` module).
public struct RuleRouterConfiguration: Sendable {
    /// The REST ingress address (KubeEdge: :9443, `http://<cloud>:9443/<node>/<namespace>/<path>`).
    public var host = "127.0.0.1"
    public var port = 9443
    /// The largest request body the ingress takes and response body it passes on.
    public var bodyLimit = 4 << 20
    /// How long a servicebus call may take at the edge.
    public var callTimeout: Duration = .seconds(30)
    /// How long a REST endpoint may take.
    public var restTimeout: Duration = .seconds(10)
    public init() {}
}

/// KubeEdge's router: Rules (`rules.kubeedge.io/v1`) move messages between the cloud's REST
/// ingress and REST endpoints, and the nodes' eventbus (MQTT) and servicebus (HTTP). Each Rule's
/// status counts what it delivered and what failed, with the last errors.
public final class RuleRouter: Service {
    static let rules = ResourceType(group: "rules.kubeedge.io", version: "v1", resource: "rules", kind: "Rule", namespaced: true, isCustom: true)
    static let ruleEndpoints = ResourceType(group: "rules.kubeedge.io", version: "v1", resource: "ruleendpoints", kind: "RuleEndpoint",
                                            namespaced: true, isCustom: true)
    static let keptErrors = 10

    struct Stats: Sendable {
        var success: Int64
        var fail: Int64
        var errors: [String]
        var dirty = false
    }

    struct State: Sendable {
        var book = RuleBook()
        var routes: [ResolvedRule] = []
        var problems: [String: String] = [:]
        /// What each connected node was told (topics subscribed, URLs allowed).
        var pushed: [String: (topics: Set<String>, urls: Set<String>)] = [:]
        var stats: [String: Stats] = [:]
    }

    let configuration: RuleRouterConfiguration
    let client: KubeClient
    let rulesInformer: SharedInformer
    let endpointsInformer: SharedInformer
    let send: @Sendable (Message, String) async throws -> Void
    let logger: Logger
    let state = Mutex(State())
    let changed = WakeSignal()
    /// Servicebus calls waiting for the node's answer, by message id.
    let pending = Mutex<[String: AnswerSlot]>([:])
    /// Made when the router runs and shut down when it stops (AHC requires an explicit shutdown).
    let httpClient = Mutex<HTTPClient?>(nil)
    let delivered = Counter(label: "swiftedge_router_messages_total", dimensions: [("result", "success")])
    let failed = Counter(label: "swiftedge_router_messages_total", dimensions: [("result", "failure")])
    let onListening: @Sendable (Int) async -> Void
    /// Router messages from nodes, handled concurrently by ``run()`` (a slow REST endpoint holds up neither the node's session nor other messages).
    struct Arrival: Sendable { var routed: RouterMessage; var message: Message; var node: String }
    let inbox: AsyncStream<Arrival>
    let inboxSink: AsyncStream<Arrival>.Continuation
    let dropped = Counter(label: "swiftedge_router_dropped_total")

    /// - Parameter send: queues a message for a connected node (throws when it is not connected).
    public init(configuration: RuleRouterConfiguration, client: KubeClient, informers: InformerFactory, logger: Logger,
                onListening: @escaping @Sendable (Int) async -> Void = { _ in },
                send: @escaping @Sendable (Message, String) async throws -> Void)
    {
        self.configuration = configuration; self.client = client; self.logger = logger; self.send = send; self.onListening = onListening
        (inbox, inboxSink) = AsyncStream<Arrival>.makeStream(bufferingPolicy: .bufferingOldest(10_000))
        rulesInformer = informers.informer(Self.rules)
        endpointsInformer = informers.informer(Self.ruleEndpoints)
        let wake = changed
        rulesInformer.addHandler { _ in wake.signal() }
        endpointsInformer.addHandler { _ in wake.signal() }
    }

    public func run() async throws {
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        httpClient.withLock { $0 = http }
        do { try await serve() } catch {
            httpClient.withLock { $0 = nil }
            try? await http.shutdown()
            throw error
        }
        httpClient.withLock { $0 = nil }
        try? await http.shutdown()
    }

    func serve() async throws {
        let server = HTTPService(responder: Ingress(router: self), host: configuration.host, port: configuration.port, serverName: "swiftedge-router",
                                 logger: logger) { [self] channel in
            let bound = channel.localAddress?.port ?? 0
            logger.info("router REST ingress listening", metadata: ["address": "\(configuration.host):\(bound)"])
            await onListening(bound)
        }
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await server.run() }
            group.addTask { await self.follow() }
            group.addTask { await self.flushStatuses() }
            group.addTask {
                await withDiscardingTaskGroup { handling in
                    for await a in self.inbox.cancelOnGracefulShutdown() {
                        handling.addTask { await self.received(a.routed, message: a.message, from: a.node) }
                    }
                }
            }
            try await gracefulShutdown()
            group.cancelAll()
        }
    }

    // MARK: Rules

    /// Re-resolves the rules on every change and tells the nodes what changed for them.
    func follow() async {
        while !Task.isCancelled {
            rebuild()
            await pushAll()
            await changed.wait()
        }
    }

    func rebuild() {
        var book = RuleBook()
        for o in rulesInformer.cache.list() { if let r = RuleSpec(o) { book.rules[r.key] = r } }
        for o in endpointsInformer.cache.list() { if let e = RuleEndpointSpec(o) { book.endpoints["\(e.namespace)/\(e.name)"] = e } }
        let (routes, problems) = book.resolve()
        let newProblems = state.withLock { s -> [(String, String)] in
            s.book = book
            s.routes = routes
            for r in book.rules.values where s.stats[r.key] == nil {
                s.stats[r.key] = Stats(success: r.successMessages, fail: r.failMessages, errors: r.errors)
            }
            s.stats = s.stats.filter { book.rules[$0.key] != nil }
            let fresh = problems.filter { s.problems[$0.key] != $0.value }
            s.problems = problems
            return fresh.map { ($0.key, $0.value) }
        }
        for (key, why) in newProblems {
            logger.warning("rule cannot route", metadata: ["rule": "\(key)", "reason": "\(why)"])
            record(key, ok: false, error: why, count: false)
        }
    }

    /// A node connected: it is told every subscription and allowed URL of its rules.
    public func connected(_ node: String) async {
        state.withLock { $0.pushed[node] = ([], []) }
        await push(node)
    }

    public func disconnected(_ node: String) {
        _ = state.withLock { $0.pushed.removeValue(forKey: node) }
    }

    func pushAll() async {
        for node in state.withLock({ Array($0.pushed.keys) }) { await push(node) }
    }

    func push(_ node: String) async {
        let (want, had) = state.withLock { s in (RuleBook.nodeState(s.routes, node: node), s.pushed[node]) }
        guard let had else { return }
        var messages: [RouterMessage] = []
        for t in want.topics.subtracting(had.topics).sorted() { messages.append(.subscribe(node: node, topic: t)) }
        for t in had.topics.subtracting(want.topics).sorted() { messages.append(.unsubscribe(node: node, topic: t)) }
        for u in want.urls.subtracting(had.urls).sorted() { messages.append(.allowTarget(node: node, url: u)) }
        for u in had.urls.subtracting(want.urls).sorted() { messages.append(.disallowTarget(node: node, url: u)) }
        do {
            for m in messages { try await send(m.message(), node) }
            state.withLock { s in if s.pushed[node] != nil { s.pushed[node] = want } }
        } catch {
            logger.debug("cannot tell a node its routes", metadata: ["node": "\(node)", "error": "\(error)"])
        }
    }

    // MARK: Status

    func record(_ key: String, ok: Bool, error: String? = nil, count: Bool = true) {
        if count { (ok ? delivered : failed).increment() }
        state.withLock { s in
            guard var st = s.stats[key] else { return }
            if count { if ok { st.success += 1 } else { st.fail += 1 } }
            if let error {
                st.errors.append(error)
                if st.errors.count > Self.keptErrors { st.errors.removeFirst(st.errors.count - Self.keptErrors) }
            }
            st.dirty = true
            s.stats[key] = st
        }
        changedStatus.signal()
    }

    let changedStatus = WakeSignal()

    /// Writes changed counts to the Rules' status (at most once a second per burst).
    func flushStatuses() async {
        while !Task.isCancelled {
            await changedStatus.wait()
            let dirty = state.withLock { s -> [(String, Stats)] in
                let d = s.stats.filter(\.value.dirty).map { ($0.key, $0.value) }
                for (k, _) in d { s.stats[k]?.dirty = false }
                return d
            }
            for (key, st) in dirty {
                let parts = key.split(separator: "/", maxSplits: 1).map(String.init)
                guard parts.count == 2 else { continue }
                let patch: JSON = ["status": ["successMessages": .int(st.success), "failMessages": .int(st.fail), "errors": .array(st.errors.map { .string($0) })]]
                do { _ = try await client.patch(Self.rules, namespace: parts[0], name: parts[1], patch, fieldManager: "swiftedge-router") } catch {
                    logger.debug("cannot write a rule's status", metadata: ["rule": "\(key)", "error": "\(error)"])
                }
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    // MARK: Messages from nodes

    /// Hands a router message from a node (CloudHub's `.router` event) to the router; returns at once.
    public func submit(_ m: RouterMessage, message: Message, from node: String) {
        if case .dropped = inboxSink.yield(Arrival(routed: m, message: message, node: node)) { dropped.increment() }
    }

    /// Handles a router message from a node.
    func received(_ m: RouterMessage, message: Message, from node: String) async {
        switch m {
        case .serviceResponse(let response):
            guard let parent = message.parentID else { return }
            pending.withLock { $0.removeValue(forKey: parent) }?.fill(response)
        case .event(_, let topic, let payload):
            let route = state.withLock { s in s.routes.first { $0.source == .eventBus(node: node, topic: topic) } }
            guard let route, case .rest(let url) = route.target else {
                logger.debug("event without a rule", metadata: ["node": "\(node)", "topic": "\(topic)"])
                return
            }
            let result = await post(url, method: "POST", headers: [:], body: Array(payload.utf8))
            record(route.key, ok: result.ok, error: result.error)
        case .serviceRequest(_, let url, let request):
            let route = state.withLock { s in s.routes.first { $0.source == .serviceBus(node: node, url: url) } }
            let answer: RouterHTTPResponse
            if let route, case .rest(let target) = route.target {
                let result = await post(target, method: request.method, headers: request.header, body: request.bodyBytes)
                record(route.key, ok: result.ok, error: result.error)
                answer = result.response ?? RouterHTTPResponse(statusCode: 502, body: Array((result.error ?? "no answer").utf8))
            } else {
                answer = RouterHTTPResponse(statusCode: 403, body: Array("no rule lets node \(node) call \(url)".utf8))
            }
            try? await send(RouterMessage.serviceResponse(answer).message(parentID: message.id), node)
        case .subscribe, .unsubscribe, .publish, .serviceCall, .allowTarget, .disallowTarget:
            break  // downstream kinds: never sent by a node
        }
    }

    /// Calls a REST endpoint; a status of 400 or more is a failure.
    func post(_ url: String, method: String, headers: [String: [String]], body: [UInt8]) async -> (ok: Bool, error: String?, response: RouterHTTPResponse?) {
        var request = HTTPClientRequest(url: url)
        request.method = .init(rawValue: method.uppercased())
        for (k, v) in RouterHTTPRequest(method: method, header: headers).forwardedHeaders { request.headers.add(name: k, value: v) }
        request.body = .bytes(ByteBuffer(bytes: body))
        guard let http = httpClient.withLock({ $0 }) else { return (false, "\(method) \(url): the router is stopping", nil) }
        do {
            let response = try await http.execute(request, timeout: .seconds(Int64(configuration.restTimeout.components.seconds)))
            let bytes = try await response.body.collect(upTo: configuration.bodyLimit)
            var h: [String: [String]] = [:]
            for f in response.headers { h[f.name, default: []].append(f.value) }
            let answer = RouterHTTPResponse(statusCode: Int(response.status.code), header: h, body: Array(bytes.readableBytesView))
            if response.status.code >= 400 { return (false, "\(method) \(url): \(response.status.code) \(response.status.reasonPhrase)", answer) }
            return (true, nil, answer)
        } catch {
            return (false, "\(method) \(url): \(error)", nil)
        }
    }

    // MARK: REST ingress

    /// Handles `<method> /<node>/<namespace>/<path>` on the ingress.
    func ingress(method: String, path: String, headers: [String: [String]], body: [UInt8]) async -> (Int, String, [UInt8], [String: [String]]) {
        let parts = path.split(separator: "?", maxSplits: 1)[0].split(separator: "/", maxSplits: 2, omittingEmptySubsequences: true).map(String.init)
        guard parts.count == 3 else { return (404, "text/plain", Array("expected /<node>/<namespace>/<path>\n".utf8), [:]) }
        let (node, namespace, rest) = (parts[0], parts[1], parts[2])
        let match = state.withLock { s in RuleBook.restRoute(s.routes, namespace: namespace, path: rest) }
        guard let (route, param) = match else {
            return (404, "text/plain", Array("no rule routes /\(namespace)/\(rest)\n".utf8), [:])
        }
        func joined(_ base: String) -> String {
            param.isEmpty ? base : (base.hasSuffix("/") ? String(base.dropLast()) : base) + "/" + param.drop { $0 == "/" }
        }
        switch route.target {
        case .eventBus(let topic):
            do {
                try await send(RouterMessage.publish(node: node, topic: joined(topic), payload: String(decoding: body, as: UTF8.self)).message(), node)
            } catch {
                record(route.key, ok: false, error: "node \(node): \(error)")
                return (503, "text/plain", Array("node \(node) is not connected\n".utf8), [:])
            }
            record(route.key, ok: true)
            return (200, "text/plain", Array("message delivered".utf8), [:])
        case .serviceBus(let port, let target):
            let call = RouterMessage.serviceCall(node: node, port: port, path: joined(target), request: RouterHTTPRequest(method: method, header: headers, body: body))
            let message = call.message()
            let slot = AnswerSlot()
            pending.withLock { $0[message.id] = slot }  // before sending: a fast answer finds it
            defer { pending.withLock { _ = $0.removeValue(forKey: message.id) } }
            do { try await send(message, node) } catch {
                record(route.key, ok: false, error: "node \(node) is not connected")
                return (503, "text/plain", Array("node \(node) is not connected\n".utf8), [:])
            }
            guard let r = await slot.wait(until: .now + configuration.callTimeout) else {
                record(route.key, ok: false, error: "servicebus on \(node): no answer within \(configuration.callTimeout)")
                return (408, "text/plain", Array("wait to get response time out\n".utf8), [:])
            }
            record(route.key, ok: r.statusCode < 400, error: r.statusCode < 400 ? nil : "servicebus on \(node): \(r.statusCode)")
            var h = r.header
            h.removeValue(forKey: "Content-Length")
            return (r.statusCode, h["Content-Type"]?.first ?? "application/octet-stream", r.bodyBytes, h)
        case .rest:
            return (404, "text/plain", Array("no rule routes /\(namespace)/\(rest)\n".utf8), [:])
        }
    }

    /// One servicebus call's answer, filled by the node's response.
    final class AnswerSlot: Sendable {
        let value = Mutex<RouterHTTPResponse?>(nil)
        let arrived = WakeSignal()
        func fill(_ r: RouterHTTPResponse) {
            value.withLock { $0 = r }
            arrived.signal()
        }
        /// The answer, or nil when none came by `deadline`.
        func wait(until deadline: ContinuousClock.Instant) async -> RouterHTTPResponse? {
            await arrived.wait(until: deadline)
            return value.withLock { $0 }
        }
    }

    struct Ingress: HTTPResponder {
        typealias Context = ConnectionRequestContext
        let router: RuleRouter

        func respond(to request: Request, context: ConnectionRequestContext) async throws -> Response {
            var request = request
            let limit = router.configuration.bodyLimit
            let body: ByteBuffer
            do { body = try await request.collectBody(upTo: limit) } catch {
                return Response(status: .contentTooLarge, headers: [.contentType: "text/plain"],
                                body: .init(byteBuffer: ByteBuffer(string: "the body is larger than \(limit) bytes\n")))
            }
            var headers: [String: [String]] = [:]
            for f in request.headers { headers[f.name.canonicalName, default: []].append(f.value) }
            let (status, type, bytes, extra) = await router.ingress(method: request.method.rawValue, path: request.uri.path, headers: headers,
                                                                    body: Array(body.readableBytesView))
            var h = HTTPFields()
            h[.contentType] = type
            for (k, vs) in extra where k.lowercased() != "content-type" {
                if let name = HTTPField.Name(k) { for v in vs { h.append(HTTPField(name: name, value: v)) } }
            }
            return Response(status: .init(code: status), headers: h, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
        }
    }
}
