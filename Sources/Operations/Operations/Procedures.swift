import AsyncHTTPClient
import CloudCore
import ComponentConfig
import ContainerRuntime
import DefaultSettings
import EdgeHub
import Foundation
import KubeClient
import Logging
import NIOSSL
import PKI

/// Where `init`, `join` and `reset` keep things (KubeEdge's layout under a root that tests move).
public struct InstallPaths: Sendable {
    /// Config files go to `<configDir>/config/cloudcore.yaml` and `…/edgecore.yaml`.
    public var configDir: String
    /// Where systemd unit files are written.
    public var systemdDir: String
    /// Run the process in the background (pid and log files in its data directory) instead of a unit.
    public var noSystemd: Bool

    public init(configDir: String = Defaults.configDirectory, systemdDir: String = Defaults.systemdDirectory, noSystemd: Bool = false) {
        self.configDir = configDir; self.systemdDir = systemdDir; self.noSystemd = noSystemd
    }

    public var cloudConfig: String { configDir + "/config/cloudcore.yaml" }
    public var edgeConfig: String { configDir + "/config/edgecore.yaml" }
}

/// `swiftedge init` (keadm init): writes cloudcore.yaml, installs and starts cloudcore (a systemd
/// unit or a background process), waits until it serves and prints the join command.
public struct CloudInit: Sendable {
    public var advertiseAddress: [String] = []
    public var kubeconfig: String?
    public var dataDir = Defaults.cloudDataDirectory
    public var bindAddress = "0.0.0.0"
    public var cloudhubPort = Defaults.cloudHubPort
    public var certPort = Defaults.certificatePort
    public var apiPort = Defaults.apiServerPort
    public var metricsPort = Defaults.cloudMetricsPort
    /// Seconds to wait for the cloud to serve.
    public var timeout = 120
    /// Write the configuration again even if the cloud was set up before.
    public var force = false
    public var paths: InstallPaths

    public init(paths: InstallPaths) { self.paths = paths }

    public func run() async throws {
        var progress = Progress(4)
        let advertise = advertiseAddress.isEmpty ? [primaryIPv4() ?? "127.0.0.1"] : advertiseAddress
        progress.next("Writing \(paths.cloudConfig)")
        if FileManager.default.fileExists(atPath: paths.cloudConfig), !force {
            throw OperationError("the cloud is already set up here (\(paths.cloudConfig)): run `swiftedge reset` first, or pass --force")
        }
        var config = CloudCoreConfig.defaults
        config.kubeAPIConfig?.kubeConfig = kubeconfig ?? ""
        config.modules?.cloudHub?.advertiseAddress = advertise
        config.modules?.cloudHub?.websocket = .init(enable: true, address: bindAddress, port: cloudhubPort)
        config.modules?.cloudHub?.https = .init(enable: true, address: bindAddress, port: certPort)
        config.commonConfig?.monitorServer?.bindAddress = "\(bindAddress):\(metricsPort)"
        config.swiftedge = .init(dataDir: dataDir, apiServer: .init(enable: kubeconfig == nil, address: "127.0.0.1", port: apiPort))
        do { try ConfigFile.save(config, path: paths.cloudConfig) } catch let e as ConfigError { throw OperationError(e.message) }

        progress.next("Installing cloudcore")
        let process = ManagedProcess(name: "cloudcore", description: "SwiftEdge cloud (CloudHub, EdgeController, embedded API server)",
                                     executable: ownExecutable(), arguments: ["cloud", "--config", paths.cloudConfig],
                                     logPath: dataDir + "/cloudcore.log", pidPath: dataDir + "/cloudcore.pid", unitDirectory: paths.systemdDir)
        let detached: ManagedProcess?
        do { detached = try await install(process, paths: paths, progress: progress) } catch let e as ConfigError { throw OperationError(e.message) }

        progress.next("Waiting for cloudcore to serve (up to \(timeout) s)")
        let adminKubeconfig = kubeconfig ?? dataDir + "/admin.kubeconfig"
        var quiet = Logger(label: "swiftedge.init")
        quiet.logLevel = .critical
        let token: String = try await waitUntil("waiting for the join token", timeout: .seconds(timeout), detached: detached) {
            guard FileManager.default.fileExists(atPath: adminKubeconfig),
                  let client = try? HTTPKubeClient(config: try KubeConfig.load(path: adminKubeconfig), logger: quiet) else { return nil }
            let t = try? await CloudSecrets.currentToken(client: client)
            try? await client.shutdown()
            return t
        }
        let connectHost = bindAddress == "0.0.0.0" ? "127.0.0.1" : bindAddress
        let _: Bool = try await waitUntil("waiting for the certificate service on \(connectHost):\(certPort)", timeout: .seconds(timeout), detached: detached) {
            (try? await Preflight.reach(host: connectHost, port: certPort, what: "certificate service", timeout: .seconds(1))) == nil ? nil : true
        }

        progress.next("Ready")
        print("""

            SwiftEdge cloud is running (\(ManagedProcess.systemdRunning && !paths.noSystemd ? "systemd unit cloudcore.service" : "pid file \(process.pidPath)")).
              kubectl:    export KUBECONFIG=\(adminKubeconfig)
              join a node (on the edge machine):
                swiftedge join --cloudcore-ipport \(advertise[0]):\(cloudhubPort) --certport \(certPort) --token \(token) --edgenode-name <name>
              a new token later:  swiftedge gettoken --kubeconfig \(adminKubeconfig)
            """)
    }
}


