import Crypto
import Foundation
import KubeAPI
import SwiftASN1
import X509

/// Why a join token or certificate request was refused. The messages say what to do.
public struct JoinError: Error, Sendable, CustomStringConvertible, Equatable {
    public enum Kind: Sendable, Equatable { case malformed, expired, badSignature, caHashMismatch, badRequest }
    public var kind: Kind
    public var message: String
    public init(_ kind: Kind, _ message: String) { self.kind = kind; self.message = message }
    public var description: String { message }
}

/// KubeEdge's join token: `<hex sha256 of the CA certificate (DER)>.<JWT>`, the JWT being HS256
/// with only an `exp` claim, keyed with the CA private key, so only the cloud that owns the CA can
/// mint or check it, and an edge node can check that it talks to that CA before trusting it.
public struct JoinToken: Sendable, Equatable {
    public var caHash: String
    public var jwt: String

    public init(caHash: String, jwt: String) { self.caHash = caHash; self.jwt = jwt }

    public var string: String { "\(caHash).\(jwt)" }

    public init(parsing s: String) throws(JoinError) {
        let t = s.trimmingWhitespace
        let parts = t.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0].count == 64, parts[0].allSatisfy(\.isHexDigit) else {
            throw JoinError(.malformed, "malformed token: expected <sha256 of the CA>.<JWT> as printed by `swiftedge gettoken`")
        }
        caHash = String(parts[0]).lowercased()
        jwt = parts[1...].joined(separator: ".")
    }

    /// Mints a token valid until `expires`.
    public static func issue(ca: CertificateAuthority, expires: Date) throws -> JoinToken {
        let header = base64URL(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let payload = base64URL(Array("{\"exp\":\(Int64(expires.timeIntervalSince1970))}".utf8))
        let signingInput = header + "." + payload
        let mac = HMAC<SHA256>.authenticationCode(for: Array(signingInput.utf8), using: try ca.tokenKey())
        return JoinToken(caHash: try certificateSHA256Hex(ca.certificate), jwt: signingInput + "." + base64URL(Array(mac)))
    }

    /// Checks the JWT part against the CA key and the clock (the cloud side).
    public static func verifyJWT(_ jwt: String, ca: CertificateAuthority, now: Date = Date()) throws(JoinError) {
        let parts = jwt.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3, let sig = unbase64URL(parts[2]), let payloadBytes = unbase64URL(parts[1]),
              let payload = try? JSONSerialization.jsonObject(with: Data(payloadBytes)) as? [String: Any]
        else { throw JoinError(.malformed, "malformed token: the JWT part cannot be decoded") }
        let key: SymmetricKey
        do { key = try ca.tokenKey() } catch { throw JoinError(.badSignature, "cannot check the token: \(error)") }
        guard HMAC<SHA256>.isValidAuthenticationCode(sig, authenticating: Array((parts[0] + "." + parts[1]).utf8), using: key) else {
            throw JoinError(.badSignature, "token signature invalid: it was not issued by this cloud; run `swiftedge gettoken` on the cloud")
        }
        guard let exp = (payload["exp"] as? NSNumber)?.doubleValue else { throw JoinError(.malformed, "malformed token: no exp claim") }
        if exp <= now.timeIntervalSince1970 {
            throw JoinError(.expired, "token expired: run `swiftedge gettoken` on the cloud for a new one")
        }
    }

    /// The JWT's `exp` claim, readable without the CA key (the edge checks it before joining).
    public var expiry: Date? {
        let parts = jwt.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3, let payloadBytes = Self.unbase64URL(parts[1]),
              let payload = try? JSONSerialization.jsonObject(with: Data(payloadBytes)) as? [String: Any],
              let exp = (payload["exp"] as? NSNumber)?.doubleValue
        else { return nil }
        return Date(timeIntervalSince1970: exp)
    }

    /// Checks that the CA the edge downloaded is the one the token names (the edge side).
    public func verifyCA(derBytes: [UInt8]) throws(JoinError) {
        let hash = SHA256.hash(data: derBytes).hexString
        guard hash == caHash else {
            throw JoinError(.caHashMismatch, "CA hash mismatch: the cloud's CA (sha256 \(hash.prefix(16))…) is not the one in the token (\(caHash.prefix(16))…); check the address and the token")
        }
    }

    static func base64URL(_ b: [UInt8]) -> String {
        Data(b).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func unbase64URL(_ s: String) -> [UInt8]? {
        var t = s.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while t.count % 4 != 0 { t += "=" }
        return Data(base64Encoded: t).map(Array.init)
    }
}

extension CertificateAuthority {
    /// The HMAC key for join tokens: the CA private key's DER bytes (as KubeEdge keys its JWTs).
    func tokenKey() throws -> SymmetricKey {
        SymmetricKey(data: try privateKey.serializeAsPEM().derBytes)
    }

    /// The CA certificate in DER (what `/ca.crt` serves).
    public var certificateDER: [UInt8] {
        var ser = DER.Serializer()
        try? ser.serialize(certificate)
        return ser.serializedBytes
    }

    /// Signs an edge node's certificate request (DER), as KubeEdge's `/edge.crt` does: the CSR's
    /// signature must be valid and its subject must be `CN=system:node:<nodeName>`; the result is a
    /// client certificate (DER) for that name.
    public func signNodeCSR(der: [UInt8], nodeName: String, validity: TimeInterval = 365 * 86400) throws(JoinError) -> [UInt8] {
        let csr: CertificateSigningRequest
        do { csr = try CertificateSigningRequest(derEncoded: der) } catch {
            throw JoinError(.badRequest, "the request body is not a DER certificate signing request: \(error)")
        }
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else {
            throw JoinError(.badRequest, "the certificate signing request's signature is invalid")
        }
        let cn = csr.subject.commonName
        guard cn == "system:node:\(nodeName)" else {
            throw JoinError(.badRequest, "the certificate request is for \"\(cn ?? "")\", not system:node:\(nodeName)")
        }
        do {
            let cert = try sign(publicKey: csr.publicKey, commonName: "system:node:\(nodeName)", organization: "system:nodes",
                                server: false, client: true, validity: validity)
            var ser = DER.Serializer()
            try ser.serialize(cert)
            return ser.serializedBytes
        } catch {
            throw JoinError(.badRequest, "cannot sign the certificate: \(error)")
        }
    }
}

extension DistinguishedName {
    /// The first CommonName of the name, if any.
    public var commonName: String? {
        for rdn in self { for attr in rdn where attr.type == .RDNAttributeType.commonName { return String(describing: attr.value) } }
        return nil
    }
}

/// Creates an ECDSA P-256 key and a DER certificate signing request for `CN=system:node:<name>,O=system:nodes`.
public func makeNodeCSR(nodeName: String) throws -> (csrDER: [UInt8], privateKeyPEM: String) {
    let key = P256.Signing.PrivateKey()
    let subject = try DistinguishedName {
        OrganizationName("system:nodes")
        CommonName("system:node:\(nodeName)")
    }
    let csr = try CertificateSigningRequest(version: .v1, subject: subject, privateKey: .init(key), attributes: .init())
    var ser = DER.Serializer()
    try ser.serialize(csr)
    return (ser.serializedBytes, key.pemRepresentation)
}
