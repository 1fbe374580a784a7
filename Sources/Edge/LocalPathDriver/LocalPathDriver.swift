import CSI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import Mounts
import ServiceLifecycle
import Synchronization

/// Where the local-path driver keeps its volumes and sockets.
public struct LocalPathConfiguration: Sendable {
    /// The driver name (the StorageClass `provisioner`).
    public var driverName = LocalPathDriver.defaultName
    public var nodeID: String
    /// Volumes are directories `<storageDirectory>/<volume id>`.
    public var storageDirectory: String
    /// The CSI endpoint (unix socket).
    public var socket: String
    /// kubelet's plugin registration directory (`<root>/plugins_registry`): the driver serves
    /// `Registration` on `<dir>/<driver>-reg.sock` there (nil: not registered).
    public var registrationDirectory: String?

    public init(nodeID: String, storageDirectory: String, socket: String, registrationDirectory: String?) {
        self.nodeID = nodeID; self.storageDirectory = storageDirectory; self.socket = socket; self.registrationDirectory = registrationDirectory
    }
}

/// SwiftEdge's built-in CSI driver (like k3s's local-path provisioner): a volume is a directory
/// on the node that creates it, published into pods with a bind mount. It serves CSI's Identity,
/// Controller and Node services on its socket and registers itself the way node-driver-registrar
/// does. Volumes are node-local (topology `kubernetes.io/hostname`), single-node access only, no
/// staging, no attach; sizes are recorded, not enforced.
public final class LocalPathDriver: Service {
    public static let defaultName = "local-path.csi.swiftedge.io"
    public static let topologyKey = "kubernetes.io/hostname"
    public static let version = "0.1.0"

    let configuration: LocalPathConfiguration
    let logger: Logger
    let state: LocalPathVolumes

    public init(configuration: LocalPathConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        state = LocalPathVolumes(directory: configuration.storageDirectory)
    }

    public var registrationSocket: String? {
        configuration.registrationDirectory.map { "\($0)/\(configuration.driverName)-reg.sock" }
    }

