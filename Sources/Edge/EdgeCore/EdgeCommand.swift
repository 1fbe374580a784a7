import ArgumentParser
import CloudEdgeProtocol
import CommandSupport
import ComponentConfig
import CSIPlugins
import ContainerRuntime
import DefaultSettings
import DeviceTwin
import MQTT
import NIOSSL
import EdgeHub
import EdgeMesh
import EventBus
import Edged
import Foundation
import KubeAPI
import LocalPathDriver
import Logging
import MetaServer
import MetricsEndpoint
import MetaStore
import NodeStatus
import ServiceBus
import ServiceLifecycle
import StreamTunnel
import Synchronization

/// The stream provider of a node that runs no pods.
struct NoPods: StreamProvider {
    func serve(_ request: StreamRequest, input: TunnelStreamData, write: @escaping @Sendable ([UInt8]) async throws -> Void) async throws {
        throw TunnelError("this node runs no pods (no container runtime)")
    }
}

/// Where the node's router messages go (set once the eventbus and servicebus exist).
final class RouterTargets: Sendable {
    let targets = Mutex<(eventBus: RouterEventBus?, serviceBus: ServiceBus?)>((nil, nil))
    func set(eventBus: RouterEventBus) { targets.withLock { $0.eventBus = eventBus } }
    func set(serviceBus: ServiceBus) { targets.withLock { $0.serviceBus = serviceBus } }

    func deliver(_ r: RouterMessage, _ message: Message) async {
        let (eventBus, serviceBus) = targets.withLock { ($0.eventBus, $0.serviceBus) }
        switch r {
        case .subscribe, .unsubscribe, .publish: await eventBus?.handle(r)
        case .serviceCall, .allowTarget, .disallowTarget: await serviceBus?.handle(r, message: message)
        case .event, .serviceRequest, .serviceResponse: break  // upstream kinds
        }
    }
}

