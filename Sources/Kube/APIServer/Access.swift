import Foundation
import KubeAPI
import KubeAuth
import Logging
import ObjectStore
import PKI
import ServiceLifecycle
import Synchronization

/// The RBAC objects as one ``RBACPolicy``, rebuilt from the store after a change (kube's RBAC
/// authorizer reads informer caches: a new binding takes effect within moments, not in the
/// request that wrote it).
public final class PolicyCache: Sendable {
    struct State {
        var policy: RBACPolicy?
        var generation = 0
    }

    let store: any ObjectStorage
    let state = Mutex(State())
    static let prefix = "/rbac.authorization.k8s.io/"

    public init(store: any ObjectStorage) { self.store = store }

    /// The current policy (built on first use and after every RBAC change).
    func policy() async throws -> RBACPolicy {
        let (cached, generation) = state.withLock { ($0.policy, $0.generation) }
        if let cached { return cached }
        func objects(_ resource: String) async throws -> [JSON] {
            try await store.list(prefix: Self.prefix + resource + "/", startAfter: nil, limit: nil, revision: nil, filter: nil)
                .items.compactMap { try? $0.decode() }
        }
        let built = RBACPolicy(clusterRoles: try await objects("clusterroles"), roles: try await objects("roles"),
                               clusterRoleBindings: try await objects("clusterrolebindings"), roleBindings: try await objects("rolebindings"))
        state.withLock { if $0.generation == generation { $0.policy = built } }
        return built
    }

    /// Drops the cached policy (a Role or binding changed).
    func invalidate() {
        state.withLock { $0.policy = nil; $0.generation += 1 }
    }
}

/// Keeps a cache of stored objects current (``PolicyCache``, ``WebhookCache``): watches the
/// store under `prefix` and calls `invalidate` at every change (and after a watch restart, in
/// case one was missed).
public struct StoreChangeWatcher: Service {
    let store: any ObjectStorage
    let prefix: String
    let invalidate: @Sendable () -> Void

    public init(store: any ObjectStorage, prefix: String, invalidate: @escaping @Sendable () -> Void) {
        self.store = store; self.prefix = prefix; self.invalidate = invalidate
    }

    /// Watches the RBAC objects for `cache`.
    public static func policies(_ cache: PolicyCache) -> StoreChangeWatcher {
        StoreChangeWatcher(store: cache.store, prefix: PolicyCache.prefix) { cache.invalidate() }
    }

    /// Watches the admission webhook configurations for `cache`.
    public static func webhooks(_ cache: WebhookCache) -> StoreChangeWatcher {
        StoreChangeWatcher(store: cache.store, prefix: WebhookCache.prefix) { cache.invalidate() }
    }

    public func run() async throws {
        let store = self.store, prefix = self.prefix, invalidate = self.invalidate
        await withDiscardingTaskGroup { group in
            group.addTask {
                while !Task.isCancelled {
                    let after = await store.currentRevision()
                    invalidate()
                    guard let sub = try? await store.watch(prefix: prefix, after: after) else {
                        try? await Task.sleep(for: .seconds(1))
                        continue
                    }
                    for await item in sub.stream { if case .event = item { invalidate() } }
                    await store.cancelWatch(sub.id)
                }
            }
            try? await gracefulShutdown()
            group.cancelAll()
        }
    }
}

/// ServiceAccount tokens whose signature was verified, with their claims (an ECDSA check per
/// request would cost more than the request; kube-apiserver caches the same). Bounded: emptied
/// when full.
public final class VerifiedTokenCache: Sendable {
    let entries = Mutex<[String: ServiceAccountClaims]>([:])
    let capacity: Int

    public init(capacity: Int = 10_000) { self.capacity = capacity }

    func claims(_ token: String) -> ServiceAccountClaims? { entries.withLock { $0[token] } }

    func remember(_ token: String, _ claims: ServiceAccountClaims) {
        entries.withLock { e in
            if e.count >= capacity { e.removeAll(keepingCapacity: true) }
            e[token] = claims
        }
    }
}