    public func run() async throws {
        try FileManager.default.createDirectory(atPath: configuration.storageDirectory, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: (configuration.socket as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        for path in [configuration.socket] + (registrationSocket.map { [$0] } ?? []) where path.utf8.count > 107 {
            logger.error("local-path CSI driver not started: socket path too long for a unix socket (107 bytes at most)",
                         metadata: ["socket": "\(path)", "bytes": "\(path.utf8.count)"])
            try? await gracefulShutdown()
            return
        }
        unlink(configuration.socket)
        let csiTransport = HTTP2ServerTransport.Posix(address: .unixDomainSocket(path: configuration.socket), transportSecurity: .plaintext)
        let csi = GRPCServer(transport: csiTransport,
                             services: [LocalPathIdentity(driver: self), LocalPathController(driver: self), LocalPathNode(driver: self)])
        var servers = [csi]
        if let reg = registrationSocket, let dir = configuration.registrationDirectory {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            unlink(reg)
            servers.append(GRPCServer(transport: HTTP2ServerTransport.Posix(address: .unixDomainSocket(path: reg), transportSecurity: .plaintext),
                                      services: [LocalPathRegistration(driver: self)]))
        }
        let all = servers
        do {
            try await withGracefulShutdownHandler {
                try await withThrowingDiscardingTaskGroup { group in
                    group.addTask { try await csi.serve() }
                    // The registration socket appears only once the CSI socket answers.
                    _ = try await csiTransport.listeningAddress
                    for s in all.dropFirst() { group.addTask { try await s.serve() } }
                    logger.info("local-path CSI driver listening", metadata: ["driver": "\(configuration.driverName)", "socket": "\(configuration.socket)",
                                                                             "storage": "\(configuration.storageDirectory)"])
                }
            } onGracefulShutdown: {
                for s in all { s.beginGracefulShutdown() }
            }
        } catch {
            // The node runs on without the driver: its volumes cannot be set up until it is back.
            logger.error("local-path CSI driver failed", metadata: ["socket": "\(configuration.socket)", "error": "\(error)"])
            try? await gracefulShutdown()
        }
        if let reg = registrationSocket { unlink(reg) }
        unlink(configuration.socket)
    }

    var topology: Csi_V1_Topology {
        var t = Csi_V1_Topology()
        t.segments = [Self.topologyKey: configuration.nodeID]
        return t
    }
}

/// The driver's volumes: `<dir>/<id>` holds the data, `<dir>/.meta/<id>.json` the name and size it
/// was created with (what makes CreateVolume idempotent). One lock serialises changes.
final class LocalPathVolumes: Sendable {
    struct Record: Codable, Equatable {
        var name: String
        var capacityBytes: Int64
        /// Where it is published: a bind mount's mount point is its target, so the volume's own
        /// path does not show that it is in use.
        var targets: [String: Publication]? = nil
    }

    /// One publication: what a repeated NodePublishVolume must match to be the same one.
    struct Publication: Codable, Equatable {
        var readOnly: Bool
        /// The CSI access mode (its number).
        var mode: Int
    }

    let directory: String
    let lock = Mutex(())
    init(directory: String) { self.directory = directory }

    /// A volume id is the request's name when that is a safe path component, else its hash.
    static func volumeID(forName name: String) -> String {
        if isSafeID(name) { return name }
        return "vol-" + String(name.utf8.reduce(UInt64(14_695_981_039_346_656_037)) { ($0 ^ UInt64($1)) &* 1_099_511_628_211 }, radix: 16)
    }

    /// Ids name a directory here: no separators, no dot names, bounded length.
    static func isSafeID(_ id: String) -> Bool {
        !id.isEmpty && id.count <= 200 && !id.hasPrefix(".")
            && id.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x61 && $0 <= 0x7a) || $0 == 0x2d || $0 == 0x5f || $0 == 0x2e }
    }

    func path(_ id: String) -> String { "\(directory)/\(id)" }
    func metaPath(_ id: String) -> String { "\(directory)/.meta/\(id).json" }

    func record(_ id: String) -> Record? {
        guard let data = FileManager.default.contents(atPath: metaPath(id)) else { return nil }
        return try? JSONDecoder().decode(Record.self, from: data)
    }

    func save(_ id: String, _ r: Record) throws {
        let data = try JSONEncoder().encode(r)
        let tmp = metaPath(id) + ".tmp"
        try data.write(to: URL(fileURLWithPath: tmp))
        guard rename(tmp, metaPath(id)) == 0 else { throw RPCError(code: .internalError, message: "cannot record volume \(id): errno \(errno)") }
    }

    /// The targets the volume is still mounted at (records of targets no longer mounted are dropped).
    func publishedTargets(_ id: String) -> [String: Publication] {
        (record(id)?.targets ?? [:]).filter { Mounts.isMountPoint($0.key) }
    }

    /// Records (or, with nil, forgets) a publication.
    func setTarget(_ id: String, _ target: String, _ publication: Publication?) throws {
        try lock.withLock { _ in
            guard var r = record(id) else { return }
            var t = (r.targets ?? [:]).filter { Mounts.isMountPoint($0.key) || $0.key == target }
            t[target] = publication
            r.targets = t.isEmpty ? nil : t
            try save(id, r)
        }
    }

    enum CreateOutcome { case created, existed }

