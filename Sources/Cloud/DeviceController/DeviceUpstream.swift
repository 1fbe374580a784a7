import KubeAPI
import KubeClient
import Logging

/// KubeEdge's devicecontroller, upstream half: writes what edge nodes report about their devices
/// into DeviceStatus objects.
public struct DeviceStatusWriter: Sendable {
    let client: KubeClient
    let logger: Logger
    /// The node a Device is bound to, from the cloud's cache (nil: no such device).
    let deviceNode: @Sendable (_ namespace: String, _ name: String) -> String?

    public init(client: KubeClient, logger: Logger, deviceNode: @escaping @Sendable (String, String) -> String?) {
        self.client = client; self.logger = logger; self.deviceNode = deviceNode
    }

    static let devices = ResourceType.devices
    static let deviceStatuses = ResourceType.deviceStatuses

    /// Twin reports and device states from the node's DeviceTwin (KubeEdge's `twin/edge_updated`
    /// and `state/update`, batched: `null/devicestatus` with `{"items": [{"namespace", "name",
    /// "twins", "state", "lastOnlineTime"}]}`, each the device's whole current status). Each item
    /// is written into the device's DeviceStatus (`.status`; created, owned by the Device, if
    /// missing) — only for devices bound to this node.
    public func writeDeviceStatuses(node: String, _ content: JSON) async throws {
        guard let items = content["items"].arrayValue else { throw StatusError.badRequest("device status report without items") }
        try await withThrowingTaskGroup(of: Void.self) { group in
            var running = 0
            for item in items {
                guard let ns = item["namespace"].stringValue, let name = item["name"].stringValue else {
                    throw StatusError.badRequest("device status without namespace or name")
                }
                guard deviceNode(ns, name) == node else {
                    logger.debug("status of a device not bound to the node ignored", metadata: ["node": "\(node)", "device": "\(ns)/\(name)"])
                    continue
                }
                if running >= 16 { try await group.next(); running -= 1 }
                running += 1
                group.addTask { try await self.writeDeviceStatus(namespace: ns, name: name, item) }
            }
            try await group.waitForAll()
        }
    }

    func writeDeviceStatus(namespace: String, name: String, _ item: JSON) async throws {
        var status: JSON = ["twins": item["twins"].isNull ? [] : item["twins"]]
        if let state = item["state"].stringValue { status["state"] = .string(state) }
        if let t = item["lastOnlineTime"].stringValue { status["lastOnlineTime"] = .string(t) }
        do {
            _ = try await client.patch(Self.deviceStatuses, namespace: namespace, name: name, ["status": status],
                                       fieldManager: "swiftedge-devicecontroller")
        } catch let e as StatusError where e.code == 404 {
            let device = try await client.get(Self.devices, namespace: namespace, name: name)
            guard let uid = device["metadata"]["uid"].stringValue else { return }
            let object: JSON = [
                "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceStatus",
                "metadata": ["name": .string(name), "namespace": .string(namespace),
                             "ownerReferences": [["apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device", "name": .string(name),
                                                  "uid": .string(uid), "controller": true, "blockOwnerDeletion": true]]],
                "spec": [:], "status": status,
            ]
            do { _ = try await client.create(Self.deviceStatuses, namespace: namespace, object, fieldManager: "swiftedge-devicecontroller") }
            catch let e as StatusError where e.code == 409 {
                _ = try await client.patch(Self.deviceStatuses, namespace: namespace, name: name, ["status": status],
                                           fieldManager: "swiftedge-devicecontroller")
            }
        }
    }
}
