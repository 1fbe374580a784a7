import APIServer
import ArgumentParser
import CommandSupport
import ControlPlane
import DefaultSettings
import Foundation
import KubeAPI
import KubeAuth
import KubeClient
import KubeEdgeAdmission
import Logging
import Metrics
import PKI
import Prometheus
import ServiceLifecycle

/// Flags of the embedded API server (shared by `apiserver` and `cloud`).
public struct EmbeddedServerOptions: ParsableArguments {
    public init() {}

    @Option(help: "Directory for the database, certificates and admin token (default /var/lib/swiftedge/apiserver; `swiftedge cloud`: /var/lib/kubeedge/cloud).")
    var dataDir: String?

    @Option(help: "Address to listen on (default 127.0.0.1).")
    var bindAddress: String?

    @Option(help: "Port to listen on (default 6443).")
    var port: Int?

    @Option(name: .customLong("admin-kubeconfig"), help: "Where to write the admin kubeconfig (default: <data-dir>/admin.kubeconfig).")
    var adminKubeconfig: String?

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

    @Option(help: "Where Services' ClusterIPs come from (kube-apiserver's --service-cluster-ip-range; its first address is the `kubernetes` Service).")
    var serviceClusterIpRange = "10.96.0.0/12"

    @Flag(inversion: .prefixedNo, help: "Run the embedded control plane (scheduler and controllers) in this process.")
    var controllers = true

    @Option(help: "RBAC (enforce Roles and bindings) or AlwaysAllow (every authenticated caller may do everything).")
    var authorizationMode: AuthorizationMode = .rbac

    @Option(help: "kube's audit.k8s.io/v1 Policy (YAML or JSON) deciding what is audited at which level; needs --audit-log-path.")
    var auditPolicyFile: String?

    @Option(help: "Where audit events go as JSON lines ('-': standard output); needs --audit-policy-file.")
    var auditLogPath: String?

    @Option(help: "Rotate the audit log once it exceeds this many megabytes (0: never).")
    var auditLogMaxsize = 0

    @Option(help: "Rotated audit logs kept (0: all).")
    var auditLogMaxbackup = 0

    @Option(help: "kube's static token file: CSV lines token,user,uid[,\"group1,group2\"] (bearer tokens beside the admin's).")
    var tokenAuthFile: String?

    @Flag(help: "Accept bootstrap tokens (<id>.<secret>) from kube-system/bootstrap-token-<id> Secrets, as kube's --enable-bootstrap-token-auth.")
    var enableBootstrapTokenAuth = false

    @Option(help: "kube's apiserver.config.k8s.io/v1 EncryptionConfiguration: resources encrypted at rest (aesgcm, aescbc, identity); the first provider writes, all read; values under an older key are re-encrypted at start.")
    var encryptionProviderConfig: String?

    /// The encryption configuration of the flag (nil: none); a clear error for a bad one.
    func encryptionConfiguration() throws -> EncryptionConfiguration? {
        guard let path = encryptionProviderConfig else { return nil }
        guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read --encryption-provider-config \(path)") }
        do { return try EncryptionConfiguration(document: Array(data)) } catch { throw ValidationError("\(path): \(error.message)") }
    }

    /// The audit policy and log of the flags (nil: no auditing); a clear error for a bad policy.
    func auditOptions() throws -> AuditOptions? {
        switch (auditPolicyFile, auditLogPath) {
        case (nil, nil): return nil
        case (nil, _): throw ValidationError("--audit-log-path needs --audit-policy-file (kube-apiserver audits nothing without a policy)")
        case (_, nil): throw ValidationError("--audit-policy-file needs --audit-log-path (the only audit backend served)")
        case (let policyFile?, let logPath?):
            guard let data = FileManager.default.contents(atPath: policyFile) else { throw ValidationError("cannot read --audit-policy-file \(policyFile)") }
            let policy: AuditPolicy
            do { policy = try AuditPolicy(document: Array(data)) } catch { throw ValidationError("\(policyFile): \(error.message)") }
            do {
                return AuditOptions(policy: policy, log: try AuditLog(path: logPath, maxSizeMB: auditLogMaxsize, maxBackups: auditLogMaxbackup))
            } catch { throw ValidationError("--audit-log-path \(logPath): \(error)") }
        }
    }

