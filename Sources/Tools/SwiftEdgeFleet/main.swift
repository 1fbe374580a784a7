import ArgumentParser
import FleetSimulator
import Foundation
import Hummingbird
import KubeAPI
import Logging
import ServiceLifecycle
import UnixSignals

/// `swiftedge-fleet`: many simulated edge nodes in one process (join, EdgeHub connection, an
/// in-memory MetaManager), for fleet tests and connection benchmarks against `swiftedge cloud`.
/// `GET /summary` and `GET /state` on the status port report what the nodes hold; `POST
/// /offline`, `/online` (or SIGUSR1, SIGUSR2) switch the whole fleet off and on the network, and
/// `POST /chaos?ms=N` changes the random-disconnect period.
@main
struct EdgeFleetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "swiftedge-fleet", abstract: "Simulate a fleet of edge nodes.")

    @Option(help: "Cloud address.") var cloud: String = "127.0.0.1"
    @Option(help: "CloudHub port.") var cloudhubPort: Int = 10000
    @Option(help: "Certificate service port.") var certPort: Int = 10002
    @Option(help: "Join token (needed until each node has its certificate).") var token: String?
    @Option(help: "Number of nodes.") var nodes: Int = 100
    @Option(help: "Node name prefix (names are <prefix><index>).") var prefix: String = "fleet-"
    @Option(help: "Directory for the nodes' certificates.") var dataDir: String
    @Option(help: "Status HTTP port on 127.0.0.1 (0: any; printed).") var statusPort: Int = 0
    @Option(help: "Seconds between keepalives.") var heartbeat: Double = 15
    @Option(help: "Milliseconds between random disconnects of one node (0: none).") var disconnectEvery: Int = 0
    @Option(help: "Concurrent joins.") var joinConcurrency: Int = 16
    @Option(help: "Reconnect back-off base in milliseconds.") var reconnectBase: Int = 1000
    @Option(help: "Reconnect back-off cap in milliseconds.") var reconnectMax: Int = 30000
    @Option(help: "Log level.") var logLevel: Logger.Level = .warning

    func run() async throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        var l = Logger(label: "swiftedge.fleet")
        l.logLevel = logLevel
        let logger = l
        let started = ContinuousClock.now
        var built: [SimulatedNode] = []
        try await withThrowingTaskGroup(of: SimulatedNode.self) { group in
            var next = 0
            func add() {
                let i = next
                next += 1
                let name = "\(prefix)\(i)"
                group.addTask { [self] in
                    try await SimulatedNode.join(name: name, cloudHost: cloud, certPort: certPort, hubPort: cloudhubPort, token: token,
                                                 directory: "\(dataDir)/\(name)", heartbeat: .milliseconds(Int(heartbeat * 1000)),
                                                 reconnectBase: .milliseconds(reconnectBase), reconnectMax: .milliseconds(reconnectMax), logger: logger)
                }
            }
            for _ in 0..<min(joinConcurrency, nodes) { add() }
            while let n = try await group.next() {
                built.append(n)
                if next < nodes { add() }
                if built.count % 500 == 0 { print("joined \(built.count)/\(nodes)"); fflush(nil) }
            }
        }
        let joined = ContinuousClock.now - started
        let fleet = Fleet(nodes: built.sorted { $0.name < $1.name }, disconnectEvery: disconnectEvery > 0 ? .milliseconds(disconnectEvery) : nil,
                          logger: logger)
        let router = Router()
        router.get("summary") { _, _ -> Response in
            let body: JSON = ["nodes": .int(Int64(fleet.nodes.count)), "connected": .int(Int64(fleet.connectedCount)),
                              "applied": .int(Int64(fleet.appliedCount)), "online": .bool(fleet.isOnline)]
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body.serialized())))
        }
        router.post("offline") { _, _ -> Response in fleet.setOnline(false); return Response(status: .noContent) }
        router.post("online") { _, _ -> Response in fleet.setOnline(true); return Response(status: .noContent) }
        router.post("chaos") { request, _ -> Response in
            let ms = request.uri.queryParameters.get("ms", as: Int.self) ?? 0
            fleet.setChaos(ms > 0 ? .milliseconds(ms) : nil)
            return Response(status: .noContent)
        }
        router.get("state") { _, _ -> Response in
            var out: [String: JSON] = [:]
            for n in fleet.nodes {
                var held: [String: JSON] = [:]
                for (k, e) in n.store.snapshot { held[k] = ["uid": .string(e.uid), "rv": .int(Int64(e.resourceVersion))] }
                out[n.name] = .object(held)
            }
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: JSON.object(out).serialized())))
        }
        let joinedSeconds = Double(joined.components.seconds) + Double(joined.components.attoseconds) / 1e18
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: statusPort), serverName: "swiftedge-fleet"),
                              onServerRunning: { ch in
                                  print("fleet of \(fleet.nodes.count) nodes ready (joined in \(String(format: "%.1f", joinedSeconds)) s); status on 127.0.0.1:\(ch.localAddress?.port ?? 0)")
                                  fflush(nil)
                              }, logger: logger)
        let switchSignals = FleetSwitch(fleet: fleet)
        let group = ServiceGroup(configuration: .init(services: [.init(service: fleet), .init(service: app), .init(service: switchSignals)],
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// SIGUSR1 takes the fleet offline, SIGUSR2 brings it back (for benchmarks driving the process).
struct FleetSwitch: Service {
    let fleet: Fleet
    func run() async throws {
        try await cancelWhenGracefulShutdown {
            for await sig in await UnixSignalsSequence(trapping: .sigusr1, .sigusr2) {
                fleet.setOnline(sig == .sigusr2)
            }
        }
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
