import ArgumentParser
import DefaultSettings
import Operations

/// Where `init`, `join` and `reset` keep things (KubeEdge's layout under a root that tests move).
struct InstallPathOptions: ParsableArguments {
    @Option(help: "Directory for config files (config/cloudcore.yaml, config/edgecore.yaml).")
    var configDir: String = Defaults.configDirectory

    @Option(help: "Directory systemd unit files are written to.")
    var systemdDir: String = Defaults.systemdDirectory

    @Flag(help: "Do not write a systemd unit: run the process in the background (pid and log files in its data directory).")
    var noSystemd = false
}

/// `swiftedge init`: sets up the cloud side (keadm init); the procedure is ``CloudInit``.
struct InitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Set up the cloud: write cloudcore.yaml, install and start cloudcore (embedded control plane unless --kubeconfig), print the join command.")

    @Option(parsing: .upToNextOption, help: "Addresses edge nodes reach the cloud by (default: this machine's first non-loopback IPv4).")
    var advertiseAddress: [String] = []

    @Option(help: "kubeconfig of an existing cluster (default: the embedded API server and control plane).")
    var kubeconfig: String?

    @Option(help: "Directory for the cloud's database, certificates and logs.")
    var dataDir: String = Defaults.cloudDataDirectory

    @Option(help: "Address CloudHub and the certificate service listen on.")
    var bindAddress: String = "0.0.0.0"

    @Option(help: "CloudHub WebSocket port.")
    var cloudhubPort: Int = Defaults.cloudHubPort

    @Option(help: "Certificate service port.")
    var certPort: Int = Defaults.certificatePort

    @Option(help: "Embedded API server port (on 127.0.0.1).")
    var apiPort: Int = Defaults.apiServerPort

    @Option(help: "Prometheus /metrics port.")
    var metricsPort: Int = Defaults.cloudMetricsPort

    @Option(help: "Seconds to wait for the cloud to serve.")
    var timeout: Int = 120

    @Flag(help: "Write the configuration again even if the cloud was set up before.")
    var force = false

    @OptionGroup var paths: InstallPathOptions

    func run() async throws {
        var op = CloudInit(paths: InstallPaths(configDir: paths.configDir, systemdDir: paths.systemdDir, noSystemd: paths.noSystemd))
        op.advertiseAddress = advertiseAddress
        op.kubeconfig = kubeconfig
        op.dataDir = dataDir
        op.bindAddress = bindAddress
        op.cloudhubPort = cloudhubPort
        op.certPort = certPort
        op.apiPort = apiPort
        op.metricsPort = metricsPort
        op.timeout = timeout
        op.force = force
        try await op.run()
    }
}

/// `swiftedge join`: joins this machine to a cloud as an edge node (keadm join); the procedure is
/// ``EdgeJoin``.
struct JoinCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "join", abstract: "Join this machine to a SwiftEdge (or KubeEdge) cloud as an edge node.")

    @Option(help: "CloudHub address, ip:port (e.g. 192.0.2.10:10000).")
    var cloudcoreIpport: String

    @Option(help: "Join token (`swiftedge gettoken` on the cloud).")
    var token: String

    @Option(help: "This node's name (default: the host name).")
    var edgenodeName: String?

    @Option(parsing: .upToNextOption, help: "Node labels, key=value (comma-separated or repeated).")
    var labels: [String] = []

    @Option(help: "CRI endpoint of the container runtime; empty: the node runs no pods.")
    var remoteRuntimeEndpoint: String = Defaults.containerRuntimeEndpoint

    @Option(name: .customLong("certport"), help: "The cloud's certificate service port.")
    var certPort: Int = Defaults.certificatePort

    @Option(help: "Directory for the node's certificates, database and pod volumes.")
    var dataDir: String = Defaults.edgeDataDirectory

    @Option(help: "Directory for container logs.")
    var podLogsDir: String = Defaults.podLogsDirectory

    @Option(help: "The node's InternalIP (default: the local address it reaches the cloud from).")
    var nodeIP: String?

    @Option(help: "MetaServer port on 127.0.0.1.")
    var metaserverPort: Int = Defaults.metaServerPort

    @Option(help: "Prometheus /metrics port on 127.0.0.1.")
    var metricsPort: Int = Defaults.edgeMetricsPort

    @Option(help: "Seconds to wait for the node to register.")
    var timeout: Int = 120

    @Flag(help: "Join again even if this machine has joined before (its certificates are replaced).")
    var force = false

    @OptionGroup var paths: InstallPathOptions

    func run() async throws {
        var op = EdgeJoin(cloudcoreIpport: cloudcoreIpport, token: token,
                          paths: InstallPaths(configDir: paths.configDir, systemdDir: paths.systemdDir, noSystemd: paths.noSystemd))
        op.edgenodeName = edgenodeName
        op.labels = labels
        op.remoteRuntimeEndpoint = remoteRuntimeEndpoint
        op.certPort = certPort
        op.dataDir = dataDir
        op.podLogsDir = podLogsDir
        op.nodeIP = nodeIP
        op.metaserverPort = metaserverPort
        op.metricsPort = metricsPort
        op.timeout = timeout
        op.force = force
        try await op.run()
    }

    /// A malformed address or label is a usage error (printed with the usage), before the join starts.
    func validate() throws {
        do { _ = try EdgeJoin.validate(cloudcoreIpport: cloudcoreIpport, labels: labels) } catch { throw ValidationError(error.description) }
    }
}

/// `swiftedge reset`: undoes `init` and/or `join` on this machine; the procedure is ``NodeReset``.
struct ResetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reset", abstract: "Remove what `swiftedge init` or `swiftedge join` set up on this machine.")

    @Argument(help: "cloud, edge, or nothing for both (whatever is set up here).")
    var role: String?

    @OptionGroup var paths: InstallPathOptions

    func validate() throws {
        guard role == nil || NodeReset.Role(rawValue: role ?? "") != nil else { throw ValidationError("reset what? `cloud`, `edge` or nothing for both") }
    }

    func run() async throws {
        try await NodeReset(role: role.flatMap(NodeReset.Role.init(rawValue:)),
                            paths: InstallPaths(configDir: paths.configDir, systemdDir: paths.systemdDir, noSystemd: paths.noSystemd)).run()
    }
}
