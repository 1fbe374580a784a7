import AsyncSupport
import CSI
import CloudEdgeProtocol
import Foundation
import GRPCCore
import KubeAPI
import Logging
import ServiceLifecycle
import Synchronization

/// A CSI driver registered on this node (kubelet's `csiDrivers` store entry plus what its
/// `NodeGetInfo` answered).
public struct RegisteredCSIPlugin: Sendable, Equatable {
    public var name: String
    public var endpoint: String
    public var versions: [String]
    public var nodeID: String
    public var maxVolumes: Int64
    public var topology: [String: String]
    /// The registration socket it came from.
    public var registrationSocket: String
}

/// The CSI drivers registered on the node, by name.
public final class CSIPluginRegistry: Sendable {
    let plugins = Mutex<[String: RegisteredCSIPlugin]>([:])
    public init() {}

    public func plugin(_ driver: String) -> RegisteredCSIPlugin? { plugins.withLock { $0[driver] } }
    public var all: [RegisteredCSIPlugin] { plugins.withLock { $0.values.sorted { $0.name < $1.name } } }

    func set(_ p: RegisteredCSIPlugin) { plugins.withLock { $0[p.name] = p } }

    /// Removes the driver registered from `socket`; its name, if one was.
    func remove(socket: String) -> String? {
        plugins.withLock { s in
            guard let (name, _) = s.first(where: { $0.value.registrationSocket == socket }) else { return nil }
            s[name] = nil
            return name
        }
    }

    /// The node's CSINode as kubelet's nodeinfomanager writes it (`spec.drivers`, sorted by name).
    public func csiNode(nodeName: String) -> JSON {
        let drivers: [JSON] = all.map { p in
            var d: JSON = ["name": .string(p.name), "nodeID": .string(p.nodeID),
                           "topologyKeys": .array(p.topology.keys.sorted().map { .string($0) })]
            if p.maxVolumes > 0 { d["allocatable"] = ["count": .int(min(p.maxVolumes, Int64(Int32.max)))] }
            return d
        }
        return ["apiVersion": "storage.k8s.io/v1", "kind": "CSINode", "metadata": ["name": .string(nodeName)], "spec": ["drivers": .array(drivers)]]
    }
}

/// kubelet's plugin watcher and registration for CSI plugins: the sockets under
/// `<root>/plugins_registry` (any name not starting with `.`, in subdirectories too) are dialled,
/// `GetInfo` says which driver and endpoint, `NodeGetInfo` the node id and topology, and the
/// plugin is told the outcome (`NotifyRegistrationStatus`). A socket that goes away unregisters its
/// driver; one re-created (a restarted plugin) registers again. A failed registration is retried
/// with back-off. Every change of the registered set is handed to `changed`.
public final class CSIPluginWatcher: Service {
    public struct Configuration: Sendable {
        public var directory: String
        /// How often the directory is looked at (kubelet's reconciler: 1 s).
        public var interval: Duration = .seconds(1)
        public var callTimeout: Duration = .seconds(10)
        public init(directory: String) { self.directory = directory }
    }

    let configuration: Configuration
    let registry: CSIPluginRegistry
    let changed: @Sendable ([RegisteredCSIPlugin]) async -> Void
    let logger: Logger

    public init(configuration: Configuration, registry: CSIPluginRegistry, logger: Logger,
                changed: @escaping @Sendable ([RegisteredCSIPlugin]) async -> Void)
    {
        self.configuration = configuration; self.registry = registry; self.logger = logger; self.changed = changed
    }

    /// A socket file as seen by the last scan: re-created sockets have another inode or ctime.
    struct SocketID: Equatable {
        var device: UInt64, inode: UInt64, ctime: Int, ctimeNanos: Int
    }

    struct Tracked {
        var id: SocketID
        var registered: Bool
        var backoff = Backoff(base: .milliseconds(500), max: .seconds(30))
        var retryAt: ContinuousClock.Instant = .now
    }

