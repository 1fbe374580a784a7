import ComponentConfig
import DefaultSettings
import StreamTunnel
import ArgumentParser
import CloudHub
import CommandSupport
import Foundation
import KubeClient
import KubeEdgeAdmission
import Logging
import MetricsEndpoint
import RuleRouter
import ServiceLifecycle
import Synchronization

/// `swiftedge cloud`: CloudCore with the embedded API server and control plane, or against an
/// existing cluster (`--kubeconfig`), whose own controllers then do the work.
public struct CloudCommand: AsyncParsableCommand {
    public init() {}

    public static let configuration = CommandConfiguration(
        commandName: "cloud",
        abstract: "Run the cloud side: CloudHub (:10000), the certificate service (:10002) and reliable delivery to edge nodes.")

    @Option(help: "cloudcore.yaml (KubeEdge's keys; `--defaultconfig` prints one). Flags given here win over the file.")
    var config: String?

    @Flag(help: "Print the default cloudcore.yaml and exit.")
    var defaultconfig = false

    @Option(help: "kubeconfig of an existing cluster (default: run the embedded API server and control plane).")
    var kubeconfig: String?

    @OptionGroup var server: EmbeddedServerOptions

    @Option(help: "Address CloudHub and the certificate service listen on (default 127.0.0.1).")
    var hubBindAddress: String?

    @Option(help: "CloudHub WebSocket port (default 10000).")
    var cloudhubPort: Int?

    @Option(help: "Certificate service port (default 10002).")
    var certPort: Int?

    @Option(parsing: .upToNextOption, help: "Addresses edge nodes reach the cloud by (certificate SANs).")
    var advertiseAddress: [String] = []

    @Option(help: "Maximum connected edge nodes (default 1000).")
    var nodeLimit: Int?

    @Option(help: "Seconds between join token refreshes (tokens are valid twice as long; default 12 h).")
    var tokenRefresh: Int?

    @Option(help: "Lifetime in seconds of node certificates issued at join and renewal (KubeEdge's edgeCertSigningDuration: 365 days).")
    var edgeCertValidity: Int?

    @Option(help: "Port of the plain-HTTP Prometheus /metrics endpoint on the hub bind address (KubeEdge: 9091; 0: none).")
    var metricsPort: Int?

    @Option(help: "Port of the kubelet-style stream server for an external kube-apiserver (KubeEdge's cloudStream.streamPort, 10003; 0: off; default: 10003 with --kubeconfig, off with the embedded server, which needs none).")
    var streamPort: Int?

    @Option(help: "CA (PEM) of the client certificates the stream server accepts (kube-apiserver's kubelet client certificate; default: the CA of the kubeconfig's cluster).")
    var streamClientCa: String?

    @Option(help: "Port of the router's REST ingress on the hub bind address (KubeEdge's router, 9443: Rules move messages between it, REST endpoints and the nodes' eventbus and servicebus; 0: off, the default).")
    var routerPort: Int?

    @Option(help: "With --kubeconfig: serve KubeEdge's admission webhook on this port and register it in the cluster (0: off, the default; `swiftedge admission` runs it alone).")
    var admissionPort = 0

    @Option(help: "Base URL the cluster's API server reaches the admission webhook at (default https://<first advertise address>:<admission port>).")
    var admissionUrl: String?

    @OptionGroup var control: ControllerOptions
    @OptionGroup var logging: LoggingOptions

