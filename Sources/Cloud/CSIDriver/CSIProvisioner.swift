import CSI
import CloudEdgeProtocol
import ControllerRuntime
import KubeAPI
import KubeClient
import Logging
import SwiftProtobuf

/// What the cloud's CSI controllers share: the client, the caches and the way to the nodes.
struct CSIContext: Sendable {
    let client: KubeClient
    let channel: any CSIControllerChannel
    let claims: SharedInformer
    let volumes: SharedInformer
    let classes: SharedInformer
    let csiNodes: SharedInformer
    let csiDrivers: SharedInformer
    let nodes: SharedInformer
    let attachments: SharedInformer
    let pods: SharedInformer
    let events: EventRecorder
    let logger: Logger
    let timeout: Duration

    static let decoder = JSONValueDecoder()
    static let responseDecoding: JSONDecodingOptions = {
        var o = JSONDecodingOptions()
        o.ignoreUnknownFields = true
        return o
    }()

    func typed<T: Decodable>(_ json: JSON?) -> T? { json.flatMap { try? Self.decoder.decode(T.self, from: $0) } }

    /// The node id a driver registered with on a node (its CSINode entry), nil if not there.
    func driver(_ driver: String, on node: String) -> Storage.CSINodeDriver? {
        (typed(csiNodes.cache.get(node)) as Storage.CSINode?)?.drivers.first { $0.name == driver }
    }

    /// Nodes whose CSINode lists the driver, Ready ones first, by name.
    func nodes(with driver: String) -> [String] {
        let names = csiNodes.cache.list().filter { n in (typed(n) as Storage.CSINode?)?.drivers.contains { $0.name == driver } == true }.map(\.name)
        func ready(_ n: String) -> Bool {
            (nodes.cache.get(n)?["status"]["conditions"].arrayValue ?? []).contains { $0["type"].stringValue == "Ready" && $0["status"].stringValue == "True" }
        }
        return names.sorted { (ready($0) ? 0 : 1, $0) < (ready($1) ? 0 : 1, $1) }
    }

    func labels(of node: String) -> [String: String] {
        nodes.cache.get(node)?["metadata"]["labels"].objectValue?.compactMapValues(\.stringValue) ?? [:]
    }

    /// The CSI access mode of a Kubernetes one (external-provisioner's mapping).
    static func accessMode(_ mode: String) -> Csi_V1_VolumeCapability.AccessMode.Mode {
        switch mode {
        case "ReadOnlyMany": .multiNodeReaderOnly
        case "ReadWriteMany": .multiNodeMultiWriter
        case "ReadWriteOncePod": .singleNodeSingleWriter
        default: .singleNodeWriter
        }
    }

    static func capability(accessMode mode: String, fsType: String, mountOptions: [String]) -> Csi_V1_VolumeCapability {
        var c = Csi_V1_VolumeCapability()
        var m = Csi_V1_VolumeCapability.MountVolume()
        m.fsType = fsType
        m.mountFlags = mountOptions
        c.accessType = .mount(m)
        c.accessMode.mode = Self.accessMode(mode)
        return c
    }

    func call(node: String, driver: String, _ op: CSIControllerCall.Operation, id: String, _ request: some SwiftProtobuf.Message) async throws(CSICallError) -> JSON {
        let text: String
        do { text = try request.jsonString() } catch { throw CSICallError(code: "INTERNAL", message: "cannot encode the request: \(error)") }
        return try await channel.call(node: node, CSIControllerCall(operation: op, driver: driver, id: id, request: text), timeout: timeout)
    }
}

/// external-provisioner, for CSI drivers on edge nodes: a claim handed to a class whose
/// provisioner is a driver registered on some node (its CSINode) gets its volume from
/// `CreateVolume`, made through the node the scheduler selected (`WaitForFirstConsumer`) or a
/// Ready node with the driver (`Immediate`); the PersistentVolume is created pre-bound to the
/// claim, with the node affinity of the volume's topology. A released volume with reclaim policy
/// Delete is deleted with `DeleteVolume` through the node that created it, then its object.
/// Work keys: `pvc:<ns>/<name>`, `pv:<name>`.
final class CSIProvisioner: Reconciler {
    let name = "csi-provisioner"
    let ctx: CSIContext
    static let manager = "swiftedge-csi-provisioner"
    /// On PVs: the node whose plugin created the volume (its controller calls go there).
    static let controllerNode = "csi.swiftedge.io/controller-node"

