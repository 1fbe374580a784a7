import Hummingbird
import HummingbirdCore
import KubeAPI
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// Serves a Hummingbird responder over HTTP/1.1 (MetaServer, the metrics endpoint). It does what
/// Hummingbird's `Application` does for a request (a context per request, unexpected errors
/// answered 500, `Date` and `Server` headers) without `Application`'s date cache: that formats the
/// `Date` header with Foundation's Gregorian calendar, whose time-zone lookup loads ICU and its
/// data, ~0.8 MB of a small edge process's memory. The header comes from `KubeTime.httpDate`.
public struct HTTPService<Responder: HTTPResponder>: Service where Responder.Context == BasicRequestContext {
    let responder: Responder
    let host: String
    let port: Int
    let serverName: String
    let logger: Logger
    let onRunning: @Sendable (any Channel) async -> Void

    /// - Parameter onRunning: called with the listening channel (its local address has the bound port).
    public init(responder: Responder, host: String, port: Int, serverName: String, logger: Logger,
                onRunning: @escaping @Sendable (any Channel) async -> Void = { _ in })
    {
        self.responder = responder; self.host = host; self.port = port; self.serverName = serverName
        self.logger = logger; self.onRunning = onRunning
    }

    public func run() async throws {
        let responder = self.responder, logger = self.logger, serverName = self.serverName, onRunning = self.onRunning
        let server = try HTTPServerBuilder.http1().buildServer(
            configuration: .init(address: .hostname(host, port: port), serverName: serverName),
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            logger: logger,
            responder: { request, responseWriter, channel in
                let context = BasicRequestContext(source: .init(channel: channel, logger: logger))
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
