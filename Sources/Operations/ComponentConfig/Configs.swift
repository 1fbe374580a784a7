import DefaultSettings
import Foundation
import Yams

/// A configuration file that cannot be used, with the file and the reason.
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// `cloudcore.yaml`: KubeEdge's keys where SwiftEdge has the setting
/// (`cloudcore.config.kubeedge.io/v1alpha2`), SwiftEdge's own under `swiftedge`. Every field is
/// optional: what a file leaves out takes the command's default; flags given on the command line
/// win over the file. Keys SwiftEdge does not use are ignored.
public struct CloudCoreConfig: Codable, Sendable, Equatable {
    public struct KubeAPIConfig: Codable, Sendable, Equatable {
        /// An existing cluster's kubeconfig; empty: the embedded API server.
        public var kubeConfig: String?
        public init(kubeConfig: String? = nil) { self.kubeConfig = kubeConfig }
    }
    public struct Listener: Codable, Sendable, Equatable {
        public var enable: Bool?
        public var address: String?
        public var port: Int?
        public init(enable: Bool? = nil, address: String? = nil, port: Int? = nil) { self.enable = enable; self.address = address; self.port = port }
    }
    public struct CloudHub: Codable, Sendable, Equatable {
        public var advertiseAddress: [String]?
        public var nodeLimit: Int?
        /// Hours between token refreshes (tokens are valid twice as long).
        public var tokenRefreshDuration: Int?
        /// Days a node certificate is valid.
        public var edgeCertSigningDuration: Int?
        public var websocket: Listener?
        public var https: Listener?
        public init(advertiseAddress: [String]? = nil, nodeLimit: Int? = nil, tokenRefreshDuration: Int? = nil, edgeCertSigningDuration: Int? = nil, websocket: Listener? = nil, https: Listener? = nil) { self.advertiseAddress = advertiseAddress; self.nodeLimit = nodeLimit; self.tokenRefreshDuration = tokenRefreshDuration; self.edgeCertSigningDuration = edgeCertSigningDuration; self.websocket = websocket; self.https = https }
    }
    public struct CloudStream: Codable, Sendable, Equatable {
        public var enable: Bool?
        /// The kubelet-style stream server's port (10003).
        public var streamPort: Int?
        /// CA of the client certificates it accepts (kube-apiserver's kubelet client certificate).
        public var tlsStreamCAFile: String?
        public init(enable: Bool? = nil, streamPort: Int? = nil, tlsStreamCAFile: String? = nil) {
            self.enable = enable; self.streamPort = streamPort; self.tlsStreamCAFile = tlsStreamCAFile
        }
    }
    /// KubeEdge's router module (off by default; REST ingress on `port`, 9443).
    public struct Router: Codable, Sendable, Equatable {
        public var enable: Bool?
        public var address: String?
        public var port: Int?
        /// Seconds a REST call may take.
        public var restTimeout: Int?
        public init(enable: Bool? = nil, address: String? = nil, port: Int? = nil, restTimeout: Int? = nil) {
            self.enable = enable; self.address = address; self.port = port; self.restTimeout = restTimeout
        }
    }
    public struct Modules: Codable, Sendable, Equatable {
        public var cloudHub: CloudHub?
        public var cloudStream: CloudStream?
        public var router: Router?
        public init(cloudHub: CloudHub? = nil, cloudStream: CloudStream? = nil, router: Router? = nil) {
            self.cloudHub = cloudHub; self.cloudStream = cloudStream; self.router = router
        }
    }
    public struct MonitorServer: Codable, Sendable, Equatable {
        /// `host:port` of the Prometheus endpoint.
        public var bindAddress: String?
        public init(bindAddress: String? = nil) { self.bindAddress = bindAddress }
    }
    public struct CommonConfig: Codable, Sendable, Equatable {
        public var monitorServer: MonitorServer?
        public init(monitorServer: MonitorServer? = nil) { self.monitorServer = monitorServer }
    }
    /// SwiftEdge's settings that KubeEdge has no key for.
    public struct SwiftEdge: Codable, Sendable, Equatable {
        /// Database, certificates and admin kubeconfig of the embedded API server.
        public var dataDir: String?
        public var apiServer: Listener?
        public init(dataDir: String? = nil, apiServer: Listener? = nil) { self.dataDir = dataDir; self.apiServer = apiServer }
    }

    public var apiVersion: String?
    public var kind: String?
    public var kubeAPIConfig: KubeAPIConfig?
    public var modules: Modules?
    public var commonConfig: CommonConfig?
    public var swiftedge: SwiftEdge?

    public init() {}

