import DefaultSettings
import Hummingbird
import HummingbirdCore
import CloudEdgeProtocol
import HTTPService
import KubeAPI
import KubeAuth
import Logging
import MetaStore
import NIOCore
import ServiceLifecycle
import Synchronization

/// What a MetaServer request asks for, parsed from the URL path.
enum MetaRequest: Equatable {
    case version, apiVersions, groups, resources
    case list(MetaResource, namespace: String?)
    case get(MetaResource, namespace: String?, name: String)

    init?(path: String) {
        let p = path.split(separator: "?", maxSplits: 1).first.map { $0.split(separator: "/").map(String.init) } ?? []
        switch p.count {
        case 1 where p[0] == "version": self = .version
        case 1 where p[0] == "api": self = .apiVersions
        case 1 where p[0] == "apis": self = .groups
        case 2 where p == ["api", "v1"]: self = .resources
        case 3 where p[0] == "api" && p[1] == "v1":
            guard let r = MetaResource(rawValue: p[2]) else { return nil }
            self = .list(r, namespace: nil)
        case 4 where p[0] == "api" && p[1] == "v1" && !(MetaResource(rawValue: p[2])?.namespaced ?? true):
            self = .get(MetaResource(rawValue: p[2])!, namespace: nil, name: p[3])
        case 5 where p[0] == "api" && p[1] == "v1" && p[2] == "namespaces":
            guard let r = MetaResource(rawValue: p[4]), r.namespaced else { return nil }
            self = .list(r, namespace: p[3])
        case 6 where p[0] == "api" && p[1] == "v1" && p[2] == "namespaces":
            guard let r = MetaResource(rawValue: p[4]), r.namespaced else { return nil }
            self = .get(r, namespace: p[3], name: p[5])
        default: return nil
        }
    }
}

/// The resources MetaServer serves (core/v1): their URL name, edge store kind and Kubernetes type.
enum MetaResource: String, CaseIterable {
    case pods, configmaps, secrets, services, endpoints, nodes

    var storeType: EdgeResourceKind {
        switch self {
        case .pods: .pod
        case .configmaps: .configMap
        case .secrets: .secret
        case .services: .service
        case .endpoints: .endpoints
        case .nodes: .node
        }
    }

    var type: ResourceType {
        switch self {
        case .pods: .pods
        case .configmaps: .configMaps
        case .secrets: .secrets
        case .services: .services
        case .endpoints: .endpoints
        case .nodes: .nodes
        }
    }

    var kind: String { type.kind }
    var namespaced: Bool { type.namespaced }
    var shortNames: [String] { type.shortNames }
}

/// MetaServer: a read-only, Kubernetes-style API for edge applications on 127.0.0.1:10550,
/// served from the node's local store (MetaManager), so it answers the same online or offline.
/// get, list and watch (label and name/namespace field selectors) for pods, configmaps, secrets,
/// services, endpoints and nodes. With ``MetaServerSecurity`` (the default of `swiftedge edge`) it
/// is the pods' in-cluster API server: HTTPS, every request authenticated and authorized
/// (KubeEdge's `requireAuthorization`); without, plain HTTP for anyone on the node.
public struct MetaServer: Service {
    let store: any MetaStorage
    let host: String
    let port: Int
    let security: MetaServerSecurity?
    let logger: Logger
    let onRunning: @Sendable (Int) async -> Void

    public init(store: any MetaStorage, host: String = "127.0.0.1", port: Int = Defaults.metaServerPort, security: MetaServerSecurity? = nil,
                logger: Logger, onRunning: @escaping @Sendable (Int) async -> Void = { _ in })
    {
        self.store = store; self.host = host; self.port = port; self.security = security; self.logger = logger; self.onRunning = onRunning
    }

    public func run() async throws {
        let onRunning = self.onRunning, logger = self.logger
        let watches = OpenWatches()
        var tls: ServerTLSIdentity?
        if let security {
            // Nothing is served before the certificate is there (stored, or signed by the cloud).
            let cert = try await security.servingCertificate()
            tls = ServerTLSIdentity(certificatePEM: cert.certificatePEM, privateKeyPEM: cert.privateKeyPEM, clientCAPEM: security.clientCAPEM)
        }
        let server = HTTPService(responder: MetaResponder(store: store, watches: watches, security: security), host: host, port: port,
                                 serverName: "swiftedge-metaserver", tls: tls, logger: logger) { ch in
            let bound = ch.localAddress?.port ?? 0
            logger.info("MetaServer listening", metadata: ["address": "\(ch.localAddress?.description ?? "")"])
            await onRunning(bound)
        }
        // Open watches end first, so that the HTTP server can drain.
        try await withGracefulShutdownHandler {
            try await server.run()
        } onGracefulShutdown: {
            watches.closeAll()
        }
    }
}

/// The event relays of open watches, ended together at shutdown.
final class OpenWatches: Sendable {
    let sinks = Mutex<(next: Int, open: [Int: AsyncStream<MetaChange>.Continuation], closed: Bool)>((0, [:], false))

