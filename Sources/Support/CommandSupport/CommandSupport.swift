import ArgumentParser
import Logging
import Metrics
import Prometheus

/// `--log-level`, shared by every command.
public struct LoggingOptions: ParsableArguments, Sendable {
    public init() {}

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    public func makeLogger(_ label: String) -> Logger {
        var l = Logger(label: label)
        l.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        return l
    }
}

/// Logs to stderr and metrics into a Prometheus registry (served where a command says so).
public func bootstrapObservability() -> PrometheusCollectorRegistry {
    LoggingSystem.bootstrap { label in StreamLogHandler.standardError(label: label) }
    let registry = PrometheusCollectorRegistry()
    MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    return registry
}

