import ArgumentParser
import CloudCore
import CloudHub
import ContainerRuntime
import Edged
import EdgeHub
import Foundation
import KubeClient
import Logging
import MetaStore
import MetaServer
import MetricsEndpoint
import NodeStatus
import ServiceLifecycle
import Synchronization

/// `swiftedge cloud`: CloudCore with the embedded API server and control plane, or against an
/// existing cluster (`--kubeconfig`), whose own controllers then do the work.
struct CloudCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cloud",
        abstract: "Run the cloud side: CloudHub (:10000), the certificate service (:10002) and reliable delivery to edge nodes.")

    @Option(help: "kubeconfig of an existing cluster (default: run the embedded API server and control plane).")
    var kubeconfig: String?

    @OptionGroup var server: EmbeddedServerOptions

    @Option(help: "Address CloudHub and the certificate service listen on.")
    var hubBindAddress: String = "127.0.0.1"

    @Option(help: "CloudHub WebSocket port.")
    var cloudhubPort: Int = 10000

    @Option(help: "Certificate service port.")
    var certPort: Int = 10002

    @Option(parsing: .upToNextOption, help: "Addresses edge nodes reach the cloud by (certificate SANs).")
    var advertiseAddress: [String] = []

    @Option(help: "Maximum connected edge nodes.")
    var nodeLimit: Int = 1000

    @Option(help: "Seconds between join token refreshes (tokens are valid twice as long).")
    var tokenRefresh: Int = 12 * 3600

    @Option(help: "Lifetime in seconds of node certificates issued at join and renewal (KubeEdge's edgeCertSigningDuration: 365 days).")
    var edgeCertValidity: Int = 365 * 86400

    @Option(help: "Port of the plain-HTTP Prometheus /metrics endpoint on the hub bind address (KubeEdge: 9091; 0: none).")
    var metricsPort: Int = 9091

    @OptionGroup var control: ControllerOptions
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let registry = bootstrapObservability()
        let logger = logging.makeLogger("swiftedge.cloud")
        var services: [any Service] = []
        if metricsPort > 0 {
            services.append(MetricsEndpoint(registry: registry, host: hubBindAddress, port: metricsPort, logger: logger))
        }
        let makeClient: @Sendable (Logger) async throws -> KubeClient
        var opened: OpenedServer?
        if let kubeconfig {
            let config = try KubeConfig.load(path: kubeconfig)
            makeClient = { l in try KubeClient(config: config, logger: l) }
            logger.info("using an existing cluster; its own controllers run", metadata: ["server": "\(config.server)"])
        } else {
            let o = try await server.open(logger: logging.makeLogger("swiftedge.apiserver"), control: control,
                                          controllerLogger: logging.makeLogger("swiftedge.controllers"), registry: registry)
            opened = o
            services += o.services
            makeClient = o.makeClient
        }
        var config = CloudCoreConfiguration()
        config.hub.host = hubBindAddress
        config.hub.port = cloudhubPort
        config.hub.nodeLimit = nodeLimit
        config.certPort = certPort
        config.advertiseAddresses = advertiseAddress
        config.tokenRefresh = .seconds(tokenRefresh)
        config.edgeCertificateValidity = .seconds(edgeCertValidity)
        let cloudLogger = logger
        let host = hubBindAddress
        services.append(CloudCore(configuration: config, logger: cloudLogger, onReady: { hub, cert in
            print("""
                CloudHub listening on \(host):\(hub), certificate service on \(host):\(cert)
                Join an edge node:  swiftedge gettoken \(kubeconfig.map { "--kubeconfig \($0)" } ?? "--kubeconfig \(server.kubeconfigPath)")
                                    swiftedge edge --cloud \(host) --cloudhub-port \(hub) --cert-port \(cert) --node-name <name> --token <token>
                """)
            fflush(nil)
        }) { try await makeClient(cloudLogger) })
        let group = ServiceGroup(configuration: .init(services: services.map { .init(service: $0) },
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        try await opened?.server.store.close()
    }
}

/// `swiftedge gettoken`: prints the current join token (from Secret kubeedge/tokensecret).
struct GetTokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gettoken", abstract: "Print the token edge nodes join with.")

    @Option(help: "kubeconfig of the cluster the cloud runs against.")
    var kubeconfig: String

    func run() async throws {
        var logger = Logger(label: "swiftedge.gettoken")
        logger.logLevel = .error
        let client = try KubeClient(config: try KubeConfig.load(path: kubeconfig), logger: logger)
        do {
            print(try await CloudSecrets.currentToken(client: client))
            try await client.shutdown()
        } catch {
            try? await client.shutdown()
            throw error
        }
    }
}

/// `swiftedge edge`: the edge node (joins with a token on first start, then keeps the channel up
/// and persists what the cloud sends before acknowledging it).
struct EdgeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "edge", abstract: "Run an edge node.")

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

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        _ = bootstrapObservability()
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
        if let runtime, let edged { services += [.init(service: runtime), .init(service: edged)] }
        services += [.init(service: hub), .init(service: reporter)]
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