    func create(name: String, capacity: Int64) throws -> (String, CreateOutcome) {
        let id = Self.volumeID(forName: name)
        return try lock.withLock { _ in
            if let r = record(id) {
                guard r.name == name else { throw RPCError(code: .alreadyExists, message: "volume id \(id) belongs to another volume name") }
                guard r.capacityBytes == capacity else {
                    throw RPCError(code: .alreadyExists, message: "volume \(name) exists with capacity \(r.capacityBytes), not \(capacity)")
                }
                try FileManager.default.createDirectory(atPath: path(id), withIntermediateDirectories: true)
                return (id, .existed)
            }
            let fm = FileManager.default
            try fm.createDirectory(atPath: "\(directory)/.meta", withIntermediateDirectories: true)
            try fm.createDirectory(atPath: path(id), withIntermediateDirectories: true)
            _ = chmod(path(id), 0o777)  // as k3s's local-path: any pod user may write its volume
            try save(id, Record(name: name, capacityBytes: capacity))
            return (id, .created)
        }
    }

    /// Removes the volume and its data; an unknown id is not an error (DeleteVolume is idempotent).
    func delete(_ id: String) throws {
        try lock.withLock { _ in
            let p = path(id)
            let inUse = publishedTargets(id).keys.sorted() + Mounts.mounts(under: p)
            guard inUse.isEmpty else {
                throw RPCError(code: .failedPrecondition, message: "volume \(id) is in use: published at \(inUse.joined(separator: ", "))")
            }
            if FileManager.default.fileExists(atPath: p) { try FileManager.default.removeItem(atPath: p) }
            unlink(metaPath(id))
        }
    }

    func exists(_ id: String) -> Bool { record(id) != nil && FileManager.default.fileExists(atPath: path(id)) }
}

// MARK: - RPC validation shared by the services

extension LocalPathDriver {
    static func require(_ value: String, _ field: String) throws {
        if value.isEmpty { throw RPCError(code: .invalidArgument, message: "\(field) is required") }
    }

    static func validID(_ id: String) throws {
        try require(id, "volume_id")
        guard LocalPathVolumes.isSafeID(id) else { throw RPCError(code: .notFound, message: "volume \(id) does not exist") }
    }

    /// Only mounted (filesystem) volumes on one node.
    static func check(_ capability: Csi_V1_VolumeCapability) throws {
        guard case .mount? = capability.accessType else {
            throw RPCError(code: .invalidArgument, message: "local-path volumes are filesystem volumes; block access is not supported")
        }
        switch capability.accessMode.mode {
        case .singleNodeWriter, .singleNodeReaderOnly, .singleNodeSingleWriter, .singleNodeMultiWriter: break
        default: throw RPCError(code: .invalidArgument, message: "local-path volumes are on one node; access mode \(capability.accessMode.mode) is not supported")
        }
    }

    static func absolute(_ path: String, _ field: String) throws {
        try require(path, field)
        guard path.hasPrefix("/"), !path.split(separator: "/").contains("..") else {
            throw RPCError(code: .invalidArgument, message: "\(field) must be an absolute path without ..")
        }
    }
}

struct LocalPathIdentity: Csi_V1_Identity.SimpleServiceProtocol {
    let driver: LocalPathDriver
    func getPluginInfo(request: Csi_V1_GetPluginInfoRequest, context: ServerContext) async throws -> Csi_V1_GetPluginInfoResponse {
        var r = Csi_V1_GetPluginInfoResponse()
        r.name = driver.configuration.driverName
        r.vendorVersion = LocalPathDriver.version
        return r
    }

    func getPluginCapabilities(request: Csi_V1_GetPluginCapabilitiesRequest, context: ServerContext) async throws -> Csi_V1_GetPluginCapabilitiesResponse {
        var r = Csi_V1_GetPluginCapabilitiesResponse()
        for t in [Csi_V1_PluginCapability.Service.TypeEnum.controllerService, .volumeAccessibilityConstraints] {
            var s = Csi_V1_PluginCapability.Service(); s.type = t
            var c = Csi_V1_PluginCapability(); c.type = .service(s)
            r.capabilities.append(c)
        }
        return r
    }

