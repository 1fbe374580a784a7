import ArgumentParser
import CommandSupport
import ContainerRuntime
import EdgeHub
import Edged
import Foundation
import Logging
import MetaServer
import MetricsEndpoint
import MetaStore
import NodeStatus
import ServiceLifecycle
import Synchronization

/// `swiftedge edge`: the edge node (joins with a token on first start, then keeps the channel up
/// and persists what the cloud sends before acknowledging it).
public struct EdgeCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(commandName: "edge", abstract: "Run an edge node.")

    @Option(help: "Cloud address (host name or IP).")
    var cloud: String

    @Option(help: "CloudHub WebSocket port.")
    var cloudhubPort: Int = 10000

    @Option(help: "Certificate service port.")
    var certPort: Int = 10002

    @Option(help: "This node's name.")
    var nodeName: String

    @Option(help: "Join token from `swiftedge gettoken` (needed until the node has its certificate).")
    var token: String?

    @Option(help: "Directory for the node's certificates and database.")
    var dataDir: String = "/var/lib/swiftedge/edge"

    @Option(help: "Seconds between keepalives.")
    var heartbeat: Double = 15

    @Flag(inversion: .prefixedNo, help: "If the node's database is corrupt, move it aside and start empty (the cloud then sends everything again) instead of failing.")
    var recoverStore = true

    @Option(help: "MetaServer port on 127.0.0.1 (the node's local read API; 0: none).")
    var metaserverPort: Int = 10550

    @Option(help: "The node's InternalIP address.")
    var nodeIP: String = "127.0.0.1"

    @Option(parsing: .upToNextOption, help: "Extra node labels, key=value.")
    var labels: [String] = []

    @Option(help: "Seconds between node status reports (KubeEdge: 10).")
    var nodeStatusInterval: Double = 10

    @Flag(inversion: .prefixedNo, help: "Renew the node certificate at 70–90 % of its lifetime (KubeEdge's rotateCertificates).")
    var rotateCertificates = true

    @Option(help: "CRI endpoint of the container runtime (containerd, CRI-O); empty: the node runs no pods.")
    var remoteRuntimeEndpoint: String = "unix:///run/containerd/containerd.sock"

    @Option(help: "Directory for pod volumes (default: <data-dir>/pods).")
    var podsDir: String?

    @Option(help: "Directory for container logs (kubelet's layout).")
    var podLogsDir: String = "/var/log/pods"

    @Option(help: "Port of the plain-HTTP Prometheus /metrics endpoint on 127.0.0.1 (0: none).")
    var metricsPort: Int = 10352

    @OptionGroup var logging: LoggingOptions

    public init() {}

    public func run() async throws {
        let registry = bootstrapObservability()
        let logger = logging.makeLogger("swiftedge.edge")
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        let bootstrap = NodeBootstrap(certServer: "\(cloud):\(certPort)", nodeName: nodeName, directory: dataDir + "/certs", logger: logger)
        let credentials: NodeCredentials
        do { credentials = try await bootstrap.credentials(token: token) } catch {
            throw ValidationError("\(error)")
        }
        let store = try SQLiteMetaStore(path: dataDir + "/edge.db", recover: recoverStore, logger: logger)
        var config = EdgeHubConfiguration(cloudHost: cloud, nodeName: nodeName, credentials: credentials)
        config.cloudPort = cloudhubPort
        config.heartbeat = .seconds(heartbeat)
        let (connections, connectionSink) = AsyncStream<Bool>.makeStream()
        let edgedBox = EdgedBox()
        let hub = try EdgeHub(configuration: config, logger: logger, onConnection: { up in
            connectionSink.yield(up)
            edgedBox.edged?.connectionChanged(up)
        },
                              inventory: { try await store.inventory() }) { message in
            try await store.apply(message)
            logger.debug("stored", metadata: ["operation": "\(message.route.operation.rawValue)", "resource": "\(message.route.resource)",
                                               "resourceVersion": "\(message.resourceVersion ?? "")"])
        }
        print("edge node \(nodeName) joined; connecting to \(cloud):\(cloudhubPort)")
        fflush(nil)
        var nodeLabels: [String: String] = [:]
        for l in labels {
            let kv = l.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, !kv[0].isEmpty else { throw ValidationError("label \"\(l)\" is not key=value") }
            nodeLabels[kv[0]] = kv[1]
        }
        var edged: Edged?
        var runtime: CRIRuntime?
        if !remoteRuntimeEndpoint.isEmpty {
            let cri = try CRIRuntime(endpoint: remoteRuntimeEndpoint, logger: logger)
            let e = Edged(configuration: EdgedConfiguration(nodeName: nodeName, nodeIP: nodeIP, podsDirectory: podsDir ?? dataDir + "/pods",
                                                            logDirectory: podLogsDir),
                          runtime: cri, store: store, upstream: { hub.send($0) }, logger: logger)
            edgedBox.set(e)
            edged = e
            runtime = cri
        }
        var health: (@Sendable () -> RuntimeHealth)?
        if let e = edged { health = { RuntimeHealth(ready: e.runtimeReady, version: e.containerRuntimeVersion) } }
        let reporter = NodeStatusReporter(identity: NodeIdentity(name: nodeName, labels: nodeLabels, internalIP: nodeIP), hub: hub,
                                          connections: connections, interval: .milliseconds(Int64(nodeStatusInterval * 1000)),
                                          runtime: health, logger: logger)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        // Started in this order, stopped in reverse: Edged stops before the runtime client.
        if let runtime, let edged {
            services += [.init(service: runtime), .init(service: edged), .init(service: EdgeStreamClient(hub: hub, provider: edged, logger: logger))]
        }
        services += [.init(service: hub), .init(service: reporter)]
        if metricsPort > 0 {
            services.append(.init(service: MetricsEndpoint(registry: registry, host: "127.0.0.1", port: metricsPort, logger: logger)))
        }
        if metaserverPort > 0 { services.append(.init(service: MetaServer(store: store, port: metaserverPort, logger: logger))) }
        if rotateCertificates {
            services.append(.init(service: CertificateRotation(bootstrap: bootstrap, credentials: credentials, logger: logger) { renewed in
                try await hub.updateCredentials(renewed)
            }))
        }
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// Lets the channel's connection callback reach Edged, which is made after the channel.
final class EdgedBox: Sendable {
    let value = Mutex<Edged?>(nil)
    var edged: Edged? { value.withLock { $0 } }
    func set(_ e: Edged) { value.withLock { $0 = e } }
}