    var dataDirectory: String { dataDir ?? Defaults.apiServerDataDirectory }
    var kubeconfigPath: String { adminKubeconfig ?? dataDirectory + "/admin.kubeconfig" }
}

/// kube-apiserver's authorization modes that SwiftEdge serves.
public enum AuthorizationMode: String, ExpressibleByArgument, Sendable {
    case rbac = "RBAC"
    case alwaysAllow = "AlwaysAllow"
}

/// Signs approved CertificateSigningRequests with a CA (the csrsigning controller's signer).
struct CASigner: CertificateSigner {
    let ca: CertificateAuthority
    func sign(requestPEM: String, clientAuth: Bool, serverAuth: Bool, validity: TimeInterval) throws -> String {
        try ca.signRequest(pem: requestPEM, clientAuth: clientAuth, serverAuth: serverAuth, validity: validity)
    }

    func subject(ofRequestPEM pem: String) throws -> (commonName: String, organizations: [String], otherNames: Int) {
        let c = try CertificateRequestContents(pem: pem)
        return (c.commonName, c.organizations, c.otherNames)
    }

    /// The signer of `--cluster-signing-cert-file`/`--cluster-signing-key-file` (nil when neither is given).
    static func load(certFile: String?, keyFile: String?) throws -> CASigner? {
        guard certFile != nil || keyFile != nil else { return nil }
        guard let certFile, let keyFile else {
            throw ValidationError("--cluster-signing-cert-file and --cluster-signing-key-file go together")
        }
        return CASigner(ca: try CertificateAuthority(certificatePEM: try String(contentsOfFile: certFile, encoding: .utf8),
                                                     privateKeyPEM: try String(contentsOfFile: keyFile, encoding: .utf8)))
    }
}

/// KubeEdge's admission rules reading the embedded server's store.
struct StoredObjectReader: KubeEdgeObjectReader {
    let objects: StoredObjects
    func get(_ type: ResourceType, namespace: String, name: String) async throws -> JSON? { await objects.get(type, namespace: namespace, name: name) }
    func list(_ type: ResourceType, namespace: String) async throws -> [JSON] { try await objects.list(type, namespace: namespace) }
}

/// The embedded server opened, plus a way for in-process clients to reach it once it listens.
struct OpenedServer {
    let server: EmbeddedAPIServer
    let services: [any Service]
    let makeClient: @Sendable (Logger) async throws -> KubeClient
}