    /// The values `swiftedge cloud` uses when given neither flags nor a file.
    public static var defaults: CloudCoreConfig {
        var c = CloudCoreConfig()
        c.apiVersion = "cloudcore.config.kubeedge.io/v1alpha2"
        c.kind = "CloudCore"
        c.kubeAPIConfig = KubeAPIConfig(kubeConfig: "")
        c.modules = Modules(cloudHub: CloudHub(advertiseAddress: [], nodeLimit: 1000, tokenRefreshDuration: 12, edgeCertSigningDuration: 365,
                                               websocket: Listener(enable: true, address: "127.0.0.1", port: Defaults.cloudHubPort),
                                               https: Listener(enable: true, address: "127.0.0.1", port: Defaults.certificatePort)))
        c.commonConfig = CommonConfig(monitorServer: MonitorServer(bindAddress: "127.0.0.1:\(Defaults.cloudMetricsPort)"))
        c.swiftedge = SwiftEdge(dataDir: Defaults.cloudDataDirectory, apiServer: Listener(enable: true, address: "127.0.0.1", port: Defaults.apiServerPort))
        return c
    }
}

/// `edgecore.yaml`: KubeEdge's keys where SwiftEdge has the setting
/// (`edgecore.config.kubeedge.io/v1alpha2`), SwiftEdge's own under `swiftedge`. Every field is
/// optional; flags given on the command line win over the file; unused keys are ignored.
public struct EdgeCoreConfig: Codable, Sendable, Equatable {
    public struct Database: Codable, Sendable, Equatable {
        /// The node's SQLite file.
        public var dataSource: String?
        public init(dataSource: String? = nil) { self.dataSource = dataSource }
    }
    public struct WebSocket: Codable, Sendable, Equatable {
        /// `host:port` of CloudHub.
        public var server: String?
        public init(server: String? = nil) { self.server = server }
    }
    public struct EdgeHub: Codable, Sendable, Equatable {
        /// Seconds between keepalives.
        public var heartbeat: Int?
        /// Join token (used until the node has its certificate).
        public var token: String?
        /// `https://host:port` of the certificate service.
        public var httpServer: String?
        public var websocket: WebSocket?
        public var rotateCertificates: Bool?
        public init(heartbeat: Int? = nil, token: String? = nil, httpServer: String? = nil, websocket: WebSocket? = nil, rotateCertificates: Bool? = nil) { self.heartbeat = heartbeat; self.token = token; self.httpServer = httpServer; self.websocket = websocket; self.rotateCertificates = rotateCertificates }
    }
    public struct KubeletConfig: Codable, Sendable, Equatable {
        public var containerRuntimeEndpoint: String?
        public init(containerRuntimeEndpoint: String? = nil) { self.containerRuntimeEndpoint = containerRuntimeEndpoint }
    }
    public struct KubeletFlag: Codable, Sendable, Equatable {
        public var hostnameOverride: String?
        public var nodeIP: String?
        public var nodeLabels: [String: String]?
        public init(hostnameOverride: String? = nil, nodeIP: String? = nil, nodeLabels: [String: String]? = nil) { self.hostnameOverride = hostnameOverride; self.nodeIP = nodeIP; self.nodeLabels = nodeLabels }
    }
    public struct Edged: Codable, Sendable, Equatable {
        public var tailoredKubeletConfig: KubeletConfig?
        public var tailoredKubeletFlag: KubeletFlag?
        public init(tailoredKubeletConfig: KubeletConfig? = nil, tailoredKubeletFlag: KubeletFlag? = nil) { self.tailoredKubeletConfig = tailoredKubeletConfig; self.tailoredKubeletFlag = tailoredKubeletFlag }
    }
    public struct MetaServer: Codable, Sendable, Equatable {
        public var enable: Bool?
        /// `127.0.0.1:port`.
        public var server: String?
        public init(enable: Bool? = nil, server: String? = nil) { self.enable = enable; self.server = server }
    }
    public struct MetaManager: Codable, Sendable, Equatable {
        public var metaServer: MetaServer?
        public init(metaServer: MetaServer? = nil) { self.metaServer = metaServer }
    }
    public struct EventBusTLS: Codable, Sendable, Equatable {
        public var enable: Bool?
        public var tlsMqttCAFile: String?
        public var tlsMqttCertFile: String?
        public var tlsMqttPrivateKeyFile: String?
        public init(enable: Bool? = nil, tlsMqttCAFile: String? = nil, tlsMqttCertFile: String? = nil, tlsMqttPrivateKeyFile: String? = nil) {
            self.enable = enable; self.tlsMqttCAFile = tlsMqttCAFile; self.tlsMqttCertFile = tlsMqttCertFile; self.tlsMqttPrivateKeyFile = tlsMqttPrivateKeyFile
        }
    }
    public struct EventBus: Codable, Sendable, Equatable {
        public var enable: Bool?
        /// The MQTT broker, `tcp://host:port` or `ssl://host:port` (KubeEdge's external mode; the only mode here).
        public var mqttServerExternal: String?
        public var mqttUsername: String?
        public var mqttPassword: String?
        public var eventBusTLS: EventBusTLS?
        public init(enable: Bool? = nil, mqttServerExternal: String? = nil, mqttUsername: String? = nil, mqttPassword: String? = nil,
                    eventBusTLS: EventBusTLS? = nil)
        {
            self.enable = enable; self.mqttServerExternal = mqttServerExternal; self.mqttUsername = mqttUsername; self.mqttPassword = mqttPassword
            self.eventBusTLS = eventBusTLS
        }
    }
    public struct DeviceTwin: Codable, Sendable, Equatable {
        /// The DMI socket mappers register on.
        public var dmiSockPath: String?
        public init(dmiSockPath: String? = nil) { self.dmiSockPath = dmiSockPath }
    }
    public struct Modules: Codable, Sendable, Equatable {
        public var edgeHub: EdgeHub?
        public var edged: Edged?
        public var metaManager: MetaManager?
        public var eventBus: EventBus?
        public var deviceTwin: DeviceTwin?
        public init(edgeHub: EdgeHub? = nil, edged: Edged? = nil, metaManager: MetaManager? = nil, eventBus: EventBus? = nil,
                    deviceTwin: DeviceTwin? = nil)
        {
            self.edgeHub = edgeHub; self.edged = edged; self.metaManager = metaManager; self.eventBus = eventBus; self.deviceTwin = deviceTwin
        }
    }
    /// SwiftEdge's settings that KubeEdge has no key for.
    public struct SwiftEdge: Codable, Sendable, Equatable {
        /// Certificates, database (unless `database.dataSource` says otherwise) and pod volumes.
        public var dataDir: String?
        public var podLogsDir: String?
        public var nodeStatusInterval: Int?
        public var metricsPort: Int?
        public init(dataDir: String? = nil, podLogsDir: String? = nil, nodeStatusInterval: Int? = nil, metricsPort: Int? = nil) { self.dataDir = dataDir; self.podLogsDir = podLogsDir; self.nodeStatusInterval = nodeStatusInterval; self.metricsPort = metricsPort }
    }

