import Crypto
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
        let csr = try Self.verifiedRequest(pem: pem)
        let (dns, ips, _) = serverAuth ? Self.names(in: try? csr.attributes.extensionRequest?.extensions.subjectAlternativeNames) : ([], [], 0)
        do {
            let cert = try sign(publicKey: csr.publicKey, subject: csr.subject, dnsNames: dns, ipAddresses: ips.filter { !$0.isEmpty },
                                server: serverAuth, client: clientAuth, validity: validity)
            return try cert.serializeAsPEM().pemString
        } catch {
            throw SigningError("cannot sign the certificate: \(error)")
        }
    }

    /// A PEM PKCS#10 request whose signature checks out.
    static func verifiedRequest(pem: String) throws(SigningError) -> CertificateSigningRequest {
        let csr: CertificateSigningRequest
        do { csr = try CertificateSigningRequest(pemEncoded: pem) } catch {
            throw SigningError("the request is not a PEM certificate signing request: \(error)")
        }
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else { throw SigningError("the certificate request's signature is invalid") }
        return csr
    }

    /// The DNS names and IP addresses among alternative names, and how many others there are.
    static func names(in sans: SubjectAlternativeNames?) -> (dns: [String], ips: [String], others: Int) {
        var dns: [String] = [], ips: [String] = [], others = 0
        for name in sans ?? SubjectAlternativeNames([]) {
            switch name {
            case .dnsName(let d): dns.append(d)
            case .ipAddress(let bytes): ips.append(formatIP(Array(bytes.bytes)))
            default: others += 1
            }
        }
        return (dns, ips, others)
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

/// What a PEM PKCS#10 request asks for: subject and subject alternative names, read after its
/// signature was checked.
public struct CertificateRequestContents: Sendable, Hashable {
    public var commonName: String
    public var organizations: [String]
    public var dnsNames: [String]
    public var ipAddresses: [String]
    /// Any other kind of alternative name (email, URI): kubelet-serving requests may not carry one.
    public var otherNames: Int

    public init(pem: String) throws(SigningError) {
        let csr = try CertificateAuthority.verifiedRequest(pem: pem)
        commonName = csr.subject.commonName ?? ""
        organizations = csr.subject.organizations
        (dnsNames, ipAddresses, otherNames) = CertificateAuthority.names(in: try? csr.attributes.extensionRequest?.extensions.subjectAlternativeNames)
    }
}

/// A fresh ECDSA P-256 key and a PEM request for a node's serving certificate (kube's
/// `kubernetes.io/kubelet-serving`: `CN=system:node:<name>`, `O=system:nodes`, the node's DNS
/// names and IP addresses as alternative names).
public func makeNodeServingCSR(nodeName: String, dnsNames: [String], ipAddresses: [String]) throws -> (csrPEM: String, privateKeyPEM: String) {
    let key = P256.Signing.PrivateKey()
    let subject = try DistinguishedName {
        OrganizationName("system:nodes")
        CommonName("system:node:\(nodeName)")
    }
    let sans = SubjectAlternativeNames(try CertificateAuthority.generalNames(dnsNames: dnsNames, ipAddresses: ipAddresses))
    let request = ExtensionRequest(extensions: try Certificate.Extensions([Certificate.Extension(sans, critical: false)]))
    let attributes = CertificateSigningRequest.Attributes([try .init(request)])
    let csr = try CertificateSigningRequest(version: .v1, subject: subject, privateKey: .init(key), attributes: attributes)
    return (try csr.serializeAsPEM().pemString, key.pemRepresentation)
}

/// A PEM certificate's validity end and alternative names (to tell whether a stored serving
/// certificate still fits).
public struct CertificateInfo: Sendable {
    public var notAfter: Date
    public var dnsNames: Set<String>
    public var ipAddresses: Set<String>

    public init(pem: String) throws {
        let cert = try Certificate(pemEncoded: pem)
        notAfter = cert.notValidAfter
        let names = CertificateAuthority.names(in: try? cert.extensions.subjectAlternativeNames)
        dnsNames = Set(names.dns); ipAddresses = Set(names.ips)
    }
}

extension CertificateAndKey {
    /// The certificate and key stored at these paths while the certificate stays valid for another
    /// `margin` seconds and names every one of `dnsNames` and `ipAddresses`; nil when either file is
    /// missing or unreadable, or the certificate expires within the margin or lacks a name.
    public static func stored(certificatePath: String, keyPath: String, validFor margin: TimeInterval, dnsNames: [String] = [],
                              ipAddresses: [String] = []) -> CertificateAndKey?
    {
        guard let cert = try? String(contentsOfFile: certificatePath, encoding: .utf8), let key = try? String(contentsOfFile: keyPath, encoding: .utf8),
              let info = try? CertificateInfo(pem: cert), info.notAfter > Date().addingTimeInterval(margin),
              Set(dnsNames).isSubset(of: info.dnsNames), Set(ipAddresses).isSubset(of: info.ipAddresses)
        else { return nil }
        return CertificateAndKey(certificatePEM: cert, privateKeyPEM: key)
    }

    /// Writes the key (0600) and the certificate (`certificateMode`), each replaced by rename, the
    /// directories created as needed.
    public func save(certificatePath: String, keyPath: String, certificateMode: Int = 0o644) throws {
        for (text, path, mode) in [(privateKeyPEM, keyPath, 0o600), (certificatePEM, certificatePath, certificateMode)] {
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            let tmp = path + ".tmp"
            guard FileManager.default.createFile(atPath: tmp, contents: Data(text.utf8), attributes: [.posixPermissions: mode]) else {
                throw PKIError("cannot write \(tmp)")
            }
            guard rename(tmp, path) == 0 else { throw PKIError("cannot rename \(tmp) to \(path): errno \(errno)") }
        }
    }
}