/// `swiftedge join` (keadm join): checks the token and the path to the cloud, obtains the node
/// certificate, writes edgecore.yaml, installs and starts edgecore, waits until the node is
/// registered. A failure names its cause and leaves nothing behind.
public struct EdgeJoin: Sendable {
    /// CloudHub's `ip:port`.
    public var cloudcoreIpport: String
    public var token: String
    /// Default: the host name.
    public var edgenodeName: String?
    /// `key=value`, comma-separated or repeated.
    public var labels: [String] = []
    public var remoteRuntimeEndpoint = Defaults.containerRuntimeEndpoint
    public var certPort = Defaults.certificatePort
    public var dataDir = Defaults.edgeDataDirectory
    public var podLogsDir = Defaults.podLogsDirectory
    /// Default: the local address the node reaches the cloud from.
    public var nodeIP: String?
    public var metaserverPort = Defaults.metaServerPort
    public var metricsPort = Defaults.edgeMetricsPort
    /// Seconds to wait for the node to register.
    public var timeout = 120
    /// Join again even if this machine has joined before (its certificates are replaced).
    public var force = false
    public var paths: InstallPaths

    public init(cloudcoreIpport: String, token: String, paths: InstallPaths) {
        self.cloudcoreIpport = cloudcoreIpport; self.token = token; self.paths = paths
    }

    /// `cloudcoreIpport` as host and port, `labels` as a map; a clear error for either malformed.
    public static func validate(cloudcoreIpport: String, labels: [String]) throws(OperationError)
        -> (hub: (host: String, port: Int), labels: [String: String])
    {
        guard let hub = splitHostPort(cloudcoreIpport) else {
            throw OperationError("--cloudcore-ipport \"\(cloudcoreIpport)\" is not ip:port (e.g. 192.0.2.10:10000)")
        }
        var nodeLabels: [String: String] = [:]
        for l in labels.flatMap({ $0.split(separator: ",") }) {
            let kv = l.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, !kv[0].isEmpty else { throw OperationError("label \"\(l)\" is not key=value") }
            nodeLabels[kv[0]] = kv[1]
        }
        return (hub, nodeLabels)
    }

