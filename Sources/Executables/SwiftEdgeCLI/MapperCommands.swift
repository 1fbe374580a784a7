import ArgumentParser
import CommandSupport
import DefaultSettings
import Logging
import MetricsEndpoint
import ModbusMapper
import ServiceLifecycle

/// `swiftedge mapper`: device mappers, each its own process.
struct MapperCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "mapper", abstract: "Run a device mapper.",
                                                    subcommands: [ModbusMapperCommand.self])
}

/// `swiftedge mapper modbus`: the Modbus TCP mapper.
struct ModbusMapperCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "modbus", abstract: "Run the Modbus TCP mapper (registers with the edge over DMI).")

    @Option(help: "The edge's DMI socket (KubeEdge's common.edgecore_sock; default /var/lib/kubeedge/dmi.sock).")
    var dmiSock = Defaults.dmiSocket

    @Option(help: "This mapper's DMI socket (grpc_server.socket_path; default /var/lib/kubeedge/modbus.sock).")
    var socket = Defaults.modbusMapperSocket

    @Option(help: "Mapper name (common.name).")
    var name = "modbus-mapper"

    @Option(help: "Protocol name of the devices it serves (spec.protocol.protocolName).")
    var protocolName = "modbus"

    @Option(help: "Milliseconds one Modbus request may take.")
    var requestTimeout = 1000

    @Option(help: "Port of the plain-HTTP Prometheus /metrics endpoint on 127.0.0.1 (0: none).")
    var metricsPort = 0

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let registry = bootstrapObservability()
        let logger = logging.makeLogger("swiftedge.mapper.modbus")
        var c = ModbusMapperConfiguration()
        c.edgeSocket = dmiSock
        c.socket = socket
        c.name = name
        c.protocolName = protocolName
        c.requestTimeout = .milliseconds(max(10, requestTimeout))
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: ModbusMapper(configuration: c, logger: logger))]
        if metricsPort > 0 {
            services.append(.init(service: MetricsEndpoint(registry: registry, host: "127.0.0.1", port: metricsPort, logger: logger)))
        }
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
