import DefaultSettings
import Foundation
import KubeAPI
import KubeAuth
import Logging
import Synchronization
import Metrics
import ObjectStore

/// Options of the HTTP API that tests and operators may change.
public struct APIHandlerOptions: Sendable {
    /// Who callers are and whether RBAC decides what they may do.
    public var access: AccessOptions
    /// Audit policy and log (nil: no auditing, kube's default without `--audit-policy-file`).
    public var audit: AuditOptions?
    /// Admission rules compiled in and run as webhooks (KubeEdge's, in the embedded cloud).
    public var inProcessWebhooks: InProcessWebhooks?
    /// Renders the Prometheus exposition served at `/metrics` (nil: no endpoint).
    public var metricsExporter: (@Sendable () -> [UInt8])?
    /// Request bodies above this size get 413.
    public var maxBodyBytes: Int
    /// How often a watch with `allowWatchBookmarks` gets a BOOKMARK.
    public var bookmarkInterval: Duration
    /// Upper bound of a watch's lifetime.
    public var maxWatchSeconds: Int
    /// The address clients should use (discovery's serverAddressByClientCIDRs).
    public var advertiseAddress: String
    /// Streams to the nodes pods run on (`pods/log`), when edge nodes are connected to this
    /// server's cloud side.
    public var podStreams: (any PodStreams)?
    /// The random part of names made from `generateName`.
    public var generatedNameSuffix: @Sendable () -> String = APIHandler.randomNameSuffix
    /// The cluster CA published in every namespace as ConfigMap `kube-root-ca.crt` (nil: none).
    public var rootCAPEM: String?
    /// Where Services' ClusterIPs come from (`--service-cluster-ip-range`; its first address is `kubernetes`).
    public var serviceClusterIPRange = IPv4Network(IPv4Address(0x0A60_0000), prefix: 12)

    public init(tokens: Set<String>, maxBodyBytes: Int = 3 * 1024 * 1024, bookmarkInterval: Duration = .seconds(60),
                maxWatchSeconds: Int = 1800, advertiseAddress: String = "127.0.0.1:\(Defaults.apiServerPort)")
    {
        self.access = AccessOptions(tokens: Dictionary(uniqueKeysWithValues: tokens.map { ($0, UserInfo.admin) }))
        self.maxBodyBytes = maxBodyBytes; self.bookmarkInterval = bookmarkInterval
        self.maxWatchSeconds = maxWatchSeconds; self.advertiseAddress = advertiseAddress
    }
}

/// The Kubernetes REST semantics over an ``ObjectStorage``: routing, discovery, CRUD, patch,
/// watch, subresources and CRDs. Transport-independent; `APIServerService` puts it on HTTP.
public final class APIHandler: Sendable {
    let store: any ObjectStorage
    let registry: ResourceRegistry
    let options: APIHandlerOptions
    let logger: Logger
    let requestCounter = Counter(label: "swiftedge_apiserver_requests_total")
    let watchGauge = Meter(label: "swiftedge_apiserver_watches")
    /// The RBAC objects as a policy (kept current by a ``StoreChangeWatcher`` over the same store).
    public let policies: PolicyCache
    /// The admission webhook configurations (kept current by a ``StoreChangeWatcher``).
    public let webhooks: WebhookCache
    let verifiedTokens = VerifiedTokenCache()
    /// ClusterIPs handed out whose Service may not be stored yet (IP → when): never handed out twice.
    let pendingClusterIPs = Mutex<[String: ContinuousClock.Instant]>([:])

    public init(store: any ObjectStorage, registry: ResourceRegistry, options: APIHandlerOptions, logger: Logger) {
        self.store = store; self.registry = registry; self.options = options; self.logger = logger
        self.policies = PolicyCache(store: store)
        self.webhooks = WebhookCache(store: store, inProcess: options.inProcessWebhooks)
    }

    /// The per-object index used by the store: labels and selectable fields.
    public static let indexer: SQLiteObjectStore.Indexer = { key, obj in
        var labels: [String: String] = [:]
        for (k, v) in obj["metadata"]["labels"].objectValue ?? [:] { labels[k] = v.stringValue ?? "" }
        let owners = (obj["metadata"]["ownerReferences"].arrayValue ?? []).compactMap { $0["uid"].stringValue }
        return IndexedAttributes(labels: labels, fields: FieldIndex.fields(key: key, object: obj), ownerUIDs: owners)
    }

    // MARK: Entry point

