import CloudEdgeProtocol
import DMI
import DMIValues
import GRPCCore
import GRPCNIOTransportHTTP2
import Glibc
import KubeAPI
import ServiceLifecycle

/// A call to a mapper's `DeviceMapperService`, made in order per node.
enum MapperCall: Sendable {
    case registerDevice(MapperInfo, V1beta1_Device)
    case updateDevice(MapperInfo, V1beta1_Device)
    case removeDevice(MapperInfo, namespace: String, name: String)
    case updateModel(MapperInfo, V1beta1_DeviceModel)
    case removeModel(MapperInfo, namespace: String, name: String)

    var mapper: MapperInfo {
        switch self {
        case .registerDevice(let m, _), .updateDevice(let m, _), .removeDevice(let m, _, _), .updateModel(let m, _), .removeModel(let m, _, _): m
        }
    }
}

/// The DMI `DeviceManagerService` mappers call (KubeEdge's `dmiserver`).
struct DeviceManagerService: V1beta1_DeviceManagerService.SimpleServiceProtocol {
    let twin: DeviceTwin

    func mapperRegister(request: V1beta1_MapperRegisterRequest, context: ServerContext) async throws -> V1beta1_MapperRegisterResponse {
        let info = request.mapper
        let socket = String(decoding: info.address, as: UTF8.self)
        guard !info.protocol.isEmpty, !socket.isEmpty else {
            throw RPCError(code: .invalidArgument, message: "mapper registration needs mapper.protocol and mapper.address (its socket path)")
        }
        let mapper = MapperInfo(name: info.name.isEmpty ? info.protocol : info.name, protocolName: info.protocol, socket: socket)
        twin.mappers.withLock { $0[info.protocol] = mapper }
        let saved: JSON = ["name": .string(mapper.name), "protocol": .string(mapper.protocolName), "socket": .string(socket)]
        try await twin.store.saveLocalState(kind: "devicemapper", [info.protocol: saved.serialized()])
        twin.logger.info("mapper registered", metadata: ["mapper": "\(mapper.name)", "protocol": "\(mapper.protocolName)", "socket": "\(socket)"])
        var response = V1beta1_MapperRegisterResponse()
        guard request.withData else { return response }
        let devices = try await twin.store.list(type: .device)
        let records = twin.book.withLock { $0.devices }
        var models = Set<String>()
        for d in devices {
            let ns = d.value["metadata"]["namespace"].stringValue ?? "default", name = d.value["metadata"]["name"].stringValue ?? ""
            guard let r = records["\(ns)/\(name)"], r.protocolName == info.protocol else { continue }
            response.deviceList.append(DMIConvert.device(d.value, r))
            models.insert(ResourceRef(namespace: ns, kind: .deviceModel, name: r.model).description)
        }
        for key in models.sorted() { if let m = try await twin.store.get(key) { response.modelList.append(DMIConvert.model(m.value)) } }
        return response
    }

    func reportDeviceStatus(request: V1beta1_ReportDeviceStatusRequest, context: ServerContext) async throws -> V1beta1_ReportDeviceStatusResponse {
        let values = request.reportedDevice.twins.map { t in
            TwinBook.Report(property: t.propertyName, value: t.reported.value,
                            observedDesired: t.hasObservedDesired && !t.observedDesired.value.isEmpty ? t.observedDesired.value : nil)
        }
        do { try await twin.report(namespace: request.deviceNamespace.isEmpty ? "default" : request.deviceNamespace, name: request.deviceName, values) }
        catch { throw RPCError(code: error.code == 404 ? .notFound : .invalidArgument, message: error.reason) }
        return .init()
    }

    func reportDeviceStates(request: V1beta1_ReportDeviceStatesRequest, context: ServerContext) async throws -> V1beta1_ReportDeviceStatesResponse {
        do { try await twin.setState(namespace: request.deviceNamespace.isEmpty ? "default" : request.deviceNamespace, name: request.deviceName, request.state) }
        catch { throw RPCError(code: error.code == 404 ? .notFound : .invalidArgument, message: error.reason) }
        return .init()
    }
}

extension DeviceTwin {
    /// Serves DMI on a unix socket (a stale socket file from an earlier run is replaced).
    func serveDMI(_ path: String) async throws {
        unlink(path)
        let transport = HTTP2ServerTransport.Posix(address: .unixDomainSocket(path: path), transportSecurity: .plaintext)
        let server = GRPCServer(transport: transport, services: [DeviceManagerService(twin: self)])
        do {
            try await withGracefulShutdownHandler {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await server.serve() }
                    _ = try await transport.listeningAddress
                    logger.info("DMI listening", metadata: ["socket": "\(path)"])
                    try await group.waitForAll()
                }
            } onGracefulShutdown: {
                server.beginGracefulShutdown()
            }
        } catch {
            // The node runs on without DMI (pods, MQTT twins); mappers cannot register.
            logger.error("DMI server failed; mappers cannot register", metadata: ["socket": "\(path)", "error": "\(error)"])
            try? await gracefulShutdown()
        }
        unlink(path)
    }

    /// Makes the mapper calls one at a time, in order. A mapper that is down misses the call; it
    /// gets every device of its protocol when it registers again.
    func callMappers() async {
        for await c in calls {
            let m = c.mapper
            do {
                let transport = try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: m.socket), transportSecurity: .plaintext)
                try await withGRPCClient(transport: transport) { client in
                    let mapper = V1beta1_DeviceMapperService.Client(wrapping: client)
                    var options = CallOptions.defaults
                    options.timeout = .seconds(5)
                    switch c {
                    case .registerDevice(_, let d):
                        var r = V1beta1_RegisterDeviceRequest(); r.device = d
                        _ = try await mapper.registerDevice(r, options: options)
                    case .updateDevice(_, let d):
                        var r = V1beta1_UpdateDeviceRequest(); r.device = d
                        _ = try await mapper.updateDevice(r, options: options)
                    case .removeDevice(_, let ns, let name):
                        var r = V1beta1_RemoveDeviceRequest(); r.deviceName = name; r.deviceNamespace = ns
                        _ = try await mapper.removeDevice(r, options: options)
                    case .updateModel(_, let model):
                        var r = V1beta1_UpdateDeviceModelRequest(); r.model = model
                        _ = try await mapper.updateDeviceModel(r, options: options)
                    case .removeModel(_, let ns, let name):
                        var r = V1beta1_RemoveDeviceModelRequest(); r.modelName = name; r.modelNamespace = ns
                        _ = try await mapper.removeDeviceModel(r, options: options)
                    }
                }
            } catch {
                logger.warning("mapper call failed", metadata: ["mapper": "\(m.name)", "socket": "\(m.socket)", "call": "\(c.name)", "error": "\(error)"])
            }
        }
    }
}

