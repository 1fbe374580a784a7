import DefaultSettings
import Foundation
import HTTPTypes
import HTTPService
import Hummingbird
import HummingbirdWebSocket
import HummingbirdCore
import HummingbirdTLS
import KubeAPI
import Logging
import NIOCore
import NIOSSL
import ObjectStore
import PKI
import ServiceLifecycle

/// Puts an ``APIHandler`` on HTTP(S) with Hummingbird.
public struct APIServerService: Service {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// PEM certificate and key; nil serves plain HTTP (only behind an explicit flag).
        public var tls: CertificateAndKey?
        /// CA whose client certificates authenticate (kube's `--client-ca-file`); nil: none are asked for.
        public var clientCAPEM: String?
        public init(host: String = "127.0.0.1", port: Int = Defaults.apiServerPort, tls: CertificateAndKey?, clientCAPEM: String? = nil) {
            self.host = host; self.port = port; self.tls = tls; self.clientCAPEM = clientCAPEM
        }
    }

    let handler: APIHandler
    let configuration: Configuration
    let logger: Logger
    let onRunning: @Sendable (Int) async -> Void

    public init(handler: APIHandler, configuration: Configuration, logger: Logger, onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) {
        self.handler = handler; self.configuration = configuration; self.logger = logger; self.onRunning = onRunning
    }

    public func run() async throws {
        let handler = self.handler
        // `pods/exec` arrives as a WebSocket upgrade; everything else is plain HTTP.
        let execUpgrade: @Sendable (HTTPRequest, any Channel, Logger) async throws
            -> ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>> = { request, channel, _ in
                let identity = request.headerFields[.authorization] == nil ? await ConnectionRequestContext.peerIdentity(channel) : nil
                return await handler.execUpgrade(request, clientIdentity: identity)
            }
        // kubectl writes large stdin (and port-forward uploads) in frames well above the library's
        // 16 KiB default; 1 MiB per frame, as per message before.
        // HTTP/1.0 clients are answered in HTTP/1.0, the connection closed unless they keep it alive (HTTP10Connections).
        let webSocket = HTTP1WebSocketUpgradeChannel.Configuration(
            http1: .init(additionalChannelHandlers: [HTTP10Connections.Installer()]),
            ws: WebSocketServerConfiguration(maxFrameSize: 1 << 20))
        let server: HTTPServerBuilder
        if let tls = configuration.tls {
            let chain = try NIOSSLCertificate.fromPEMBytes(Array(tls.certificatePEM.utf8)).map { NIOSSLCertificateSource.certificate($0) }
            let key = try NIOSSLPrivateKey(bytes: Array(tls.privateKeyPEM.utf8), format: .pem)
            var tlsConfig = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
            tlsConfig.applicationProtocols = ["http/1.1"]
            if let ca = configuration.clientCAPEM {
                // Client certificates are optional (tokens also authenticate); one that is sent must chain to the CA.
                tlsConfig.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(ca.utf8)))
                tlsConfig.certificateVerification = .optionalVerification
            }
            server = try .tls(.http1WebSocketUpgrade(configuration: webSocket, shouldUpgrade: execUpgrade), tlsConfiguration: tlsConfig)
        } else {
            server = .http1WebSocketUpgrade(configuration: webSocket, shouldUpgrade: execUpgrade)
        }
        let onRunning = self.onRunning
        let app = Application(
            responder: KubeResponder(handler: handler),
            server: server,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
        // Shutdown order is the enclosing ServiceGroup's: no signal handling of its own.
        try await app.runService(gracefulShutdownSignals: [])
    }
}

/// Hummingbird's per-request context plus the connection, for the TLS client certificate.
extension ConnectionRequestContext {
    /// The verified client certificate's identity on `channel`, if the client sent one.
    static func peerIdentity(_ channel: any Channel) async -> CertificateIdentity? {
        await peerCertificateDER(channel).flatMap { CertificateIdentity(certificateDER: $0) }
    }
}

struct KubeResponder: HTTPResponder {
    typealias Context = ConnectionRequestContext
    let handler: APIHandler

    struct Writer: ChunkWriter {
        var inner: any ResponseBodyWriter
        mutating func write(_ bytes: [UInt8]) async throws {
            try await inner.write(ByteBuffer(bytes: bytes))
        }
    }

    func respond(to request: Request, context: Context) async throws -> Response {
        var headers: [String: String] = [:]
        for f in request.headers {
            let n = f.name.canonicalName
            if let old = headers[n] { headers[n] = old + "," + f.value } else { headers[n] = f.value }
        }
        // Collect the body, refusing oversized ones before buffering them.
        var body: [UInt8] = []
        let limit = handler.options.maxBodyBytes
        if let cl = headers["content-length"].flatMap(Int.init), cl > limit {
            return Self.render(.error(StatusError(.requestEntityTooLarge, "Request entity too large: limit is \(limit)")))
        }
        do {
            for try await chunk in request.body {
                body.append(contentsOf: chunk.readableBytesView)
                if body.count > limit {
                    return Self.render(.error(StatusError(.requestEntityTooLarge, "Request entity too large: limit is \(limit)")))
                }
            }
        } catch {
            return Self.render(.error(StatusError.badRequest("error reading the request body: \(error)")))
        }
        let path = request.uri.path
        let query = APIRequest.parseQuery(Substring(request.uri.query ?? ""))
        // Only looked up without a bearer token (a token, when sent, decides who the caller is).
        let identity = headers["authorization"] == nil ? await ConnectionRequestContext.peerIdentity(context.channel) : nil
        var apiReq = APIRequest(method: request.method.rawValue, path: path, query: query, headers: headers, body: body, clientIdentity: identity)
        apiReq.remoteAddress = context.channel.remoteAddress?.ipAddress
        let resp = await handler.handle(apiReq)
        return Self.render(resp)
    }

    static func render(_ resp: APIResponse) -> Response {
        switch resp {
        case .json(let code, let value, let extra):
            return make(code, value.serialized(), "application/json", extra)
        case .raw(let code, let bytes, let ct, let extra):
            return make(code, bytes, ct, extra)
        case .stream(let code, let ct, let producer):
            var fields = HTTPFields()
            fields[.contentType] = ct
            fields[.cacheControl] = "no-cache, private"
            return Response(status: .init(code: code), headers: fields, body: ResponseBody { writer in
                var w: any ChunkWriter = Writer(inner: writer)
                try await producer(&w)
                writer = (w as! Writer).inner
                try await writer.finish(nil)
            })
        }
    }

    static func make(_ code: Int, _ bytes: [UInt8], _ ct: String, _ extra: [String: String]) -> Response {
        var fields = HTTPFields()
        fields[.contentType] = ct
        fields[.cacheControl] = "no-cache, private"
        for (k, v) in extra { if let n = HTTPField.Name(k) { fields[n] = v } }
        return Response(status: .init(code: code), headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}