/// `swiftedge edge`: the edge node (joins with a token on first start, then keeps the channel up
/// and persists what the cloud sends before acknowledging it).
public struct EdgeCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(commandName: "edge", abstract: "Run an edge node.")

    @Option(help: "edgecore.yaml (KubeEdge's keys; `--defaultconfig` prints one). Flags given here win over the file.")
    var config: String?

    @Flag(help: "Print the default edgecore.yaml and exit.")
    var defaultconfig = false

    @Option(help: "Cloud address (host name or IP).")
    var cloud: String?

    @Option(help: "CloudHub WebSocket port (default 10000).")
    var cloudhubPort: Int?

    @Option(help: "Certificate service port (default 10002).")
    var certPort: Int?

    @Option(help: "This node's name.")
    var nodeName: String?

    @Option(help: "Join token from `swiftedge gettoken` (needed until the node has its certificate).")
    var token: String?

    @Option(help: "Directory for the node's certificates, database and pod volumes (default /var/lib/kubeedge).")
    var dataDir: String?

    @Option(help: "Seconds between keepalives (default 15).")
    var heartbeat: Double?

    @Flag(inversion: .prefixedNo, help: "If the node's database is corrupt, move it aside and start empty (the cloud then sends everything again) instead of failing.")
    var recoverStore = true

    @Option(help: "MetaServer port on 127.0.0.1 (the node's local read API; 0: none; default 10550).")
    var metaserverPort: Int?

    @Flag(inversion: .prefixedNo, help: """
        MetaServer serves HTTPS and authenticates every request (the node's client certificate, or a pod's ServiceAccount token) and authorizes it with RBAC (KubeEdge's requireAuthorization); pods get KUBERNETES_SERVICE_HOST/PORT pointing at it. --no-metaserver-authorization: plain HTTP for anyone on the node.
        """)
    var metaserverAuthorization = true

    @Option(help: "The node's InternalIP address (default 127.0.0.1).")
    var nodeIP: String?

    @Option(parsing: .upToNextOption, help: "Extra node labels, key=value.")
    var labels: [String] = []

    @Option(help: "Seconds between node status reports (KubeEdge: 10).")
    var nodeStatusInterval: Double?

    @Flag(inversion: .prefixedNo, help: "Renew the node certificate at 70–90 % of its lifetime (KubeEdge's rotateCertificates; default on).")
    var rotateCertificates: Bool?

    @Option(help: "CRI endpoint of the container runtime (containerd, CRI-O); empty: the node runs no pods (default unix:///run/containerd/containerd.sock).")
    var remoteRuntimeEndpoint: String?

    @Option(help: "Directory for pod volumes (default: <data-dir>/pods).")
    var podsDir: String?

    @Option(help: "Directory for container logs (kubelet's layout; default /var/log/pods).")
    var podLogsDir: String?

    @Option(help: "Port of the plain-HTTP Prometheus /metrics endpoint on 127.0.0.1 (0: none; default 10352).")
    var metricsPort: Int?

    @Option(help: "MQTT broker of the EventBus, tcp://host:port (empty: no EventBus; default tcp://127.0.0.1:1883).")
    var mqttServer: String?

    @Option(help: "CA file for a TLS broker (ssl://…; default: the system's trust roots).")
    var mqttCaFile: String?

    @Option(help: "Client certificate (PEM) for a TLS broker that asks for one.")
    var mqttCertFile: String?

    @Option(help: "Private key (PEM) of --mqtt-cert-file.")
    var mqttKeyFile: String?

    @Option(help: "MQTT user name.")
    var mqttUsername: String?

    @Option(help: "File holding the MQTT password (not on the command line, where `ps` shows it).")
    var mqttPasswordFile: String?

    @Option(help: "DMI socket mappers register on (empty: no DMI; default <data-dir>/dmi.sock).")
    var dmiSock: String?

    @Option(help: "The container runtime's CNI configuration directory: pods get addresses from the node's spec.podCIDR on a bridge (CNI bridge + host-local), written there by the node (empty: the runtime's own CNI configuration is used).")
    var cniConfDir: String?

    @Flag(inversion: .prefixedNo, help: "Masquerade pods' traffic leaving the node (with --cni-conf-dir).")
    var podMasquerade = true

    @Flag(help: "Run EdgeMesh: cluster DNS on --cluster-dns for the node's pods, a proxy for every ClusterIP, traffic to pods on other nodes relayed through the cloud. Adds local routes for the DNS address and --service-cluster-ip-range (needs CAP_NET_ADMIN; meant for a node that owns its network namespace).")
    var edgemesh = false

    @Option(help: "The DNS address pods are given (with --edgemesh: served by the node; default 169.254.96.16, KubeEdge's).")
    var clusterDns: String?

    @Option(help: "The cluster's DNS domain.")
    var clusterDomain = "cluster.local"

    @Option(help: "The Services' ClusterIP range (the API server's).")
    var serviceClusterIpRange = "10.96.0.0/12"

    @Option(parsing: .upToNextOption, help: "Upstream DNS servers (host[:port]) for names outside the cluster (default: the node's /etc/resolv.conf).")
    var upstreamDns: [String] = []

    @Option(help: "Serve as an EdgeMesh relay node on host:port: nodes that cannot dial each other (given this node with --mesh-relay) reach each other's pods through it, with or without the cloud.")
    var meshRelayListen: String?

    @Option(parsing: .upToNextOption, help: "EdgeMesh relay nodes, <node name>=<host>:<port> (KubeEdge's relayNodes): kept connected; traffic to pods on nodes this one cannot dial goes through them, else through the cloud.")
    var meshRelay: [String] = []

    @Option(help: "Port of the servicebus on 127.0.0.1 for apps calling cloud REST endpoints through Rules (KubeEdge's 9060; 0: off, the default — the cloud's calls to apps on the node work either way).")
    var servicebusPort = 0

    @Flag(inversion: .prefixedNo, help: "Run the built-in local-path CSI driver (local-path.csi.swiftedge.io: volumes are directories under --local-path-dir; the cloud's default StorageClass `local-path` uses it).")
    var localPath = true

    @Option(help: "Directory of the local-path driver's volumes (default: <data-dir>/storage).")
    var localPathDir: String?

    @Option(help: "Seconds each call to a CSI plugin may take (kubelet: 120).")
    var csiTimeout = 60

    @Option(help: "Seconds between volume stats of the node's CSI volumes (kubelet_volume_stats_* metrics; kubelet: 60).")
    var volumeStatsPeriod = 60

    @OptionGroup var logging: LoggingOptions

    public init() {}

    /// The settings in force: flags, then the config file, then the defaults.
    public struct Settings: Sendable {
        public var cloud: String
        public var cloudhubPort: Int
        public var certPort: Int
        public var nodeName: String
        public var token: String?
        public var dataDir: String
        public var database: String
        public var heartbeat: Double
        public var metaserverPort: Int
        public var nodeIP: String
        public var labels: [String: String]
        public var nodeStatusInterval: Double
        public var rotateCertificates: Bool
        public var remoteRuntimeEndpoint: String
        public var podsDir: String
        public var podLogsDir: String
        public var metricsPort: Int
        public var mqttServer: String
        public var mqttTLS: EdgeCoreConfig.EventBusTLS?
        public var mqttUsername: String?
        public var mqttPassword: String?
        public var dmiSocket: String
    }

    public func settings() throws -> Settings {
        let file = try config.map { try ConfigFile.load(EdgeCoreConfig.self, path: $0) } ?? EdgeCoreConfig()
        let d = EdgeCoreConfig.defaults
        let hub = file.modules?.edgeHub, edged = file.modules?.edged, meta = file.modules?.metaManager?.metaServer
        let ws = hub?.websocket?.server.flatMap(splitHostPort), https = hub?.httpServer.flatMap(splitHostPort)
        guard let cloud = cloud ?? ws?.host ?? https?.host else {
            throw ValidationError("no cloud address: give --cloud or modules.edgeHub.websocket.server in the config file")
        }
        guard let nodeName = nodeName ?? edged?.tailoredKubeletFlag?.hostnameOverride.flatMap({ $0.isEmpty ? nil : $0 }) else {
            throw ValidationError("no node name: give --node-name or modules.edged.tailoredKubeletFlag.hostnameOverride in the config file")
        }
        var nodeLabels = edged?.tailoredKubeletFlag?.nodeLabels ?? [:]
        for l in labels {
            let kv = l.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, !kv[0].isEmpty else { throw ValidationError("label \"\(l)\" is not key=value") }
            nodeLabels[kv[0]] = kv[1]
        }
        let dataDir = dataDir ?? file.swiftedge?.dataDir ?? d.swiftedge!.dataDir!
        var metaPort = metaserverPort ?? (meta?.enable == false ? 0 : meta?.server.flatMap(splitHostPort)?.port) ?? Defaults.metaServerPort
        if metaPort < 0 { metaPort = 0 }
        return Settings(
            cloud: cloud, cloudhubPort: cloudhubPort ?? ws?.port ?? Defaults.cloudHubPort, certPort: certPort ?? https?.port ?? Defaults.certificatePort, nodeName: nodeName,
            token: token ?? hub?.token.flatMap { $0.isEmpty ? nil : $0 }, dataDir: dataDir,
            database: file.database?.dataSource.flatMap { $0.isEmpty ? nil : $0 } ?? dataDir + "/edge.db",
            heartbeat: heartbeat ?? hub?.heartbeat.map(Double.init) ?? 15, metaserverPort: metaPort,
            nodeIP: nodeIP ?? edged?.tailoredKubeletFlag?.nodeIP.flatMap { $0.isEmpty ? nil : $0 } ?? "127.0.0.1", labels: nodeLabels,
            nodeStatusInterval: nodeStatusInterval ?? file.swiftedge?.nodeStatusInterval.map(Double.init) ?? 10,
            rotateCertificates: rotateCertificates ?? hub?.rotateCertificates ?? true,
            remoteRuntimeEndpoint: remoteRuntimeEndpoint ?? edged?.tailoredKubeletConfig?.containerRuntimeEndpoint
                ?? d.modules!.edged!.tailoredKubeletConfig!.containerRuntimeEndpoint!,
            podsDir: podsDir ?? dataDir + "/pods", podLogsDir: podLogsDir ?? file.swiftedge?.podLogsDir ?? Defaults.podLogsDirectory,
            metricsPort: metricsPort ?? file.swiftedge?.metricsPort ?? Defaults.edgeMetricsPort,
            mqttServer: mqttServer ?? (file.modules?.eventBus?.enable == false ? "" : file.modules?.eventBus?.mqttServerExternal) ?? "tcp://127.0.0.1:1883",
            mqttTLS: mqttCaFile != nil || mqttCertFile != nil
                ? EdgeCoreConfig.EventBusTLS(enable: true, tlsMqttCAFile: mqttCaFile, tlsMqttCertFile: mqttCertFile, tlsMqttPrivateKeyFile: mqttKeyFile)
                : file.modules?.eventBus?.eventBusTLS.flatMap { $0.enable == true ? $0 : nil },
            mqttUsername: mqttUsername ?? file.modules?.eventBus?.mqttUsername,
            mqttPassword: try mqttPasswordFile.map { path in
                guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw ValidationError("cannot read --mqtt-password-file \(path)") }
                return String(text.trimming(where: \.isNewline))
            } ?? file.modules?.eventBus?.mqttPassword,
            dmiSocket: dmiSock ?? file.modules?.deviceTwin?.dmiSockPath ?? dataDir + "/dmi.sock")
    }

    public func run() async throws {
        if defaultconfig {
            print(try ConfigFile.yaml(EdgeCoreConfig.defaults), terminator: "")
            return
        }
        let s: Settings
        do { s = try settings() } catch let e as ConfigError { throw ValidationError(e.message) }
        let registry = bootstrapObservability()
        let logger = logging.makeLogger("swiftedge.edge")
        try FileManager.default.createDirectory(atPath: s.dataDir, withIntermediateDirectories: true)
        let bootstrap = NodeBootstrap(certServer: "\(s.cloud):\(s.certPort)", nodeName: s.nodeName, directory: s.dataDir + "/certs", logger: logger)
        let credentials: NodeCredentials
        do { credentials = try await bootstrap.credentials(token: s.token) } catch {
            throw ValidationError("\(error)")
        }
        let store = try SQLiteMetaStore(path: s.database, recover: recoverStore, logger: logger)
        let podTokens = PodTokenStore(storage: store)
        var config = EdgeHubConfiguration(cloudHost: s.cloud, nodeName: s.nodeName, credentials: credentials)
        config.cloudPort = s.cloudhubPort
        config.heartbeat = .seconds(s.heartbeat)
        let routed = RouterTargets()
        // CSI controller calls the cloud makes through this node's plugins.
        let (csiCalls, csiCallQueue) = CSIControllerRelay.makeCallQueue()
        let hub = try EdgeHub(configuration: config, logger: logger, inventory: { try await store.inventory() }) { message in
            // Router messages (group `user`) go to the eventbus and servicebus; objects to the store.
            if message.route.group == RouterMessage.group {
                do {
                    if let r = try RouterMessage(message) { await routed.deliver(r, message) }
                } catch {
                    logger.warning("router message dropped", metadata: ["resource": "\(message.route.resource)", "error": "\(error)"])
                }
                return
            }
            if message.route.resource.split(separator: "/").dropFirst().first == Substring(EdgeResourceKind.volume.wireName),
               CSIControllerCall.Operation(wire: message.route.operation) != nil
            {
                csiCallQueue.yield(message)
                return
            }
            try await store.apply(message)
            logger.debug("stored", metadata: ["operation": "\(message.route.operation.rawValue)", "resource": "\(message.route.resource)",
                                               "resourceVersion": "\(message.resourceVersion ?? "")"])
        }
        print("edge node \(s.nodeName) joined; connecting to \(s.cloud):\(s.cloudhubPort)")
        fflush(nil)
        let nodeLabels = s.labels
        let meshDNS: IPv4Address?
        if let text = clusterDns {
            guard let ip = IPv4Address(text) else { throw ValidationError("--cluster-dns \(text) is not an IPv4 address") }
            meshDNS = ip
        } else {
            meshDNS = edgemesh ? EdgeMeshConfiguration(nodeName: s.nodeName).dnsAddress : nil
        }
        guard let serviceCIDR = IPv4Network(serviceClusterIpRange), serviceCIDR.description == serviceClusterIpRange else {
            throw ValidationError("--service-cluster-ip-range \(serviceClusterIpRange) is not an IPv4 network in CIDR form")
        }
        let dialer = TunnelDialer()
        let csiRegistry = CSIPluginRegistry()
        var csiVolumes: CSIVolumeManager?
        var edged: Edged?
        var runtime: CRIRuntime?
        if !s.remoteRuntimeEndpoint.isEmpty {
            let cri = try CRIRuntime(endpoint: s.remoteRuntimeEndpoint, logger: logger)
            var edgedConfig = EdgedConfiguration(nodeName: s.nodeName, nodeIP: s.nodeIP, podsDirectory: s.podsDir, logDirectory: s.podLogsDir)
            if metaserverAuthorization && s.metaserverPort > 0 { edgedConfig.inClusterAPI = InClusterAPI(host: "127.0.0.1", port: s.metaserverPort) }
            if let dir = cniConfDir, !dir.isEmpty {
                var net = PodNetworkConfiguration(cniConfDirectory: dir, cniDataDirectory: s.dataDir + "/cni")
                net.masquerade = podMasquerade
                edgedConfig.podNetwork = net
            }
            if let dns = meshDNS { edgedConfig.clusterDNS = ClusterDNSConfiguration(servers: [dns.description], domain: clusterDomain) }
            // Pods' bound tokens come from the cloud's TokenRequest, over the channel.
            let tokens = ServiceAccountTokenSource(store: podTokens) { namespace, serviceAccount, request in
                let ref = ResourceRef(namespace: namespace, kind: .serviceAccountToken, name: serviceAccount)
                guard let answer = await hub.request(UpstreamReport.query(ref, content: request).message(source: MessageSource.edged), timeout: .seconds(15)) else {
                    throw TokenRequestError("the cloud did not answer the token request (offline?)")
                }
                if let refusal = answer.content["ErrStatus"]["message"].stringValue { throw TokenRequestError(refusal) }
                return answer.content
            }
            var volumeConfig = CSIVolumeConfiguration(nodeName: s.nodeName, pluginsDirectory: s.dataDir + "/plugins", podsDirectory: s.podsDir)
            volumeConfig.callTimeout = .seconds(max(1, csiTimeout))
            let volumes = CSIVolumeManager(configuration: volumeConfig, registry: csiRegistry, logger: logger) { key in try await store.get(key)?.value }
            csiVolumes = volumes
            edgedConfig.csiVolumes = volumes
            let e = Edged(configuration: edgedConfig, runtime: cri, store: store, upstream: { hub.send($0) }, connection: hub.connection,
                          tokens: tokens, logger: logger)
            edged = e
            runtime = cri
        }
        var health: (@Sendable () -> RuntimeHealth)?
        if let e = edged { health = { RuntimeHealth(ready: e.runtimeReady, version: e.containerRuntimeVersion) } }
        let reporter = NodeStatusReporter(identity: NodeIdentity(name: s.nodeName, labels: nodeLabels, internalIP: s.nodeIP), hub: hub,
                                          connections: hub.connection.updates(), interval: .milliseconds(Int64(s.nodeStatusInterval * 1000)),
                                          runtime: health, logger: logger)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        // Started in this order, stopped in reverse: Edged stops before the runtime client, and
        // before the CSI plugins it unpublishes volumes through. (A node without a runtime still
        // registers plugins and serves the cloud's controller calls.)
        do {
            let reporter = CSINodeReporter(nodeName: s.nodeName, registry: csiRegistry, connection: hub.connection) { hub.send($0) }
            let watcher = CSIPluginWatcher(configuration: .init(directory: s.dataDir + "/plugins_registry"), registry: csiRegistry, logger: logger) { _ in
                reporter.report()
            }
            services += [.init(service: reporter), .init(service: watcher),
                         .init(service: CSIControllerRelay(registry: csiRegistry, calls: csiCalls, timeout: .seconds(min(50, max(1, csiTimeout))), logger: logger) { hub.send($0) })]
            if let csiVolumes {
                services.append(.init(service: CSIVolumeStats(volumes: csiVolumes, period: .seconds(max(1, volumeStatsPeriod)), logger: logger)))
            }
            if localPath {
                var c = LocalPathConfiguration(nodeID: s.nodeName, storageDirectory: localPathDir ?? s.dataDir + "/storage",
                                               socket: s.dataDir + "/plugins/\(LocalPathDriver.defaultName)/csi.sock",
                                               registrationDirectory: s.dataDir + "/plugins_registry")
                c.driverName = LocalPathDriver.defaultName
                services.append(.init(service: LocalPathDriver(configuration: c, logger: logger)))
            }
        }
        if let runtime, let edged {
            services += [.init(service: runtime), .init(service: edged), .init(service: EdgeStreamClient(hub: hub, provider: edged, dialer: dialer, logger: logger))]
        }
        let identity: @Sendable () -> MeshIdentity = {
            let c = hub.credentials
            return MeshIdentity(certificatePEM: c.certificatePEM, privateKeyPEM: c.privateKeyPEM, caPEM: c.caPEM)
        }
        var relayServer: MeshRelayServer?
        if let listen = meshRelayListen {
            guard let (host, port) = splitHostPort(listen) else { throw ValidationError("--mesh-relay-listen \(listen) is not host:port") }
            let server = MeshRelayServer(host: host, port: port, identity: identity, logger: logger)
            relayServer = server
            services.append(.init(service: server))
        }
        var relayClients: [MeshRelayClient] = []
        for text in meshRelay {
            guard let peer = MeshRelayPeer(text) else { throw ValidationError("--mesh-relay \(text) is not <node name>=<host>:<port>") }
            // Streams the relay opens on this node reach its pods through Edged (a node without a
            // runtime has none to reach, but still relays its own clients' traffic).
            let provider: any StreamProvider = edged ?? NoPods()
            let client = MeshRelayClient(peer: peer, identity: identity, provider: provider, logger: logger)
            relayClients.append(client)
            services.append(.init(service: client))
        }
        if edgemesh {
            var mesh = EdgeMeshConfiguration(nodeName: s.nodeName)
            if let meshDNS { mesh.dnsAddress = meshDNS }
            mesh.clusterDomain = clusterDomain
            mesh.serviceCIDR = serviceCIDR
            mesh.upstream = upstreamDns.isEmpty
                ? EdgeMeshConfiguration.nameservers(resolvConf: (try? String(contentsOfFile: "/etc/resolv.conf", encoding: .utf8)) ?? "", excluding: mesh.dnsAddress)
                : upstreamDns
            let clients = relayClients, relayTunnels = relayServer?.tunnels
            // Through a relay node while one is connected (it works without the cloud), else through the cloud.
            let relay: MeshRelay = { node, namespace, pod, port in
                if let relayTunnels, relayTunnels.isConnected(node) {
                    return try await relayTunnels.open(node: node, StreamRequest(kind: .portforward, namespace: namespace, pod: pod, container: "", port: port))
                }
                let request = StreamRequest(kind: .relay, namespace: namespace, pod: pod, container: "", port: port, node: node)
                for c in clients where c.dialer.connected.value {
                    if let stream = try? await c.dialer.open(request) { return stream }
                }
                return try await dialer.open(request)
            }
            services.append(.init(service: EdgeMesh(configuration: mesh, store: store, relay: relay, logger: logger)))
        }
        var twinConfig = DeviceTwinConfiguration(nodeName: s.nodeName)
        if !s.mqttServer.isEmpty {
            do {
                var m = try MQTTClientConfiguration(url: s.mqttServer, clientID: "swiftedge-\(s.nodeName)")
                m.username = s.mqttUsername
                m.password = s.mqttPassword
                if let t = s.mqttTLS {
                    var tls = m.tls ?? TLSConfiguration.makeClientConfiguration()
                    if let ca = t.tlsMqttCAFile { tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca)) }
                    if let cert = t.tlsMqttCertFile {
                        tls.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
                        guard let key = t.tlsMqttPrivateKeyFile else { throw ValidationError("--mqtt-cert-file needs --mqtt-key-file") }
                        tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
                    }
                    m.tls = tls
                }
                twinConfig.mqtt = m
            } catch let e as ValidationError { throw e } catch {
                throw ValidationError("EventBus: \(error)")
            }
        }
        twinConfig.dmiSocket = s.dmiSocket.isEmpty ? nil : s.dmiSocket
        if var m = twinConfig.mqtt {
            m.clientID = "swiftedge-\(s.nodeName)-router"
            let bus = RouterEventBus(nodeName: s.nodeName, mqtt: m, upstream: { hub.send($0) }, logger: logger)
            routed.set(eventBus: bus)
            services.append(.init(service: bus))
        }
        var busConfig = ServiceBus.Configuration()
        busConfig.port = servicebusPort
        let serviceBus = ServiceBus(nodeName: s.nodeName, configuration: busConfig, logger: logger, upstream: { hub.send($0) }) { m, timeout in
            await hub.request(m, timeout: timeout)
        }
        routed.set(serviceBus: serviceBus)
        services.append(.init(service: serviceBus))
        let twin = DeviceTwin(configuration: twinConfig, store: store, upstream: { hub.send($0) }, connection: hub.connection, logger: logger)
        services += [.init(service: hub), .init(service: reporter), .init(service: twin)]
        if s.metricsPort > 0 {
            services.append(.init(service: MetricsEndpoint(registry: registry, host: "127.0.0.1", port: s.metricsPort, logger: logger)))
        }
        if s.metaserverPort > 0 {
            var security: MetaServerSecurity?
            if metaserverAuthorization {
                var ips = ["127.0.0.1"]
                if !ips.contains(s.nodeIP) { ips.append(s.nodeIP) }
                let certificates = MetaServerCertificates(directory: s.dataDir + "/certs", nodeName: s.nodeName, dnsNames: ["localhost", s.nodeName],
                                                          ipAddresses: ips, request: { await hub.request($0, timeout: .seconds(40)) }, logger: logger)
                // What the store cannot answer goes to the cloud as the pod's ServiceAccount.
                let forward: @Sendable (ForwardedAPIRequest) async -> ForwardedAPIRequest.Answer? = { request in
                    guard hub.isConnected else { return nil }  // offline: refused at once, not after a timeout
                    guard let content = try? JSON.parse(Array(JSONEncoder().encode(request))) else { return nil }
                    let ref = ResourceRef(namespace: nil, kind: .apiRequest, name: request.extra["authentication.kubernetes.io/pod-name"]?.first ?? "pod")
                    guard let answer = await hub.request(UpstreamReport.query(ref, content: content).message(source: MessageSource.metaManager),
                                                         timeout: .seconds(35))
                    else { return nil }
                    if !answer.content["ErrStatus"].isNull {
                        let status = answer.content["ErrStatus"]
                        return ForwardedAPIRequest.Answer(status: Int(status["code"].intValue ?? 500), contentType: "application/json", body: status.serialized())
                    }
                    return try? JSONValueDecoder().decode(ForwardedAPIRequest.Answer.self, from: answer.content)
                }
                security = MetaServerSecurity(nodeName: s.nodeName, clientCAPEM: credentials.caPEM, tokens: podTokens, forward: forward) {
                    try await certificates.obtain()
                }
            }
            services.append(.init(service: MetaServer(store: store, port: s.metaserverPort, security: security, logger: logger)))
        }
        if s.rotateCertificates {
            services.append(.init(service: CertificateRotation(bootstrap: bootstrap, credentials: credentials, logger: logger) { renewed in
                try await hub.updateCredentials(renewed)
            }))
        }
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
