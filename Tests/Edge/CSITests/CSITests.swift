import CloudEdgeProtocol
import Foundation
import KubeAPI
import Logging
import AsyncSupport
import ServiceLifecycle
import Synchronization
import Testing

@testable import CSIDriver
@testable import CSIPlugins
@testable import LocalPathDriver

@Suite struct CSIMessageTests {
    @Test func kubeEdgeCallsAreRead() throws {
        // As KubeEdge's csidriver sends it (after cloudhub trims `node/<id>/`): no driver named.
        let m = Message(route: Route(source: "cloudhub", group: "resource", operation: .createVolume, resource: "default/volume/5f1c"),
                        content: .string(#"{"name":"pvc-1","capacityRange":{"requiredBytes":"1048576"}}"#))
        let call = try #require(try CSIControllerCall(m))
        #expect(call.driver == nil && call.id == "5f1c" && call.operation == .createVolume)
        #expect(call.request.contains("requiredBytes"))
    }

    @Test func swiftEdgeCallsNameTheirDriver() throws {
        let call = CSIControllerCall(operation: .deleteVolume, driver: "local-path.csi.swiftedge.io", id: "pvc-1", request: #"{"volumeId":"pvc-1"}"#)
        let m = call.message()
        #expect(m.route.resource == "default/volume/pvc-1" && m.route.operation == .deleteVolume && m.sync)
        #expect(m.route.destination == "csi:local-path.csi.swiftedge.io")
        #expect(try CSIControllerCall(Message(wire: JSON.parse(m.encoded()))) == call)
    }

    @Test func malformedCallsAreRefused() throws {
        let bad = Message(route: Route(source: "cloudhub", group: "resource", operation: .createVolume, resource: "default/volume"), content: "{}")
        #expect(throws: ProtocolError.self) { try CSIControllerCall(bad) }
        let notACall = Message(route: Route(source: "cloudhub", group: "resource", operation: .insert, resource: "default/pod/x"), content: "{}")
        #expect(try CSIControllerCall(notACall) == nil)
    }

    @Test func namesMatchKubelets() {
        // Computed independently: python3 hashlib.sha256(b"vol-1" + b"local-path.csi.swiftedge.io" + b"store-1").
        #expect(CSINames.attachment(volumeHandle: "vol-1", driver: "local-path.csi.swiftedge.io", node: "store-1")
            == "csi-f12a7d455e824b8de27c3484bc0343e178015ebc663bef590f8b73f88e063fc4")
        #expect(CSINames.stagingDirectory(pluginsDirectory: "/p", driver: "d", volumeHandle: "vol-1")
            == "/p/kubernetes.io/csi/d/d2e8363faaac7ae76def3b14091d8eb5755f6b92e9531627aeec833a8731cc49")
    }

    @Test func repliesInEveryFormTheNodesSend() throws {
        let call = CSIControllerCall(operation: .createVolume, driver: nil, id: "x", request: "{}").message()
        // SwiftEdge's edge: an object.
        let ok = CSIControllerCall.reply(to: call, .success(["volume": ["volume_id": "v1", "capacity_bytes": 5]]))
        #expect(ok.parentID == call.id && ok.route.operation == .response && ok.route.destination == nil)
        #expect(try CloudHubCSIChannel.body(of: ok)["volume"]["volume_id"] == "v1")
        // Bytes relayed by Go's encoding/json: base64 of the JSON.
        var b64 = ok
        b64.content = .string(Data(#"{"volume":{"volume_id":"v2"}}"#.utf8).base64EncodedString())
        #expect(try CloudHubCSIChannel.body(of: b64)["volume"]["volume_id"] == "v2")
        // An error reply keeps the plugin's code.
        let failed = CSIControllerCall.reply(to: call, .failure(CSICallError(code: "RESOURCE_EXHAUSTED", message: "disk full")))
        #expect(failed.route.operation == .error)
        #expect(throws: CSICallError(code: "RESOURCE_EXHAUSTED", message: "disk full")) { try CloudHubCSIChannel.body(of: failed) }
        // KubeEdge's bare error text.
        #expect(CSICallError(replyText: "timeout to get response for message 1").code == "UNKNOWN")
        var garbage = ok
        garbage.content = .string("not json")
        #expect(throws: CSICallError.self) { try CloudHubCSIChannel.body(of: garbage) }
    }
}

@Suite struct LocalPathVolumeTests {
    func tempDir() throws -> String {
        let d = NSTemporaryDirectory() + "lp-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    @Test func createIsIdempotentAndSizesMustAgree() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let v = LocalPathVolumes(directory: dir)
        let (id, first) = try v.create(name: "pvc-1", capacity: 100)
        #expect(id == "pvc-1" && first == .created && v.exists(id))
        #expect(try v.create(name: "pvc-1", capacity: 100).1 == .existed)
        #expect(throws: (any Error).self) { try v.create(name: "pvc-1", capacity: 200) }
        try v.delete(id)
        #expect(!v.exists(id) && !FileManager.default.fileExists(atPath: "\(dir)/pvc-1"))
        try v.delete(id)  // again: nothing to do
    }

    @Test func idsStayInsideTheDirectory() throws {
        for bad in ["", "..", ".hidden", "a/b", "../etc", String(repeating: "x", count: 300)] { #expect(!LocalPathVolumes.isSafeID(bad), "\(bad)") }
        #expect(LocalPathVolumes.isSafeID("pvc-0b5c8d2e-1f"))
        let hashed = LocalPathVolumes.volumeID(forName: "../../etc/passwd")
        #expect(LocalPathVolumes.isSafeID(hashed) && hashed.hasPrefix("vol-"))
    }
}

/// The node's half against SwiftEdge's local-path driver over real sockets: registration through
/// the plugins_registry, then controller calls relayed as the cloud sends them.
@Suite struct CSINodeSideTests {
    @Test func registersAndRelaysControllerCalls() async throws {
        let dir = NSTemporaryDirectory() + "csi-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let logger = Logger(label: "test")
        var config = LocalPathConfiguration(nodeID: "store-1", storageDirectory: dir + "/storage", socket: dir + "/plugins/lp/csi.sock",
                                            registrationDirectory: dir + "/plugins_registry")
        config.driverName = "lp.test"
        let driver = LocalPathDriver(configuration: config, logger: logger)
        let registry = CSIPluginRegistry()
        let seen = Mutex<[[RegisteredCSIPlugin]]>([])
        let wake = WakeSignal()
        /// The n-th change of the registered set (1-based), within 10 s.
        func change(_ n: Int) async throws -> [RegisteredCSIPlugin] {
            let deadline = ContinuousClock.now + .seconds(10)
            while true {
                if let v = seen.withLock({ $0.count >= n ? $0[n - 1] : nil }) { return v }
                guard ContinuousClock.now < deadline else { throw CSIVolumeError("no change \(n) of the registered plugins within 10 s") }
                await wake.wait(until: deadline)
            }
        }
        var wc = CSIPluginWatcher.Configuration(directory: dir + "/plugins_registry")
        wc.interval = .milliseconds(50)
        let watcher = CSIPluginWatcher(configuration: wc, registry: registry, logger: logger) { set in
            seen.withLock { $0.append(set) }
            wake.signal()
        }
        let (calls, _) = CSIControllerRelay.makeCallQueue()
        let relay = CSIControllerRelay(registry: registry, calls: calls, timeout: .seconds(5), logger: logger) { _ in }
        let driverGroup = ServiceGroup(configuration: .init(services: [.init(service: driver)], logger: logger))
        let watcherGroup = ServiceGroup(configuration: .init(services: [.init(service: watcher)], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await driverGroup.run() }
            group.addTask { try await watcherGroup.run() }
            let plugin = try #require(try await change(1).first)
            #expect(plugin.name == "lp.test" && plugin.nodeID == "store-1" && plugin.topology == ["kubernetes.io/hostname": "store-1"])
            #expect(registry.csiNode(nodeName: "store-1")["spec"]["drivers"].arrayValue?.first?["topologyKeys"] == ["kubernetes.io/hostname"])

            func call(_ op: CSIControllerCall.Operation, _ request: String, driver: String? = "lp.test") async -> Message {
                await relay.answer(CSIControllerCall(operation: op, driver: driver, id: "x", request: request).message())
            }
            // As the cloud asks (protojson, int64 as a string), answered as edgecore's Go structs marshal.
            let created = await call(.createVolume, #"{"name":"pvc-9","capacityRange":{"requiredBytes":"1048576"},"volumeCapabilities":[{"mount":{},"accessMode":{"mode":"SINGLE_NODE_WRITER"}}]}"#)
            #expect(created.route.operation == .response, "\(created.content)")
            #expect(created.content["volume"]["volume_id"] == "pvc-9")
            #expect(created.content["volume"]["capacity_bytes"] == .int(1_048_576))
            #expect(created.content["volume"]["accessible_topology"].arrayValue?.first?["segments"]["kubernetes.io/hostname"] == "store-1")
            #expect(FileManager.default.fileExists(atPath: dir + "/storage/pvc-9"))
            // KubeEdge's csidriver names no driver: the only plugin answers.
            let again = await call(.createVolume, #"{"name":"pvc-9","capacityRange":{"requiredBytes":"1048576"},"volumeCapabilities":[{"mount":{},"accessMode":{"mode":"SINGLE_NODE_WRITER"}}]}"#, driver: nil)
            #expect(again.route.operation == .response)
            let conflict = await call(.createVolume, #"{"name":"pvc-9","capacityRange":{"requiredBytes":"2"},"volumeCapabilities":[{"mount":{},"accessMode":{"mode":"SINGLE_NODE_WRITER"}}]}"#)
            #expect(conflict.route.operation == .error && conflict.content.stringValue?.hasPrefix("ALREADY_EXISTS:") == true, "\(conflict.content)")
            let block = await call(.createVolume, #"{"name":"pvc-b","volumeCapabilities":[{"block":{},"accessMode":{"mode":"SINGLE_NODE_WRITER"}}]}"#)
            #expect(block.content.stringValue?.hasPrefix("INVALID_ARGUMENT:") == true)
            // No attach capability: publish is answered at once, with no context.
            let published = await call(.controllerPublishVolume, #"{"volumeId":"pvc-9","nodeId":"store-1"}"#)
            #expect(published.route.operation == .response && published.content["publish_context"] == [:])
            let unknown = await call(.deleteVolume, #"{"volumeId":"pvc-9"}"#, driver: "other.driver")
            #expect(unknown.content.stringValue?.contains("not registered") == true)
            let notJSON = await call(.deleteVolume, "{{")
            #expect(notJSON.content.stringValue?.hasPrefix("INVALID_ARGUMENT:") == true)
            let deleted = await call(.deleteVolume, #"{"volumeId":"pvc-9"}"#)
            #expect(deleted.route.operation == .response && !FileManager.default.fileExists(atPath: dir + "/storage/pvc-9"))

            // The driver stops and removes its sockets: unregistered.
            await driverGroup.triggerGracefulShutdown()
            #expect(try await change(2).isEmpty)
            await watcherGroup.triggerGracefulShutdown()
            try await group.waitForAll()
        }
    }
}