    func add(_ sink: AsyncStream<MetaChange>.Continuation) -> Int? {
        sinks.withLock { s -> Int? in
            if s.closed { return nil }
            s.next += 1
            s.open[s.next] = sink
            return s.next
        }
    }

    func remove(_ id: Int) { _ = sinks.withLock { $0.open.removeValue(forKey: id) } }

    func closeAll() {
        for sink in sinks.withLock({ s in s.closed = true; return Array(s.open.values) }) { sink.finish() }
    }
}

struct MetaResponder: HTTPResponder {
    typealias Context = ConnectionRequestContext
    let store: any MetaStorage
    let watches: OpenWatches
    var security: MetaServerSecurity? = nil

    func respond(to request: Request, context: Context) async throws -> Response {
        var user: UserInfo?
        if let security {
            do {
                guard let u = try await security.authenticate(authorization: request.headers[.authorization],
                                                              peerCertificateDER: await context.peerCertificateDER(), store: store)
                else { return reply(401, status("Unauthorized", "Unauthorized", code: 401)) }
                user = u
            } catch {
                return reply(500, status("InternalError", "authenticating the request failed: \(error)", code: 500))
            }
        }
        let local = request.method == .get ? MetaRequest(path: request.uri.path) : nil
        let watching = Self.isWatch(request)
        if local == nil, let security, let user, let forward = security.forward, ServiceAccountName.split(user.username) != nil {
            return await self.forward(request, user: user, watching: watching, through: forward)
        }
        guard request.method == .get else {
            return reply(405, status("MethodNotAllowed", "MetaServer is read-only", code: 405))
        }
        guard let what = local else {
            return reply(404, status("NotFound", "the server could not find the requested resource", code: 404))
        }
        do {
            if let security, let user {
                if let refusal = try await security.authorize(user, what, watch: watching, store: store) {
                    return reply(refusal.code, refusal.status)
                }
            }
            if watching {
                guard case .list(let r, let ns) = what else {
                    return reply(405, status("MethodNotAllowed", "watch a collection (with fieldSelector=metadata.name=<name> for one object)", code: 405))
                }
                return try watch(r, namespace: ns, request: request)
            }
            switch what {
            case .version:
                return reply(200, ["major": "1", "minor": "32", "gitVersion": "v1.32.0-swiftedge-metaserver", "platform": "linux"])
            case .apiVersions:
                return reply(200, ["kind": "APIVersions", "versions": ["v1"],
                                   "serverAddressByClientCIDRs": [["clientCIDR": "0.0.0.0/0", "serverAddress": .string("127.0.0.1:\(Defaults.metaServerPort)")]]])
            case .groups:
                return reply(200, ["kind": "APIGroupList", "apiVersion": "v1", "groups": []])
            case .resources:
                let list: [JSON] = MetaResource.allCases.map { r in
                    ["name": .string(r.rawValue), "singularName": .string(r.kind.lowercased()), "namespaced": .bool(r.namespaced),
                     "kind": .string(r.kind), "verbs": ["get", "list", "watch"], "shortNames": .array(r.shortNames.map { .string($0) })]
                }
                return reply(200, ["kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": .array(list)])
            case .list(let r, let ns):
                let filter = try Filter(request: request, namespace: ns)
                var items: [JSON] = []
                var maxRV: UInt64 = 0
                for rec in try await store.list(type: r.storeType) where filter.matches(rec.value) {
                    maxRV = max(maxRV, rec.resourceVersion)
                    items.append(Self.typed(rec.value, r))
                }
                return reply(200, ["kind": .string(r.kind + "List"), "apiVersion": "v1",
                                   "metadata": ["resourceVersion": .string(String(maxRV))], "items": .array(items)])
            case .get(let r, let ns, let name):
                let key = ResourceRef(namespace: ns, kind: r.storeType, name: name).description
                guard var o = try await store.get(key)?.value else {
                    return reply(404, status("NotFound", "\(r.rawValue) \"\(name)\" not found", code: 404, name: name, kind: r.rawValue))
                }
                if o["kind"].isNull { o["kind"] = .string(r.kind); o["apiVersion"] = "v1" }
                return reply(200, o)
            }
        } catch let e as StatusError {
            return reply(e.code, status(e.reason.rawValue, e.message, code: e.code))
        } catch {
            return reply(500, status("InternalError", "reading the edge store failed: \(error)", code: 500))
        }
    }

    /// Which objects a list or watch selects: namespace, label selector, and `metadata.name` /
    /// `metadata.namespace` field selectors (what kubectl's `get -w` uses).
    struct Filter: Sendable {
        var namespace: String?
        var labels: LabelSelector?
        var fields: FieldSelector?

        init(request: Request, namespace: String?) throws {
            self.namespace = namespace
            labels = try request.uri.queryParameters.get("labelSelector").map { try LabelSelector.parse($0) }
            fields = try request.uri.queryParameters.get("fieldSelector").map { try FieldSelector.parse($0) }
        }

