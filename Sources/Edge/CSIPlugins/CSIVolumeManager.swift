import AsyncSupport
import CSI
import CloudEdgeProtocol
import Edged
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import KubeAPI
import Logging
import Metrics
import Mounts
import ServiceLifecycle
import Synchronization

/// Where CSI volumes live on the node (kubelet's layout under its root directory).
public struct CSIVolumeConfiguration: Sendable {
    public var nodeName: String
    /// `<root>/plugins`: volumes are staged at `kubernetes.io/csi/<driver>/<sha256(handle)>/globalmount`.
    public var pluginsDirectory: String
    /// `<root>/pods`: volumes are published at `<uid>/volumes/kubernetes.io~csi/<pv>/mount`.
    public var podsDirectory: String
    /// Deadline of each Node call (kubelet: 2 min).
    public var callTimeout: Duration = .seconds(60)
    public init(nodeName: String, pluginsDirectory: String, podsDirectory: String) {
        self.nodeName = nodeName; self.pluginsDirectory = pluginsDirectory; self.podsDirectory = podsDirectory
    }
}

/// A volume that could not be made available (or removed); its text is what the pod shows.
public struct CSIVolumeError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ d: String) { description = d }
}

/// kubelet's CSI volume plugin for Edged: stages a volume once per node (when the driver has
/// STAGE_UNSTAGE_VOLUME), publishes it per pod, and undoes both when the pods go — after its
/// VolumeAttachment is attached when the driver needs one (its CSIDriver's `attachRequired`,
/// true without a CSIDriver, as in kube). What was set up is recorded beside the mount
/// (`vol_data.json`, kubelet's keys), so a restarted node tears down what it did before. A
/// failing volume is retried with back-off; the pod waits, showing the error.
public final class CSIVolumeManager: PodVolumePublisher {
    let configuration: CSIVolumeConfiguration
    let registry: CSIPluginRegistry
    let lookup: @Sendable (String) async throws -> JSON?
    let logger: Logger
    /// Per published volume (`<pod uid>/<pv>`): when the next try may be made and why the last failed.
    let failures = Mutex<[String: (retryAt: ContinuousClock.Instant, backoff: Backoff, error: String)]>([:])
    let operations = LazyMap<String, Counter>()

    public init(configuration: CSIVolumeConfiguration, registry: CSIPluginRegistry, logger: Logger,
                lookup: @escaping @Sendable (String) async throws -> JSON?)
    {
        self.configuration = configuration; self.registry = registry; self.logger = logger; self.lookup = lookup
    }

    func count(_ operation: String, _ result: String) {
        operations.value(for: operation + "/" + result) {
            Counter(label: "swiftedge_csi_node_operations_total", dimensions: [("operation", operation), ("result", result)])
        }.increment()
    }

    func publishDirectory(podUID: String, volumeName: String) -> String {
        "\(configuration.podsDirectory)/\(podUID)/volumes/kubernetes.io~csi/\(volumeName)"
    }

    static func safeName(_ s: String) -> Bool {
        !s.isEmpty && s.count <= 253 && !s.hasPrefix(".") && !s.contains("/") && s != ".."
    }

    static func accessMode(_ modes: [String]) -> Csi_V1_VolumeCapability.AccessMode.Mode {
        switch modes.first {
        case "ReadOnlyMany": .multiNodeReaderOnly
        case "ReadWriteMany": .multiNodeMultiWriter
        case "ReadWriteOncePod": .singleNodeSingleWriter
        default: .singleNodeWriter
        }
    }

    public func publish(pod: PodRef, claim: String, volumeName: String, _ source: Storage.CSIPersistentVolumeSource, readOnly: Bool,
                        accessModes: [String], mountOptions: [String]) async throws -> String
    {
        let key = "\(pod.uid)/\(volumeName)"
        if let f = failures.withLock({ $0[key] }), ContinuousClock.now < f.retryAt {
            throw CSIVolumeError(f.error)
        }
        do {
            let path = try await setUp(pod: pod, claim: claim, volumeName: volumeName, source, readOnly: readOnly, accessModes: accessModes,
                                       mountOptions: mountOptions)
            failures.withLock { $0[key] = nil }
            return path
        } catch {
            let text = "MountVolume.SetUp failed for volume \"\(volumeName)\": \(error)"
            failures.withLock { f in
                var b = f[key]?.backoff ?? Backoff(base: .milliseconds(500), max: .seconds(60))
                f[key] = (.now + b.next(), b, text)
            }
            throw CSIVolumeError(text)
        }
    }