    public func run() async throws {
        var progress = Progress(5)
        let nodeName = edgenodeName ?? ProcessInfo.processInfo.hostName.lowercased()
        let (hub, nodeLabels) = try Self.validate(cloudcoreIpport: cloudcoreIpport, labels: labels)

        progress.next("Checking the token")
        let joinToken: JoinToken
        do { joinToken = try JoinToken(parsing: token) } catch { throw OperationError(error.message) }
        if let exp = joinToken.expiry, exp <= Date() {
            throw OperationError("token expired at \(exp): run `swiftedge gettoken` on the cloud for a new one")
        }
        if FileManager.default.fileExists(atPath: paths.edgeConfig) || FileManager.default.fileExists(atPath: dataDir + "/certs"), !force {
            throw OperationError("this machine has joined before (\(paths.edgeConfig), \(dataDir)/certs): run `swiftedge reset` first, or pass --force")
        }

        progress.next("Reaching the cloud at \(hub.host):\(certPort) and \(hub.host):\(hub.port)")
        do {
            try await Preflight.reach(host: hub.host, port: certPort, what: "certificate service, --certport")
            try await Preflight.reach(host: hub.host, port: hub.port, what: "CloudHub, --cloudcore-ipport")
        } catch let e as ConfigError { throw OperationError(e.message) }
        let localIP = nodeIP ?? localAddress(towards: hub.host, port: hub.port) ?? "127.0.0.1"

        progress.next("Requesting the node certificate for \(nodeName)")
        var quiet = Logger(label: "swiftedge.join")
        quiet.logLevel = .error
        if force { try? FileManager.default.removeItem(atPath: dataDir + "/certs") }
        var bootstrap = NodeBootstrap(certServer: "\(hub.host):\(certPort)", nodeName: nodeName, directory: dataDir + "/certs", logger: quiet)
        bootstrap.connectTimeout = .seconds(5)
        do { _ = try await bootstrap.join(token: joinToken) } catch let e as JoinError {
            throw OperationError(e.message)
        }
        progress.note("certificate in \(dataDir)/certs")

        progress.next("Writing \(paths.edgeConfig) and installing edgecore")
        var config = EdgeCoreConfig.defaults
        config.database?.dataSource = dataDir + "/edge.db"
        config.modules?.edgeHub?.httpServer = "https://\(hub.host):\(certPort)"
        config.modules?.edgeHub?.websocket?.server = "\(hub.host):\(hub.port)"
        config.modules?.edgeHub?.token = ""  // used once; the node has its certificate now
        config.modules?.edged?.tailoredKubeletConfig?.containerRuntimeEndpoint = remoteRuntimeEndpoint
        config.modules?.edged?.tailoredKubeletFlag = .init(hostnameOverride: nodeName, nodeIP: localIP, nodeLabels: nodeLabels)
        config.modules?.metaManager?.metaServer = .init(enable: metaserverPort > 0, server: "127.0.0.1:\(metaserverPort)")
        config.swiftedge = .init(dataDir: dataDir, podLogsDir: podLogsDir, nodeStatusInterval: 10, metricsPort: metricsPort)
        let process = ManagedProcess(name: "edgecore", description: "SwiftEdge edge node", executable: edgeExecutable(),
                                     arguments: ["edge", "--config", paths.edgeConfig],
                                     logPath: dataDir + "/edgecore.log", pidPath: dataDir + "/edgecore.pid", unitDirectory: paths.systemdDir)
        let detached: ManagedProcess?
        do {
            try ConfigFile.save(config, path: paths.edgeConfig)
            detached = try await install(process, paths: paths, progress: progress)
        } catch let e as ConfigError { throw OperationError(e.message) }

        progress.next("Waiting for \(nodeName) to register with the cloud (up to \(timeout) s)")
        let certs = dataDir + "/certs"
        if metaserverPort > 0 {
            // The node's MetaServer, as the node (its client certificate). Its serving certificate
            // comes from the cluster's signer, whose CA the node does not hold: not verified here
            // (loopback, the process just started).
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.certificateVerification = .none
            tls.certificateChain = try NIOSSLCertificate.fromPEMFile(certs + "/server.crt").map { .certificate($0) }
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: certs + "/server.key", format: .pem))
            let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
            let url = "https://127.0.0.1:\(metaserverPort)/api/v1/nodes/\(nodeName)"
            do {
                let _: Bool = try await waitUntil("waiting for the node to connect", timeout: .seconds(timeout), detached: detached) {
                    guard let r = try? await http.execute(HTTPClientRequest(url: url), timeout: .seconds(2)) else { return nil }
                    return r.status == .ok ? true : nil
                }
                try? await http.shutdown()
            } catch {
                try? await http.shutdown()
                throw error
            }
        }
        print("""

            Edge node \(nodeName) joined \(hub.host):\(hub.port) and is connected.
              on the cloud:  kubectl get nodes \(nodeName) -o wide
              local API:     kubectl --server https://127.0.0.1:\(metaserverPort) --client-certificate \(certs)/server.crt \\
                               --client-key \(certs)/server.key --insecure-skip-tls-verify get pods -A
                             (MetaServer's certificate is signed by the cluster CA: pass it with --certificate-authority instead)
              undo:          swiftedge reset
            """)
    }
}