extension EmbeddedServerOptions {
    /// Opens the embedded API server (and, unless disabled, the control plane next to it).
    func open(logger: Logger, control: ControllerOptions, controllerLogger: Logger, registry: PrometheusCollectorRegistry,
              podStreams: (any PodStreams)? = nil) async throws -> OpenedServer {
        var config = EmbeddedAPIServerConfiguration(
            dataDirectory: dataDirectory, host: bindAddress ?? "127.0.0.1", port: port ?? Defaults.apiServerPort, insecureHTTP: insecureHTTP,
            kubeconfigPath: kubeconfigPath, fsyncEveryCommit: fsync, historyLimit: historyLimit,
            compactionInterval: .seconds(compactionInterval), bookmarkInterval: .seconds(bookmarkInterval))
        config.podStreams = podStreams
        guard let serviceRange = IPv4Network(serviceClusterIpRange), serviceRange.description == serviceClusterIpRange, serviceRange.prefix <= 28 else {
            throw ValidationError("--service-cluster-ip-range \(serviceClusterIpRange) is not an IPv4 network in CIDR form of at least 16 addresses")
        }
        config.serviceClusterIPRange = serviceRange
        config.enforceRBAC = authorizationMode == .rbac
        config.audit = try auditOptions()
        config.encryption = try encryptionConfiguration()
        config.bootstrapTokens = enableBootstrapTokenAuth
        if let path = tokenAuthFile {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw ValidationError("cannot read --token-auth-file \(path)") }
            do { config.staticTokens = try StaticTokenFile.parse(text) } catch { throw ValidationError("--token-auth-file \(path): \(error)") }
        }
        config.metricsExporter = {
            var out: [UInt8] = []
            registry.emit(into: &out)
            return out
        }
        // KubeEdge's admission rules, in-process (RuleEndpoints and Rules read from the store).
        let hooks = KubeEdgeAdmission.webhookConfigurations { path in ["url": .string(InProcessWebhooks.scheme + "kubeedge-admission" + path.rawValue)] }
        config.inProcessWebhooks = InProcessWebhooks(validating: hooks.validating, mutating: hooks.mutating) { path, review, objects in
            guard let p = KubeEdgeAdmission.Path(rawValue: path) else { return ["response": ["uid": review["request"]["uid"], "allowed": true]] }
            return await KubeEdgeAdmission(reader: StoredObjectReader(objects: objects)).review(p, review)
        }
        let scheme = insecureHTTP ? "http" : "https"
        let host = bindAddress ?? "127.0.0.1"
        let listening = AwaitedValue<Int>()
        let path = kubeconfigPath
        let server = try await EmbeddedAPIServer.open(config, logger: logger) { port in
            listening.set(port)
            print("""
                SwiftEdge API server listening on \(scheme)://\(host):\(port)
                Admin kubeconfig: \(path)
                Try:  export KUBECONFIG=\(path)
                      kubectl get namespaces
                """)
            fflush(nil)
        }
        let token = server.adminToken, ca = server.caPEM, insecure = insecureHTTP
        let connectHost = host == "0.0.0.0" ? "127.0.0.1" : host
        let makeClient: @Sendable (Logger) async throws -> KubeClient = { l in
            let port = await listening.value
            return try HTTPKubeClient(config: KubeConfig(server: "\(scheme)://\(connectHost):\(port)", caPEM: insecure ? nil : ca, token: token), logger: l)
        }
        var services = server.services
        if controllers {
            var options = try control.options()
            options.certificateSigner = CASigner(ca: server.ca)
            services.append(ControllerManager(options: options, logger: controllerLogger) { try await makeClient(controllerLogger) })
        }
        return OpenedServer(server: server, services: services, makeClient: makeClient)
    }
}

public struct APIServerCommand: AsyncParsableCommand {
    public init() {}

    public static let configuration = CommandConfiguration(
        commandName: "apiserver",
        abstract: "Run the embedded Kubernetes-compatible API server (SQLite storage) and its control plane.")

    @OptionGroup var server: EmbeddedServerOptions
    @Option(help: "Where to write the admin kubeconfig (same as --admin-kubeconfig).")
    var kubeconfig: String?
    @OptionGroup var control: ControllerOptions
    @OptionGroup var logging: LoggingOptions

