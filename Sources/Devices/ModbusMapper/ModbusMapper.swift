import DefaultSettings
import DMI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import KubeAPI
import Glibc
import Logging
import Metrics
import Modbus
import ServiceLifecycle
import Synchronization

/// `swiftedge mapper modbus` settings (KubeEdge mapper-framework's `config.yaml` keys in comments).
public struct ModbusMapperConfiguration: Sendable {
    /// `common.name`.
    public var name = "modbus-mapper"
    /// `common.protocol`: the devices it takes (`spec.protocol.protocolName`).
    public var protocolName = "modbus"
    /// `common.edgecore_sock`: the edge's DMI socket.
    public var edgeSocket = Defaults.dmiSocket
    /// `grpc_server.socket_path`: where this mapper's DeviceMapperService listens.
    public var socket = Defaults.modbusMapperSocket
    /// How long one Modbus request may take.
    public var requestTimeout: Duration = .seconds(1)
    public init() {}
}

/// A device the mapper runs: the DMI description, and a generation that changes whenever the
/// edge updates or removes it (its runner stops when the generation moves on).
struct MappedDevice: Sendable {
    var device: V1beta1_Device
    var generation: Int
}

/// The Modbus TCP mapper: registers with the edge over DMI and gets its devices, serves the DMI
/// `DeviceMapperService` for later changes, and runs each device: every property read at its
/// collect cycle, twins reported to the edge at the report cycle, desired values written to
/// writable registers, the device's state (online/offline) reported when it changes.
public final class ModbusMapper: Service {
    let configuration: ModbusMapperConfiguration
    let logger: Logger
    let devices = Mutex<[String: MappedDevice]>([:])
    let models = Mutex<[String: V1beta1_DeviceModel]>([:])
    let generation = Atomic<Int>(0)
    let (starts, start) = AsyncStream<String>.makeStream()
    let reads = Counter(label: "swiftedge_mapper_modbus_reads_total")
    let readFailures = Counter(label: "swiftedge_mapper_modbus_read_failures_total")
    let writes = Counter(label: "swiftedge_mapper_modbus_writes_total")

    public init(configuration: ModbusMapperConfiguration, logger: Logger) { self.configuration = configuration; self.logger = logger }