    init(_ ctx: CSIContext, queue: WorkQueue) {
        self.ctx = ctx
        ctx.claims.addHandler { ev in
            switch ev {
            case .added(let c), .updated(_, let c): queue.add("pvc:\(c.namespace)/\(c.name)")
            default: break
            }
        }
        ctx.volumes.addHandler { ev in
            switch ev {
            case .added(let v), .updated(_, let v): queue.add("pv:\(v.name)")
            default: break
            }
        }
        // A driver registering on a node may let waiting claims (and volumes to delete) go on.
        let claims = ctx.claims, volumes = ctx.volumes
        ctx.csiNodes.addHandler { ev in
            if case .synced = ev { return }
            for c in claims.cache.list() where (c["spec"]["volumeName"].stringValue ?? "").isEmpty { queue.add("pvc:\(c.namespace)/\(c.name)") }
            for v in volumes.cache.list() where v["status"]["phase"].stringValue == "Released" { queue.add("pv:\(v.name)") }
        }
    }

    func reconcile(_ key: String) async throws -> ReconcileResult {
        if key.hasPrefix("pvc:") { return try await provision(String(key.dropFirst(4))) }
        if key.hasPrefix("pv:") { return try await reclaim(String(key.dropFirst(3))) }
        return .done
    }

    static func volumeName(claimUID: String) -> String { "pvc-\(claimUID)" }

    func provision(_ key: String) async throws -> ReconcileResult {
        guard let json = ctx.claims.cache.get(key), !json.isDeleting, let claim: Storage.PersistentVolumeClaim = ctx.typed(json),
              claim.volumeName.isEmpty, claim.phase == "Pending"
        else { return .done }
        let a = claim.annotations
        guard let driver = a[Storage.Keys.storageProvisioner] ?? a[Storage.Keys.betaStorageProvisioner],
              let className = claim.storageClassName, let sc: Storage.StorageClass = ctx.typed(ctx.classes.cache.get(className)),
              sc.provisioner == driver, driver != Storage.Keys.noProvisioner, !driver.contains("/")
        else { return .done }
        let uid = json.uid
        let pvName = Self.volumeName(claimUID: uid)
        if ctx.volumes.cache.get(pvName) != nil { return .done }  // made already; the binder binds it
        let node: String
        if let selected = a[Storage.Keys.selectedNode] {
            guard ctx.driver(driver, on: selected) != nil else {
                ctx.events.record(json, .warning, reason: "ProvisioningFailed",
                                  message: "CSI driver \(driver) is not registered on node \(selected) (no CSINode entry); waiting for it")
                return .done
            }
            node = selected
        } else if sc.waitsForFirstConsumer {
            return .done  // the scheduler picks the node first
        } else {
            guard let first = ctx.nodes(with: driver).first else {
                // Not ours to report if no node ever runs the driver: another provisioner may serve it.
                ctx.logger.debug("no node has the CSI driver of the claim's class", metadata: ["claim": "\(key)", "driver": "\(driver)"])
                return .done
            }
            node = first
        }
        ctx.events.record(json, .normal, reason: "Provisioning", message: "External provisioner is provisioning volume for claim \"\(key)\"")
        var req = Csi_V1_CreateVolumeRequest()
        req.name = pvName
        if claim.requestedBytes > 0 { req.capacityRange.requiredBytes = claim.requestedBytes }
        let params = sc.parameters ?? [:]
        let fsType = params["csi.storage.k8s.io/fstype"] ?? ""
        req.parameters = params.filter { !$0.key.hasPrefix("csi.storage.k8s.io/") }
        let modes = claim.spec?.accessModes ?? ["ReadWriteOnce"]
        req.volumeCapabilities = modes.map { CSIContext.capability(accessMode: $0, fsType: fsType, mountOptions: sc.mountOptions ?? []) }
        if let keys = ctx.driver(driver, on: node)?.topologyKeys, !keys.isEmpty {
            let labels = ctx.labels(of: node)
            var t = Csi_V1_Topology()
            for k in keys { if let v = labels[k] { t.segments[k] = v } }
            if !t.segments.isEmpty {
                req.accessibilityRequirements.requisite = [t]
                req.accessibilityRequirements.preferred = [t]
            }
        }
        let body: JSON
        do { body = try await ctx.call(node: node, driver: driver, .createVolume, id: pvName, req) } catch {
            ctx.events.record(json, .warning, reason: "ProvisioningFailed", message: "failed to provision volume with StorageClass \"\(className)\": \(error)")
            throw error
        }
        let response: Csi_V1_CreateVolumeResponse
        do { response = try Csi_V1_CreateVolumeResponse(jsonString: String(decoding: body.serialized(), as: UTF8.self), options: CSIContext.responseDecoding) } catch {
            throw CSICallError(code: "INTERNAL", message: "the CreateVolume response cannot be read: \(error)")
        }
        let v = response.volume
        guard !v.volumeID.isEmpty else { throw CSICallError(code: "INTERNAL", message: "CreateVolume returned no volume_id") }
        var pv: JSON = [
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": ["name": .string(pvName), "annotations": [Storage.Keys.provisionedBy: .string(driver), Self.controllerNode: .string(node)]],
            "spec": [
                "capacity": ["storage": .string(String(v.capacityBytes > 0 ? v.capacityBytes : claim.requestedBytes))],
                "accessModes": .array(modes.map { .string($0) }),
                "claimRef": ["kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": .string(json.namespace), "name": .string(json.name),
                             "uid": .string(uid), "resourceVersion": json["metadata"]["resourceVersion"]],
                "persistentVolumeReclaimPolicy": .string(sc.reclaimPolicy ?? "Delete"),
                "storageClassName": .string(className),
                "volumeMode": .string(claim.spec?.volumeMode ?? "Filesystem"),
                "csi": ["driver": .string(driver), "volumeHandle": .string(v.volumeID),
                        "volumeAttributes": .object(v.volumeContext.mapValues { .string($0) })],
            ],
        ]
        if !fsType.isEmpty { pv["spec"]["csi"]["fsType"] = .string(fsType) }
        if let opts = sc.mountOptions, !opts.isEmpty { pv["spec"]["mountOptions"] = .array(opts.map { .string($0) }) }
        if !v.accessibleTopology.isEmpty {
            let terms: [JSON] = v.accessibleTopology.map { t in
                ["matchExpressions": .array(t.segments.sorted { $0.key < $1.key }.map { ["key": .string($0.key), "operator": "In", "values": [.string($0.value)]] })]
            }
            pv["spec"]["nodeAffinity"] = ["required": ["nodeSelectorTerms": .array(terms)]]
        }
        do { _ = try await ctx.client.create(ResourceType.persistentVolumes, namespace: nil, pv, fieldManager: Self.manager) } catch let e as StatusError where e.code == 409 {}
        ctx.events.record(json, .normal, reason: "ProvisioningSucceeded", message: "Successfully provisioned volume \(pvName)")
        ctx.logger.info("volume provisioned", metadata: ["claim": "\(key)", "volume": "\(pvName)", "driver": "\(driver)", "node": "\(node)", "handle": "\(v.volumeID)"])
        return .done
    }

