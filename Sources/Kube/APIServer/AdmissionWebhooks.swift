import AsyncHTTPClient
import Foundation
import KubeAPI
import KubeAuth
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import ObjectStore
import Synchronization

/// One webhook of a Validating- or MutatingWebhookConfiguration (`admissionregistration.k8s.io/v1`).
struct AdmissionWebhook: Sendable {
    struct Rule: Decodable, Sendable {
        var operations: [String]?
        var apiGroups: [String]?
        var apiVersions: [String]?
        var resources: [String]?
        var scope: String?

        func matches(_ a: AdmissionAttributes) -> Bool {
            func has(_ list: [String]?, _ v: String) -> Bool { (list ?? []).contains("*") || (list ?? []).contains(v) }
            guard has(operations, a.operation.rawValue), has(apiGroups, a.type.group), has(apiVersions, a.type.version) else { return false }
            let combined = a.subresource.isEmpty ? a.type.resource : a.type.resource + "/" + a.subresource
            let resourceMatches = (resources ?? []).contains { r in
                r == "*" && a.subresource.isEmpty || r == combined || r == "*/*"
                    || (!a.subresource.isEmpty && (r == "*/" + a.subresource || r == a.type.resource + "/*"))
            }
            guard resourceMatches else { return false }
            switch scope ?? "*" {
            case "Cluster": return !a.type.namespaced
            case "Namespaced": return a.type.namespaced
            default: return true
            }
        }
    }

    struct ServiceReference: Decodable, Sendable {
        var namespace: String
        var name: String
        var path: String?
        var port: Int?
    }

    struct ClientConfig: Decodable, Sendable {
        var url: String?
        var service: ServiceReference?
        var caBundle: String?
    }

    struct Spec: Decodable, Sendable {
        var name: String
        var clientConfig: ClientConfig
        var rules: [Rule]?
        var failurePolicy: String?
        var namespaceSelector: JSON?
        var objectSelector: JSON?
        var sideEffects: String?
        var timeoutSeconds: Int?
        var reinvocationPolicy: String?
        var matchConditions: [MatchCondition]?
    }

    /// A CEL condition the request must meet for the webhook to be called (`matchConditions`).
    struct MatchCondition: Decodable, Sendable {
        var name: String
        var expression: String
    }

    struct Configuration: Decodable, Sendable {
        struct Meta: Decodable, Sendable { var name: String }
        var metadata: Meta
        var webhooks: [Spec]?
    }

    var configuration: String
    var spec: Spec
    var mutating: Bool
    var namespaceSelector: LabelSelector
    var objectSelector: LabelSelector
    /// The match conditions, compiled once (a compile error counts as an evaluation error).
    var conditions: [(name: String, expression: Result<CELExpression, CELExpression.Failure>)] = []

    var name: String { spec.name }
    var ignoresFailures: Bool { spec.failurePolicy == "Ignore" }
    var timeout: Int { min(max(spec.timeoutSeconds ?? 10, 1), 30) }
    var reinvokeIfNeeded: Bool { mutating && spec.reinvocationPolicy == "IfNeeded" }
    /// Dry-run requests go only to webhooks declaring no side effects.
    var dryRunSafe: Bool { ["None", "NoneOnDryRun"].contains(spec.sideEffects ?? "") }