    public func run() async throws {
        try FileManager.default.createDirectory(atPath: configuration.directory, withIntermediateDirectories: true)
        var tracked: [String: Tracked] = [:]
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let present = Self.sockets(under: configuration.directory)
            var changedSet = false
            for path in tracked.keys where present[path] != tracked[path]!.id {
                // Gone or re-created: the old registration ends.
                if let name = registry.remove(socket: path) {
                    logger.info("CSI plugin unregistered", metadata: ["driver": "\(name)", "socket": "\(path)"])
                    changedSet = true
                }
                tracked[path] = nil
            }
            for (path, id) in present.sorted(by: { $0.key < $1.key }) {
                var t = tracked[path] ?? Tracked(id: id, registered: false)
                if !t.registered && ContinuousClock.now >= t.retryAt {
                    if await register(socket: path) {
                        t.registered = true
                        changedSet = true
                    } else {
                        t.retryAt = .now + t.backoff.next()
                    }
                }
                tracked[path] = t
            }
            if changedSet { await changed(registry.all) }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.configuration.interval) }
        }
    }

    /// Registers the plugin behind a registration socket; false (and the plugin told why) if it
    /// cannot be.
    func register(socket: String) async -> Bool {
        let reg = CSIPluginClient(endpoint: socket)
        let info: Pluginregistration_PluginInfo
        do {
            info = try await reg.registration(timeout: configuration.callTimeout) { c, o in try await c.getInfo(.init(), options: o) }
        } catch {
            logger.warning("CSI plugin registration: GetInfo failed", metadata: ["socket": "\(socket)", "error": "\(error)"])
            return false
        }
        let outcome = await validate(info, socket: socket)
        var status = Pluginregistration_RegistrationStatus()
        switch outcome {
        case .success(let plugin):
            registry.set(plugin)
            status.pluginRegistered = true
            logger.info("CSI plugin registered", metadata: ["driver": "\(plugin.name)", "endpoint": "\(plugin.endpoint)", "nodeID": "\(plugin.nodeID)",
                                                           "topology": "\(plugin.topology)"])
        case .failure(let e):
            status.pluginRegistered = false
            status.error = e.message
            logger.warning("CSI plugin registration refused", metadata: ["socket": "\(socket)", "driver": "\(info.name)", "error": "\(e.message)"])
        }
        let notify = status
        do { _ = try await reg.registration(timeout: configuration.callTimeout) { c, o in try await c.notifyRegistrationStatus(notify, options: o) } } catch {
            logger.debug("NotifyRegistrationStatus failed", metadata: ["socket": "\(socket)", "error": "\(error)"])
        }
        if case .success = outcome { return true }
        return false
    }

    struct Refusal: Error { var message: String }

    func validate(_ info: Pluginregistration_PluginInfo, socket: String) async -> Result<RegisteredCSIPlugin, Refusal> {
        guard info.type == "CSIPlugin" else { return .failure(Refusal(message: "plugin type \"\(info.type)\" is not handled here (only CSIPlugin)")) }
        guard Self.isDriverName(info.name) else { return .failure(Refusal(message: "driver name \"\(info.name)\" is not a valid CSI driver name")) }
        guard info.supportedVersions.contains(where: { v in
            let t = v.hasPrefix("v") ? v.dropFirst() : Substring(v)
            return t == "1" || t.hasPrefix("1.")
        }) else {
            return .failure(Refusal(message: "none of the versions \(info.supportedVersions) is a supported CSI version (1.x)"))
        }
        if let other = registry.plugin(info.name), other.registrationSocket != socket {
            return .failure(Refusal(message: "driver \(info.name) is already registered by \(other.registrationSocket)"))
        }
        let endpoint = info.endpoint.isEmpty ? socket : info.endpoint
        let nodeInfo: Csi_V1_NodeGetInfoResponse
        do {
            nodeInfo = try await CSIPluginClient(endpoint: endpoint).node(timeout: configuration.callTimeout) { c, o in try await c.nodeGetInfo(.init(), options: o) }
        } catch {
            return .failure(Refusal(message: "NodeGetInfo on \(endpoint) failed: \(error)"))
        }
        guard !nodeInfo.nodeID.isEmpty else { return .failure(Refusal(message: "NodeGetInfo returned an empty node_id")) }
        return .success(RegisteredCSIPlugin(name: info.name, endpoint: CSIPluginClient(endpoint: endpoint).endpoint, versions: info.supportedVersions,
                                            nodeID: nodeInfo.nodeID, maxVolumes: nodeInfo.maxVolumesPerNode,
                                            topology: nodeInfo.accessibleTopology.segments, registrationSocket: socket))
    }

    /// A CSI driver name: a DNS subdomain of at most 63 characters (it names directories here).
    static func isDriverName(_ s: String) -> Bool {
        guard !s.isEmpty, s.count <= 63, let first = s.utf8.first, let last = s.utf8.last else { return false }
        func alnum(_ c: UInt8) -> Bool { (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) }
        return alnum(first) && alnum(last) && s.utf8.allSatisfy { alnum($0) || $0 == 0x2d || $0 == 0x2e || $0 == 0x5f } && !s.contains("..")
    }

    /// The unix sockets under `directory` (recursively; names starting with `.` are skipped).
    static func sockets(under directory: String) -> [String: SocketID] {
        var out: [String: SocketID] = [:]
        var stack = [directory]
        while let dir = stack.popLast() {
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { continue }
            for name in names where !name.hasPrefix(".") {
                let p = "\(dir)/\(name)"
                var st = stat()
                guard lstat(p, &st) == 0 else { continue }
                switch st.st_mode & S_IFMT {
                case S_IFDIR: stack.append(p)
                case S_IFSOCK:
                    out[p] = SocketID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino), ctime: Int(st.st_ctim.tv_sec), ctimeNanos: Int(st.st_ctim.tv_nsec))
                default: continue
                }
            }
        }
        return out
    }
}