    func setUp(pod: PodRef, claim: String, volumeName: String, _ source: Storage.CSIPersistentVolumeSource, readOnly: Bool,
               accessModes: [String], mountOptions: [String]) async throws -> String
    {
        let driver = source.driver, handle = source.volumeHandle
        guard CSIPluginWatcher.isDriverName(driver) else { throw CSIVolumeError("driver name \"\(driver)\" is not valid") }
        guard Self.safeName(volumeName), Self.safeName(pod.uid) else { throw CSIVolumeError("volume name \"\(volumeName)\" is not valid") }
        guard !handle.isEmpty else { throw CSIVolumeError("persistentvolume \"\(volumeName)\" has no volumeHandle") }
        guard let plugin = registry.plugin(driver) else {
            throw CSIVolumeError("driver name \(driver) not found in the list of registered CSI drivers")
        }
        // Attached first, when the driver needs it: the VolumeAttachment's metadata is the publish context.
        var publishContext: [String: String] = [:]
        let driverObject = try await lookup(ResourceRef(namespace: nil, kind: .csiDriver, name: driver).description)
        let csiDriver = driverObject.flatMap { try? JSONValueDecoder().decode(Storage.CSIDriver.self, from: $0) }
        let attachRequired = csiDriver?.attachRequired ?? true
        if attachRequired {
            let vaName = CSINames.attachment(volumeHandle: handle, driver: driver, node: configuration.nodeName)
            guard let o = try await lookup(ResourceRef(namespace: nil, kind: .volumeAttachment, name: vaName).description),
                  let va = try? JSONValueDecoder().decode(Storage.VolumeAttachment.self, from: o)
            else { throw CSIVolumeError("waiting for VolumeAttachment \(vaName) (volume \(volumeName) on node \(configuration.nodeName))") }
            guard va.status?.attached == true else {
                let why = o["status"]["attachError"]["message"].stringValue.map { ": \($0)" } ?? ""
                throw CSIVolumeError("volume \(volumeName) is not attached to node \(configuration.nodeName) yet (VolumeAttachment \(vaName))\(why)")
            }
            publishContext = va.status?.attachmentMetadata ?? [:]
        }
        var capability = Csi_V1_VolumeCapability()
        var mount = Csi_V1_VolumeCapability.MountVolume()
        mount.fsType = source.fsType ?? ""
        mount.mountFlags = mountOptions
        capability.accessType = .mount(mount)
        capability.accessMode.mode = Self.accessMode(accessModes)
        let client = CSIPluginClient(endpoint: plugin.endpoint)
        let timeout = configuration.callTimeout
        let caps = try await client.node(timeout: timeout) { c, o in try await c.nodeGetCapabilities(.init(), options: o) }
        let staged = caps.capabilities.contains { if case .rpc(let r)? = $0.type { r.type == .stageUnstageVolume } else { false } }
        var context = source.volumeAttributes ?? [:]
        if csiDriver?.spec?.podInfoOnMount == true {
            // kubelet's pod info for drivers that ask for it (NodePublish only).
            context["csi.storage.k8s.io/pod.name"] = pod.name
            context["csi.storage.k8s.io/pod.namespace"] = pod.namespace
            context["csi.storage.k8s.io/pod.uid"] = pod.uid
            context["csi.storage.k8s.io/serviceAccount.name"] = pod.serviceAccountName
            context["csi.storage.k8s.io/ephemeral"] = "false"
        }
        let stageContext = source.volumeAttributes ?? [:]
        var stagingPath = ""
        if staged {
            let dir = CSINames.stagingDirectory(pluginsDirectory: configuration.pluginsDirectory, driver: driver, volumeHandle: handle)
            stagingPath = dir + "/globalmount"
            try FileManager.default.createDirectory(atPath: stagingPath, withIntermediateDirectories: true)
            try Self.writeVolData(dir + "/vol_data.json", ["volumeHandle": handle, "driverName": driver])
            var req = Csi_V1_NodeStageVolumeRequest()
            req.volumeID = handle
            req.publishContext = publishContext
            req.stagingTargetPath = stagingPath
            req.volumeCapability = capability
            req.volumeContext = stageContext
            let r = req
            do { _ = try await client.node(timeout: timeout) { c, o in try await c.nodeStageVolume(r, options: o) } } catch {
                count("stage", error.code); throw error
            }
            count("stage", "OK")
        }
        let dir = publishDirectory(podUID: pod.uid, volumeName: volumeName)
        let target = dir + "/mount"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Self.writeVolData(dir + "/vol_data.json", [
            "specVolID": volumeName, "volumeHandle": handle, "driverName": driver, "nodeName": configuration.nodeName,
            "volumeLifecycleMode": "Persistent",
            "attachmentID": CSINames.attachment(volumeHandle: handle, driver: driver, node: configuration.nodeName),
            // SwiftEdge's: whose volume it is (the volume stats are labelled with it).
            "podNamespace": pod.namespace, "claimName": claim,
        ])
        var req = Csi_V1_NodePublishVolumeRequest()
        req.volumeID = handle
        req.publishContext = publishContext
        req.stagingTargetPath = stagingPath
        req.targetPath = target
        req.volumeCapability = capability
        req.readonly = readOnly
        req.volumeContext = context
        let r = req
        do { _ = try await client.node(timeout: timeout) { c, o in try await c.nodePublishVolume(r, options: o) } } catch {
            count("publish", error.code); throw error
        }
        count("publish", "OK")
        logger.debug("CSI volume published", metadata: ["pod": "\(pod.namespace)/\(pod.name)", "volume": "\(volumeName)", "driver": "\(driver)", "target": "\(target)"])
        return target
    }