    public func handle(_ req: APIRequest) async -> APIResponse {
        requestCounter.increment()
        let received = KubeTime.now()
        var user: UserInfo?
        let response: APIResponse
        do {
            response = try await route(req, user: &user)
        } catch let e as StatusError {
            response = .error(e)
        } catch let e as StorageError {
            switch e.code {
            case .compacted: response = .error(StatusError(.expired, e.message))
            default: response = .error(StatusError(.internalError, e.message))
            }
        } catch {
            logger.error("request failed", metadata: ["path": "\(req.path)", "error": "\(error)"])
            response = .error(StatusError(.internalError, "\(error)"))
        }
        if options.audit != nil { audit(req, user: user, response: response, received: received) }
        return response
    }

    /// - Parameter user: set to who the request acts as once it is authenticated (for the audit log).
    func route(_ request: APIRequest, user: inout UserInfo?) async throws -> APIResponse {
        let parts = request.path.split(separator: "/").map(String.init)
        // Unauthenticated health endpoints (as kube-apiserver allows for system:anonymous).
        if parts.count == 1, ["healthz", "livez", "readyz"].contains(parts[0]) {
            return .raw(200, Array("ok".utf8), contentType: "text/plain; charset=utf-8")
        }
        var req = request
        req.user = try await admit(request)
        user = req.user
        guard let head = parts.first else {
            return .json(200, ["paths": .array(["/api", "/apis", "/healthz", "/livez", "/readyz", "/version", "/openapi/v2", "/openapi/v3"].map { .string($0) })])
        }
        switch head {
        case "version" where parts.count == 1:
            return .json(200, Discovery.version)
        case "metrics" where parts.count == 1:
            guard let exporter = options.metricsExporter else { throw StatusError(.notFound, "the server could not find the requested resource") }
            return .raw(200, exporter(), contentType: "text/plain; version=0.0.4; charset=utf-8")
        case ".well-known" where parts == [".well-known", "openid-configuration"]:
            guard let issuer = options.access.serviceAccountTokens else { throw StatusError(.notFound, "the server could not find the requested resource") }
            return .json(200, issuer.discoveryDocument(jwksURI: "https://\(options.advertiseAddress)/openid/v1/jwks"))
        case "openid" where parts == ["openid", "v1", "jwks"]:
            guard let issuer = options.access.serviceAccountTokens else { throw StatusError(.notFound, "the server could not find the requested resource") }
            return .raw(200, issuer.jwks.serialized(), contentType: "application/jwk-set+json")
        case "openapi":
            return try OpenAPI.handle(parts: Array(parts.dropFirst()), query: req.query, registry: registry)
        case "api":
            if parts.count == 1 { return Discovery.apiVersions(req, registry: registry, advertise: options.advertiseAddress) }
            return try await resourceRequest(req, group: "", version: parts[1], rest: Array(parts.dropFirst(2)))
        case "apis":
            if parts.count == 1 { return Discovery.apiGroups(req, registry: registry) }
            if parts.count == 2 {
                guard let g = registry.groups().first(where: { $0.name == parts[1] && !$0.name.isEmpty }) else {
                    throw StatusError(.notFound, "the server could not find the requested resource")
                }
                return .json(200, Discovery.groupObject(g.name, g.versions).merging(kind: "APIGroup"))
            }
            return try await resourceRequest(req, group: parts[1], version: parts[2], rest: Array(parts.dropFirst(3)))
        default:
            throw StatusError(.notFound, "the server could not find the requested resource")
        }
    }