        func matches(_ o: JSON) -> Bool {
            if namespace == nil && labels == nil && fields == nil { return true }
            // The typed metadata; an object whose metadata does not decode matches no filter.
            guard let m = try? JSONValueDecoder().decode(Core.ObjectMeta.self, from: o["metadata"]) else { return false }
            if let namespace, m.namespace != namespace { return false }
            if let labels, !labels.matches(m.labels ?? [:]) { return false }
            if let fields, !fields.matches(["metadata.name": m.name ?? "", "metadata.namespace": m.namespace ?? ""]) { return false }
            return true
        }
    }

    static func typed(_ o: JSON, _ r: MetaResource) -> JSON {
        var o = o
        if o["kind"].isNull { o["kind"] = .string(r.kind); o["apiVersion"] = "v1" }
        return o
    }

    /// A watch: current objects as ADDED (unless resumed from a resourceVersion), then every
    /// committed change of the store that matches, one JSON event per line.
    func watch(_ r: MetaResource, namespace: String?, request: Request) throws -> Response {
        let filter = try Filter(request: request, namespace: namespace)
        let since = request.uri.queryParameters.get("resourceVersion").flatMap { UInt64($0) }.flatMap { $0 == 0 ? nil : $0 }
        let timeout = request.uri.queryParameters.get("timeoutSeconds").flatMap { Int($0) } ?? 1800
        let store = self.store, watches = self.watches
        let changes = store.changes()  // subscribed before listing: nothing falls in between
        return Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-cache, private"],
                        body: ResponseBody { writer in
                            func send(_ type: String, _ o: JSON) async throws {
                                try await writer.write(ByteBuffer(bytes: JSON.object(["type": .string(type), "object": Self.typed(o, r)]).serialized() + [10]))
                            }
                            if since == nil {
                                for rec in try await store.list(type: r.storeType) where filter.matches(rec.value) { try await send("ADDED", rec.value) }
                            }
                            // Changes are relayed into a stream that the timeout can end.
                            let (relay, sink) = AsyncStream<MetaChange>.makeStream()
                            guard let id = watches.add(sink) else { try await writer.finish(nil); return }
                            defer { watches.remove(id) }
                            try await withThrowingTaskGroup(of: Void.self) { group in
                                group.addTask { try? await Task.sleep(for: .seconds(timeout)); sink.finish() }
                                group.addTask {
                                    for await c in changes { sink.yield(c) }
                                    sink.finish()
                                }
                                for await c in relay where c.record.type == r.storeType && filter.matches(c.record.value) {
                                    if let since, c.record.resourceVersion <= since { continue }
                                    try await send(c.kind.rawValue, c.record.value)
                                }
                                group.cancelAll()
                            }
                            try await writer.finish(nil)
                        })
    }

    /// `watch=true` (or `1`) in the query.
    static func isWatch(_ request: Request) -> Bool { request.uri.queryParameters.get("watch").map { $0 == "true" || $0 == "1" } == true }

    /// Requests forwarded to the cloud carry at most this much body (one channel message).
    static let maxForwardedBody = 1 << 20

    /// A pod's request the store cannot answer, made in the cloud as the pod's ServiceAccount;
    /// offline it is 503 (only what the node holds can be read then).
    func forward(_ request: Request, user: UserInfo, watching: Bool,
                 through forward: @Sendable (ForwardedAPIRequest) async -> ForwardedAPIRequest.Answer?) async -> Response {
        if watching {
            return reply(405, status("MethodNotAllowed", "MetaServer watches only what the node holds (pods, configmaps, secrets, services, endpoints, nodes)", code: 405))
        }
        var request = request
        var body: [UInt8]?
        if request.method != .get && request.method != .head {
            do { body = Array(try await request.collectBody(upTo: Self.maxForwardedBody).readableBytesView) } catch {
                return reply(413, status("RequestEntityTooLarge", "a request forwarded to the cloud may carry at most \(Self.maxForwardedBody) bytes", code: 413))
            }
        }
        let uri = request.uri.path + (request.uri.query.map { "?" + $0 } ?? "")
        let forwarded = ForwardedAPIRequest(method: request.method.rawValue, uri: uri, contentType: request.headers[.contentType], body: body,
                                            username: user.username, uid: user.uid, groups: user.groups, extra: user.extra)
        guard let answer = await forward(forwarded) else {
            return reply(503, status("ServiceUnavailable", "the cloud is not reachable: MetaServer answers only reads of what this node holds until it is", code: 503))
        }
        return Response(status: .init(code: answer.status), headers: [.contentType: answer.contentType.isEmpty ? "application/json" : answer.contentType],
                        body: .init(byteBuffer: ByteBuffer(bytes: answer.bodyBytes)))
    }

    func status(_ reason: String, _ message: String, code: Int, name: String? = nil, kind: String? = nil) -> JSON {
        var s: JSON = ["kind": "Status", "apiVersion": "v1", "metadata": [:], "status": "Failure",
                       "message": .string(message), "reason": .string(reason), "code": .int(Int64(code))]
        if let name { s["details"] = ["name": .string(name), "kind": .string(kind ?? "")] }
        return s
    }

    func reply(_ code: Int, _ body: JSON) -> Response {
        Response(status: .init(code: code), headers: [.contentType: "application/json"],
                 body: .init(byteBuffer: ByteBuffer(bytes: body.serialized())))
    }
}
