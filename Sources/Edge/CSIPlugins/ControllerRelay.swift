import CSI
import CloudEdgeProtocol
import GRPCCore
import KubeAPI
import Logging
import Metrics
import ServiceLifecycle
import SwiftProtobuf

/// The node's half of KubeEdge's CSI controller path: the cloud's CSI driver sends
/// CreateVolume, DeleteVolume, ControllerPublishVolume and ControllerUnpublishVolume through the
/// channel (``CSIControllerCall``), and they are made on the controller service of the plugin
/// registered here and answered (`response` with the CSI response as edgecore's Go structs
/// marshal it: snake_case, int64 as numbers; `error` with the plugin's error). Calls run
/// concurrently; each has a deadline.
public final class CSIControllerRelay: Service {
    let registry: CSIPluginRegistry
    let upstream: @Sendable (CloudEdgeProtocol.Message) -> Void
    let timeout: Duration
    let logger: Logger
    let calls: AsyncStream<CloudEdgeProtocol.Message>
    let served = Counter(label: "swiftedge_csi_controller_calls_total")
    let failed = Counter(label: "swiftedge_csi_controller_call_failures_total")

    /// - Parameter calls: the cloud's calls, as the node receives them (``makeCallQueue()``).
    public init(registry: CSIPluginRegistry, calls: AsyncStream<CloudEdgeProtocol.Message>, timeout: Duration = .seconds(50), logger: Logger,
                upstream: @escaping @Sendable (CloudEdgeProtocol.Message) -> Void)
    {
        self.registry = registry; self.calls = calls; self.timeout = timeout; self.logger = logger; self.upstream = upstream
    }

    /// The queue the node's message handler puts calls on (it returns at once; answers go upstream when made).
    public static func makeCallQueue() -> (AsyncStream<CloudEdgeProtocol.Message>, AsyncStream<CloudEdgeProtocol.Message>.Continuation) {
        AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1024))
    }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            for await m in calls.cancelOnGracefulShutdown() {
                group.addTask { self.upstream(await self.answer(m)) }
            }
        }
    }

    /// The reply to one call.
    public func answer(_ m: CloudEdgeProtocol.Message) async -> CloudEdgeProtocol.Message {
        served.increment()
        let call: CSIControllerCall
        do {
            guard let c = try CSIControllerCall(m) else {
                return CSIControllerCall.reply(to: m, .failure(CSICallError(code: "INVALID_ARGUMENT", message: "operation \(m.route.operation.rawValue) is not a CSI controller call")))
            }
            call = c
        } catch {
            failed.increment()
            return CSIControllerCall.reply(to: m, .failure(CSICallError(code: "INVALID_ARGUMENT", message: "\(error)")))
        }
        let result = await perform(call)
        if case .failure(let e) = result {
            failed.increment()
            logger.warning("CSI controller call failed", metadata: ["operation": "\(m.route.operation.rawValue)", "driver": "\(call.driver ?? "")",
                                                                   "volume": "\(call.id)", "error": "\(e)"])
        } else {
            logger.info("CSI controller call", metadata: ["operation": "\(m.route.operation.rawValue)", "driver": "\(call.driver ?? "")", "volume": "\(call.id)"])
        }
        return CSIControllerCall.reply(to: m, result)
    }

    /// The plugin a call is for: the one it names, else (a call from KubeEdge's csidriver, which
    /// names none) the `csi-hostpath` edged hard-codes, else the only plugin registered.
    func plugin(for call: CSIControllerCall) -> Result<RegisteredCSIPlugin, CSICallError> {
        if let d = call.driver {
            guard let p = registry.plugin(d) else { return .failure(CSICallError(code: "UNAVAILABLE", message: "CSI driver \(d) is not registered on this node")) }
            return .success(p)
        }
        if let p = registry.plugin(CSIControllerCall.kubeEdgeDriver) { return .success(p) }
        let all = registry.all
        if all.count == 1 { return .success(all[0]) }
        return .failure(CSICallError(code: "UNAVAILABLE", message: "the call names no CSI driver and \(all.count) are registered on this node"))
    }

    static let responseEncoding: JSONEncodingOptions = {
        var o = JSONEncodingOptions()
        o.preserveProtoFieldNames = true
        o.alwaysPrintInt64sAsNumbers = true
        o.alwaysPrintEnumsAsInts = true
        return o
    }()

    static let requestDecoding: JSONDecodingOptions = {
        var o = JSONDecodingOptions()
        o.ignoreUnknownFields = true
        return o
    }()

    static func body(_ m: some SwiftProtobuf.Message) throws -> JSON {
        try JSON.parse(Array(m.jsonString(options: responseEncoding).utf8))
    }

    func perform(_ call: CSIControllerCall) async -> Result<JSON, CSICallError> {
        let plugin: RegisteredCSIPlugin
        switch self.plugin(for: call) {
        case .success(let p): plugin = p
        case .failure(let e): return .failure(e)
        }
        let client = CSIPluginClient(endpoint: plugin.endpoint)
        do {
            let caps = try await client.controller(timeout: timeout) { c, o in try await c.controllerGetCapabilities(.init(), options: o) }
            let rpcs = Set(caps.capabilities.compactMap { cap -> Csi_V1_ControllerServiceCapability.RPC.TypeEnum? in
                if case .rpc(let r)? = cap.type { return r.type }
                return nil
            })
            let text = call.request
            switch call.operation {
            case .createVolume:
                let req = try Csi_V1_CreateVolumeRequest(jsonString: text, options: Self.requestDecoding)
                guard rpcs.contains(.createDeleteVolume) else {
                    return .failure(CSICallError(code: "UNIMPLEMENTED", message: "driver \(plugin.name) has no CREATE_DELETE_VOLUME capability"))
                }
                return .success(try Self.body(try await client.controller(timeout: timeout) { c, o in try await c.createVolume(req, options: o) }))
            case .deleteVolume:
                let req = try Csi_V1_DeleteVolumeRequest(jsonString: text, options: Self.requestDecoding)
                guard rpcs.contains(.createDeleteVolume) else {
                    return .failure(CSICallError(code: "UNIMPLEMENTED", message: "driver \(plugin.name) has no CREATE_DELETE_VOLUME capability"))
                }
                return .success(try Self.body(try await client.controller(timeout: timeout) { c, o in try await c.deleteVolume(req, options: o) }))
            case .controllerPublishVolume:
                let req = try Csi_V1_ControllerPublishVolumeRequest(jsonString: text, options: Self.requestDecoding)
                // A driver without attach: nothing to do (as KubeEdge's edged and kube's attacher).
                guard rpcs.contains(.publishUnpublishVolume) else { return .success(["publish_context": [:]]) }
                return .success(try Self.body(try await client.controller(timeout: timeout) { c, o in try await c.controllerPublishVolume(req, options: o) }))
            case .controllerUnpublishVolume:
                let req = try Csi_V1_ControllerUnpublishVolumeRequest(jsonString: text, options: Self.requestDecoding)
                guard rpcs.contains(.publishUnpublishVolume) else { return .success([:]) }
                return .success(try Self.body(try await client.controller(timeout: timeout) { c, o in try await c.controllerUnpublishVolume(req, options: o) }))
            }
        } catch let e as CSICallError {
            return .failure(e)
        } catch {
            return .failure(CSICallError(code: "INVALID_ARGUMENT", message: "the request is not a valid CSI request: \(error)"))
        }
    }
}