    func resourceRequest(_ req: APIRequest, group: String, version: String, rest: [String]) async throws -> APIResponse {
        guard registry.hasGroupVersion(group: group, version: version) else {
            throw StatusError(.notFound, "the server could not find the requested resource")
        }
        if rest.isEmpty {
            guard req.method == "GET" else { throw StatusError(.methodNotAllowed, "the server does not allow this method on the requested resource") }
            return .json(200, Discovery.resourceList(group: group, version: version, registry: registry))
        }
        var target: RequestTarget
        var r = rest[...]
        var namespace: String?
        if r.first == "namespaces", r.count >= 3,
            !(r.count == 3 && (r[r.startIndex + 2] == "status" || r[r.startIndex + 2] == "finalize") && group.isEmpty)
        {
            namespace = r[r.startIndex + 1]
            r = r.dropFirst(2)
        }
        let resourceName = r.first!
        guard let type = registry.resolve(group: group, version: version, resource: resourceName) else {
            throw StatusError(.notFound, "the server could not find the requested resource")
        }
        if namespace != nil && !type.namespaced {
            throw StatusError(.notFound, "the server could not find the requested resource")
        }
        target = RequestTarget(type: type, namespace: namespace, name: nil, subresource: nil)
        if r.count >= 2 { target.name = r[r.startIndex + 1] }
        if r.count >= 3 {
            guard let sub = Subresource(rawValue: r[r.startIndex + 2]), type.subresources.contains(sub) else {
                throw StatusError(.notFound, "the server could not find the requested resource")
            }
            target.subresource = sub
        }
        if r.count > 3 && target.subresource != .proxy {
            throw StatusError(.notFound, "the server could not find the requested resource")
        }
        if target.subresource == .proxy {
            target.proxyPath = "/" + r.dropFirst(3).joined(separator: "/")
            if req.path.hasSuffix("/") && r.count > 3 { target.proxyPath += "/" }
        }
        if type.namespaced && target.namespace == nil && target.name != nil {
            throw StatusError(.notFound, "the server could not find the requested resource")
        }
        if let n = target.name, n.isEmpty { throw StatusError.badRequest("resource name may not be empty") }

        if let sub = target.subresource {
            return try await subresourceRequest(req, target, sub)
        }
        if type.group == Self.metricsGroup { return try await metricsRequest(req, target) }
        if Reviews.answered(type) {
            // Reviews are answered, not stored.
            guard req.method == "POST", target.name == nil else {
                throw StatusError(.methodNotAllowed, "the server does not allow this method on the requested resource")
            }
            var review = try decodeBody(req)
            try checkTypeMeta(&review, type)
            review["status"] = try await answerReview(type, review, user: req.user ?? .admin, namespace: target.namespace)
            return .json(201, review)
        }
        if type.resource == "bindings" && type.group.isEmpty {
            // POST /namespaces/{ns}/bindings binds the pod named in the Binding's metadata.
            guard req.method == "POST", target.name == nil else {
                throw StatusError(.methodNotAllowed, "the server does not allow this method on the requested resource")
            }
            let body = try decodeBody(req)
            guard let pod = body["metadata"]["name"].stringValue, !pod.isEmpty else {
                throw StatusError.invalid(kind: "Binding", name: "", causes: [Admission.required("metadata.name")])
            }
            return try await bind(req, RequestTarget(type: Self.podType, namespace: target.namespace, name: pod, subresource: .binding))
        }
        switch (req.method, target.name) {
        case ("GET", nil):
            if req.bool("watch") { return try await watch(req, target) }
            return try await list(req, target)
        case ("GET", .some):
            return try await get(req, target)
        case ("POST", nil):
            return try await create(req, target)
        case ("PUT", .some):
            return try await update(req, target)
        case ("PATCH", .some):
            return try await patch(req, target)
        case ("DELETE", .some):
            return try await delete(req, target)
        case ("DELETE", nil):
            return try await deleteCollection(req, target)
        default:
            throw StatusError(.methodNotAllowed, "the server does not allow this method on the requested resource")
        }
    }

    // MARK: Helpers

    func key(_ t: RequestTarget, name: String? = nil) -> String {
        t.type.storageKey(namespace: t.namespace, name: name ?? t.name ?? "")
    }

    func notFound(_ t: RequestTarget, _ name: String? = nil) -> StatusError {
        StatusError.notFound(t.type.resource, group: t.type.group, name: name ?? t.name ?? "")
    }

    /// Returns the stored object as this endpoint's version (CRDs may serve several).
    func present(_ obj: StoredObject, _ type: ResourceType) throws -> JSON {
        var v = try obj.decode()
        if v["apiVersion"].stringValue != type.apiVersion { v["apiVersion"] = .string(type.apiVersion) }
        if v["kind"].isNull { v["kind"] = .string(type.kind) }
        if type.isCustom, let schema = registry.schema(for: type) { CRDSchema.applyDefaults(&v, schema: schema) }
        return v
    }

    func objectResponse(_ code: Int, _ obj: StoredObject, _ req: APIRequest, _ type: ResourceType) throws -> APIResponse {
        if req.wantsTable {
            return .json(code, Tables.table(for: [try present(obj, type)], type: type, registry: registry,
                                            revision: String(obj.revision), continueToken: nil, includeHeaders: true, req: req))
        }
        if type.isCustom { return .json(code, try present(obj, type)) }
        return .raw(code, obj.data, contentType: "application/json")
    }


    func parseSelectors(_ req: APIRequest, _ type: ResourceType) throws(StatusError) -> (LabelSelector, FieldSelector) {
        let ls = try LabelSelector.parse(req.query["labelSelector"] ?? "")
        let fs = try FieldSelector.parse(req.query["fieldSelector"] ?? "")
        try FieldIndex.validate(fs, type: type)
        return (ls, fs)
    }