    public func run() async throws {
        if defaultconfig {
            print(try ConfigFile.yaml(CloudCoreConfig.defaults), terminator: "")
            return
        }
        let file: CloudCoreConfig
        do { file = try config.map { try ConfigFile.load(CloudCoreConfig.self, path: $0) } ?? CloudCoreConfig() } catch let e as ConfigError {
            throw ValidationError(e.message)
        }
        let hubConfig = file.modules?.cloudHub
        let kubeconfig = kubeconfig ?? file.kubeAPIConfig?.kubeConfig.flatMap { $0.isEmpty ? nil : $0 }
        var server = self.server
        server.dataDir = server.dataDir ?? file.swiftedge?.dataDir ?? Defaults.cloudDataDirectory
        server.port = server.port ?? file.swiftedge?.apiServer?.port
        server.bindAddress = server.bindAddress ?? file.swiftedge?.apiServer?.address
        let hubBindAddress = hubBindAddress ?? hubConfig?.websocket?.address ?? "127.0.0.1"
        let cloudhubPort = cloudhubPort ?? hubConfig?.websocket?.port ?? Defaults.cloudHubPort
        let certPort = certPort ?? hubConfig?.https?.port ?? Defaults.certificatePort
        let advertiseAddress = advertiseAddress.isEmpty ? hubConfig?.advertiseAddress ?? [] : advertiseAddress
        let nodeLimit = nodeLimit ?? hubConfig?.nodeLimit ?? 1000
        let tokenRefresh = tokenRefresh ?? hubConfig?.tokenRefreshDuration.map { $0 * 3600 } ?? 12 * 3600
        let edgeCertValidity = edgeCertValidity ?? hubConfig?.edgeCertSigningDuration.map { $0 * 86400 } ?? 365 * 86400
        let metricsPort = metricsPort ?? file.commonConfig?.monitorServer?.bindAddress.flatMap(splitHostPort)?.port ?? Defaults.cloudMetricsPort
        let registry = bootstrapObservability()
        let logger = logging.makeLogger("swiftedge.cloud")
        var services: [any Service] = []
        if metricsPort > 0 {
            services.append(MetricsEndpoint(registry: registry, host: hubBindAddress, port: metricsPort, logger: logger))
        }
        let makeClient: @Sendable (Logger) async throws -> KubeClient
        var opened: OpenedServer?
        let tunnels = TunnelServer(logger: logger)
        if let kubeconfig {
            let config = try KubeConfig.load(path: kubeconfig)
            makeClient = { l in try HTTPKubeClient(config: config, logger: l) }
            logger.info("using an existing cluster; its own controllers run", metadata: ["server": "\(config.server)"])
        } else {
            let o = try await server.open(logger: logging.makeLogger("swiftedge.apiserver"), control: control,
                                          controllerLogger: logging.makeLogger("swiftedge.controllers"), registry: registry,
                                          podStreams: tunnels)
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
        config.tunnels = tunnels
        let routerPort = routerPort ?? file.modules?.router.flatMap { $0.enable == true ? ($0.port ?? 9443) : nil } ?? 0
        if routerPort > 0 {
            var rc = RuleRouterConfiguration()
            rc.host = hubBindAddress
            rc.port = routerPort
            if let t = file.modules?.router?.restTimeout, t > 0 { rc.restTimeout = .seconds(t) }
            config.router = rc
            let host = hubBindAddress
            config.onRouterListening = { port in
                print("router REST ingress on http://\(host):\(port)/<node>/<namespace>/<path>")
                fflush(nil)
            }
        }
        let streamPort = streamPort ?? file.modules?.cloudStream?.streamPort.flatMap { file.modules?.cloudStream?.enable == false ? 0 : $0 }
            ?? (kubeconfig != nil ? Defaults.streamPort : 0)
        if streamPort > 0 {
            let clientCA: String
            if let path = streamClientCa ?? file.modules?.cloudStream?.tlsStreamCAFile {
                guard let pem = try? String(contentsOfFile: path, encoding: .utf8) else { throw ValidationError("cannot read the stream client CA \(path)") }
                clientCA = pem
            } else {
                guard let pem = try KubeConfig.load(path: kubeconfig ?? server.kubeconfigPath).caPEM else {
                    throw ValidationError("the stream server needs the CA of kube-apiserver's kubelet client certificate: give --stream-client-ca")
                }
                clientCA = pem
            }
            config.streamServer = (streamPort, clientCA)
            let host = hubBindAddress
            config.onStreamServerListening = { port in
                print("cloud stream server (kubelet API for kube-apiserver) on \(host):\(port)")
                fflush(nil)
            }
        }
        var admissionClient: HTTPKubeClient?
        if let kubeconfig, admissionPort > 0 {
            // KubeEdge's admission for the existing cluster, registered there (its own CA in <data-dir>/admission).
            let url = admissionUrl ?? "https://\(advertiseAddress.first ?? hubBindAddress):\(admissionPort)"
            let (tls, caPEM) = try AdmissionCertificates(directory: server.dataDirectory + "/admission", serviceName: "kubeedge-admission-service",
                                                         serviceNamespace: "kubeedge", sans: advertiseAddress, url: url).identity()
            let client = try HTTPKubeClient(config: try KubeConfig.load(path: kubeconfig), logger: logger)
            admissionClient = client
            let registration = WebhookRegistration(url: url, serviceNamespace: "kubeedge", serviceName: "kubeedge-admission-service", servicePort: 443)
            let admissionLogger = logging.makeLogger("swiftedge.admission")
            services.append(KubeEdgeAdmissionServer(admission: KubeEdgeAdmission(reader: KubeClientObjectReader(client: client)), host: hubBindAddress,
                                                    port: admissionPort, tls: tls, logger: admissionLogger) { _ in
                do { try await registration.register(client: client, caPEM: caPEM, logger: admissionLogger) } catch {
                    admissionLogger.error("cannot register the webhook configurations", metadata: ["error": "\(error)"])
                }
            })
        }
        let cloudLogger = logger
        let host = hubBindAddress
        let adminKubeconfig = kubeconfig ?? server.kubeconfigPath
        services.append(CloudCore(configuration: config, logger: cloudLogger, onReady: { hub, cert in
            print("""
                CloudHub listening on \(host):\(hub), certificate service on \(host):\(cert)
                Join an edge node:  swiftedge gettoken --kubeconfig \(adminKubeconfig)
                                    swiftedge edge --cloud \(host) --cloudhub-port \(hub) --cert-port \(cert) --node-name <name> --token <token>
                """)
            fflush(nil)
        }) { try await makeClient(cloudLogger) })
        let group = ServiceGroup(configuration: .init(services: services.map { .init(service: $0) },
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do { try await group.run() } catch {
            try? await admissionClient?.shutdown()
            throw error
        }
        try? await admissionClient?.shutdown()
        try await opened?.server.store.close()
    }
}

/// `swiftedge gettoken`: prints the current join token (from Secret kubeedge/tokensecret).
public struct GetTokenCommand: AsyncParsableCommand {
    public init() {}

    public static let configuration = CommandConfiguration(commandName: "gettoken", abstract: "Print the token edge nodes join with.")

    @Option(help: "kubeconfig of the cluster the cloud runs against.")
    var kubeconfig: String

    public func run() async throws {
        var logger = Logger(label: "swiftedge.gettoken")
        logger.logLevel = .error
        let client = try HTTPKubeClient(config: try KubeConfig.load(path: kubeconfig), logger: logger)
        do {
            print(try await CloudSecrets.currentToken(client: client))
            try await client.shutdown()
        } catch {
            try? await client.shutdown()
            throw error
        }
    }
}