extension MapperCall {
    var name: String {
        switch self {
        case .registerDevice: "RegisterDevice"
        case .updateDevice: "UpdateDevice"
        case .removeDevice: "RemoveDevice"
        case .updateModel: "UpdateDeviceModel"
        case .removeModel: "RemoveDeviceModel"
        }
    }
}

/// Device and DeviceModel objects (JSON, as the cloud sent them) as DMI messages.
enum DMIConvert {
    static func values(_ o: JSON) -> [String: DMIValue] {
        var out: [String: DMIValue] = [:]
        for (k, v) in o.objectValue ?? [:] {
            switch v {
            case .string(let s): out[k] = .string(s)
            case .bool(let b): out[k] = .bool(b)
            case .int(let i): out[k] = .int(i)
            case .double(let d): out[k] = .double(d)
            case .object, .array: out[k] = .string(v.serializedString())  // as KubeEdge: nested values travel as JSON text
            case .null: continue
            }
        }
        return out
    }

    static func customized(_ o: JSON) -> V1beta1_CustomizedValue {
        (try? V1beta1_CustomizedValue(values: values(o))) ?? V1beta1_CustomizedValue()
    }

    static func device(_ device: JSON, _ record: DeviceRecord) -> V1beta1_Device {
        var d = V1beta1_Device()
        d.name = record.name
        d.namespace = record.namespace
        let spec = device["spec"]
        d.spec.deviceModelReference = record.model
        d.spec.protocol.protocolName = record.protocolName
        d.spec.protocol.configData = customized(spec["protocol"]["configData"])
        for p in spec["properties"].arrayValue ?? [] {
            var dp = V1beta1_DeviceProperty()
            dp.name = p["name"].stringValue ?? ""
            // Only a desired value the twin accepts reaches the mapper.
            if let v = p["desired"]["value"].stringValue, let t = record.properties[dp.name], t.writable, TwinBook.fits(v, type: t.type) {
                dp.desired.value = v
            }
            for (k, v) in p["desired"]["metadata"].objectValue ?? [:] { if let s = v.stringValue { dp.desired.metadata[k] = s } }
            dp.visitors.protocolName = p["visitors"]["protocolName"].stringValue ?? record.protocolName
            dp.visitors.configData = customized(p["visitors"]["configData"])
            dp.reportCycle = p["reportCycle"].intValue ?? 0
            dp.collectCycle = p["collectCycle"].intValue ?? 0
            dp.reportToCloud = p["reportToCloud"].boolValue ?? true
            d.spec.properties.append(dp)
        }
        for m in spec["methods"].arrayValue ?? [] {
            var dm = V1beta1_DeviceMethod()
            dm.name = m["name"].stringValue ?? ""
            dm.description_p = m["description"].stringValue ?? ""
            dm.propertyNames = (m["propertyNames"].arrayValue ?? []).compactMap(\.stringValue)
            d.spec.methods.append(dm)
        }
        for (n, t) in record.properties.sorted(by: { $0.key < $1.key }) {
            var tw = V1beta1_Twin()
            tw.propertyName = n
            if let r = t.reported { tw.reported.value = r }
            if let o = t.observedDesired { tw.observedDesired.value = o }
            d.status.twins.append(tw)
        }
        return d
    }

    static func model(_ model: JSON) -> V1beta1_DeviceModel {
        var m = V1beta1_DeviceModel()
        m.name = model["metadata"]["name"].stringValue ?? ""
        m.namespace = model["metadata"]["namespace"].stringValue ?? "default"
        for p in model["spec"]["properties"].arrayValue ?? [] {
            var mp = V1beta1_ModelProperty()
            mp.name = p["name"].stringValue ?? ""
            mp.description_p = p["description"].stringValue ?? ""
            mp.type = p["type"].stringValue ?? ""
            mp.accessMode = p["accessMode"].stringValue ?? ""
            mp.minimum = p["minimum"].stringValue ?? ""
            mp.maximum = p["maximum"].stringValue ?? ""
            mp.unit = p["unit"].stringValue ?? ""
            m.spec.properties.append(mp)
        }
        return m
    }
}
