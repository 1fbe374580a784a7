import HTTPService
import Hummingbird
import Logging
import Prometheus
import ServiceLifecycle

/// A plain-HTTP Prometheus endpoint (`GET /metrics`), like cloudcore's and edgecore's monitor
/// servers. Bind it to loopback unless a scraper elsewhere needs it.
public struct MetricsEndpoint: Service {
    let registry: PrometheusCollectorRegistry
    let host: String
    let port: Int
    let logger: Logger
    let onRunning: @Sendable (Int) async -> Void

    public init(registry: PrometheusCollectorRegistry, host: String, port: Int, logger: Logger,
                onRunning: @escaping @Sendable (Int) async -> Void = { _ in })
    {
        self.registry = registry; self.host = host; self.port = port; self.logger = logger; self.onRunning = onRunning
    }

    public func run() async throws {
        let router = Router(context: ConnectionRequestContext.self)
        let registry = self.registry
        router.get("metrics") { _, _ -> Response in
            var buffer: [UInt8] = []
            buffer.reserveCapacity(16 * 1024)
            registry.emit(into: &buffer)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(bytes: buffer)))
        }
        let logger = self.logger
        let onRunning = self.onRunning
        let host = self.host
        let server = HTTPService(responder: router.buildResponder(), host: host, port: port, serverName: "swiftedge-metrics",
                                 logger: logger) { channel in
            let bound = channel.localAddress?.port ?? 0
            logger.info("metrics endpoint listening", metadata: ["address": "\(host):\(bound)"])
            await onRunning(bound)
        }
        try await server.run()
    }
}