/// `swiftedge reset`: undoes `init` and/or `join` on this machine: stops and removes the unit or
/// background process, the edge node's pods in the container runtime, the data directories and
/// the config files.
public struct NodeReset: Sendable {
    public enum Role: String, Sendable { case cloud, edge }
    /// Nil: whatever is set up here.
    public var role: Role?
    public var paths: InstallPaths

    public init(role: Role?, paths: InstallPaths) { self.role = role; self.paths = paths }

    public func run() async throws {
        var did = false
        if role != .cloud, FileManager.default.fileExists(atPath: paths.edgeConfig) {
            try await resetEdge()
            did = true
        }
        if role != .edge, FileManager.default.fileExists(atPath: paths.cloudConfig) {
            try await resetCloud()
            did = true
        }
        if !did { print("nothing to reset: no \(role == .edge ? paths.edgeConfig : role == .cloud ? paths.cloudConfig : "\(paths.cloudConfig) or \(paths.edgeConfig)")") }
    }

    func managed(_ name: String, executable: String = ownExecutable(), dataDir: String) -> ManagedProcess {
        ManagedProcess(name: name, description: "", executable: executable, arguments: [],
                       logPath: dataDir + "/\(name).log", pidPath: dataDir + "/\(name).pid", unitDirectory: paths.systemdDir)
    }