    /// The webhooks of stored configurations (mutating ones in configuration-name order, as kube calls them).
    static func load(mutating: [JSON], validating: [JSON]) -> [AdmissionWebhook] {
        let decoder = JSONValueDecoder()
        func hooks(_ objects: [JSON], mutating: Bool) -> [AdmissionWebhook] {
            objects.compactMap { try? decoder.decode(Configuration.self, from: $0) }.sorted { $0.metadata.name < $1.metadata.name }
                .flatMap { c in
                    (c.webhooks ?? []).map { w in
                        AdmissionWebhook(configuration: c.metadata.name, spec: w, mutating: mutating,
                                         namespaceSelector: (try? LabelSelector.from(object: w.namespaceSelector ?? .emptyObject)) ?? LabelSelector(requirements: []),
                                         objectSelector: (try? LabelSelector.from(object: w.objectSelector ?? .emptyObject)) ?? LabelSelector(requirements: []),
                                         conditions: (w.matchConditions ?? []).map { m in
                                             (m.name, Result<CELExpression, CELExpression.Failure>(catching: { () throws(CELExpression.Failure) -> CELExpression in
                                                 try CELExpression(m.expression)
                                             }))
                                         })
                    }
                }
        }
        return hooks(mutating, mutating: true) + hooks(validating, mutating: false)
    }
}

/// What is being admitted (kube's admission.Attributes).
struct AdmissionAttributes: Sendable {
    enum Operation: String, Sendable { case create = "CREATE", update = "UPDATE", delete = "DELETE" }
    var operation: Operation
    var type: ResourceType
    var subresource: String
    var namespace: String
    var name: String
    var user: UserInfo
    var dryRun: Bool
}

/// Admission rules compiled into the server but configured as webhooks (KubeEdge's admission, run
/// in-process by the embedded API server): configurations whose `clientConfig.url` is
/// `inprocess://<name><path>` are answered by `handler` instead of over HTTPS, with everything
/// else — rules, selectors, failurePolicy, patches — as for any webhook. A stored configuration of
/// the same name (the same rules registered by their own server) takes its place.
public struct InProcessWebhooks: Sendable {
    public static let scheme = "inprocess://"
    public var validating: [JSON]
    public var mutating: [JSON]
    /// Answers an AdmissionReview sent to a path, reading what it needs from the server's store.
    public var handler: @Sendable (_ path: String, _ review: JSON, _ objects: StoredObjects) async -> JSON
    public init(validating: [JSON], mutating: [JSON], handler: @escaping @Sendable (String, JSON, StoredObjects) async -> JSON) {
        self.validating = validating; self.mutating = mutating; self.handler = handler
    }
}

/// Read access to the objects of the server's store, for in-process admission rules (no request
/// back through the server itself).
public struct StoredObjects: Sendable {
    let store: any ObjectStorage

    /// The object, nil when there is none.
    public func get(_ type: ResourceType, namespace: String?, name: String) async -> JSON? {
        try? await store.get(type.storageKey(namespace: namespace, name: name))?.decode()
    }

    /// The objects of a type in a namespace.
    public func list(_ type: ResourceType, namespace: String) async throws -> [JSON] {
        try await store.list(prefix: type.storagePrefix + namespace + "/", startAfter: nil, limit: nil, revision: nil, filter: nil)
            .items.compactMap { try? $0.decode() }
    }
}

/// The webhook configurations as loaded webhooks, rebuilt after a change (like ``PolicyCache``).
public final class WebhookCache: Sendable {
    let store: any ObjectStorage
    let state = Mutex<(hooks: [AdmissionWebhook]?, generation: Int)>((nil, 0))
    /// In-process webhooks, consulted before the stored ones.
    let builtin: [AdmissionWebhook]
    static let prefix = "/admissionregistration.k8s.io/"

    public init(store: any ObjectStorage, inProcess: InProcessWebhooks? = nil) {
        self.store = store
        builtin = inProcess.map { AdmissionWebhook.load(mutating: $0.mutating, validating: $0.validating) } ?? []
    }

    func webhooks() async throws -> [AdmissionWebhook] {
        let (cached, generation) = state.withLock { ($0.hooks, $0.generation) }
        if let cached { return cached }
        func objects(_ resource: String) async throws -> [JSON] {
            try await store.list(prefix: Self.prefix + resource + "/", startAfter: nil, limit: nil, revision: nil, filter: nil)
                .items.compactMap { try? $0.decode() }
        }
        let stored = AdmissionWebhook.load(mutating: try await objects("mutatingwebhookconfigurations"),
                                           validating: try await objects("validatingwebhookconfigurations"))
        // A stored configuration of the same name (the rules' own server, registered) replaces the in-process one.
        let registered = Set(stored.map(\.configuration))
        let built = builtin.filter { !registered.contains($0.configuration) } + stored
        state.withLock { if $0.generation == generation { $0.hooks = built } }
        return built
    }

