import APIServer
import ArgumentParser
import Foundation
import Logging
import Metrics
import Prometheus
import ServiceLifecycle

/// `swiftedge`: one binary, one subcommand per role.
@main
struct SwiftEdge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftedge",
        abstract: "SwiftEdge: Kubernetes-native edge computing in Swift.",
        subcommands: [APIServerCommand.self])
}

struct LoggingOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func makeLogger(_ label: String) -> Logger {
        var l = Logger(label: label)
        l.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        return l
    }
}

struct APIServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apiserver",
        abstract: "Run the embedded Kubernetes-compatible API server (SQLite storage).")

    @Option(help: "Directory for the database, certificates and admin token.")
    var dataDir: String = "/var/lib/swiftedge/apiserver"

    @Option(help: "Address to listen on.")
    var bindAddress: String = "127.0.0.1"

    @Option(help: "Port to listen on.")
    var port: Int = 6443

    @Option(help: "Where to write the admin kubeconfig (default: <data-dir>/admin.kubeconfig).")
    var kubeconfig: String?

    @Flag(help: "Serve plain HTTP instead of HTTPS (for debugging only).")
    var insecureHTTP = false

    @Flag(inversion: .prefixedNo, help: "fsync the write-ahead log at every commit (power-loss safe).")
    var fsync = true

    @Option(help: "Change events kept for watch resume and pagination (older resourceVersions get 410).")
    var historyLimit: Int = 10_000

    @Option(help: "Seconds between store compactions.")
    var compactionInterval: Int = 300

    @Option(help: "Seconds between watch BOOKMARK events (for clients that allow them).")
    var bookmarkInterval: Int = 60

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        LoggingSystem.bootstrap { label in StreamLogHandler.standardError(label: label) }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let logger = logging.makeLogger("swiftedge.apiserver")
        let kubeconfigPath = kubeconfig ?? dataDir + "/admin.kubeconfig"
        var config = EmbeddedAPIServerConfiguration(
            dataDirectory: dataDir, host: bindAddress, port: port, insecureHTTP: insecureHTTP,
            kubeconfigPath: kubeconfigPath, fsyncEveryCommit: fsync, historyLimit: historyLimit,
            compactionInterval: .seconds(compactionInterval), bookmarkInterval: .seconds(bookmarkInterval))
        config.metricsExporter = {
            var out: [UInt8] = []
            registry.emit(into: &out)
            return out
        }
        let scheme = insecureHTTP ? "http" : "https"
        let host = bindAddress
        let server = try await EmbeddedAPIServer.open(config, logger: logger) { port in
            print("""
                SwiftEdge API server listening on \(scheme)://\(host):\(port)
                Admin kubeconfig: \(kubeconfigPath)
                Try:  export KUBECONFIG=\(kubeconfigPath)
                      kubectl get namespaces
                """)
            fflush(nil)
        }
        let group = ServiceGroup(configuration: .init(
            services: server.services.map { .init(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        try await server.store.close()
    }
}