    func probe(request: Csi_V1_ProbeRequest, context: ServerContext) async throws -> Csi_V1_ProbeResponse {
        var r = Csi_V1_ProbeResponse()
        r.ready = .init()
        r.ready.value = FileManager.default.isWritableFile(atPath: driver.configuration.storageDirectory)
        return r
    }
}

struct LocalPathController: Csi_V1_Controller.SimpleServiceProtocol {
    let driver: LocalPathDriver

    func createVolume(request: Csi_V1_CreateVolumeRequest, context: ServerContext) async throws -> Csi_V1_CreateVolumeResponse {
        try LocalPathDriver.require(request.name, "name")
        guard !request.volumeCapabilities.isEmpty else { throw RPCError(code: .invalidArgument, message: "volume_capabilities are required") }
        for c in request.volumeCapabilities { try LocalPathDriver.check(c) }
        if request.hasVolumeContentSource { throw RPCError(code: .invalidArgument, message: "local-path volumes cannot be created from a snapshot or another volume") }
        if request.hasAccessibilityRequirements {
            let here = driver.topology.segments
            let req = request.accessibilityRequirements
            if !req.requisite.isEmpty, !req.requisite.contains(where: { $0.segments.allSatisfy { here[$0.key] == $0.value } }) {
                throw RPCError(code: .resourceExhausted, message: "the requisite topology does not include node \(driver.configuration.nodeID)")
            }
        }
        let range = request.capacityRange
        if range.limitBytes > 0 && range.requiredBytes > range.limitBytes {
            throw RPCError(code: .outOfRange, message: "required_bytes \(range.requiredBytes) exceeds limit_bytes \(range.limitBytes)")
        }
        let capacity = range.requiredBytes > 0 ? range.requiredBytes : range.limitBytes
        let (id, outcome) = try driver.state.create(name: request.name, capacity: capacity)
        if outcome == .created {
            driver.logger.info("volume created", metadata: ["volume": "\(id)", "name": "\(request.name)", "capacity": "\(capacity)"])
        }
        var v = Csi_V1_Volume()
        v.volumeID = id
        v.capacityBytes = capacity
        v.accessibleTopology = [driver.topology]
        var r = Csi_V1_CreateVolumeResponse()
        r.volume = v
        return r
    }

    func deleteVolume(request: Csi_V1_DeleteVolumeRequest, context: ServerContext) async throws -> Csi_V1_DeleteVolumeResponse {
        try LocalPathDriver.require(request.volumeID, "volume_id")
        guard LocalPathVolumes.isSafeID(request.volumeID) else { return .init() }  // never ours: nothing to delete
        try driver.state.delete(request.volumeID)
        driver.logger.info("volume deleted", metadata: ["volume": "\(request.volumeID)"])
        return .init()
    }

    func controllerGetCapabilities(request: Csi_V1_ControllerGetCapabilitiesRequest, context: ServerContext) async throws -> Csi_V1_ControllerGetCapabilitiesResponse {
        var r = Csi_V1_ControllerGetCapabilitiesResponse()
        for t in [Csi_V1_ControllerServiceCapability.RPC.TypeEnum.createDeleteVolume, .singleNodeMultiWriter] {
            var rpc = Csi_V1_ControllerServiceCapability.RPC(); rpc.type = t
            var c = Csi_V1_ControllerServiceCapability(); c.type = .rpc(rpc)
            r.capabilities.append(c)
        }
        return r
    }

    func validateVolumeCapabilities(request: Csi_V1_ValidateVolumeCapabilitiesRequest, context: ServerContext) async throws -> Csi_V1_ValidateVolumeCapabilitiesResponse {
        try LocalPathDriver.validID(request.volumeID)
        guard !request.volumeCapabilities.isEmpty else { throw RPCError(code: .invalidArgument, message: "volume_capabilities are required") }
        guard driver.state.exists(request.volumeID) else { throw RPCError(code: .notFound, message: "volume \(request.volumeID) does not exist") }
        var r = Csi_V1_ValidateVolumeCapabilitiesResponse()
        do {
            for c in request.volumeCapabilities { try LocalPathDriver.check(c) }
            r.confirmed.volumeCapabilities = request.volumeCapabilities
            r.confirmed.volumeContext = request.volumeContext
            r.confirmed.parameters = request.parameters
        } catch let e as RPCError {
            r.message = e.message
        }
        return r
    }