    func invalidate() { state.withLock { $0.hooks = nil; $0.generation += 1 } }
}

/// Why a webhook could not be consulted (failurePolicy decides what follows).
struct WebhookCallError: Error, CustomStringConvertible {
    var description: String
}

extension APIHandler {
    /// Admission webhooks of the kind asked that apply to `a` and the objects (kube's rules,
    /// namespace and object selectors; the webhook configurations themselves are never sent).
    func matchingWebhooks(_ a: AdmissionAttributes, object: JSON?, old: JSON?) async throws -> [AdmissionWebhook] {
        guard a.type.group != "admissionregistration.k8s.io" else { return [] }
        let all = try await webhooks.webhooks()
        let candidates = all.filter { w in (w.spec.rules ?? []).contains { $0.matches(a) } }
        guard !candidates.isEmpty else { return [] }
        var namespaceLabels: [String: String]?
        if a.type.namespaced || (a.type.group.isEmpty && a.type.resource == "namespaces") {
            let ns = a.type.resource == "namespaces" ? a.name : a.namespace
            let source = a.type.resource == "namespaces" ? (object ?? old) : try? await store.get(NamespaceKeys.key(ns))?.decode()
            namespaceLabels = (source?["metadata"]["labels"].objectValue ?? [:]).compactMapValues(\.stringValue)
        }
        func labels(_ o: JSON?) -> [String: String]? { o.map { ($0["metadata"]["labels"].objectValue ?? [:]).compactMapValues(\.stringValue) } }
        let selected = candidates.filter { w in
            if let nsLabels = namespaceLabels, !w.namespaceSelector.matches(nsLabels) { return false }
            let objectLabels = [labels(object), labels(old)].compactMap { $0 }
            return objectLabels.isEmpty || objectLabels.contains { w.objectSelector.matches($0) }
        }
        guard selected.contains(where: { !$0.conditions.isEmpty }) else { return selected }
        // matchConditions (CEL) over the AdmissionRequest: any false skips the webhook; an error
        // (and none false) is decided by failurePolicy, as kube-apiserver does.
        var namespaceObject = JSON.null
        if a.type.namespaced, let ns = try? await store.get(NamespaceKeys.key(a.namespace))?.decode() { namespaceObject = ns }
        let variables: [String: JSON] = ["object": object ?? .null, "oldObject": old ?? .null, "namespaceObject": namespaceObject,
                                         "request": Self.admissionReview(uid: "", a, object: nil, old: nil)["request"]]
        var out: [AdmissionWebhook] = []
        for w in selected {
            var skip = false, failure: String?
            for c in w.conditions {
                let value = c.expression.flatMap { e in
                    Result<JSON, CELExpression.Failure>(catching: { () throws(CELExpression.Failure) -> JSON in try e.evaluate(variables) })
                }
                switch value {
                case .success(.bool(false)): skip = true
                case .success(.bool(true)): break
                case .success(let v): failure = failure ?? "matchCondition \"\(c.name)\" evaluated to \(v.serialized().count > 60 ? "a non-boolean" : String(decoding: v.serialized(), as: UTF8.self)), not a boolean"
                case .failure(let e): failure = failure ?? "matchCondition \"\(c.name)\": \(e)"
                }
            }
            if skip { continue }
            if let failure {
                if w.ignoresFailures {
                    logger.warning("admission webhook matchCondition failed; webhook skipped (failurePolicy Ignore)", metadata: ["webhook": "\(w.name)", "error": "\(failure)"])
                    continue
                }
                throw StatusError(.internalError, "Internal error occurred: failed to evaluate the match conditions of webhook \"\(w.name)\": \(failure)")
            }
            out.append(w)
        }
        return out
    }

