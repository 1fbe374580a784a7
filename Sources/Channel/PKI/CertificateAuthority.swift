import Crypto
import Foundation
import KubeAPI
import SwiftASN1
import X509

/// A PEM certificate and its private key.
public struct CertificateAndKey: Sendable {
    public var certificatePEM: String
    public var privateKeyPEM: String
    public init(certificatePEM: String, privateKeyPEM: String) {
        self.certificatePEM = certificatePEM; self.privateKeyPEM = privateKeyPEM
    }
}

/// A typed PKI error.
public struct PKIError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A self-signed certificate authority (ECDSA P-256) that issues server and client certificates.
public struct CertificateAuthority: Sendable {
    public let certificate: Certificate
    let privateKey: Certificate.PrivateKey

    public var certificatePEM: String { (try? certificate.serializeAsPEM().pemString) ?? "" }
    public var privateKeyPEM: String { (try? privateKey.serializeAsPEM().pemString) ?? "" }

    /// Creates a new CA valid for `years`.
    public static func generate(commonName: String, years: Int = 10) throws -> CertificateAuthority {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName(commonName) }
        let now = Date()
        let cert = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(),
            publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-300),
            notValidAfter: now.addingTimeInterval(Double(years) * 365 * 86400),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(digitalSignature: true, keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: .init(key.publicKey))
            },
            issuerPrivateKey: .init(key))
        return CertificateAuthority(certificate: cert, privateKey: .init(key))
    }

    /// Loads a CA from PEM files.
    public init(certificatePEM: String, privateKeyPEM: String) throws {
        do {
            certificate = try Certificate(pemEncoded: certificatePEM)
            privateKey = try Certificate.PrivateKey(pemEncoded: privateKeyPEM)
        } catch {
            throw PKIError("cannot load CA certificate/key: \(error)")
        }
    }

    init(certificate: Certificate, privateKey: Certificate.PrivateKey) {
        self.certificate = certificate; self.privateKey = privateKey
    }

    /// Issues a certificate for a fresh key.
    /// - Parameters:
    ///   - dnsNames: subjectAltName DNS entries (server certificates).
    ///   - ipAddresses: subjectAltName IPv4/IPv6 addresses in textual form.
    public func issue(commonName: String, organization: String? = nil, dnsNames: [String] = [],
                      ipAddresses: [String] = [], server: Bool, client: Bool, days: Int = 365) throws -> CertificateAndKey
    {
        let key = P256.Signing.PrivateKey()
        let cert = try sign(publicKey: .init(key.publicKey), commonName: commonName, organization: organization,
                            dnsNames: dnsNames, ipAddresses: ipAddresses, server: server, client: client, validity: Double(days) * 86400)
        return CertificateAndKey(certificatePEM: try cert.serializeAsPEM().pemString,
                                 privateKeyPEM: key.pemRepresentation)
    }

    /// Signs a certificate for a given public key (the CSR flow), valid for `validity` seconds
    /// (backdated by a tenth of that, at most 5 minutes, for clock skew).
    public func sign(publicKey: Certificate.PublicKey, commonName: String, organization: String? = nil,
                     dnsNames: [String] = [], ipAddresses: [String] = [], server: Bool, client: Bool,
                     validity: TimeInterval) throws -> Certificate
    {
        let subject = try DistinguishedName {
            if let o = organization { OrganizationName(o) }
            CommonName(commonName)
        }
        return try sign(publicKey: publicKey, subject: subject, dnsNames: dnsNames, ipAddresses: ipAddresses, server: server,
                        client: client, validity: validity)
    }

    /// Signs a certificate for `subject` as given (a CSR's, kept whole: every O, every CN).
    public func sign(publicKey: Certificate.PublicKey, subject: DistinguishedName, dnsNames: [String] = [], ipAddresses: [String] = [],
                     server: Bool, client: Bool, validity: TimeInterval) throws -> Certificate
    {
        let sans = try Self.generalNames(dnsNames: dnsNames, ipAddresses: ipAddresses)
        var usages: [ExtendedKeyUsage.Usage] = []
        if server { usages.append(.serverAuth) }
        if client { usages.append(.clientAuth) }
        let now = Date()
        // Certificate times have whole seconds: round the start down so it is never in the future.
        let notBefore = Date(timeIntervalSince1970: (now.timeIntervalSince1970 - min(300, validity / 10)).rounded(.down))
        let sanList = sans
        let usageList = usages
        return try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
            notValidBefore: notBefore, notValidAfter: now.addingTimeInterval(validity),
            issuer: certificate.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
                try ExtendedKeyUsage(usageList)
                if !sanList.isEmpty { SubjectAlternativeNames(sanList) }
            },
            issuerPrivateKey: privateKey)
    }

    /// Whether `s` is an IPv4 or IPv6 address in textual form.
    public static func isIPAddress(_ s: String) -> Bool { parseIP(s) != nil }

    /// DNS names and IP addresses as alternative names (an address that does not parse is an error).
    static func generalNames(dnsNames: [String], ipAddresses: [String]) throws -> [GeneralName] {
        var sans: [GeneralName] = dnsNames.map { .dnsName($0) }
        for ip in ipAddresses {
            guard let bytes = parseIP(ip) else { throw PKIError("invalid IP address \(ip)") }
            sans.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(bytes))))
        }
        return sans
    }

    /// Parses dotted IPv4 or colon-separated IPv6 text into bytes.
    static func parseIP(_ s: String) -> [UInt8]? {
        if s.contains(".") {
            let parts = s.split(separator: ".").compactMap { UInt8($0) }
            return parts.count == 4 ? parts : nil
        }
        if s.contains(":") {
            var addr = in6_addr()
            guard inet_pton(AF_INET6, s, &addr) == 1 else { return nil }
            return withUnsafeBytes(of: &addr) { Array($0) }
        }
        return nil
    }
}

/// The SHA-256 of a certificate's DER encoding, hex encoded (KubeEdge's token prefix format).
public func certificateSHA256Hex(_ cert: Certificate) throws -> String {
    var ser = DER.Serializer()
    try ser.serialize(cert)
    return SHA256.hash(data: ser.serializedBytes).hexString
}

/// Random bytes as a lower-case hex string (tokens).
public func randomHexToken(bytes: Int = 32) -> String {
    var g = SystemRandomNumberGenerator()
    return (0..<bytes).map { _ in UInt8.random(in: 0...255, using: &g) }.hexString
}