/// How the API server recognises callers (kube-apiserver's authenticators) and whether RBAC is enforced.
public struct AccessOptions: Sendable {
    /// Static bearer tokens and the users they stand for (the admin token: `kubernetes-admin` in `system:masters`).
    public var tokens: [String: UserInfo]
    /// Signs and verifies ServiceAccount tokens (TokenRequest); nil: none are issued or accepted.
    public var serviceAccountTokens: ServiceAccountTokenIssuer?
    /// Audiences a token must name to be accepted here (kube's `--api-audiences`, default the issuer).
    public var apiAudiences: [String]
    /// Enforce RBAC (false: every authenticated caller may do everything, as before authorization existed).
    public var enforceRBAC: Bool
    /// kube's `--enable-bootstrap-token-auth`: `<id>.<secret>` tokens from `kube-system/bootstrap-token-<id>` Secrets.
    public var bootstrapTokens = false

    public init(tokens: [String: UserInfo], serviceAccountTokens: ServiceAccountTokenIssuer? = nil, apiAudiences: [String]? = nil,
                enforceRBAC: Bool = true) {
        self.tokens = tokens; self.serviceAccountTokens = serviceAccountTokens
        self.apiAudiences = apiAudiences ?? [serviceAccountTokens?.issuer ?? ServiceAccountTokenIssuer.defaultIssuer]
        self.enforceRBAC = enforceRBAC
    }
}

extension APIHandler {
    /// Authenticates `req`, applies impersonation and authorizes what it asks (kube's filter
    /// order); the user the request acts as.
    func admit(_ req: APIRequest, upgrade: Bool = false) async throws -> UserInfo {
        let caller = try await authenticate(req)
        let user = try await impersonated(req, by: caller)
        var attributes = Self.attributes(method: req.method, path: req.path, query: req.query, user: user)
        if upgrade && attributes.isResourceRequest { attributes.verb = "create" }
        try await authorize(attributes)
        return user
    }

    /// 403 unless RBAC allows `a`.
    func authorize(_ a: RequestAttributes) async throws {
        let (yes, reason) = try await decide(a)
        guard yes else {
            logger.debug("forbidden", metadata: ["user": "\(a.user.username)", "verb": "\(a.verb)", "resource": "\(a.resource)", "path": "\(a.path)"])
            throw a.forbidden(reason: reason)
        }
    }

    func allowed(_ a: RequestAttributes) async throws -> Bool { try await decide(a).allowed }

    /// kube's authorizer chain: system:masters, then the Node authorizer, then RBAC.
    func decide(_ a: RequestAttributes) async throws -> (allowed: Bool, reason: String) {
        guard options.access.enforceRBAC, !a.user.isMaster else { return (true, "") }
        var reason = ""
        switch try await nodeDecision(a) {
        case .allow: return (true, "")
        case .noOpinion(let why): reason = why
        case nil: break
        }
        return (try await policies.policy().allows(a), reason)
    }

    /// The caller: a bearer token (static or ServiceAccount) or else a client certificate; 401 otherwise.
    func authenticate(_ req: APIRequest) async throws(StatusError) -> UserInfo {
        if let auth = req.header("authorization") {
            guard auth.count > 7, auth.prefix(7).lowercased() == "bearer " else { throw StatusError(.unauthorized, "Unauthorized") }
            let token = String(auth.dropFirst(7)).trimmingCharacters(in: .whitespaces)
            switch await authenticateToken(token) {
            case .success(let user): return user
            case .failure(let why):
                logger.debug("token refused", metadata: ["reason": "\(why)"])
                throw StatusError(.unauthorized, "Unauthorized")
            }
        }
        if let id = req.clientIdentity {
            return UserInfo(username: id.commonName, groups: id.organizations).authenticated()
        }
        throw StatusError(.unauthorized, "Unauthorized")
    }