    /// Whether any webhook's rules name this request (no object needed: the cheap test before
    /// a write takes the webhook path).
    func hasWebhooks(_ a: AdmissionAttributes) async throws -> Bool {
        guard a.type.group != "admissionregistration.k8s.io" else { return false }
        return try await webhooks.webhooks().contains { w in (w.spec.rules ?? []).contains { $0.matches(a) } }
    }

    /// The mutating webhooks, each in turn with its JSONPatch applied; those with
    /// `reinvocationPolicy: IfNeeded` once more if a later one changed the object. Returns the
    /// object and the webhooks' warnings; throws kube's refusals.
    func webhookMutate(_ a: AdmissionAttributes, object: JSON, old: JSON?) async throws -> (JSON, [String]) {
        let mutating = try await matchingWebhooks(a, object: object, old: old).filter(\.mutating)
        var current = object
        var warnings: [String] = []
        var changedBy: [String] = []
        for w in mutating {
            let before = current
            current = try await call(w, a, object: current, old: old, warnings: &warnings) ?? current
            if current != before { changedBy.append(w.name) }
        }
        if !changedBy.isEmpty {
            for w in mutating where w.reinvokeIfNeeded && changedBy != [w.name] {
                current = try await call(w, a, object: current, old: old, warnings: &warnings) ?? current
            }
        }
        return (current, warnings)
    }

    /// The validating webhooks; their warnings, or kube's refusal of the first that denies.
    func webhookValidate(_ a: AdmissionAttributes, object: JSON?, old: JSON?) async throws -> [String] {
        var warnings: [String] = []
        for w in try await matchingWebhooks(a, object: object, old: old) where !w.mutating {
            _ = try await call(w, a, object: object, old: old, warnings: &warnings)
        }
        return warnings
    }

    /// A write through the webhooks: the new object is computed from the current one, admitted
    /// (mutating, then validating webhooks) and stored only if the object did not change
    /// meanwhile; otherwise all again (optimistic, as kube-apiserver's GuaranteedUpdate).
    func writeThroughWebhooks(_ key: String, _ a: AdmissionAttributes, notFound: StatusError,
                              compute: @escaping @Sendable (JSON) throws -> Mutation) async throws -> (WriteResult, [String]) {
        struct Changed: Error {}
        for _ in 0..<5 {
            guard let cur = await store.get(key) else { throw notFound }
            let current = try cur.decode()
            var m = try compute(current)
            var warnings: [String] = []
            if case .put(let v) = m {
                let (mutated, w1) = try await webhookMutate(a, object: v, old: current)
                warnings = w1 + (try await webhookValidate(a, object: mutated, old: current))
                m = .put(mutated)
            }
            let decided = m
            do {
                let result = try await store.write(key) { c in
                    guard let c, c.revision == cur.revision else { throw Changed() }
                    return decided
                }
                return (result, warnings)
            } catch is Changed {
                continue
            }
        }
        throw StatusError.conflict(a.type.resource, group: a.type.group, name: a.name)
    }

