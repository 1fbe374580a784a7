import CSI
import CloudEdgeProtocol
import ControllerRuntime
import KubeAPI
import KubeClient
import Logging

/// external-attacher, for CSI drivers on edge nodes: a VolumeAttachment not attached yet gets
/// `ControllerPublishVolume` through its node (the plugin there; a plugin without
/// PUBLISH_UNPUBLISH_VOLUME answers at once) and `status.attached` with the publish context as
/// `attachmentMetadata`; an error is recorded in `status.attachError` and retried. A deleted one is
/// detached (`ControllerUnpublishVolume`) before its finalizer goes. Work key: the name.
final class CSIAttacher: Reconciler {
    let name = "csi-attacher"
    let ctx: CSIContext
    static let manager = "swiftedge-csi-attacher"

    init(_ ctx: CSIContext, queue: WorkQueue) {
        self.ctx = ctx
        ctx.attachments.addHandler { ev in
            switch ev {
            case .added(let a), .updated(_, let a): queue.add(a.name)
            default: break
            }
        }
        let attachments = ctx.attachments
        ctx.csiNodes.addHandler { ev in
            if case .synced = ev { return }
            for a in attachments.cache.list() where a["status"]["attached"].boolValue != true || a.isDeleting { queue.add(a.name) }
        }
    }

    /// external-attacher's finalizer (`external-attacher/<driver with / as ->`).
    static func finalizer(_ driver: String) -> String { "external-attacher/" + driver.replacingOccurrences(of: "/", with: "-") }

    func reconcile(_ key: String) async throws -> ReconcileResult {
        guard var json = ctx.attachments.cache.get(key), let va: Storage.VolumeAttachment = ctx.typed(json) else { return .done }
        let driver = va.spec.attacher, node = va.spec.nodeName
        guard ctx.nodes(with: driver).contains(node) || json.isDeleting else { return .done }  // not a driver on that node (yet)
        let fin = Self.finalizer(driver)
        var finalizers = (json["metadata"]["finalizers"].arrayValue ?? []).compactMap(\.stringValue)
        guard let pvName = va.spec.source.persistentVolumeName else { return .done }
        let pv: Storage.PersistentVolume? = ctx.typed(ctx.volumes.cache.get(pvName))
        if json.isDeleting {
            guard finalizers.contains(fin) else { return .done }
            if va.status?.attached == true, let csi = pv?.spec?.csi, let nodeID = ctx.driver(driver, on: node)?.nodeID {
                var req = Csi_V1_ControllerUnpublishVolumeRequest()
                req.volumeID = csi.volumeHandle
                req.nodeID = nodeID
                do { _ = try await ctx.call(node: node, driver: driver, .controllerUnpublishVolume, id: csi.volumeHandle, req) } catch {
                    try await setStatus(json, attached: true, metadata: va.status?.attachmentMetadata ?? [:], detachError: "\(error)")
                    throw error
                }
            }
            finalizers.removeAll { $0 == fin }
            json["metadata"]["finalizers"] = .array(finalizers.map { .string($0) })
            _ = try await ctx.client.update(ResourceType.volumeAttachments, namespace: nil, json, fieldManager: Self.manager)
            ctx.logger.info("volume detached", metadata: ["attachment": "\(key)", "volume": "\(pvName)", "node": "\(node)"])
            return .done
        }
        if va.status?.attached == true { return .done }
        guard let pv, let csi = pv.spec?.csi else { return .done }
        guard let nodeID = ctx.driver(driver, on: node)?.nodeID else { return .done }
        if !finalizers.contains(fin) {
            json["metadata"]["finalizers"] = .array((finalizers + [fin]).map { .string($0) })
            _ = try await ctx.client.update(ResourceType.volumeAttachments, namespace: nil, json, fieldManager: Self.manager)
            return .done  // comes back through the informer
        }
        var req = Csi_V1_ControllerPublishVolumeRequest()
        req.volumeID = csi.volumeHandle
        req.nodeID = nodeID
        req.volumeCapability = CSIContext.capability(accessMode: pv.spec?.accessModes?.first ?? "ReadWriteOnce", fsType: csi.fsType ?? "",
                                                     mountOptions: pv.spec?.mountOptions ?? [])
        req.readonly = csi.readOnly ?? false
        req.volumeContext = csi.volumeAttributes ?? [:]
        let body: JSON
        do { body = try await ctx.call(node: node, driver: driver, .controllerPublishVolume, id: csi.volumeHandle, req) } catch {
            try await setStatus(json, attached: false, metadata: [:], attachError: "\(error)")
            throw error
        }
        let response = try? Csi_V1_ControllerPublishVolumeResponse(jsonString: String(decoding: body.serialized(), as: UTF8.self), options: CSIContext.responseDecoding)
        try await setStatus(json, attached: true, metadata: response?.publishContext ?? [:])
        ctx.logger.info("volume attached", metadata: ["attachment": "\(key)", "volume": "\(pvName)", "node": "\(node)"])
        return .done
    }

