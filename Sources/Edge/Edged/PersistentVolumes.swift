import CloudEdgeProtocol
import Foundation
import KubeAPI

extension RuntimeConfigBuilder {
    /// The directory on this node that a pod's claim mounts: the claim (from the node's store)
    /// must be bound, its volume here, and the volume usable on this node (its node affinity);
    /// `hostPath` and `local` volumes are their path, a `csi` volume is published by its driver.
    func claimVolumePath(_ pod: PodModel, _ source: Core.PersistentVolumeClaimVolumeSource) async throws -> String {
        do { return try await claimVolume(pod, source) } catch let e as VolumeMountError { throw e } catch {
            throw VolumeMountError(message: "\(error)")
        }
    }

    func claimVolume(_ pod: PodModel, _ source: Core.PersistentVolumeClaimVolumeSource) async throws -> String {
        let name = source.claimName
        guard let claim: Storage.PersistentVolumeClaim = try await typed(.persistentVolumeClaim, pod.namespace, name) else {
            throw ConfigError(message: "persistentvolumeclaim \"\(name)\" not found")
        }
        guard !claim.volumeName.isEmpty else { throw ConfigError(message: "persistentvolumeclaim \"\(name)\" is not bound") }
        guard let pv: Storage.PersistentVolume = try await typed(.persistentVolume, nil, claim.volumeName) else {
            throw ConfigError(message: "persistentvolume \"\(claim.volumeName)\" of claim \"\(name)\" is not on the node yet")
        }
        if pv.spec?.nodeAffinity?.required != nil {
            let labels = (try await object(.node, nil, nodeName))?["metadata"]["labels"].objectValue?.compactMapValues(\.stringValue) ?? [:]
            guard pv.admits(nodeName: nodeName, labels: labels) else {
                throw ConfigError(message: "persistentvolume \"\(claim.volumeName)\": its node affinity does not admit node \(nodeName)")
            }
        }
        if let local = pv.spec?.local {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: local.path, isDirectory: &isDir) else {
                throw ConfigError(message: "persistentvolume \"\(claim.volumeName)\": path \(local.path) does not exist on node \(nodeName)")
            }
            return local.path
        }
        if let hostPath = pv.spec?.hostPath {
            if hostPath.type == "DirectoryOrCreate" { try FileManager.default.createDirectory(atPath: hostPath.path, withIntermediateDirectories: true) }
            guard FileManager.default.fileExists(atPath: hostPath.path) else {
                throw ConfigError(message: "persistentvolume \"\(claim.volumeName)\": hostPath \(hostPath.path) does not exist")
            }
            return hostPath.path
        }
        if let csi = pv.spec?.csi {
            guard let volumes = csiVolumes else {
                throw ConfigError(message: "persistentvolume \"\(claim.volumeName)\": CSI volumes need the node's CSI support (driver \(csi.driver))")
            }
            return try await volumes.publish(pod: PodRef(namespace: pod.namespace, name: pod.name, uid: pod.uid, serviceAccountName: pod.serviceAccountName), claim: name, volumeName: claim.volumeName, csi,
                                             readOnly: source.readOnly == true || csi.readOnly == true,
                                             accessModes: pv.spec?.accessModes ?? [], mountOptions: pv.spec?.mountOptions ?? [])
        }
        throw ConfigError(message: "persistentvolume \"\(claim.volumeName)\": only hostPath, local and csi volumes are supported at the edge")
    }
}

/// Makes CSI volumes available to pods (kubelet's CSI volume plugin): staged once per node and
/// published per pod through the node's CSI plugins. The seam Edged runs its pods against.
public protocol PodVolumePublisher: Sendable {
    /// Publishes the volume (of the pod's claim `claim`) for the pod (idempotent) and returns its path on the node.
    func publish(pod: PodRef, claim: String, volumeName: String, _ source: Storage.CSIPersistentVolumeSource, readOnly: Bool,
                 accessModes: [String], mountOptions: [String]) async throws -> String
    /// Unpublishes every volume of the pod (and unstages those no other pod uses).
    func unpublishAll(podUID: String) async throws
}

/// The pod a volume is published for.
public struct PodRef: Sendable, Hashable {
    public var namespace: String
    public var name: String
    public var uid: String
    public var serviceAccountName: String
    public init(namespace: String, name: String, uid: String, serviceAccountName: String = "default") {
        self.namespace = namespace; self.name = name; self.uid = uid; self.serviceAccountName = serviceAccountName
    }
}

/// A pod's volume that cannot be set up yet (a claim not bound, its volume not on the node, a
/// CSI call that failed): the container waits in `ContainerCreating` with this message, and a
/// `FailedMount` event says why (kubelet's behaviour).
public struct VolumeMountError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}