    /// A released, dynamically provisioned CSI volume with reclaim policy Delete: deleted.
    func reclaim(_ name: String) async throws -> ReconcileResult {
        guard let json = ctx.volumes.cache.get(name), !json.isDeleting, let pv: Storage.PersistentVolume = ctx.typed(json),
              pv.phase == "Released", pv.reclaimPolicy == "Delete", let csi = pv.spec?.csi,
              pv.annotations[Storage.Keys.provisionedBy] == csi.driver
        else { return .done }
        let node = pv.annotations[Self.controllerNode].flatMap { ctx.driver(csi.driver, on: $0) != nil ? $0 : nil } ?? ctx.nodes(with: csi.driver).first
        guard let node else {
            ctx.events.record(json, .warning, reason: "VolumeFailedDelete", message: "no node has CSI driver \(csi.driver) registered; waiting for one")
            return .done
        }
        var req = Csi_V1_DeleteVolumeRequest()
        req.volumeID = csi.volumeHandle
        do { _ = try await ctx.call(node: node, driver: csi.driver, .deleteVolume, id: csi.volumeHandle, req) } catch {
            ctx.events.record(json, .warning, reason: "VolumeFailedDelete", message: "\(error)")
            throw error
        }
        do { _ = try await ctx.client.delete(ResourceType.persistentVolumes, namespace: nil, name: name) } catch let e as StatusError where e.code == 404 {}
        ctx.logger.info("volume deleted", metadata: ["volume": "\(name)", "driver": "\(csi.driver)", "node": "\(node)"])
        return .done
    }
}