    func controllerPublishVolume(request: Csi_V1_ControllerPublishVolumeRequest, context: ServerContext) async throws -> Csi_V1_ControllerPublishVolumeResponse {
        throw RPCError(code: .unimplemented, message: "local-path volumes need no attach")
    }
    func controllerUnpublishVolume(request: Csi_V1_ControllerUnpublishVolumeRequest, context: ServerContext) async throws -> Csi_V1_ControllerUnpublishVolumeResponse {
        throw RPCError(code: .unimplemented, message: "local-path volumes need no attach")
    }
    func listVolumes(request: Csi_V1_ListVolumesRequest, context: ServerContext) async throws -> Csi_V1_ListVolumesResponse { throw Self.unimplemented("ListVolumes") }
    func getCapacity(request: Csi_V1_GetCapacityRequest, context: ServerContext) async throws -> Csi_V1_GetCapacityResponse { throw Self.unimplemented("GetCapacity") }
    func createSnapshot(request: Csi_V1_CreateSnapshotRequest, context: ServerContext) async throws -> Csi_V1_CreateSnapshotResponse { throw Self.unimplemented("CreateSnapshot") }
    func deleteSnapshot(request: Csi_V1_DeleteSnapshotRequest, context: ServerContext) async throws -> Csi_V1_DeleteSnapshotResponse { throw Self.unimplemented("DeleteSnapshot") }
    func listSnapshots(request: Csi_V1_ListSnapshotsRequest, context: ServerContext) async throws -> Csi_V1_ListSnapshotsResponse { throw Self.unimplemented("ListSnapshots") }
    func controllerExpandVolume(request: Csi_V1_ControllerExpandVolumeRequest, context: ServerContext) async throws -> Csi_V1_ControllerExpandVolumeResponse { throw Self.unimplemented("ControllerExpandVolume") }
    func controllerGetVolume(request: Csi_V1_ControllerGetVolumeRequest, context: ServerContext) async throws -> Csi_V1_ControllerGetVolumeResponse { throw Self.unimplemented("ControllerGetVolume") }
    func controllerModifyVolume(request: Csi_V1_ControllerModifyVolumeRequest, context: ServerContext) async throws -> Csi_V1_ControllerModifyVolumeResponse { throw Self.unimplemented("ControllerModifyVolume") }

    static func unimplemented(_ rpc: String) -> RPCError { RPCError(code: .unimplemented, message: "\(rpc) is not supported by the local-path driver") }
}

struct LocalPathNode: Csi_V1_Node.SimpleServiceProtocol {
    let driver: LocalPathDriver

    func nodeGetInfo(request: Csi_V1_NodeGetInfoRequest, context: ServerContext) async throws -> Csi_V1_NodeGetInfoResponse {
        var r = Csi_V1_NodeGetInfoResponse()
        r.nodeID = driver.configuration.nodeID
        r.accessibleTopology = driver.topology
        return r
    }

    func nodeGetCapabilities(request: Csi_V1_NodeGetCapabilitiesRequest, context: ServerContext) async throws -> Csi_V1_NodeGetCapabilitiesResponse {
        var r = Csi_V1_NodeGetCapabilitiesResponse()
        for t in [Csi_V1_NodeServiceCapability.RPC.TypeEnum.getVolumeStats, .singleNodeMultiWriter] {
            var rpc = Csi_V1_NodeServiceCapability.RPC(); rpc.type = t
            var c = Csi_V1_NodeServiceCapability(); c.type = .rpc(rpc)
            r.capabilities.append(c)
        }
        return r
    }

