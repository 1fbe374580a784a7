import Foundation
import KubeAPI
import KubeClient
import Logging
import PKI
import X509
import SwiftASN1

/// The cloud's CA, CloudHub certificate and join token, kept as Secrets in namespace `kubeedge`
/// (`casecret`, `cloudcoresecret`, `tokensecret`, as KubeEdge names them), created on first start.
public struct CloudSecrets: Sendable {
    public let ca: CertificateAuthority
    public let serverCertificate: CertificateAndKey
    static let namespace = "kubeedge"
    /// CloudHub's serving certificate subject (`CN=CloudHub,O=KubeEdge`), distinct from the CA's `CN=KubeEdge`.
    public static let serverCommonName = "CloudHub"
    static let secrets = ResourceType.secrets
    static let namespaces = ResourceType.namespaces

    /// Loads or creates the CA and server certificate. `addresses` become the certificate's SANs.
    public static func ensure(client: KubeClient, addresses: [String], logger: Logger) async throws -> CloudSecrets {
        do {
            _ = try await client.create(namespaces, namespace: nil, ["apiVersion": "v1", "kind": "Namespace", "metadata": ["name": .string(namespace)]])
        } catch let e as StatusError where e.code == 409 {}
        let ca: CertificateAuthority
        if let s = try await get(client, "casecret"), let cert = s["cadata"], let key = s["cakeydata"] {
            ca = try CertificateAuthority(certificatePEM: try pem(der: cert, "CERTIFICATE"), privateKeyPEM: try pem(der: key, "PRIVATE KEY"))
        } else {
            ca = try CertificateAuthority.generate(commonName: "KubeEdge", years: 100)
            try await put(client, "casecret", ["cadata": ca.certificateDER, "cakeydata": try derOfPEM(ca.privateKeyPEM)])
            logger.notice("created the cloud CA (secret kubeedge/casecret)")
        }
        let server: CertificateAndKey
        if let s = try await get(client, "cloudcoresecret"), let cert = s["cloudcoredata"], let key = s["cloudcorekeydata"],
           case let stored = try Certificate(derEncoded: cert), covers(stored, addresses), stored.subject != stored.issuer
        {
            server = CertificateAndKey(certificatePEM: try pem(der: cert, "CERTIFICATE"), privateKeyPEM: try pem(der: key, "PRIVATE KEY"))
        } else {
            var ips = ["127.0.0.1"], dns = ["localhost"]
            for a in addresses where !a.isEmpty {
                if CertificateAuthority.isIPAddress(a) { if !ips.contains(a) { ips.append(a) } } else if !dns.contains(a) { dns.append(a) }
            }
            // The leaf's subject must differ from the CA's: OpenSSL (curl, Python's ssl) takes a
            // certificate whose subject equals its issuer for a self-signed one and refuses it.
            server = try ca.issue(commonName: Self.serverCommonName, organization: "KubeEdge", dnsNames: dns, ipAddresses: ips, server: true, client: false, days: 3650)
            try await put(client, "cloudcoresecret", ["cloudcoredata": try derOfPEM(server.certificatePEM), "cloudcorekeydata": try derOfPEM(server.privateKeyPEM)])
            logger.notice("issued the CloudHub certificate (secret kubeedge/cloudcoresecret)", metadata: ["sans": "\((dns + ips).joined(separator: ","))"])
        }
        return CloudSecrets(ca: ca, serverCertificate: server)
    }

    /// Mints a fresh join token (valid `validity`) and stores it in `kubeedge/tokensecret`.
    public func refreshToken(client: KubeClient, validity: TimeInterval = 24 * 3600) async throws -> JoinToken {
        let token = try JoinToken.issue(ca: ca, expires: Date().addingTimeInterval(validity))
        try await Self.put(client, "tokensecret", ["tokendata": Array(token.string.utf8)])
        return token
    }

    /// Reads the current join token (what `swiftedge gettoken` prints).
    public static func currentToken(client: KubeClient) async throws -> String {
        guard let s = try await get(client, "tokensecret"), let t = s["tokendata"] else {
            throw KubeClientError("no join token yet: is `swiftedge cloud` running against this cluster?")
        }
        return String(decoding: t, as: UTF8.self)
    }

    static func covers(_ cert: Certificate, _ addresses: [String]) -> Bool {
        guard let sans = try? cert.extensions.subjectAlternativeNames else { return false }
        let names = Set(sans.map { "\($0)" })
        return addresses.allSatisfy { a in names.contains { $0.contains(a) } }
    }

    static func get(_ client: KubeClient, _ name: String) async throws -> [String: [UInt8]]? {
        do {
            let s = try await client.get(secrets, namespace: namespace, name: name)
            var out: [String: [UInt8]] = [:]
            for (k, v) in s["data"].objectValue ?? [:] { if let b = v.stringValue.flatMap({ Data(base64Encoded: $0) }) { out[k] = Array(b) } }
            return out
        } catch let e as StatusError where e.code == 404 { return nil }
    }

    static func put(_ client: KubeClient, _ name: String, _ data: [String: [UInt8]]) async throws {
        var d: [String: JSON] = [:]
        for (k, v) in data { d[k] = .string(Data(v).base64EncodedString()) }
        let secret: JSON = ["apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                            "metadata": ["name": .string(name), "namespace": .string(namespace)], "data": .object(d)]
        do { _ = try await client.create(secrets, namespace: namespace, secret) } catch let e as StatusError where e.code == 409 {
            var current = try await client.get(secrets, namespace: namespace, name: name)
            current["data"] = .object(d)
            _ = try await client.update(secrets, namespace: namespace, current)
        }
    }

    static func pem(der: [UInt8], _ label: String) throws -> String { PEMDocument(type: label, derBytes: der).pemString }

    static func derOfPEM(_ pem: String) throws -> [UInt8] { try PEMDocument(pemString: pem).derBytes }
}
