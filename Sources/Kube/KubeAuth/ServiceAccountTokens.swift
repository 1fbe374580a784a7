import Crypto
import Foundation
import KubeAPI

/// The claims of a ServiceAccount token, as kube-apiserver's TokenRequest issues them.
public struct ServiceAccountClaims: Codable, Sendable, Hashable {
    public struct Ref: Codable, Sendable, Hashable {
        public var name: String
        public var uid: String
        public init(name: String, uid: String) { self.name = name; self.uid = uid }
    }

    public struct Kubernetes: Codable, Sendable, Hashable {
        public var namespace: String
        public var serviceaccount: Ref
        public var pod: Ref?
        public var secret: Ref?
        public var node: Ref?
        /// kube's `warnafter`: when an extended token would have expired (it stays valid, with a warning).
        public var warnafter: Int64?
        public init(namespace: String, serviceaccount: Ref, pod: Ref? = nil, secret: Ref? = nil, node: Ref? = nil, warnafter: Int64? = nil) {
            self.namespace = namespace; self.serviceaccount = serviceaccount; self.pod = pod; self.secret = secret; self.node = node
            self.warnafter = warnafter
        }
    }

    public var iss: String
    public var sub: String
    public var aud: [String]
    public var exp: Int64
    public var iat: Int64
    public var nbf: Int64
    public var jti: String
    public var kubernetes: Kubernetes

    enum CodingKeys: String, CodingKey {
        case iss, sub, aud, exp, iat, nbf, jti
        case kubernetes = "kubernetes.io"
    }

    public init(issuer: String, audiences: [String], issuedAt: Int64, lifetime: Int64, jti: String, kubernetes: Kubernetes) {
        iss = issuer; aud = audiences; iat = issuedAt; nbf = issuedAt; exp = issuedAt + lifetime; self.jti = jti
        self.kubernetes = kubernetes
        sub = ServiceAccountName.username(namespace: kubernetes.namespace, name: kubernetes.serviceaccount.name)
    }
}

/// Why a bearer token was not accepted (kube answers every one with 401 "Unauthorized"; the
/// reason goes to the log and to TokenReview's `status.error`).
public enum TokenError: Error, Sendable, Equatable, CustomStringConvertible {
    case malformed
    case unsupportedAlgorithm(String)
    case badSignature
    case expired
    case notYetValid
    case wrongAudience
    case wrongIssuer
    case invalidated(String)

    public var description: String {
        switch self {
        case .malformed: return "token is malformed"
        case .unsupportedAlgorithm(let a): return "unsupported signing algorithm \(a)"
        case .badSignature: return "invalid signature"
        case .expired: return "token has expired"
        case .notYetValid: return "token is not valid yet"
        case .wrongAudience: return "token audience does not match the API server's"
        case .wrongIssuer: return "token issuer is not this API server's"
        case .invalidated(let why): return why
        }
    }
}

/// Signs and verifies ServiceAccount tokens (JWT, ES256 with the cluster's service-account key),
/// and publishes the key as a JWKS for OIDC discovery.
public struct ServiceAccountTokenIssuer: Sendable {
    // Raw key bytes (Crypto's key types are not Sendable); the keys are rebuilt per use.
    let privateRaw: [UInt8]
    let publicRaw: [UInt8]
    public let issuer: String
    public let keyID: String

    /// kube-apiserver's default issuer and API audience.
    public static let defaultIssuer = "https://kubernetes.default.svc.cluster.local"

    public init(privateKeyPEM: String, issuer: String = Self.defaultIssuer) throws {
        let key = try P256.Signing.PrivateKey(pemRepresentation: privateKeyPEM)
        privateRaw = Array(key.rawRepresentation)
        publicRaw = Array(key.publicKey.rawRepresentation)
        self.issuer = issuer
        keyID = Base64URL.encode(Array(SHA256.hash(data: key.publicKey.derRepresentation)))
    }

    /// A fresh signing key, PEM encoded.
    public static func generateKeyPEM() -> String { P256.Signing.PrivateKey().pemRepresentation }