    /// kubelet's `saveVolumeData`: a flat JSON map, newline-terminated, written atomically.
    static func writeVolData(_ path: String, _ values: [String: String]) throws {
        let data = try JSONSerialization.data(withJSONObject: values, options: [.sortedKeys]) + Data("\n".utf8)
        let tmp = path + ".tmp"
        try data.write(to: URL(fileURLWithPath: tmp))
        guard rename(tmp, path) == 0 else { throw CSIVolumeError("cannot write \(path): errno \(errno)") }
    }

    static func readVolData(_ path: String) -> [String: String]? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return (try? JSONSerialization.jsonObject(with: data)) as? [String: String]
    }

    /// Unpublishes the pod's CSI volumes (and unstages those no other pod on the node uses);
    /// throws, leaving the records, if a plugin cannot be reached or a mount stays.
    public func unpublishAll(podUID: String) async throws {
        failures.withLock { f in for k in f.keys where k.hasPrefix(podUID + "/") { f[k] = nil } }
        let base = "\(configuration.podsDirectory)/\(podUID)/volumes/kubernetes.io~csi"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: base) else { return }
        var problems: [String] = []
        for name in names.sorted() {
            let dir = "\(base)/\(name)", target = dir + "/mount"
            guard let data = Self.readVolData(dir + "/vol_data.json"), let driver = data["driverName"], let handle = data["volumeHandle"] else {
                // No record: nothing was asked of a plugin; only an empty directory may go.
                if !Mounts.isMountPoint(target) { rmdir(target); rmdir(dir) } else { problems.append("\(target) is mounted but has no vol_data.json") }
                continue
            }
            do {
                try await tearDown(target: target, dir: dir, driver: driver, handle: handle)
                try await unstageIfUnused(driver: driver, handle: handle)
            } catch {
                problems.append("volume \(name): \(error)")
            }
        }
        rmdir(base)
        if !problems.isEmpty { throw CSIVolumeError("UnmountVolume.TearDown failed: " + problems.joined(separator: "; ")) }
    }

    func tearDown(target: String, dir: String, driver: String, handle: String) async throws {
        var req = Csi_V1_NodeUnpublishVolumeRequest()
        req.volumeID = handle
        req.targetPath = target
        let r = req
        try await undo("unpublish", mountPath: target, recordDirectory: dir, driver: driver) { c, o in _ = try await c.nodeUnpublishVolume(r, options: o) }
    }

    /// Undoes a publish or a stage: the plugin's call (with the driver gone, nothing is asked if
    /// nothing is mounted), then the mount checked gone and the directory and its record removed.
    func undo(_ operation: String, mountPath: String, recordDirectory dir: String, driver: String,
              _ call: @escaping @Sendable (Csi_V1_Node.Client<HTTP2ClientTransport.Posix>, CallOptions) async throws -> Void) async throws
    {
        if let plugin = registry.plugin(driver) {
            do { try await CSIPluginClient(endpoint: plugin.endpoint).node(timeout: configuration.callTimeout, call) } catch {
                count(operation, error.code); throw error
            }
            count(operation, "OK")
        } else if Mounts.isMountPoint(mountPath) {
            throw CSIVolumeError("driver \(driver) is not registered on the node, and \(mountPath) is still mounted")
        }
        guard !Mounts.isMountPoint(mountPath) else { throw CSIVolumeError("\(mountPath) is still mounted after the \(operation) call") }
        rmdir(mountPath)
        unlink(dir + "/vol_data.json")
        rmdir(dir)
    }

    /// A volume published on this node, as its record says.
    struct Published: Sendable {
        var target: String
        var driver: String
        var handle: String
        var namespace: String?
        var claim: String?
    }

    /// Every volume published on this node (read from the records, so it holds after a restart).
    func published() -> [Published] {
        var out: [Published] = []
        let pods = configuration.podsDirectory
        for uid in (try? FileManager.default.contentsOfDirectory(atPath: pods)) ?? [] {
            let base = "\(pods)/\(uid)/volumes/kubernetes.io~csi"
            for name in (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [] {
                if let d = Self.readVolData("\(base)/\(name)/vol_data.json"), let driver = d["driverName"], let handle = d["volumeHandle"] {
                    out.append(Published(target: "\(base)/\(name)/mount", driver: driver, handle: handle, namespace: d["podNamespace"], claim: d["claimName"]))
                }
            }
        }
        return out
    }

    /// Published volumes on this node, as (driver, handle), read from their records.
    func publishedVolumes() -> Set<String> { Set(published().map { $0.driver + "\u{0}" + $0.handle }) }

    func unstageIfUnused(driver: String, handle: String) async throws {
        let dir = CSINames.stagingDirectory(pluginsDirectory: configuration.pluginsDirectory, driver: driver, volumeHandle: handle)
        guard FileManager.default.fileExists(atPath: dir + "/vol_data.json") else { return }
        guard !publishedVolumes().contains(driver + "\u{0}" + handle) else { return }
        let staging = dir + "/globalmount"
        var req = Csi_V1_NodeUnstageVolumeRequest()
        req.volumeID = handle
        req.stagingTargetPath = staging
        let r = req
        try await undo("unstage", mountPath: staging, recordDirectory: dir, driver: driver) { c, o in _ = try await c.nodeUnstageVolume(r, options: o) }
    }
}

/// Sends the node's CSINode to the cloud when the registered drivers change and after every
/// reconnect (the cloud writes the CSINode and the Node's `csi.volume.kubernetes.io/nodeid`).
public final class CSINodeReporter: Service {
    let nodeName: String
    let registry: CSIPluginRegistry
    let connection: StateSignal<Bool>
    let upstream: @Sendable (Message) -> Void
    public init(nodeName: String, registry: CSIPluginRegistry, connection: StateSignal<Bool>, upstream: @escaping @Sendable (Message) -> Void) {
        self.nodeName = nodeName; self.registry = registry; self.connection = connection; self.upstream = upstream
    }

    public func report() {
        upstream(UpstreamReport.csiNode(name: nodeName, csiNode: registry.csiNode(nodeName: nodeName)).message(source: MessageSource.edged))
    }

    /// Reports on every connect.
    public func run() async throws {
        for await up in connection.updates().cancelOnGracefulShutdown() where up { report() }
    }
}