    /// Who a bearer token stands for (also TokenReview's answer).
    func authenticateToken(_ token: String) async -> Result<UserInfo, TokenError> {
        if let user = options.access.tokens[token] { return .success(user) }
        if options.access.bootstrapTokens, let (id, secret) = BootstrapToken.split(token) {
            guard let s = try? await store.get(ResourceType.secrets.storageKey(namespace: "kube-system", name: "bootstrap-token-" + id))?.decode(),
                  s["type"].stringValue == BootstrapToken.secretType
            else { return .failure(.invalidated("no bootstrap token \(id)")) }
            var data: [String: String] = [:]
            for (k, v) in s["data"].objectValue ?? [:] {
                if let b = v.stringValue.flatMap({ Data(base64Encoded: $0) }) { data[k] = String(decoding: b, as: UTF8.self) }
            }
            switch BootstrapToken.user(id: id, secret: secret, data: data, now: Date()) {
            case .success(let u): return .success(u)
            case .failure(let why): return .failure(.invalidated("bootstrap token \(id): \(why)"))
            }
        }
        guard let issuer = options.access.serviceAccountTokens else { return .failure(.malformed) }
        // A legacy token (from a kubernetes.io/service-account-token Secret): valid while that
        // Secret holds it and its ServiceAccount (same uid) exists.
        do {
            if let legacy = try issuer.verifyLegacy(token) {
                guard let secret = try? await store.get(ResourceType.secrets.storageKey(namespace: legacy.namespace, name: legacy.secretName))?.decode(),
                      secret["metadata"]["deletionTimestamp"].isNull,
                      secret["data"]["token"].stringValue.flatMap({ Data(base64Encoded: $0) }).map({ String(decoding: $0, as: UTF8.self) }) == token
                else { return .failure(.invalidated("secret \(legacy.namespace)/\(legacy.secretName) no longer holds this token")) }
                guard let sa = try? await store.get(ResourceType.serviceAccounts.storageKey(namespace: legacy.namespace, name: legacy.serviceAccountName))?.decode(),
                      sa["metadata"]["uid"].stringValue == legacy.serviceAccountUID
                else { return .failure(.invalidated("service account \(legacy.namespace)/\(legacy.serviceAccountName) no longer exists")) }
                return .success(UserInfo(username: legacy.sub, uid: legacy.serviceAccountUID, groups: ServiceAccountName.groups(namespace: legacy.namespace),
                                         extra: ["authentication.kubernetes.io/credential-id": ["Secret=\(legacy.secretName)"]]))
            }
        } catch {
            return .failure(error)
        }
        let now = Int64(Date().timeIntervalSince1970)
        let claims: ServiceAccountClaims
        if let known = verifiedTokens.claims(token), known.exp > now {
            claims = known  // signature already checked; what it is bound to is checked below every time
        } else {
            guard issuer.isCandidate(token) else { return .failure(.malformed) }
            do { claims = try issuer.verify(token, audiences: options.access.apiAudiences, now: now) } catch {
                return .failure(error)
            }
            verifiedTokens.remember(token, claims)
        }
        let k = claims.kubernetes
        // A bound token is only as alive as what it is bound to (kube checks the same objects).
        func alive(_ type: ResourceType, _ ref: ServiceAccountClaims.Ref) async -> Bool {
            guard let o = await store.get(type.storageKey(namespace: k.namespace, name: ref.name)), let v = try? o.decode() else { return false }
            return v["metadata"]["uid"].stringValue == ref.uid && v["metadata"]["deletionTimestamp"].isNull
        }
        guard await alive(.serviceAccounts, k.serviceaccount) else {
            return .failure(.invalidated("service account \(k.namespace)/\(k.serviceaccount.name) (uid \(k.serviceaccount.uid)) no longer exists"))
        }
        if let pod = k.pod, await !alive(.pods, pod) { return .failure(.invalidated("pod \(k.namespace)/\(pod.name) (uid \(pod.uid)) no longer exists")) }
        if let secret = k.secret, await !alive(.secrets, secret) {
            return .failure(.invalidated("secret \(k.namespace)/\(secret.name) (uid \(secret.uid)) no longer exists"))
        }
        var extra: [String: [String]] = ["authentication.kubernetes.io/credential-id": ["JTI=\(claims.jti)"]]
        if let pod = k.pod { extra["authentication.kubernetes.io/pod-name"] = [pod.name]; extra["authentication.kubernetes.io/pod-uid"] = [pod.uid] }
        return .success(UserInfo(username: claims.sub, uid: k.serviceaccount.uid, groups: ServiceAccountName.groups(namespace: k.namespace), extra: extra))
    }