    /// One webhook call: the AdmissionReview sent, its answer applied or turned into a refusal.
    func call(_ w: AdmissionWebhook, _ a: AdmissionAttributes, object: JSON?, old: JSON?, warnings: inout [String]) async throws -> JSON? {
        if a.dryRun && !w.dryRunSafe {
            throw StatusError.badRequest("admission webhook \"\(w.name)\" does not support dry run")
        }
        let uid = UUID().uuidString.lowercased()
        let review = Self.admissionReview(uid: uid, a, object: object, old: old)
        let response: JSON
        do {
            if let url = w.spec.clientConfig.url, url.hasPrefix(InProcessWebhooks.scheme), let inProcess = options.inProcessWebhooks {
                let rest = url.dropFirst(InProcessWebhooks.scheme.count)
                response = await inProcess.handler(rest.firstIndex(of: "/").map { String(rest[$0...]) } ?? "/", review, StoredObjects(store: store))
            } else {
                response = try await post(review, to: w)
            }
        } catch {
            if w.ignoresFailures {
                logger.warning("admission webhook failed; ignored (failurePolicy Ignore)", metadata: ["webhook": "\(w.name)", "error": "\(error)"])
                return object
            }
            throw StatusError(.internalError, "Internal error occurred: failed calling webhook \"\(w.name)\": \(error)")
        }
        let r = response["response"]
        guard r["uid"].stringValue == uid else {
            if w.ignoresFailures { return object }
            throw StatusError(.internalError, "Internal error occurred: failed calling webhook \"\(w.name)\": expected response.uid=\"\(uid)\", got \"\(r["uid"].stringValue ?? "")\"")
        }
        warnings += (r["warnings"].arrayValue ?? []).compactMap(\.stringValue)
        guard r["allowed"].boolValue == true else { throw Self.denial(w.name, r["status"]) }
        guard w.mutating, let patchText = r["patch"].stringValue, let object else { return object }
        guard r["patchType"].stringValue == "JSONPatch" else {
            throw StatusError(.internalError, "Internal error occurred: admission webhook \"\(w.name)\" returned a patch of unsupported type \"\(r["patchType"].stringValue ?? "")\"")
        }
        do {
            guard let bytes = Data(base64Encoded: patchText) else { throw StatusError.badRequest("the patch is not base64") }
            let patched = try Patch.jsonPatch(object, try JSON.parse(Array(bytes)))
            for (field, path) in [("apiVersion", ["apiVersion"]), ("kind", ["kind"]), ("metadata.name", ["metadata", "name"]), ("metadata.namespace", ["metadata", "namespace"]), ("metadata.uid", ["metadata", "uid"])] {
                if patched[path: path] != object[path: path] { throw StatusError.badRequest("the patch changed \(field)") }
            }
            return patched
        } catch {
            throw StatusError(.internalError, "Internal error occurred: admission webhook \"\(w.name)\" returned an invalid patch: \(error)")
        }
    }

    /// kube's refusal: `admission webhook "<name>" denied the request: <message>`, the webhook's code (400 if none).
    static func denial(_ name: String, _ status: JSON) -> StatusError {
        let deniedBy = "admission webhook \"\(name)\" denied the request"
        let message: String
        if let m = status["message"].stringValue, !m.isEmpty { message = deniedBy + ": " + m } else if let r = status["reason"].stringValue, !r.isEmpty {
            message = deniedBy + ": " + r
        } else {
            message = deniedBy + " without explanation"
        }
        let code = Int(status["code"].intValue ?? 0)
        let reason = status["reason"].stringValue.flatMap { $0.isEmpty ? nil : $0 }
        return StatusError(.init(reason ?? (code == 403 || code == 0 ? "Forbidden" : "BadRequest"), code: code >= 400 ? code : 400), message)
    }

    static func admissionReview(uid: String, _ a: AdmissionAttributes, object: JSON?, old: JSON?) -> JSON {
        var request: [String: JSON] = [
            "uid": .string(uid),
            "kind": ["group": .string(a.type.group), "version": .string(a.type.version), "kind": .string(a.type.kind)],
            "resource": ["group": .string(a.type.group), "version": .string(a.type.version), "resource": .string(a.type.resource)],
            "requestKind": ["group": .string(a.type.group), "version": .string(a.type.version), "kind": .string(a.type.kind)],
            "requestResource": ["group": .string(a.type.group), "version": .string(a.type.version), "resource": .string(a.type.resource)],
            "name": .string(a.name), "operation": .string(a.operation.rawValue), "userInfo": a.user.json, "dryRun": .bool(a.dryRun),
            "object": object ?? .null, "oldObject": old ?? .null,
        ]
        if !a.subresource.isEmpty { request["subResource"] = .string(a.subresource); request["requestSubResource"] = .string(a.subresource) }
        if a.type.namespaced { request["namespace"] = .string(a.namespace) }
        let optionsKind: String = switch a.operation {
        case .create: "CreateOptions"
        case .update: "UpdateOptions"
        case .delete: "DeleteOptions"
        }
        request["options"] = ["apiVersion": "meta.k8s.io/v1", "kind": .string(optionsKind)]
        return ["apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": .object(request)]
    }

