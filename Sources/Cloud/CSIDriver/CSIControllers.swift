import CloudEdgeProtocol
import ControllerRuntime
import KubeAPI
import KubeClient
import Logging

/// The cloud's side of CSI on edge nodes (KubeEdge's csidriver with the external-provisioner,
/// external-attacher and attach-detach controllers it relies on): provisioning, attaching and
/// deleting volumes of the drivers edge nodes register, their controller calls made through the
/// nodes. Built on the caller's informers; ``run()`` once they have synced.
public struct CSIControllers: Sendable {
    let loops: [ControllerLoop]
    let events: EventRecorder

    public init(client: KubeClient, informers: InformerFactory, channel: any CSIControllerChannel, callTimeout: Duration = .seconds(60), logger: Logger) {
        let events = EventRecorder(client: client, component: "csi-provisioner", logger: logger)
        let ctx = CSIContext(client: client, channel: channel,
                             claims: informers.informer(ResourceType.persistentVolumeClaims), volumes: informers.informer(ResourceType.persistentVolumes),
                             classes: informers.informer(ResourceType.storageClasses), csiNodes: informers.informer(ResourceType.csiNodes),
                             csiDrivers: informers.informer(ResourceType.csiDrivers), nodes: informers.informer(ResourceType.nodes),
                             attachments: informers.informer(ResourceType.volumeAttachments), pods: informers.informer(ResourceType.pods),
                             events: events, logger: logger, timeout: callTimeout)
        let q1 = WorkQueue(), q2 = WorkQueue(), q3 = WorkQueue()
        loops = [
            ControllerLoop(reconciler: CSIProvisioner(ctx, queue: q1), queue: q1, workers: 4, logger: logger),
            ControllerLoop(reconciler: CSIAttacher(ctx, queue: q2), queue: q2, workers: 4, logger: logger),
            ControllerLoop(reconciler: AttachDetachController(ctx, queue: q3), queue: q3, workers: 2, logger: logger),
        ]
        self.events = events
    }

    /// Runs the controllers (until cancelled).
    public func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await events.run() }
            for l in loops { group.addTask { await l.run() } }
        }
    }
}

/// The storage a new cluster gets: the `local-path` StorageClass (default unless the cluster
/// has a default class already) served by SwiftEdge's local-path driver on every edge node, and
/// that driver's CSIDriver (no attach). Existing objects of those names are left as they are.
public enum LocalPathStorage {
    public static let driver = "local-path.csi.swiftedge.io"
    public static let className = "local-path"

    public static func install(_ client: KubeClient, logger: Logger) async throws {
        let fm = "swiftedge-cloudcore"
        let driverObject: JSON = ["apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": ["name": .string(driver)],
                                  "spec": ["attachRequired": false, "podInfoOnMount": false, "volumeLifecycleModes": ["Persistent"],
                                           "fsGroupPolicy": "File"]]
        do { _ = try await client.create(ResourceType.csiDrivers, namespace: nil, driverObject, fieldManager: fm) } catch let e as StatusError where e.code == 409 {}
        let classes = try await client.list(ResourceType.storageClasses, namespace: nil)
        let items = classes["items"].arrayValue ?? []
        if items.contains(where: { $0["metadata"]["name"].stringValue == className }) { return }
        let hasDefault = items.contains { $0["metadata"]["annotations"][Storage.Keys.defaultClass].stringValue == "true" }
        var sc: JSON = ["apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": ["name": .string(className)],
                        "provisioner": .string(driver), "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer"]
        if !hasDefault { sc["metadata"]["annotations"] = [Storage.Keys.defaultClass: "true"] }
        do {
            _ = try await client.create(ResourceType.storageClasses, namespace: nil, sc, fieldManager: fm)
            logger.info("storage class installed", metadata: ["class": "\(className)", "provisioner": "\(driver)", "default": "\(!hasDefault)"])
        } catch let e as StatusError where e.code == 409 {}
    }
}
