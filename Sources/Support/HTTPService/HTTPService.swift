import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import KubeAPI
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import ServiceLifecycle

/// A request context that knows its connection, for the client certificate verified in the TLS
/// handshake (the API server, the certificate service, MetaServer).
public struct ConnectionRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    /// The DER of the client certificate verified in the handshake (nil: none was sent, or no TLS).
    public func peerCertificateDER() async -> [UInt8]? { await Self.peerCertificateDER(channel) }

    public static func peerCertificateDER(_ channel: any Channel) async -> [UInt8]? {
        guard let cert = try? await channel.nioSSL_peerCertificate().get() else { return nil }
        return try? cert.toDERBytes()
    }
}

/// What a TLS service presents: its certificate chain and key (PEM) and, when client certificates
/// are accepted, the CA they must chain to (optional for the client: tokens authenticate too).
public struct ServerTLSIdentity: Sendable {
    public var certificatePEM: String
    public var privateKeyPEM: String
    public var clientCAPEM: String?
    public init(certificatePEM: String, privateKeyPEM: String, clientCAPEM: String? = nil) {
        self.certificatePEM = certificatePEM; self.privateKeyPEM = privateKeyPEM; self.clientCAPEM = clientCAPEM
    }

    /// The NIOSSL server configuration (HTTP/1.1; client certificates verified when sent).
    public func configuration() throws -> TLSConfiguration {
        let chain = try NIOSSLCertificate.fromPEMBytes(Array(certificatePEM.utf8)).map { NIOSSLCertificateSource.certificate($0) }
        let key = try NIOSSLPrivateKey(bytes: Array(privateKeyPEM.utf8), format: .pem)
        var c = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
        c.applicationProtocols = ["http/1.1"]
        if let ca = clientCAPEM {
            c.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(ca.utf8)))
            c.certificateVerification = .optionalVerification
        }
        return c
    }
}

/// Serves a Hummingbird responder over HTTP/1.1 (MetaServer, the metrics endpoint). It does what
/// Hummingbird's `Application` does for a request (a context per request, unexpected errors
/// answered 500, `Date` and `Server` headers) without `Application`'s date cache: that formats the
/// `Date` header with Foundation's Gregorian calendar, whose time-zone lookup loads ICU and its
/// data, ~0.8 MB of a small edge process's memory. The header comes from `KubeTime.httpDate`.
/// With a ``ServerTLSIdentity`` it serves HTTPS.
public struct HTTPService<Responder: HTTPResponder>: Service where Responder.Context == ConnectionRequestContext {
    let responder: Responder
    let host: String
    let port: Int
    let serverName: String
    let tls: ServerTLSIdentity?
    let logger: Logger
    let onRunning: @Sendable (any Channel) async -> Void

    /// - Parameter onRunning: called with the listening channel (its local address has the bound port).
    public init(responder: Responder, host: String, port: Int, serverName: String, tls: ServerTLSIdentity? = nil, logger: Logger,
                onRunning: @escaping @Sendable (any Channel) async -> Void = { _ in })
    {
        self.responder = responder; self.host = host; self.port = port; self.serverName = serverName; self.tls = tls
        self.logger = logger; self.onRunning = onRunning
    }

    public func run() async throws {
        let responder = self.responder, logger = self.logger, serverName = self.serverName, onRunning = self.onRunning
        let builder: HTTPServerBuilder = try tls.map { try .tls(.http1(), tlsConfiguration: try $0.configuration()) } ?? .http1()
        let server = try builder.buildServer(
            configuration: .init(address: .hostname(host, port: port), serverName: serverName),
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            logger: logger,
            responder: { request, responseWriter, channel in
                let context = ConnectionRequestContext(source: .init(channel: channel, logger: logger))
                var response: Response
                do {
                    response = try await responder.respond(to: request, context: context)
                } catch let error as HTTPParserError {
                    throw error  // the channel answers 400 itself
                } catch {
                    logger.debug("unexpected error answering a request", metadata: ["error": "\(error)"])
                    response = Response(status: .internalServerError)
                }
                response.headers[.date] = KubeTime.now().httpDate
                response.headers[.server] = serverName
                try await responseWriter.write(response: response.head, body: response.body)
            },
            onServerRunning: { await onRunning($0) })
        try await server.run()
    }
}