    func resetEdge() async throws {
        let config: EdgeCoreConfig
        do { config = try ConfigFile.load(EdgeCoreConfig.self, path: paths.edgeConfig) } catch {
            throw OperationError("\(error)\nreset reads the data directory and node name from it: fix the file (or remove the node's files by hand)")
        }
        let dataDir = config.swiftedge?.dataDir ?? Defaults.edgeDataDirectory
        let nodeName = config.modules?.edged?.tailoredKubeletFlag?.hostnameOverride ?? ""
        var progress = Progress(4)
        progress.next("Stopping edgecore")
        // The node runs as swiftedge-edge or as `swiftedge edge`, whichever join found; either may
        // be what is running now (swiftedge-edge can have been installed after the join).
        let candidates = [edgeExecutable(), ownExecutable()].map { managed("edgecore", executable: $0, dataDir: dataDir) }
        let process = candidates.first { $0.runningPID() != nil } ?? candidates[0]
        try? process.removeUnit()
        if await process.stopDetached() { progress.note("stopped the background process") }
        progress.next("Removing the node's pods from the container runtime")
        if let endpoint = config.modules?.edged?.tailoredKubeletConfig?.containerRuntimeEndpoint, !endpoint.isEmpty, !nodeName.isEmpty {
            let socket = endpoint.hasPrefix("unix://") ? String(endpoint.dropFirst(7)) : endpoint
            if FileManager.default.fileExists(atPath: socket) {
                let removed = try await removePods(endpoint: endpoint, node: nodeName)
                progress.note("removed \(removed) pod sandbox(es) of \(nodeName)")
            } else {
                progress.note("no runtime at \(endpoint): nothing to remove")
            }
        }
        progress.next("Removing \(dataDir) (certificates, database, pod volumes)")
        for item in ["certs", "edge.db", "edge.db-wal", "edge.db-shm", "pods", "edgecore.log", "edgecore.pid"] {
            try? FileManager.default.removeItem(atPath: dataDir + "/" + item)
        }
        if let db = config.database?.dataSource { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: db + suffix) } }
        if let logs = config.swiftedge?.podLogsDir, let entries = try? FileManager.default.contentsOfDirectory(atPath: logs) {
            // Only the directories of pods that ran here (kubelet's <ns>_<name>_<uid> layout).
            for e in entries where e.split(separator: "_").count >= 3 { try? FileManager.default.removeItem(atPath: logs + "/" + e) }
        }
        rmdir(dataDir)  // only if nothing else is left in it
        progress.next("Removing \(paths.edgeConfig)")
        try? FileManager.default.removeItem(atPath: paths.edgeConfig)
        print("edge node \(nodeName) reset; delete it in the cloud with `kubectl delete node \(nodeName)` if it should not come back")
    }

    /// Stops and removes every sandbox (and so its containers) labelled for this node.
    func removePods(endpoint: String, node: String) async throws -> Int {
        var quiet = Logger(label: "swiftedge.reset")
        quiet.logLevel = .error
        let cri = try CRIRuntime(endpoint: endpoint, logger: quiet)
        return try await withThrowingTaskGroup(of: Int?.self) { group in
            group.addTask { try await cri.run(); return nil }
            defer { cri.shutdown() }
            let sandboxes = try await cri.listPodSandboxes(labels: ["swiftedge.io/node": node])
            for c in try await cri.listContainers(labels: ["swiftedge.io/node": node]) {
                try? await cri.stopContainer(c.id, timeoutSeconds: 10)
                try? await cri.removeContainer(c.id)
            }
            for s in sandboxes {
                try? await cri.stopPodSandbox(s.id)
                try await cri.removePodSandbox(s.id)
            }
            cri.shutdown()
            return sandboxes.count
        }
    }

    func resetCloud() async throws {
        let config: CloudCoreConfig
        do { config = try ConfigFile.load(CloudCoreConfig.self, path: paths.cloudConfig) } catch {
            throw OperationError("\(error)\nreset reads the data directory from it: fix the file (or remove the cloud's files by hand)")
        }
        let dataDir = config.swiftedge?.dataDir ?? Defaults.cloudDataDirectory
        var progress = Progress(3)
        progress.next("Stopping cloudcore")
        let process = managed("cloudcore", dataDir: dataDir)
        try? process.removeUnit()
        if await process.stopDetached() { progress.note("stopped the background process") }
        progress.next("Removing \(dataDir) (database, certificates, admin kubeconfig)")
        guard URL(fileURLWithPath: dataDir).standardizedFileURL.pathComponents.count > 2 else {
            throw OperationError("refusing to remove \(dataDir) (swiftedge.dataDir in \(paths.cloudConfig)): too close to /")
        }
        try? FileManager.default.removeItem(atPath: dataDir)
        progress.next("Removing \(paths.cloudConfig)")
        try? FileManager.default.removeItem(atPath: paths.cloudConfig)
        if let kc = config.kubeAPIConfig?.kubeConfig, !kc.isEmpty {
            print("note: the cluster at \(kc) keeps its kubeedge namespace, ObjectSync CRDs and edge Nodes; remove them with kubectl if wanted")
        }
        print("cloud reset")
    }
}

/// A step of `init`/`join`/`reset` that failed, with what to do (printed as `Error: …`, no usage).
public struct OperationError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Prints numbered progress steps (`[2/5] Requesting the node certificate`).
public struct Progress: Sendable {
    let total: Int
    var step = 0
    public init(_ total: Int) { self.total = total }
    public mutating func next(_ what: String) {
        step += 1
        print("[\(step)/\(total)] \(what)")
        fflush(nil)
    }
    public func note(_ what: String) {
        print("      \(what)")
        fflush(nil)
    }
}

