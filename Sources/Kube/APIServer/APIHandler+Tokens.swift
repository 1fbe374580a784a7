import Foundation
import KubeAPI
import KubeAuth

extension APIHandler {
    /// `POST serviceaccounts/<name>/token` (TokenRequest): a signed token for the ServiceAccount,
    /// for the audiences asked (default: this server's), expiring after `expirationSeconds`
    /// (default 1 h, at least 10 min), optionally bound to a Pod, Secret or Node that must exist.
    func tokenRequest(_ req: APIRequest, _ t: RequestTarget) async throws -> APIResponse {
        guard let issuer = options.access.serviceAccountTokens else {
            throw StatusError(.notFound, "the server could not find the requested resource")
        }
        let namespace = t.namespace ?? "", name = t.name ?? ""
        var body = try decodeBody(req)
        if body["kind"].isNull { body["kind"] = "TokenRequest" }
        if body["apiVersion"].isNull { body["apiVersion"] = "authentication.k8s.io/v1" }
        guard body["kind"].stringValue == "TokenRequest" else {
            throw StatusError.badRequest("the body of the request was in an unknown format; expected a TokenRequest, got \(body["kind"].stringValue ?? "")")
        }
        guard let saObject = await store.get(key(t)), let sa = try? saObject.decode() else { throw notFound(t) }
        let seconds = Int(body["spec"]["expirationSeconds"].intValue ?? 3600)
        func invalid(_ field: String, _ value: String, _ why: String) -> StatusError {
            StatusError.invalid(kind: "TokenRequest", group: "authentication.k8s.io", name: name,
                                causes: [.init(reason: "FieldValueInvalid", message: "Invalid value: \(value): \(why)", field: field)])
        }
        if seconds < 600 { throw invalid("spec.expirationSeconds", "\(seconds)", "may not specify a duration less than 10 minutes") }
        if seconds > 1 << 32 { throw invalid("spec.expirationSeconds", "\(seconds)", "may not specify a duration larger than 2^32 seconds") }
        var audiences = (body["spec"]["audiences"].arrayValue ?? []).compactMap(\.stringValue)
        if audiences.isEmpty { audiences = options.access.apiAudiences }
        var claims = ServiceAccountClaims.Kubernetes(namespace: namespace, serviceaccount: .init(name: name, uid: sa["metadata"]["uid"].stringValue ?? ""))
        let bound = body["spec"]["boundObjectRef"]
        if !bound.isNull {
            let kind = bound["kind"].stringValue ?? "", boundName = bound["name"].stringValue ?? ""
            let type: ResourceType
            switch kind {
            case "Pod": type = .pods
            case "Secret": type = .secrets
            case "Node": type = .nodes
            default: throw invalid("spec.boundObjectRef.kind", "\"\(kind)\"", "supported values: \"Pod\", \"Secret\", \"Node\"")
            }
            let storageKey = type.storageKey(namespace: type.namespaced ? namespace : nil, name: boundName)
            guard let o = await store.get(storageKey), let obj = try? o.decode() else {
                throw StatusError.notFound(type.resource, name: boundName)
            }
            let uid = obj["metadata"]["uid"].stringValue ?? ""
            if let want = bound["uid"].stringValue, !want.isEmpty, want != uid {
                throw StatusError(.conflict, "the UID in the bound object reference (\(want)) does not match the UID in record. The object might have been deleted and then recreated")
            }
            let ref = ServiceAccountClaims.Ref(name: boundName, uid: uid)
            switch kind {
            case "Pod": claims.pod = ref
            case "Secret": claims.secret = ref
            default: claims.node = ref
            }
            body["spec"]["boundObjectRef"]["uid"] = .string(uid)
        }
        let now = Int64(Date().timeIntervalSince1970)
        // kube-apiserver's --service-account-extend-token-expiration (default on): a pod-bound token
        // asked for 3607 s (the kube-api-access volume's) is valid a year, warned about after
        // 3607 s; its status still says 3607 s, so kubelet (and Edged) refresh it as usual, and a
        // node that is offline meanwhile keeps a working token.
        var lifetime = Int64(seconds)
        if claims.pod != nil && seconds == Self.warnOnlyTokenSeconds {
            claims.warnafter = now + lifetime
            lifetime = Self.extendedTokenSeconds
        }
        let token = try issuer.issue(ServiceAccountClaims(issuer: issuer.issuer, audiences: audiences, issuedAt: now, lifetime: lifetime,
                                                          jti: UUID().uuidString.lowercased(), kubernetes: claims))
        body["metadata"] = ["name": .string(name), "namespace": .string(namespace), "creationTimestamp": .null]
        body["spec"]["audiences"] = .array(audiences.map { .string($0) })
        body["spec"]["expirationSeconds"] = .int(Int64(seconds))
        body["status"] = ["token": .string(token),
                          "expirationTimestamp": .string(KubeTime(seconds: now + Int64(seconds)).rfc3339)]
        return .json(201, body)
    }

    /// kube's WarnOnlyBoundTokenExpirationSeconds and ExpirationExtensionSeconds.
    static let warnOnlyTokenSeconds = 3607
    static let extendedTokenSeconds: Int64 = 365 * 24 * 3600
}
