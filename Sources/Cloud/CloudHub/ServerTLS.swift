import NIOSSL
import PKI

extension CertificateAndKey {
    /// A server TLS configuration that presents this certificate and trusts `clientCAPEM` for
    /// client certificates (whether one is required is the caller's `certificateVerification`).
    public func serverTLSConfiguration(trusting clientCAPEM: String) throws -> TLSConfiguration {
        var t = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(certificatePEM.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(privateKeyPEM.utf8), format: .pem)))
        t.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(clientCAPEM.utf8)))
        return t
    }
}