    // MARK: get / list

    func get(_ req: APIRequest, _ t: RequestTarget) async throws -> APIResponse {
        guard let obj = await store.get(key(t)) else { throw notFound(t) }
        return try objectResponse(200, obj, req, t.type)
    }

    struct ContinueToken: Codable {
        var rv: Int64
        var start: String
    }

    func list(_ req: APIRequest, _ t: RequestTarget) async throws -> APIResponse {
        let (ls, fs) = try parseSelectors(req, t.type)
        if req.query["sendInitialEvents"] != nil {
            throw StatusError(.invalid, "sendInitialEvents is forbidden for list", code: 422)
        }
        var limit = Int(req.query["limit"] ?? "") ?? 0
        var startAfter: String?
        var atRevision: Int64?
        if let c = req.query["continue"], !c.isEmpty {
            guard let data = Data(base64Encoded: c), let tok = try? JSONDecoder().decode(ContinueToken.self, from: data) else {
                throw StatusError.badRequest("continue key is not valid: illegal base64 data")
            }
            startAfter = tok.start
            atRevision = tok.rv
        } else if let rv = req.query["resourceVersion"], !rv.isEmpty, rv != "0" {
            guard let n = Int64(rv) else { throw StatusError.badRequest("invalid resource version \"\(rv)\"") }
            if req.query["resourceVersionMatch"] == "Exact" { atRevision = n } else {
                let cur = await store.currentRevision()
                if n > cur {
                    throw StatusError(.timeout, "Too large resource version: \(n), current resource version: \(cur)", code: 504)
                }
            }
        } else if req.query["resourceVersion"] == "0" {
            limit = 0
        }
        let prefix = t.type.storagePrefix(namespace: t.namespace)
        var filter: (@Sendable (StoredObject) -> Bool)? = nil
        if !(ls.isEverything && fs.isEverything) {
            filter = { o in ls.matches(o.attributes.labels) && FieldIndex.matches(fs, o) }
        }
        let page: ListPage
        do {
            page = try await store.list(prefix: prefix, startAfter: startAfter, limit: limit > 0 ? limit : nil,
                                        revision: atRevision, filter: filter)
        } catch let e as StorageError {
            if startAfter != nil {
                throw StatusError(.expired, "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")
            }
            throw StatusError(.expired, e.message)
        }
        var continueToken: String?
        if let after = page.continueAfter {
            let tok = ContinueToken(rv: page.revision, start: after)
            continueToken = try JSONEncoder().encode(tok).base64EncodedString()
        }
        if req.wantsTable {
            let objs = try page.items.map { try present($0, t.type) }
            var table = Tables.table(for: objs, type: t.type, registry: registry, revision: String(page.revision),
                                     continueToken: continueToken, includeHeaders: true, req: req)
            if page.remaining > 0 { table["metadata"]["remainingItemCount"] = .int(Int64(page.remaining)) }
            return .json(200, table)
        }
        // Fast path: splice stored bytes into the list without re-encoding.
        var out: [UInt8] = []
        out.reserveCapacity(page.items.reduce(128) { $0 + $1.data.count + 1 })
        var meta: JSON = ["resourceVersion": .string(String(page.revision))]
        if let c = continueToken { meta["continue"] = .string(c) }
        if page.remaining > 0 { meta["remainingItemCount"] = .int(Int64(page.remaining)) }
        out.append(contentsOf: Array("{\"apiVersion\":".utf8))
        JSON.writeString(t.type.apiVersion, to: &out)
        out.append(contentsOf: Array(",\"kind\":".utf8))
        JSON.writeString(t.type.listKind, to: &out)
        out.append(contentsOf: Array(",\"metadata\":".utf8))
        meta.write(to: &out)
        out.append(contentsOf: Array(",\"items\":[".utf8))
        for (i, item) in page.items.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            if t.type.isCustom { try present(item, t.type).write(to: &out) } else { out.append(contentsOf: item.data) }
        }
        out.append(contentsOf: Array("]}".utf8))
        return .raw(200, out, contentType: "application/json")
    }
}

extension JSON {
    func merging(kind: String) -> JSON {
        var v = self
        v["kind"] = .string(kind)
        v["apiVersion"] = "v1"
        return v
    }
}

enum NamespaceKeys {
    static let type = BuiltinResources.all.first { $0.resource == "namespaces" }!
    static func key(_ ns: String) -> String { type.storageKey(namespace: nil, name: ns) }
}