    func nodePublishVolume(request: Csi_V1_NodePublishVolumeRequest, context: ServerContext) async throws -> Csi_V1_NodePublishVolumeResponse {
        try LocalPathDriver.validID(request.volumeID)
        try LocalPathDriver.absolute(request.targetPath, "target_path")
        guard request.hasVolumeCapability else { throw RPCError(code: .invalidArgument, message: "volume_capability is required") }
        try LocalPathDriver.check(request.volumeCapability)
        guard driver.state.exists(request.volumeID) else { throw RPCError(code: .notFound, message: "volume \(request.volumeID) does not exist on node \(driver.configuration.nodeID)") }
        let target = request.targetPath
        let publication = LocalPathVolumes.Publication(readOnly: request.readonly, mode: request.volumeCapability.accessMode.mode.rawValue)
        if Mounts.isMountPoint(target) {
            // Published already: the same publication is answered again (idempotent), another is refused.
            guard let existing = driver.state.publishedTargets(request.volumeID)[target] else {
                throw RPCError(code: .alreadyExists, message: "target_path \(target) is already a mount point, not of volume \(request.volumeID)")
            }
            guard existing == publication else {
                throw RPCError(code: .alreadyExists, message: "volume \(request.volumeID) is published at \(target) with readonly=\(existing.readOnly) and access mode \(existing.mode)")
            }
            return .init()
        }
        // SINGLE_NODE_SINGLE_WRITER (ReadWriteOncePod): one publication at a time.
        if request.volumeCapability.accessMode.mode == .singleNodeSingleWriter,
           let other = driver.state.publishedTargets(request.volumeID).keys.first(where: { $0 != target })
        {
            throw RPCError(code: .failedPrecondition, message: "volume \(request.volumeID) is single-writer and already published at \(other)")
        }
        do { try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: false) } catch CocoaError.fileWriteFileExists {}
        catch {
            var isDir: ObjCBool = false
            if !FileManager.default.fileExists(atPath: target, isDirectory: &isDir) || !isDir.boolValue {
                throw RPCError(code: .internalError, message: "cannot create target_path \(target): \(error)")
            }
        }
        do { try Mounts.bind(driver.state.path(request.volumeID), on: target, readOnly: request.readonly) } catch {
            throw RPCError(code: .internalError, message: "\(error)")
        }
        do { try driver.state.setTarget(request.volumeID, target, publication) } catch {
            try? Mounts.unmount(target)  // not recorded: not left mounted
            throw RPCError(code: .internalError, message: "\(error)")
        }
        driver.logger.info("volume published", metadata: ["volume": "\(request.volumeID)", "target": "\(target)", "readonly": "\(request.readonly)"])
        return .init()
    }

    func nodeUnpublishVolume(request: Csi_V1_NodeUnpublishVolumeRequest, context: ServerContext) async throws -> Csi_V1_NodeUnpublishVolumeResponse {
        try LocalPathDriver.require(request.volumeID, "volume_id")
        try LocalPathDriver.absolute(request.targetPath, "target_path")
        do { try Mounts.unmount(request.targetPath) } catch { throw RPCError(code: .internalError, message: "\(error)") }
        if !Mounts.isMountPoint(request.targetPath) {
            rmdir(request.targetPath)
            if LocalPathVolumes.isSafeID(request.volumeID) { try? driver.state.setTarget(request.volumeID, request.targetPath, nil) }
        }
        return .init()
    }

    func nodeGetVolumeStats(request: Csi_V1_NodeGetVolumeStatsRequest, context: ServerContext) async throws -> Csi_V1_NodeGetVolumeStatsResponse {
        try LocalPathDriver.validID(request.volumeID)
        try LocalPathDriver.absolute(request.volumePath, "volume_path")
        guard driver.state.exists(request.volumeID) else { throw RPCError(code: .notFound, message: "volume \(request.volumeID) does not exist") }
        guard Mounts.isMountPoint(request.volumePath) else { throw RPCError(code: .notFound, message: "volume_path \(request.volumePath) is not a published volume") }
        var fs = statvfs()
        guard statvfs(request.volumePath, &fs) == 0 else { throw RPCError(code: .internalError, message: "statvfs \(request.volumePath): errno \(errno)") }
        let (bytes, inodes) = VolumeUsage.used(under: driver.state.path(request.volumeID))
        var b = Csi_V1_VolumeUsage()
        b.unit = .bytes
        b.total = Int64(fs.f_blocks) * Int64(fs.f_frsize)
        b.available = Int64(fs.f_bavail) * Int64(fs.f_frsize)
        b.used = bytes
        var i = Csi_V1_VolumeUsage()
        i.unit = .inodes
        i.total = Int64(fs.f_files)
        i.available = Int64(fs.f_favail)
        i.used = inodes
        var r = Csi_V1_NodeGetVolumeStatsResponse()
        r.usage = [b, i]
        return r
    }

    func nodeStageVolume(request: Csi_V1_NodeStageVolumeRequest, context: ServerContext) async throws -> Csi_V1_NodeStageVolumeResponse {
        throw RPCError(code: .unimplemented, message: "local-path volumes are not staged (no STAGE_UNSTAGE_VOLUME capability)")
    }
    func nodeUnstageVolume(request: Csi_V1_NodeUnstageVolumeRequest, context: ServerContext) async throws -> Csi_V1_NodeUnstageVolumeResponse {
        throw RPCError(code: .unimplemented, message: "local-path volumes are not staged (no STAGE_UNSTAGE_VOLUME capability)")
    }
    func nodeExpandVolume(request: Csi_V1_NodeExpandVolumeRequest, context: ServerContext) async throws -> Csi_V1_NodeExpandVolumeResponse {
        throw RPCError(code: .unimplemented, message: "NodeExpandVolume is not supported by the local-path driver")
    }
}