    public var apiVersion: String?
    public var kind: String?
    public var database: Database?
    public var modules: Modules?
    public var swiftedge: SwiftEdge?

    public init() {}

    public static var defaults: EdgeCoreConfig {
        var c = EdgeCoreConfig()
        c.apiVersion = "edgecore.config.kubeedge.io/v1alpha2"
        c.kind = "EdgeCore"
        c.database = Database(dataSource: Defaults.edgeDataDirectory + "/edge.db")
        c.modules = Modules(
            edgeHub: EdgeHub(heartbeat: 15, token: "", httpServer: "https://127.0.0.1:\(Defaults.certificatePort)", websocket: WebSocket(server: "127.0.0.1:\(Defaults.cloudHubPort)"),
                             rotateCertificates: true),
            edged: Edged(tailoredKubeletConfig: KubeletConfig(containerRuntimeEndpoint: Defaults.containerRuntimeEndpoint),
                         tailoredKubeletFlag: KubeletFlag(hostnameOverride: "", nodeIP: "127.0.0.1", nodeLabels: [:])),
            metaManager: MetaManager(metaServer: MetaServer(enable: true, server: "127.0.0.1:\(Defaults.metaServerPort)")),
            eventBus: EventBus(enable: true, mqttServerExternal: "tcp://127.0.0.1:1883"),
            deviceTwin: DeviceTwin(dmiSockPath: Defaults.dmiSocket))
        c.swiftedge = SwiftEdge(dataDir: Defaults.edgeDataDirectory, podLogsDir: Defaults.podLogsDirectory, nodeStatusInterval: 10, metricsPort: Defaults.edgeMetricsPort)
        return c
    }
}

/// Reading and writing the YAML files.
public enum ConfigFile {
    public static func load<C: Decodable>(_ type: C.Type, path: String) throws -> C {
        guard let data = FileManager.default.contents(atPath: path) else { throw ConfigError("cannot read \(path)") }
        guard let text = String(data: data, encoding: .utf8) else { throw ConfigError("\(path) is not UTF-8 text") }
        do {
            return try YAMLDecoder().decode(C.self, from: text)
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw ConfigError("\(path): \(context.codingPath.map(\.stringValue).joined(separator: ".")): \(context.debugDescription)")
        } catch let DecodingError.dataCorrupted(context) {
            throw ConfigError("\(path): not valid YAML: \(context.underlyingError.map { "\($0)" } ?? context.debugDescription)")
        } catch {
            throw ConfigError("\(path): \(error)")
        }
    }

    public static func yaml<C: Encodable>(_ value: C) throws -> String {
        try YAMLEncoder().encode(value)
    }

    /// Writes the file (mode 0600: it may hold a token), creating its directory.
    public static func save<C: Encodable>(_ value: C, path: String) throws {
        let dir = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: path, contents: Data(try yaml(value).utf8), attributes: [.posixPermissions: 0o600]) else {
            throw ConfigError("cannot write \(path)")
        }
    }
}

/// `host:port` → its parts (IPv6 in brackets).
public func splitHostPort(_ s: String) -> (host: String, port: Int)? {
    var rest = Substring(s)
    if rest.hasPrefix("https://") { rest = rest.dropFirst(8) } else if rest.hasPrefix("http://") { rest = rest.dropFirst(7) }
    guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port) else { return nil }
    var host = rest[..<colon]
    if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
    guard !host.isEmpty else { return nil }
    return (String(host), port)
}
