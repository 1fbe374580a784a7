import Foundation
import KubeAPI
import MetaStore

/// A token request the cloud refused or did not answer, with the reason.
public struct TokenRequestError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Where Edged gets the ServiceAccount tokens of its pods' projected volumes (kubelet's token
/// manager): bound to the pod through the cloud's TokenRequest, kept in the node's store,
/// refreshed after 80 % of their lifetime, and — while the cloud cannot be asked — the stored
/// token is used until it expires, so pods keep working offline.
public struct ServiceAccountTokenSource: Sendable {
    public let store: PodTokenStore
    /// Asks the cloud for a TokenRequest for `<namespace>/<serviceAccount>`; throws with the
    /// reason when it is refused or unanswered.
    public let request: @Sendable (_ namespace: String, _ serviceAccount: String, _ tokenRequest: JSON) async throws -> JSON

    public init(store: PodTokenStore, request: @escaping @Sendable (String, String, JSON) async throws -> JSON) {
        self.store = store; self.request = request
    }

    /// kubelet's default lifetime for a projected token without `expirationSeconds`.
    static let defaultExpiration: Int64 = 3600

    /// The token for one `serviceAccountToken` source of a pod's volume.
    func token(_ pod: PodModel, volume: String, _ source: Core.ServiceAccountTokenProjection, now: Date = Date()) async throws -> String {
        let key = "\(pod.uid)/\(volume)/\(source.path)"
        let stored = try await store.get(key)
        if let stored, !stored.needsRefresh(now: now) { return stored.token }
        let audiences: [String] = source.audience.map { [$0] } ?? []
        let seconds = max(600, source.expirationSeconds ?? Self.defaultExpiration)
        var spec: JSON = ["expirationSeconds": .int(seconds),
                          "boundObjectRef": ["apiVersion": "v1", "kind": "Pod", "name": .string(pod.name), "uid": .string(pod.uid)]]
        if !audiences.isEmpty { spec["audiences"] = .array(audiences.map { .string($0) }) }
        let tokenRequest: JSON = ["apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec]
        do {
            let answer = try await request(pod.namespace, pod.serviceAccountName, tokenRequest)
            guard let token = answer["status"]["token"].stringValue, !token.isEmpty else {
                throw ConfigError(message: "the TokenRequest answer carries no token")
            }
            let stated = answer["status"]["expirationTimestamp"].stringValue.flatMap(Self.parseTime) ?? now.addingTimeInterval(TimeInterval(seconds))
            let refreshAt = now.addingTimeInterval(max(60, stated.timeIntervalSince(now) * 0.8))
            try await store.save([key: PodToken(token: token, namespace: pod.namespace, pod: pod.name, podUID: pod.uid,
                                                serviceAccount: pod.serviceAccountName, audiences: audiences, refreshAt: refreshAt,
                                                expires: Self.expiry(of: token) ?? stated)])
            return token
        } catch {
            if let stored, stored.expires > now { return stored.token }  // offline: the current one while it lasts
            throw ConfigError(message: "no ServiceAccount token for \(pod.namespace)/\(pod.serviceAccountName): \(error)")
        }
    }

    /// The `exp` claim of a JWT (read, not verified: the token came from the cloud over the
    /// node's authenticated channel).
    static func expiry(of token: String) -> Date? {
        let parts = token.split(separator: ".")
        guard parts.count == 3 else { return nil }
        var b64 = parts[1].replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while b64.count % 4 != 0 { b64 += "=" }
        guard let data = Data(base64Encoded: b64), let claims = try? JSON.parse(Array(data)), let exp = claims["exp"].intValue else { return nil }
        return Date(timeIntervalSince1970: TimeInterval(exp))
    }

    static func parseTime(_ s: String) -> Date? {
        let f = ISO8601DateFormatter()
        if let d = f.date(from: s) { return d }
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.date(from: s)
    }
}