    func setStatus(_ json: JSON, attached: Bool, metadata: [String: String], attachError: String? = nil, detachError: String? = nil) async throws {
        var o = json
        var status: JSON = ["attached": .bool(attached)]
        if !metadata.isEmpty { status["attachmentMetadata"] = .object(metadata.mapValues { .string($0) }) }
        let now = KubeTime.now().rfc3339
        if let attachError { status["attachError"] = ["time": .string(now), "message": .string(attachError)] }
        if let detachError { status["detachError"] = ["time": .string(now), "message": .string(detachError)] }
        o["status"] = status
        _ = try await ctx.client.update(ResourceType.volumeAttachments, namespace: nil, o, subresource: "status", fieldManager: Self.manager)
    }
}

/// kube's attach-detach controller for CSI volumes: every node gets a VolumeAttachment
/// (`csi-<sha256(handle + driver + node)>`) for each CSI volume its pods use, when the driver
/// needs attaching (its CSIDriver's `attachRequired`; true without a CSIDriver), and loses it
/// when no pod there uses the volume any more (the node has unpublished it by then: a pod's
/// object goes only after the node confirmed its teardown). Work key: the node's name.
final class AttachDetachController: Reconciler {
    let name = "attachdetach"
    let ctx: CSIContext
    static let manager = "swiftedge-attachdetach-controller"

    init(_ ctx: CSIContext, queue: WorkQueue) {
        self.ctx = ctx
        ctx.pods.addHandler { ev in
            switch ev {
            case .added(let p), .updated(_, let p), .deleted(let p):
                if let n = p["spec"]["nodeName"].stringValue, !n.isEmpty { queue.add(n) }
            case .synced: break
            }
        }
        ctx.attachments.addHandler { ev in
            switch ev {
            case .added(let a), .updated(_, let a), .deleted(let a):
                if let n = a["spec"]["nodeName"].stringValue { queue.add(n) }
            case .synced: break
            }
        }
        // Claims binding, volumes appearing, drivers changing: the nodes whose pods use volumes look again.
        let pods = ctx.pods
        let requeue: @Sendable (InformerEvent) -> Void = { ev in
            if case .synced = ev { return }
            for p in pods.cache.list() where (p["spec"]["volumes"].arrayValue ?? []).contains(where: { !$0["persistentVolumeClaim"].isNull }) {
                if let n = p["spec"]["nodeName"].stringValue, !n.isEmpty { queue.add(n) }
            }
        }
        ctx.claims.addHandler(requeue)
        ctx.volumes.addHandler(requeue)
        ctx.csiDrivers.addHandler(requeue)
    }

    func attachRequired(_ driver: String) -> Bool {
        (ctx.typed(ctx.csiDrivers.cache.get(driver)) as Storage.CSIDriver?)?.attachRequired ?? true
    }

    /// The attachments the node's pods need: name → (driver, pv).
    func desired(on node: String) -> [String: (driver: String, pv: String)] {
        var out: [String: (String, String)] = [:]
        for p in ctx.pods.cache.list() where p["spec"]["nodeName"].stringValue == node {
            let phase = p["status"]["phase"].stringValue
            if phase == "Succeeded" || phase == "Failed" { continue }
            for claimName in PodReferences(pod: p).persistentVolumeClaims {
                guard let claim: Storage.PersistentVolumeClaim = ctx.typed(ctx.claims.cache.get("\(p.namespace)/\(claimName)")),
                      !claim.volumeName.isEmpty, let pv: Storage.PersistentVolume = ctx.typed(ctx.volumes.cache.get(claim.volumeName)),
                      let csi = pv.spec?.csi, attachRequired(csi.driver)
                else { continue }
                out[CSINames.attachment(volumeHandle: csi.volumeHandle, driver: csi.driver, node: node)] = (csi.driver, claim.volumeName)
            }
        }
        return out
    }

    func reconcile(_ node: String) async throws -> ReconcileResult {
        let want = desired(on: node)
        let have = ctx.attachments.cache.list().filter { $0["spec"]["nodeName"].stringValue == node && !$0["spec"]["source"]["persistentVolumeName"].isNull }
        let haveNames = Set(have.map(\.name))
        for (name, w) in want.sorted(by: { $0.key < $1.key }) where !haveNames.contains(name) {
            let va: JSON = ["apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment", "metadata": ["name": .string(name)],
                            "spec": ["attacher": .string(w.driver), "nodeName": .string(node), "source": ["persistentVolumeName": .string(w.pv)]]]
            do { _ = try await ctx.client.create(ResourceType.volumeAttachments, namespace: nil, va, fieldManager: Self.manager) } catch let e as StatusError where e.code == 409 {}
            ctx.logger.info("volume attachment created", metadata: ["attachment": "\(name)", "volume": "\(w.pv)", "node": "\(node)"])
        }
        for a in have where want[a.name] == nil && !a.isDeleting {
            do { _ = try await ctx.client.delete(ResourceType.volumeAttachments, namespace: nil, name: a.name) } catch let e as StatusError where e.code == 404 {}
            ctx.logger.info("volume attachment deleted", metadata: ["attachment": "\(a.name)", "node": "\(node)"])
        }
        return .done
    }
}