    /// The user named by `Impersonate-*` headers, when `caller` may impersonate it (kube's
    /// impersonation filter: users, groups, uids and extras each need `impersonate`).
    func impersonated(_ req: APIRequest, by caller: UserInfo) async throws -> UserInfo {
        let extras = req.headers.filter { $0.key.hasPrefix("impersonate-extra-") }
        guard let username = req.header("impersonate-user") else {
            if req.header("impersonate-group") != nil || req.header("impersonate-uid") != nil || !extras.isEmpty {
                throw StatusError.badRequest("requested [\(req.header("impersonate-group") ?? "")] without impersonating a user")
            }
            return caller
        }
        let groups = (req.header("impersonate-group") ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        var checks: [RequestAttributes] = []
        var user: UserInfo
        if let sa = ServiceAccountName.split(username) {
            checks.append(RequestAttributes(user: caller, verb: "impersonate", apiGroup: "", resource: "serviceaccounts", namespace: sa.namespace, name: sa.name))
            user = UserInfo(username: username, groups: groups.isEmpty ? ServiceAccountName.groups(namespace: sa.namespace) : groups)
        } else {
            checks.append(RequestAttributes(user: caller, verb: "impersonate", apiGroup: "", resource: "users", name: username))
            user = UserInfo(username: username, groups: groups)
        }
        for g in groups { checks.append(RequestAttributes(user: caller, verb: "impersonate", apiGroup: "", resource: "groups", name: g)) }
        if let uid = req.header("impersonate-uid") {
            checks.append(RequestAttributes(user: caller, verb: "impersonate", apiGroup: "authentication.k8s.io", resource: "uids", name: uid))
            user.uid = uid
        }
        for (header, value) in extras.sorted(by: { $0.key < $1.key }) {
            let key = String(header.dropFirst("impersonate-extra-".count)).removingPercentEncoding ?? ""
            let values = value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            for v in values {
                checks.append(RequestAttributes(user: caller, verb: "impersonate", apiGroup: "authentication.k8s.io", resource: "userextras",
                                                subresource: key, name: v))
            }
            user.extra[key] = values
        }
        for check in checks { try await authorize(check) }
        return user.authenticated()
    }

    /// What a request asks, from its method and path (kube's RequestInfoFactory): `/api/v1/…` and
    /// `/apis/<g>/<v>/…` with a resource are resource requests, everything else (discovery,
    /// `/version`, `/openapi/…`) non-resource requests by path.
    static func attributes(method: String, path: String, query: [String: String], user: UserInfo) -> RequestAttributes {
        let parts = path.split(separator: "/").map(String.init)
        let isCore = parts.first == "api" && parts.count >= 3
        let isGroup = parts.first == "apis" && parts.count >= 4
        guard isCore || isGroup else { return RequestAttributes(user: user, verb: method.lowercased(), path: path) }
        let group = isCore ? "" : parts[1], version = isCore ? parts[1] : parts[2]
        var rest = parts.dropFirst(isCore ? 2 : 3)
        var namespace = ""
        if rest.first == "namespaces", rest.count >= 2 {
            namespace = rest[rest.startIndex + 1]
            // `namespaces/<n>/status|finalize` are the namespace's own subresources.
            if rest.count > 2, !["status", "finalize"].contains(rest[rest.startIndex + 2]) { rest = rest.dropFirst(2) }
        }
        let a = Array(rest)
        let name = a.count > 1 ? a[1] : "", sub = a.count > 2 ? a[2] : ""
        let verb: String
        switch method {
        case "GET", "HEAD": verb = name.isEmpty ? (query["watch"] == "true" || query["watch"] == "1" ? "watch" : "list") : "get"
        case "POST": verb = "create"
        case "PUT": verb = "update"
        case "PATCH": verb = "patch"
        case "DELETE": verb = name.isEmpty ? "deletecollection" : "delete"
        default: verb = method.lowercased()
        }
        return RequestAttributes(user: user, verb: verb, apiGroup: group, apiVersion: version, resource: a.first ?? "", subresource: sub,
                                 namespace: namespace, name: name)
    }
}
