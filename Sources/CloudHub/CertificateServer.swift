import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import PKI
import ServiceLifecycle

/// The certificate service edge nodes join through (KubeEdge's :10002): `GET /ca.crt` returns
/// the CA (DER); `GET /edge.crt` with a DER certificate request in the body, `Authorization:
/// Bearer <JWT of the join token>` and `NodeName: <node>` returns the node's client certificate
/// (DER). Refusals are plain-text messages that say what to do.
public struct CertificateServer: Service {
    public var host: String
    public var port: Int
    let ca: CertificateAuthority
    let serverCertificate: CertificateAndKey
    let certificateDays: Int
    let logger: Logger
    let onRunning: @Sendable (Int) async -> Void

    public init(host: String, port: Int, ca: CertificateAuthority, serverCertificate: CertificateAndKey, certificateDays: Int = 365,
                logger: Logger, onRunning: @escaping @Sendable (Int) async -> Void = { _ in })
    {
        self.host = host; self.port = port; self.ca = ca; self.serverCertificate = serverCertificate
        self.certificateDays = certificateDays; self.logger = logger; self.onRunning = onRunning
    }

    public func run() async throws {
        let router = Router()
        let ca = self.ca, logger = self.logger, days = certificateDays
        router.get("ca.crt") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "application/octet-stream"],
                     body: .init(byteBuffer: ByteBuffer(bytes: ca.certificateDER)))
        }
        router.get("edge.crt") { request, _ -> Response in
            var request = request
            let node = request.headers[HTTPField.Name("NodeName")!] ?? ""
            func refuse(_ status: HTTPResponse.Status, _ message: String) -> Response {
                logger.warning("certificate request refused", metadata: ["node": "\(node)", "reason": "\(message)"])
                return Response(status: status, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: message + "\n")))
            }
            guard !node.isEmpty else { return refuse(.badRequest, "missing NodeName header") }
            let auth = request.headers[.authorization] ?? ""
            guard auth.hasPrefix("Bearer ") else { return refuse(.unauthorized, "missing join token: run `swiftedge gettoken` on the cloud") }
            do { try JoinToken.verifyJWT(String(auth.dropFirst(7)), ca: ca) } catch {
                return refuse(.unauthorized, "\(error)")
            }
            let body: ByteBuffer
            do { body = try await request.collectBody(upTo: 64 * 1024) } catch { return refuse(.badRequest, "cannot read the request: \(error)") }
            do {
                let der = try ca.signNodeCSR(der: Array(body.readableBytesView), nodeName: node, days: days)
                logger.info("issued node certificate", metadata: ["node": "\(node)"])
                return Response(status: .ok, headers: [.contentType: "application/octet-stream"], body: .init(byteBuffer: ByteBuffer(bytes: der)))
            } catch {
                return refuse(.badRequest, "\(error)")
            }
        }
        let chain = try NIOSSLCertificate.fromPEMBytes(Array(serverCertificate.certificatePEM.utf8)).map { NIOSSLCertificateSource.certificate($0) }
        let key = try NIOSSLPrivateKey(bytes: Array(serverCertificate.privateKeyPEM.utf8), format: .pem)
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
        tls.applicationProtocols = ["http/1.1"]
        let onRunning = self.onRunning
        let app = Application(router: router, server: try .tls(.http1(), tlsConfiguration: tls),
                              configuration: .init(address: .hostname(host, port: port)),
                              onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) }, logger: logger)
        try await app.runService(gracefulShutdownSignals: [])
    }
}