/// kubelet's plugin registration, served as node-driver-registrar serves it.
struct LocalPathRegistration: Pluginregistration_Registration.SimpleServiceProtocol {
    let driver: LocalPathDriver
    func getInfo(request: Pluginregistration_InfoRequest, context: ServerContext) async throws -> Pluginregistration_PluginInfo {
        var i = Pluginregistration_PluginInfo()
        i.type = "CSIPlugin"
        i.name = driver.configuration.driverName
        i.endpoint = driver.configuration.socket
        i.supportedVersions = ["1.0.0"]
        return i
    }

    func notifyRegistrationStatus(request: Pluginregistration_RegistrationStatus, context: ServerContext) async throws -> Pluginregistration_RegistrationStatusResponse {
        if request.pluginRegistered {
            driver.logger.info("registered with the node", metadata: ["driver": "\(driver.configuration.driverName)"])
        } else {
            driver.logger.error("the node refused the registration", metadata: ["driver": "\(driver.configuration.driverName)", "error": "\(request.error)"])
        }
        return .init()
    }
}

/// Bytes and inodes used below a directory (not following symlinks, not crossing mounts).
public enum VolumeUsage {
    public static func used(under path: String) -> (bytes: Int64, inodes: Int64) {
        var bytes: Int64 = 0, inodes: Int64 = 0
        var root = stat()
        guard lstat(path, &root) == 0 else { return (0, 0) }
        var stack = [path]
        while let dir = stack.popLast() {
            guard let d = opendir(dir) else { continue }
            defer { closedir(d) }
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name == "." || name == ".." { continue }
                let p = dir + "/" + name
                var st = stat()
                guard lstat(p, &st) == 0 else { continue }
                inodes += 1
                bytes += Int64(st.st_blocks) * 512
                if (st.st_mode & S_IFMT) == S_IFDIR && st.st_dev == root.st_dev { stack.append(p) }
            }
        }
        return (bytes, inodes + 1)
    }
}