    public func issue(_ claims: ServiceAccountClaims) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let header = try encoder.encode(Header(alg: "ES256", kid: keyID))
        let payload = try encoder.encode(claims)
        let signingInput = Base64URL.encode(Array(header)) + "." + Base64URL.encode(Array(payload))
        let key = try P256.Signing.PrivateKey(rawRepresentation: privateRaw)
        let signature = try key.signature(for: Array(signingInput.utf8))
        return signingInput + "." + Base64URL.encode(Array(signature.rawRepresentation))
    }

    struct Header: Codable {
        var alg: String
        var kid: String?
        var typ: String?
    }

    /// The claims of `token` if this issuer signed it, it is within its validity and one of its
    /// audiences is in `audiences`. Whether its ServiceAccount (and pod) still exist is the caller's check.
    public func verify(_ token: String, audiences: [String], now: Int64) throws(TokenError) -> ServiceAccountClaims {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerBytes = Base64URL.decode(parts[0]), let payloadBytes = Base64URL.decode(parts[1]),
              let sigBytes = Base64URL.decode(parts[2]) else { throw .malformed }
        let decoder = JSONDecoder()
        guard let header = try? decoder.decode(Header.self, from: Data(headerBytes)) else { throw .malformed }
        guard header.alg == "ES256" else { throw .unsupportedAlgorithm(header.alg) }
        guard let signature = try? P256.Signing.ECDSASignature(rawRepresentation: sigBytes),
              let publicKey = try? P256.Signing.PublicKey(rawRepresentation: publicRaw),
              publicKey.isValidSignature(signature, for: Array((parts[0] + "." + parts[1]).utf8)) else { throw .badSignature }
        guard let claims = try? decoder.decode(ServiceAccountClaims.self, from: Data(payloadBytes)) else { throw .malformed }
        guard claims.iss == issuer else { throw .wrongIssuer }
        guard claims.exp > now else { throw .expired }
        // kube allows a minute of clock skew on nbf/iat.
        guard claims.nbf <= now + 60 else { throw .notYetValid }
        guard claims.aud.contains(where: audiences.contains) else { throw .wrongAudience }
        return claims
    }

    /// A legacy (Secret-based) ServiceAccount token, as kube's tokens controller writes into a
    /// `kubernetes.io/service-account-token` Secret: no audience, no expiry; valid while the
    /// Secret holds it and the ServiceAccount exists.
    public func issueLegacy(_ claims: LegacyServiceAccountClaims) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let header = try encoder.encode(Header(alg: "ES256", kid: keyID))
        let signingInput = Base64URL.encode(Array(header)) + "." + Base64URL.encode(Array(try encoder.encode(claims)))
        let signature = try P256.Signing.PrivateKey(rawRepresentation: privateRaw).signature(for: Array(signingInput.utf8))
        return signingInput + "." + Base64URL.encode(Array(signature.rawRepresentation))
    }

    /// The claims of a legacy token this issuer signed (nil: not a legacy token).
    public func verifyLegacy(_ token: String) throws(TokenError) -> LegacyServiceAccountClaims? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let payloadBytes = Base64URL.decode(parts[1]), let sigBytes = Base64URL.decode(parts[2]),
              let claims = try? JSONDecoder().decode(LegacyServiceAccountClaims.self, from: Data(payloadBytes)),
              claims.iss == LegacyServiceAccountClaims.issuer
        else { return nil }
        guard let signature = try? P256.Signing.ECDSASignature(rawRepresentation: sigBytes),
              let publicKey = try? P256.Signing.PublicKey(rawRepresentation: publicRaw),
              publicKey.isValidSignature(signature, for: Array((parts[0] + "." + parts[1]).utf8)) else { throw .badSignature }
        return claims
    }

    /// Whether `token` looks like one of this issuer's (a JWT naming this key), so other token
    /// kinds are not tried as JWTs.
    public func isCandidate(_ token: String) -> Bool {
        guard let dot = token.firstIndex(of: "."), let bytes = Base64URL.decode(token[..<dot]),
              let header = try? JSONDecoder().decode(Header.self, from: Data(bytes)) else { return false }
        return header.kid == nil || header.kid == keyID
    }

    /// `/openid/v1/jwks`.
    public var jwks: JSON {
        let raw = publicRaw
        return ["keys": [["use": "sig", "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": .string(keyID),
                          "x": .string(Base64URL.encode(Array(raw[0..<32]))), "y": .string(Base64URL.encode(Array(raw[32..<64])))]]]
    }

    /// `/.well-known/openid-configuration`.
    public func discoveryDocument(jwksURI: String) -> JSON {
        ["issuer": .string(issuer), "jwks_uri": .string(jwksURI), "response_types_supported": ["id_token"],
         "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["ES256"]]
    }
}

/// The claims of a legacy ServiceAccount token (kube's `kubernetes/serviceaccount` issuer).
public struct LegacyServiceAccountClaims: Codable, Sendable, Hashable {
    public static let issuer = "kubernetes/serviceaccount"
    public var iss: String
    public var sub: String
    public var namespace: String
    public var secretName: String
    public var serviceAccountName: String
    public var serviceAccountUID: String

    public init(namespace: String, secretName: String, serviceAccountName: String, serviceAccountUID: String) {
        iss = Self.issuer; sub = ServiceAccountName.username(namespace: namespace, name: serviceAccountName)
        self.namespace = namespace; self.secretName = secretName; self.serviceAccountName = serviceAccountName
        self.serviceAccountUID = serviceAccountUID
    }

    enum CodingKeys: String, CodingKey {
        case iss, sub
        case namespace = "kubernetes.io/serviceaccount/namespace"
        case secretName = "kubernetes.io/serviceaccount/secret.name"
        case serviceAccountName = "kubernetes.io/serviceaccount/service-account.name"
        case serviceAccountUID = "kubernetes.io/serviceaccount/service-account.uid"
    }
}

/// Base64 with the URL alphabet and no padding (JWT).
public enum Base64URL {
    public static func encode(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    public static func decode<S: StringProtocol>(_ text: S) -> [UInt8]? {
        var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        guard !s.contains("=") else { return nil }
        s += String(repeating: "=", count: (4 - s.count % 4) % 4)
        return Data(base64Encoded: s).map(Array.init)
    }
}
