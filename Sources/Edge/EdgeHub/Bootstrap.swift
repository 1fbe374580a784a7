import AsyncHTTPClient
import Foundation
import KubeAPI
import Logging
import NIOCore
import NIOSSL
import PKI
import X509

/// Obtains the node's certificate the way KubeEdge's edgecore does: fetch the CA from the cloud's
/// certificate service (unverified), check it against the join token's hash, send a certificate
/// request for `system:node:<name>` authorised by the token, and keep the result in `directory`
/// (`ca.crt`, `server.crt`, `server.key`). An existing certificate for the node is reused.
public struct NodeBootstrap: Sendable {
    public var certServer: String
    public var nodeName: String
    public var directory: String
    /// How long to keep trying to reach the certificate service (the HTTP client retries refused
    /// connections until then).
    public var connectTimeout: Duration = .seconds(10)
    let logger: Logger

    public init(certServer: String, nodeName: String, directory: String, logger: Logger) {
        self.certServer = certServer; self.nodeName = nodeName; self.directory = directory; self.logger = logger
    }

    var caPath: String { directory + "/ca.crt" }
    var certPath: String { directory + "/server.crt" }
    var keyPath: String { directory + "/server.key" }

    /// The stored credentials, if they are for this node, not expired, and the key matches.
    public func existing(now: Date = Date()) -> NodeCredentials? {
        guard var cert = try? String(contentsOfFile: certPath, encoding: .utf8), let key = try? String(contentsOfFile: keyPath, encoding: .utf8),
              let ca = try? String(contentsOfFile: caPath, encoding: .utf8)
        else { return nil }
        if !Self.matches(cert, key), let pending = try? String(contentsOfFile: certPath + ".new", encoding: .utf8), Self.matches(pending, key) {
            // A renewal was interrupted between its two renames: finish it.
            guard (try? rename(certPath + ".new", certPath)) != nil else { return nil }
            cert = pending
        }
        guard let parsed = try? Certificate(pemEncoded: cert), parsed.subject.commonName == "system:node:\(nodeName)",
              parsed.notValidAfter > now, Self.matches(cert, key)
        else { return nil }
        return NodeCredentials(certificatePEM: cert, privateKeyPEM: key, caPEM: ca)
    }

    static func matches(_ certPEM: String, _ keyPEM: String) -> Bool {
        guard let c = try? Certificate(pemEncoded: certPEM), let k = try? Certificate.PrivateKey(pemEncoded: keyPEM) else { return false }
        return c.publicKey == k.publicKey
    }

    func rename(_ from: String, _ to: String) throws {
        guard Foundation.rename(from, to) == 0 else { throw JoinError(.badRequest, "cannot move \(from) to \(to): errno \(errno)") }
    }

    /// Returns stored credentials or joins with `token`.
    public func credentials(token: String?) async throws -> NodeCredentials {
        if let c = existing() { return c }
        guard let token else {
            let expired = (try? String(contentsOfFile: certPath, encoding: .utf8)).flatMap { try? Certificate(pemEncoded: $0) }
            if let expired, expired.notValidAfter <= Date() {
                throw JoinError(.expired, "the node certificate in \(directory) expired at \(expired.notValidAfter) (the node was offline past its renewal): join again with a token from `swiftedge gettoken`")
            }
            throw JoinError(.malformed, "no certificate in \(directory) and no join token: run `swiftedge gettoken` on the cloud")
        }
        return try await join(token: JoinToken(parsing: token))
    }