    public func run() async throws {
        let registry = bootstrapObservability()
        let logger = logging.makeLogger("swiftedge.apiserver")
        var server = self.server
        if let kubeconfig { server.adminKubeconfig = kubeconfig }
        let opened = try await server.open(logger: logger, control: control, controllerLogger: logging.makeLogger("swiftedge.controllers"),
                                           registry: registry)
        let group = ServiceGroup(configuration: .init(services: opened.services.map { .init(service: $0) },
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        try await opened.server.store.close()
    }
}

/// Flags of the control plane (shared by `apiserver` and `controller-manager`).
public struct ControllerOptions: ParsableArguments {
    public init() {}

    @Flag(inversion: .prefixedNo, help: "Hold the kube-system/swiftedge-controller-manager Lease before acting (one active control plane).")
    var leaderElect = true

    @Option(help: "Seconds a leader's Lease stays valid without renewal.")
    var leaderElectLeaseDuration: Double = 15

    @Option(help: "Seconds the leader keeps trying to renew before it stops acting.")
    var leaderElectRenewDeadline: Double = 10

    @Option(help: "Seconds between leader election attempts and renewals.")
    var leaderElectRetryPeriod: Double = 2

    @Option(help: "Seconds between node health checks.")
    var nodeMonitorPeriod: Double = 5

    @Option(help: "Seconds without a node heartbeat (Lease or Ready condition) before the node turns Ready=Unknown.")
    var nodeMonitorGracePeriod: Double = 40

    @Flag(help: "Also evict pods from unreachable edge nodes (default: edge nodes keep their pods while disconnected).")
    var evictEdgePods = false

    @Option(help: "Seconds a deleted node's pods are kept before they are removed (kube's pod GC quarantine).")
    var orphanPodQuarantine: Double = 40

    @Option(help: "Seconds pods bound to a node that has not joined yet wait before they are removed (0: they wait until it joins).")
    var unjoinedNodePodTimeout: Double = 0

    @Option(help: "Seconds before a failed Job pod is retried (doubles per failure).")
    var jobBackoff: Double = 10

    @Option(help: "Identity in the leader Lease (default: hostname and a random suffix).")
    var identity: String?

    @Flag(inversion: .prefixedNo, help: "Give every node a pod subnet of --cluster-cidr in spec.podCIDR (kube's node IPAM).")
    var allocateNodeCidrs = true

    @Option(help: "The pods' address range, split into one subnet per node.")
    var clusterCidr = "10.244.0.0/16"

    @Option(help: "Prefix length of each node's pod subnet.")
    var nodeCidrMaskSize = 24

    func options() throws -> ControllerManagerOptions {
        var o = ControllerManagerOptions(identity: identity ?? "\(ProcessInfo.processInfo.hostName)_\(UUID().uuidString.prefix(8).lowercased())")
        o.leaderElect = leaderElect
        o.leaseDuration = .seconds(leaderElectLeaseDuration)
        o.renewDeadline = .seconds(leaderElectRenewDeadline)
        o.retryPeriod = .seconds(leaderElectRetryPeriod)
        o.nodeLifecycle.monitorPeriod = .seconds(nodeMonitorPeriod)
        o.nodeLifecycle.gracePeriod = .seconds(nodeMonitorGracePeriod)
        o.nodeLifecycle.evictEdgePods = evictEdgePods
        o.nodeLifecycle.orphanQuarantine = .seconds(orphanPodQuarantine)
        o.nodeLifecycle.unjoinedNodeTimeout = unjoinedNodePodTimeout > 0 ? .seconds(unjoinedNodePodTimeout) : nil
        o.jobBackoff = .seconds(jobBackoff)
        if allocateNodeCidrs {
            guard let cidr = IPv4Network(clusterCidr), cidr.description == clusterCidr else {
                throw ValidationError("--cluster-cidr \(clusterCidr) is not an IPv4 network in CIDR form (a.b.c.0/n, host bits zero)")
            }
            guard nodeCidrMaskSize >= cidr.prefix, nodeCidrMaskSize <= 30 else {
                throw ValidationError("--node-cidr-mask-size \(nodeCidrMaskSize) must be between the cluster CIDR's prefix (\(cidr.prefix)) and 30")
            }
            o.nodeIPAM = NodeIPAMOptions(clusterCIDR: cidr, nodeMaskSize: nodeCidrMaskSize)
        }
        return o
    }
}

/// `swiftedge controller-manager`: the control plane alone, against any API server.
public struct ControllerManagerCommand: AsyncParsableCommand {
    public init() {}

    public static let configuration = CommandConfiguration(
        commandName: "controller-manager",
        abstract: "Run the scheduler and controllers against an API server (for the embedded server or a standby).")

    @Option(help: "kubeconfig of the API server to manage.")
    var kubeconfig: String

    @Option(help: "PEM CA certificate that signs approved CertificateSigningRequests (with --cluster-signing-key-file).")
    var clusterSigningCertFile: String?

    @Option(help: "PEM private key of the signing CA.")
    var clusterSigningKeyFile: String?

    @OptionGroup var control: ControllerOptions

    @OptionGroup var logging: LoggingOptions

    public func run() async throws {
        _ = bootstrapObservability()
        let logger = logging.makeLogger("swiftedge.controllers")
        let config = try KubeConfig.load(path: kubeconfig)
        var options = try control.options()
        options.certificateSigner = try CASigner.load(certFile: clusterSigningCertFile, keyFile: clusterSigningKeyFile)
        logger.info("controller manager starting", metadata: ["server": "\(config.server)", "identity": "\(options.identity)"])
        let manager = ControllerManager(options: options, logger: logger) { try HTTPKubeClient(config: config, logger: logger) }
        let group = ServiceGroup(configuration: .init(services: [.init(service: manager)],
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