    public func run() async throws {
        let edge = GRPCClient(transport: try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: configuration.edgeSocket),
                                                                         transportSecurity: .plaintext))
        let dmi = V1beta1_DeviceManagerService.Client(wrapping: edge)
        unlink(configuration.socket)
        let transport = HTTP2ServerTransport.Posix(address: .unixDomainSocket(path: configuration.socket), transportSecurity: .plaintext)
        let server = GRPCServer(transport: transport, services: [DeviceMapperService(mapper: self)])
        try await withGracefulShutdownHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await edge.runConnections() }
                group.addTask { try await server.serve() }
                group.addTask {
                    // The edge calls this mapper's socket as soon as it knows it: listen first.
                    _ = try await transport.listeningAddress
                    await self.register(dmi)
                }
                group.addTask {
                    await withTaskGroup(of: Void.self) { runners in
                        for await key in self.starts {
                            runners.addTask { await self.runDevice(key, dmi) }
                        }
                        runners.cancelAll()
                    }
                }
                try await group.waitForAll()
            }
        } onGracefulShutdown: {
            self.start.finish()
            server.beginGracefulShutdown()
            edge.beginGracefulShutdown()
        }
        unlink(configuration.socket)
    }

    /// Registers with the edge (retrying until it answers) and takes the devices it returns.
    func register(_ dmi: V1beta1_DeviceManagerService.Client<HTTP2ClientTransport.Posix>) async {
        var request = V1beta1_MapperRegisterRequest()
        request.withData = true
        request.mapper.name = configuration.name
        request.mapper.version = "v1.0.0"
        request.mapper.apiVersion = "v1beta1"
        request.mapper.protocol = configuration.protocolName
        request.mapper.address = Data(configuration.socket.utf8)
        request.mapper.state = "ok"
        var attempt = 0
        while !Task.isCancelled {
            attempt += 1
            do {
                var options = CallOptions.defaults
                options.timeout = .seconds(5)
                options.waitForReady = true
                let response = try await dmi.mapperRegister(request, options: options)
                for m in response.modelList { models.withLock { $0["\(m.namespace)/\(m.name)"] = m } }
                for d in response.deviceList { upsert(d) }
                logger.info("registered with the edge", metadata: ["socket": "\(configuration.edgeSocket)", "devices": "\(response.deviceList.count)",
                                                                    "models": "\(response.modelList.count)"])
                return
            } catch {
                if attempt == 1 || attempt % 30 == 0 {
                    logger.warning("cannot register with the edge yet; retrying", metadata: ["socket": "\(configuration.edgeSocket)", "error": "\(error)"])
                }
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// A device arrived or changed: its runner (re)starts with the new description.
    func upsert(_ d: V1beta1_Device) {
        let key = "\(d.namespace.isEmpty ? "default" : d.namespace)/\(d.name)"
        let g = generation.add(1, ordering: .relaxed).newValue
        devices.withLock { $0[key] = MappedDevice(device: d, generation: g) }
        start.yield(key)
    }

    func remove(namespace: String, name: String) {
        let key = "\(namespace.isEmpty ? "default" : namespace)/\(name)"
        if devices.withLock({ $0.removeValue(forKey: key) }) != nil {
            logger.info("device removed; polling stopped", metadata: ["device": "\(key)"])
        }
    }

    func current(_ key: String, _ g: Int) -> Bool { devices.withLock { $0[key]?.generation == g } }

    /// One device's loop, until it is removed or replaced.
    func runDevice(_ key: String, _ dmi: V1beta1_DeviceManagerService.Client<HTTP2ClientTransport.Posix>) async {
        guard let entry = devices.withLock({ $0[key] }) else { return }
        let d = entry.device, g = entry.generation
        let ns = d.namespace.isEmpty ? "default" : d.namespace
        let model = models.withLock { $0["\(ns)/\(d.spec.deviceModelReference)"] }
        func modelType(_ p: String) -> String? { model?.spec.properties.first { $0.name == p }?.type }

        let endpoint: ModbusEndpoint
        do { endpoint = try ModbusEndpoint(d.spec.protocol.configData.values) } catch {
            logger.error("device not started", metadata: ["device": "\(key)", "error": "\(error)"])
            await reportState(dmi, d, "unhealthy")
            return
        }
        struct Prop { var name: String; var visitor: ModbusVisitor; var collect: Duration; var report: Duration; var desired: String? }
        var props: [Prop] = []
        for p in d.spec.properties where p.visitors.protocolName.isEmpty || p.visitors.protocolName == configuration.protocolName {
            guard !p.visitors.configData.data.isEmpty else { continue }  // no visitor: not the mapper's (e.g. set over MQTT)
            do {
                let v = try ModbusVisitor(p.visitors.configData.values, modelType: modelType(p.name))
                props.append(Prop(name: p.name, visitor: v, collect: cycle(p.collectCycle, default: .seconds(1)),
                                  report: cycle(p.reportCycle, default: .seconds(1)),
                                  desired: p.hasDesired && !p.desired.value.isEmpty ? p.desired.value : nil))
            } catch {
                logger.error("property skipped", metadata: ["device": "\(key)", "property": "\(p.name)", "error": "\(error)"])
            }
        }
        guard !props.isEmpty else { return }
        logger.info("device started", metadata: ["device": "\(key)", "endpoint": "\(endpoint.host):\(endpoint.port)", "slave": "\(endpoint.slaveID)",
                                                 "properties": "\(props.map(\.name))"])
        let client = ModbusTCPClient(host: endpoint.host, port: endpoint.port, unit: endpoint.slaveID, timeout: configuration.requestTimeout)
        let clock = ContinuousClock()
        var nextCollect = [ContinuousClock.Instant](repeating: clock.now, count: props.count)
        var nextReport = clock.now
        let reportEvery = props.map(\.report).min() ?? .seconds(1)
        var values: [String: String] = [:]
        // Desired values applied: from the device's own twin status (observedDesired) if the
        // edge knows one, so a restart does not write again what was already written.
        var applied: [String: String] = [:]
        for t in d.status.twins where t.hasObservedDesired && !t.observedDesired.value.isEmpty { applied[t.propertyName] = t.observedDesired.value }
        var state = ""
        var writeErrors: [String: String] = [:]

        while current(key, g) && !Task.isCancelled {
            var online: Bool?
            for (i, p) in props.enumerated() where clock.now >= nextCollect[i] {
                nextCollect[i] = clock.now + p.collect
                // A desired value not yet applied is written first.
                if let want = p.desired, applied[p.name] != want, p.visitor.writable {
                    do {
                        let request = try p.visitor.writeRequest(want)
                        _ = try await client.send(request)
                        writes.increment()
                        applied[p.name] = want
                        writeErrors[p.name] = nil
                        logger.info("desired value written", metadata: ["device": "\(key)", "property": "\(p.name)", "value": "\(want)"])
                    } catch {
                        if writeErrors[p.name] != error.description {
                            logger.warning("desired value not written", metadata: ["device": "\(key)", "property": "\(p.name)", "value": "\(want)",
                                                                                   "error": "\(error)"])
                            writeErrors[p.name] = error.description
                        }
                        if error.exceptionCode == nil { online = false }
                    }
                }
                do {
                    let answer = try await client.send(p.visitor.readRequest)
                    values[p.name] = try p.visitor.value(of: answer)
                    reads.increment()
                    if online == nil { online = true }
                } catch {
                    readFailures.increment()
                    // An exception is an answer: the device is there. Silence or garbage is not.
                    if error.exceptionCode == nil { online = false } else if online == nil { online = true }
                    logger.debug("read failed", metadata: ["device": "\(key)", "property": "\(p.name)", "error": "\(error)"])
                }
            }
            if let online {
                let s = online ? "online" : "offline"
                if s != state {
                    // A device that was away may have restarted and lost what was written:
                    // desired values are written again.
                    if state == "offline" && online { applied = [:] }
                    state = s
                    logger.info("device state", metadata: ["device": "\(key)", "state": "\(s)"])
                    await reportState(dmi, d, s)
                }
            }
            if clock.now >= nextReport, !values.isEmpty {
                nextReport = clock.now + reportEvery
                var request = V1beta1_ReportDeviceStatusRequest()
                request.deviceName = d.name
                request.deviceNamespace = ns
                request.reportedDevice.reportToCloud = true
                for p in props {
                    guard let v = values[p.name] else { continue }
                    var t = V1beta1_Twin()
                    t.propertyName = p.name
                    t.reported.value = v
                    t.reported.metadata = ["type": p.visitor.dataType, "timestamp": String(KubeTime.now().milliseconds)]
                    if let a = applied[p.name] { t.observedDesired.value = a }
                    request.reportedDevice.twins.append(t)
                }
                do {
                    var options = CallOptions.defaults
                    options.timeout = .seconds(5)
                    _ = try await dmi.reportDeviceStatus(request, options: options)
                } catch {
                    logger.debug("twin report failed", metadata: ["device": "\(key)", "error": "\(error)"])
                    // The edge may have restarted without knowing the device yet: say the state again.
                    state = ""
                }
            }
            let wake = (nextCollect + [nextReport]).min() ?? clock.now + .seconds(1)
            try? await Task.sleep(until: max(wake, clock.now + .milliseconds(5)), clock: clock)
        }
        await client.close()
    }

    func reportState(_ dmi: V1beta1_DeviceManagerService.Client<HTTP2ClientTransport.Posix>, _ d: V1beta1_Device, _ state: String) async {
        var request = V1beta1_ReportDeviceStatesRequest()
        request.deviceName = d.name
        request.deviceNamespace = d.namespace.isEmpty ? "default" : d.namespace
        request.state = state
        var options = CallOptions.defaults
        options.timeout = .seconds(5)
        do { _ = try await dmi.reportDeviceStates(request, options: options) } catch {
            logger.debug("state report failed", metadata: ["device": "\(d.namespace)/\(d.name)", "error": "\(error)"])
        }
    }

}

/// The DMI `DeviceMapperService` the edge calls when devices or models change.
struct DeviceMapperService: V1beta1_DeviceMapperService.SimpleServiceProtocol {
    let mapper: ModbusMapper

    func registerDevice(request: V1beta1_RegisterDeviceRequest, context: ServerContext) async throws -> V1beta1_RegisterDeviceResponse {
        mapper.upsert(request.device)
        var r = V1beta1_RegisterDeviceResponse()
        r.deviceName = request.device.name
        r.deviceNamespace = request.device.namespace
        return r
    }

    func removeDevice(request: V1beta1_RemoveDeviceRequest, context: ServerContext) async throws -> V1beta1_RemoveDeviceResponse {
        mapper.remove(namespace: request.deviceNamespace, name: request.deviceName)
        return .init()
    }

    func updateDevice(request: V1beta1_UpdateDeviceRequest, context: ServerContext) async throws -> V1beta1_UpdateDeviceResponse {
        mapper.upsert(request.device)
        return .init()
    }

    func createDeviceModel(request: V1beta1_CreateDeviceModelRequest, context: ServerContext) async throws -> V1beta1_CreateDeviceModelResponse {
        mapper.models.withLock { $0["\(request.model.namespace)/\(request.model.name)"] = request.model }
        var r = V1beta1_CreateDeviceModelResponse()
        r.deviceModelName = request.model.name
        r.deviceModelNamespace = request.model.namespace
        return r
    }

    func removeDeviceModel(request: V1beta1_RemoveDeviceModelRequest, context: ServerContext) async throws -> V1beta1_RemoveDeviceModelResponse {
        _ = mapper.models.withLock { $0.removeValue(forKey: "\(request.modelNamespace)/\(request.modelName)") }
        return .init()
    }

    func updateDeviceModel(request: V1beta1_UpdateDeviceModelRequest, context: ServerContext) async throws -> V1beta1_UpdateDeviceModelResponse {
        mapper.models.withLock { $0["\(request.model.namespace)/\(request.model.name)"] = request.model }
        return .init()
    }

    func getDevice(request: V1beta1_GetDeviceRequest, context: ServerContext) async throws -> V1beta1_GetDeviceResponse {
        let key = "\(request.deviceNamespace.isEmpty ? "default" : request.deviceNamespace)/\(request.deviceName)"
        guard let d = mapper.devices.withLock({ $0[key] }) else { throw RPCError(code: .notFound, message: "device \(key) is not on this mapper") }
        var r = V1beta1_GetDeviceResponse()
        r.device = d.device
        return r
    }
}