    /// Renews the node certificate with the current one as TLS client certificate (no token:
    /// tokens expire long before certificates), stores the new key and certificate, and returns them.
    public func renew(_ current: NodeCredentials) async throws -> NodeCredentials {
        try await withCertificateService(try current.clientTLSConfiguration()) { http in
            let certPEM: String, keyPEM: String
            do {
                (certPEM, keyPEM) = try await requestCertificate(http: http, authorization: nil)
            } catch let e as JoinError {
                throw e
            } catch {
                throw JoinError(.badRequest, "cannot reach \(certServer) to renew the node certificate: \(error)")
            }
            // Both files are written aside, then renamed key first; a crash between the renames
            // leaves the new key with `server.crt.new`, which ``existing(now:)`` completes.
            try write(keyPEM, keyPath + ".new", 0o600)
            try write(certPEM, certPath + ".new", 0o644)
            try rename(keyPath + ".new", keyPath)
            try rename(certPath + ".new", certPath)
            logger.notice("node certificate renewed", metadata: ["node": "\(nodeName)"])
            return NodeCredentials(certificatePEM: certPEM, privateKeyPEM: keyPEM, caPEM: current.caPEM)
        }
    }

    /// Runs `body` with an HTTP client for the certificate service, shut down afterwards.
    func withCertificateService<T>(_ tls: TLSConfiguration, _ body: (HTTPClient) async throws -> T) async throws -> T {
        let http = HTTPClient(eventLoopGroupProvider: .singleton,
                              configuration: .init(tlsConfiguration: tls, timeout: .init(connect: .init(connectTimeout), read: .seconds(30))))
        do {
            let result = try await body(http)
            try await http.shutdown()
            return result
        } catch {
            try? await http.shutdown()
            throw error
        }
    }

    /// Sends a CSR for a fresh key to `/edge.crt`; returns the certificate and key (PEM).
    func requestCertificate(http: HTTPClient, authorization: String?) async throws -> (String, String) {
        let (csr, keyPEM) = try makeNodeCSR(nodeName: nodeName)
        var req = HTTPClientRequest(url: "https://\(certServer)/edge.crt")
        req.method = .GET
        if let authorization { req.headers.add(name: "Authorization", value: authorization) }
        req.headers.add(name: "NodeName", value: nodeName)
        req.body = .bytes(ByteBuffer(bytes: csr))
        let resp = try await http.execute(req, timeout: .seconds(30))
        let body = Array(try await resp.body.collect(upTo: 64 * 1024).readableBytesView)
        guard resp.status == .ok else {
            let text = String(decoding: body, as: UTF8.self).trimmingWhitespace
            throw JoinError(resp.status == .unauthorized ? .badSignature : .badRequest, "the cloud refused the certificate request: \(text)")
        }
        return (try Certificate(derEncoded: body).serializeAsPEM().pemString, keyPEM)
    }

    public func join(token: JoinToken) async throws -> NodeCredentials {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .none  // the CA is checked against the token's hash instead
        return try await withCertificateService(tls) { try await join(token: token, http: $0) }
    }

    func join(token: JoinToken, http: HTTPClient) async throws -> NodeCredentials {
        let base = "https://\(certServer)"
        let caDER: [UInt8]
        do {
            let resp = try await http.execute(HTTPClientRequest(url: base + "/ca.crt"), timeout: .seconds(30))
            caDER = Array(try await resp.body.collect(upTo: 64 * 1024).readableBytesView)
        } catch {
            throw JoinError(.badRequest, "cannot reach \(certServer): \(error); check that the cloud runs and that this address and port (certificate service, default 10002) are reachable from the node")
        }
        try token.verifyCA(derBytes: caDER)
        let caPEM = try Certificate(derEncoded: caDER).serializeAsPEM().pemString
        let (certPEM, keyPEM) = try await requestCertificate(http: http, authorization: "Bearer \(token.jwt)")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try write(caPEM, caPath, 0o644)
        try write(keyPEM, keyPath, 0o600)
        try write(certPEM, certPath, 0o644)
        logger.notice("joined: node certificate issued", metadata: ["node": "\(nodeName)", "directory": "\(directory)"])
        return NodeCredentials(certificatePEM: certPEM, privateKeyPEM: keyPEM, caPEM: caPEM)
    }

    func write(_ s: String, _ path: String, _ mode: Int) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(s.utf8), attributes: [.posixPermissions: mode]) else {
            throw JoinError(.badRequest, "cannot write \(path)")
        }
    }
}
