import ArgumentParser
import CommandSupport
import Foundation
import LocalPathDriver
import Logging
import ServiceLifecycle

/// `swiftedge csi`: CSI drivers shipped with SwiftEdge, each runnable as its own process.
struct CSICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "csi", abstract: "Run a CSI driver.", subcommands: [LocalPathCommand.self])
}

/// `swiftedge csi local-path`: the local-path driver as a separate plugin process (the edge
/// node runs it in-process unless started with `--no-local-path`).
struct LocalPathCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "local-path",
                                                    abstract: "Run the local-path CSI driver: node-local directory volumes, published with bind mounts.")

    @Option(help: "The node id reported by NodeGetInfo (the edge node's name).")
    var nodeId: String

    @Option(help: "Directory holding the volumes.")
    var storageDir: String

    @Option(help: "The CSI endpoint, a unix socket path (or unix:///path).")
    var endpoint: String

    @Option(help: "kubelet's plugin registration directory (<root>/plugins_registry): registers as <driver>-reg.sock there. Empty: do not register.")
    var registrationDir = ""

    @Option(help: "The driver name (the StorageClass provisioner).")
    var driverName = LocalPathDriver.defaultName

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        _ = bootstrapObservability()
        let logger = logging.makeLogger("swiftedge.csi.local-path")
        var socket = endpoint
        if socket.hasPrefix("unix://") { socket.removeFirst("unix://".count) }
        guard socket.hasPrefix("/") else { throw ValidationError("--endpoint must be an absolute socket path") }
        var c = LocalPathConfiguration(nodeID: nodeId, storageDirectory: storageDir, socket: socket,
                                       registrationDirectory: registrationDir.isEmpty ? nil : registrationDir)
        c.driverName = driverName
        let group = ServiceGroup(configuration: .init(services: [.init(service: LocalPathDriver(configuration: c, logger: logger))],
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
