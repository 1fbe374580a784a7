import Foundation
import HTTPService
import HTTPTypes
import Hummingbird
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import PKI
import X509
import ServiceLifecycle

/// The certificate service edge nodes join through (KubeEdge's :10002): `GET /ca.crt` returns
/// the CA (DER); `GET /edge.crt` with a DER certificate request in the body and `NodeName: <node>`
/// returns the node's client certificate (DER), authorised either by `Authorization: Bearer <JWT
/// of the join token>` (joining) or by the node's current certificate presented in the TLS
/// handshake (renewal, as KubeEdge's certificate rotation does). Refusals are plain-text messages
/// that say what to do.
public struct CertificateServer: Service {
    public var host: String
    public var port: Int
    let ca: CertificateAuthority
    let serverCertificate: CertificateAndKey
    let certificateValidity: Duration
    let logger: Logger
    let onRunning: @Sendable (Int) async -> Void

    /// - Parameter certificateValidity: lifetime of issued node certificates (KubeEdge's
    ///   `edgeCertSigningDuration`, 365 days).
    public init(host: String, port: Int, ca: CertificateAuthority, serverCertificate: CertificateAndKey,
                certificateValidity: Duration = .seconds(365 * 86400),
                logger: Logger, onRunning: @escaping @Sendable (Int) async -> Void = { _ in })
    {
        self.host = host; self.port = port; self.ca = ca; self.serverCertificate = serverCertificate
        self.certificateValidity = certificateValidity; self.logger = logger; self.onRunning = onRunning
    }

    public func run() async throws {
        let router = Router(context: ConnectionRequestContext.self)
        let ca = self.ca, logger = self.logger
        let validity = Double(certificateValidity.components.seconds) + Double(certificateValidity.components.attoseconds) / 1e18
        router.get("ca.crt") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "application/octet-stream"],
                     body: .init(byteBuffer: ByteBuffer(bytes: ca.certificateDER)))
        }
        router.get("edge.crt") { request, context -> Response in
            var request = request
            let node = request.headers[HTTPField.Name("NodeName")!] ?? ""
            func refuse(_ status: HTTPResponse.Status, _ message: String) -> Response {
                logger.warning("certificate request refused", metadata: ["node": "\(node)", "reason": "\(message)"])
                return Response(status: status, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: message + "\n")))
            }
            guard !node.isEmpty else { return refuse(.badRequest, "missing NodeName header") }
            // A client certificate, if any, was verified against the CA in the TLS handshake.
            let peer = await context.peerCertificateDER()
            let renewal: Bool
            if let peer {
                let cn = (try? Certificate(derEncoded: peer))?.subject.commonName
                guard cn == "system:node:\(node)" else {
                    return refuse(.forbidden, "the certificate of \(cn ?? "nobody") may not renew the certificate of node \(node)")
                }
                renewal = true
            } else {
                let auth = request.headers[.authorization] ?? ""
                guard auth.hasPrefix("Bearer ") else { return refuse(.unauthorized, "missing join token: run `swiftedge gettoken` on the cloud") }
                do { try JoinToken.verifyJWT(String(auth.dropFirst(7)), ca: ca) } catch {
                    return refuse(.unauthorized, "\(error)")
                }
                renewal = false
            }
            let body: ByteBuffer
            do { body = try await request.collectBody(upTo: 64 * 1024) } catch { return refuse(.badRequest, "cannot read the request: \(error)") }
            do {
                let der = try ca.signNodeCSR(der: Array(body.readableBytesView), nodeName: node, validity: validity)
                logger.info(renewal ? "renewed node certificate" : "issued node certificate", metadata: ["node": "\(node)"])
                return Response(status: .ok, headers: [.contentType: "application/octet-stream"], body: .init(byteBuffer: ByteBuffer(bytes: der)))
            } catch {
                return refuse(.badRequest, "\(error)")
            }
        }
        var tls = try serverCertificate.serverTLSConfiguration(trusting: ca.certificatePEM)
        tls.applicationProtocols = ["http/1.1"]
        // Joining nodes have no certificate yet; renewing nodes present theirs.
        tls.certificateVerification = .optionalVerification
        let onRunning = self.onRunning
        let app = Application(router: router, server: try .tls(.http1(), tlsConfiguration: tls),
                              configuration: .init(address: .hostname(host, port: port)),
                              onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) }, logger: logger)
        try await app.runService(gracefulShutdownSignals: [])
    }
}