    /// The webhook's URL: `clientConfig.url`, or the Service's (resolved to a ready endpoint, TLS
    /// server name `<svc>.<ns>.svc`, as kube-apiserver's service resolver does).
    func endpoint(of w: AdmissionWebhook) async throws -> (url: String, address: (host: String, ip: String)?) {
        if let url = w.spec.clientConfig.url { return (url, nil) }
        guard let svc = w.spec.clientConfig.service else { throw WebhookCallError(description: "the webhook has neither a url nor a service") }
        let path = svc.path ?? "/"
        guard let service = try await store.get(ResourceType.services.storageKey(namespace: svc.namespace, name: svc.name))?.decode() else {
            throw WebhookCallError(description: "service \"\(svc.namespace)/\(svc.name)\" not found")
        }
        let port = svc.port ?? 443
        let servicePort = (service["spec"]["ports"].arrayValue ?? []).first { Int($0["port"].intValue ?? 0) == port }
        let endpoints = try await store.get(ResourceType.endpoints.storageKey(namespace: svc.namespace, name: svc.name))?.decode()
        for subset in endpoints?["subsets"].arrayValue ?? [] {
            guard let ip = subset["addresses"].arrayValue?.first?["ip"].stringValue else { continue }
            let target = (subset["ports"].arrayValue ?? []).first { $0["name"].stringValue == servicePort?["name"].stringValue || servicePort == nil }
            let targetPort = Int(target?["port"].intValue ?? Int64(port))
            // Dialled at the endpoint, verified as the Service's DNS name.
            let host = "\(svc.name).\(svc.namespace).svc"
            return ("https://\(host):\(targetPort)\(path)", (host, ip))
        }
        throw WebhookCallError(description: "service \"\(svc.namespace)/\(svc.name)\" has no ready endpoints")
    }

    /// POSTs the review over HTTPS (trusting `caBundle`, else the system roots) within the
    /// webhook's timeout; the answer is bounded like a request body.
    func post(_ review: JSON, to w: AdmissionWebhook) async throws -> JSON {
        let (url, address) = try await endpoint(of: w)
        var tls = TLSConfiguration.makeClientConfiguration()
        if let bundle = w.spec.clientConfig.caBundle, !bundle.isEmpty {
            guard let pem = Data(base64Encoded: bundle) else { throw WebhookCallError(description: "clientConfig.caBundle is not base64") }
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(pem)))
        }
        var config = HTTPClient.Configuration(tlsConfiguration: tls)
        config.timeout = .init(connect: .seconds(Int64(w.timeout)), read: .seconds(Int64(w.timeout)))
        if let address { config.dnsOverride = [address.host: address.ip] }
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
        defer { _ = client.shutdown() }
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "Accept", value: "application/json")
        request.body = .bytes(review.serialized())
        let deadline = NIODeadline.now() + .seconds(Int64(w.timeout))
        let response: HTTPClientResponse
        do { response = try await client.execute(request, deadline: deadline) } catch {
            throw WebhookCallError(description: "failed to call webhook: Post \"\(url)\": \(error)")
        }
        guard response.status == .ok else {
            throw WebhookCallError(description: "received invalid webhook response status \(response.status.code) from \(url)")
        }
        let body = try await response.body.collect(upTo: options.maxBodyBytes)
        do { return try JSON.parse(Array(body.readableBytesView)) } catch {
            throw WebhookCallError(description: "received an invalid AdmissionReview from \(url): \(error)")
        }
    }
}
