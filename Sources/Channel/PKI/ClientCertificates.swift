import Foundation
import SwiftASN1
import X509

/// The identity an X.509 client certificate carries, as kube-apiserver reads it: the subject's
/// CommonName is the user, its Organizations the groups.
public struct CertificateIdentity: Sendable, Hashable {
    public var commonName: String
    public var organizations: [String]

    /// Reads a DER certificate (already verified against the CA by TLS); nil when it has no
    /// CommonName or its extended key usage excludes client authentication.
    public init?(certificateDER der: [UInt8]) {
        guard let cert = try? Certificate(derEncoded: der), let cn = cert.subject.commonName, !cn.isEmpty else { return nil }
        if let eku = try? cert.extensions.extendedKeyUsage, !eku.contains(.clientAuth), !eku.contains(.any) { return nil }
        commonName = cn
        organizations = cert.subject.organizations
    }
}

extension DistinguishedName {
    /// Every OrganizationName of the name, in order.
    public var organizations: [String] {
        var out: [String] = []
        for rdn in self { for attr in rdn where attr.type == .RDNAttributeType.organizationName { out.append(String(describing: attr.value)) } }
        return out
    }
}

/// What went wrong signing a Kubernetes CertificateSigningRequest (the reason of its `Failed` condition).
public struct SigningError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

extension CertificateAuthority {
    /// Signs a PEM PKCS#10 request as kube-controller-manager's csrsigning controller does: the
    /// requested subject kept, the usages given (`client auth`, `server auth`), valid for `validity`
    /// seconds. Returns the certificate in PEM.
    public func signRequest(pem: String, clientAuth: Bool, serverAuth: Bool, validity: TimeInterval) throws(SigningError) -> String {
        let csr: CertificateSigningRequest
        do { csr = try CertificateSigningRequest(pemEncoded: pem) } catch {
            throw SigningError("the request is not a PEM certificate signing request: \(error)")
        }
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else { throw SigningError("the certificate request's signature is invalid") }
        var dns: [String] = [], ips: [String] = []
        if serverAuth, let sans = try? csr.attributes.extensionRequest?.extensions.subjectAlternativeNames {
            for name in sans {
                switch name {
                case .dnsName(let d): dns.append(d)
                case .ipAddress(let bytes): ips.append(Self.formatIP(Array(bytes.bytes)))
                default: break
                }
            }
        }
        do {
            let cert = try sign(publicKey: csr.publicKey, subject: csr.subject, dnsNames: dns, ipAddresses: ips.filter { !$0.isEmpty },
                                server: serverAuth, client: clientAuth, validity: validity)
            return try cert.serializeAsPEM().pemString
        } catch {
            throw SigningError("cannot sign the certificate: \(error)")
        }
    }

    static func formatIP(_ b: [UInt8]) -> String {
        if b.count == 4 { return b.map(String.init).joined(separator: ".") }
        guard b.count == 16 else { return "" }
        var addr = in6_addr()
        withUnsafeMutableBytes(of: &addr) { $0.copyBytes(from: b) }
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        return inet_ntop(AF_INET6, &addr, &buf, socklen_t(buf.count)) != nil ? String(cString: buf) : ""
    }
}