/// The path of this executable (what units and background processes run).
public func ownExecutable() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}

/// What the edgecore unit runs: `swiftedge-edge` when it is installed beside this executable (the
/// edge node alone, as KubeEdge installs edgecore: ~1.3 MB less memory on the node than
/// `swiftedge edge`, which also carries the cloud's code), else this executable. Both take
/// `edge --config <file>`.
func edgeExecutable() -> String {
    let own = ownExecutable()
    guard let slash = own.lastIndex(of: "/") else { return own }
    let sibling = String(own[...slash]) + "swiftedge-edge"
    return FileManager.default.isExecutableFile(atPath: sibling) ? sibling : own
}

/// Installs and starts a managed process: a systemd unit where systemd runs (unless
/// `--no-systemd`), else a background process. Returns the process when it runs detached (so
/// waiting can notice it dying), nil under systemd.
func install(_ process: ManagedProcess, paths: InstallPaths, progress: Progress) async throws -> ManagedProcess? {
    if !paths.noSystemd {
        try process.writeUnit()
        progress.note("wrote \(process.unitPath)")
        if ManagedProcess.systemdRunning {
            try process.startWithSystemd()
            progress.note("systemctl enable --now \(process.name).service")
            return nil
        }
        progress.note("systemd is not running on this machine: starting \(process.name) in the background instead")
    }
    let pid = try process.startDetached()
    progress.note("started \(process.name) (pid \(pid), log \(process.logPath))")
    return process
}

/// Polls until `ready` returns a value; fails with the process's log tail if it died.
func waitUntil<T>(_ what: String, timeout: Duration, detached: ManagedProcess?, _ ready: () async -> T?) async throws -> T {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if let v = await ready() { return v }
        if let p = detached, p.runningPID() == nil {
            throw OperationError("\(p.name) exited while \(what):\n\(logTail(p.logPath))")
        }
        try await Task.sleep(for: .milliseconds(200))
    }
    throw OperationError("timed out after \(timeout) \(what)\(detached.map { ":\n" + logTail($0.logPath) } ?? "")")
}

func logTail(_ path: String, lines: Int = 15) -> String {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return "(no log at \(path))" }
    return text.split(separator: "\n").suffix(lines).map { "    " + $0 }.joined(separator: "\n")
}

/// The machine's first non-loopback IPv4 address (what edge nodes on the network reach).
func primaryIPv4() -> String? {
    var list: UnsafeMutablePointer<ifaddrs>?
    guard getifaddrs(&list) == 0, let first = list else { return nil }
    defer { freeifaddrs(list) }
    for p in sequence(first: first, next: { $0.pointee.ifa_next }) {
        guard let sa = p.pointee.ifa_addr, sa.pointee.sa_family == UInt16(AF_INET), (p.pointee.ifa_flags & UInt32(IFF_LOOPBACK)) == 0 else { continue }
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        if getnameinfo(sa, socklen_t(MemoryLayout<sockaddr_in>.size), &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0 {
            return String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }
    return nil
}

/// The local address a connection to `host:port` leaves from (UDP connect sends nothing).
func localAddress(towards host: String, port: Int) -> String? {
    var hints = addrinfo()
    hints.ai_family = AF_INET
    hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
    var res: UnsafeMutablePointer<addrinfo>?
    guard getaddrinfo(host, String(port), &hints, &res) == 0, let ai = res else { return nil }
    defer { freeaddrinfo(res) }
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    guard connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 else { return nil }
    var local = sockaddr_in()
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    guard ok == 0 else { return nil }
    var buf = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
    guard inet_ntop(AF_INET, &local.sin_addr, &buf, socklen_t(buf.count)) != nil else { return nil }
    return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

