import AsyncSupport
import CloudEdgeProtocol
import DMI
import GRPCCore
import GRPCNIOTransportHTTP2
import KubeAPI
import Logging
import MQTT
import MetaStore
import Metrics
import ServiceLifecycle
import Synchronization

/// DeviceTwin settings.
public struct DeviceTwinConfiguration: Sendable {
    public var nodeName: String
    /// The broker the EventBus connects to (nil: no EventBus).
    public var mqtt: MQTTClientConfiguration?
    /// Where the DMI `DeviceManagerService` listens (nil: no DMI).
    public var dmiSocket: String?
    /// Device statuses per upstream message.
    public var uploadBatch = 100
    /// Least time between two device status messages (the first after a quiet spell goes at once).
    public var uploadInterval: Duration = .milliseconds(50)
    /// How often reported values are written to the local database (one transaction).
    public var persistInterval: Duration = .milliseconds(500)
    public init(nodeName: String) { self.nodeName = nodeName }
}

/// A mapper registered over DMI: the protocol it serves and its socket.
struct MapperInfo: Sendable, Equatable {
    var name: String
    var protocolName: String
    var socket: String
}

/// The edge's devices: twins (desired from the Device objects the cloud sent, reported from
/// mappers over DMI and devices over MQTT) kept in a ``TwinBook``; reported values and states
/// saved locally (they survive restarts and outages) and sent to the cloud as DeviceStatus while
/// connected (latest per device, all again after each reconnect); the EventBus (MQTT, KubeEdge's
/// topics); the DMI server mappers register with, and calls to each mapper when its devices or
/// models change.
public final class DeviceTwin: Service {
    let configuration: DeviceTwinConfiguration
    let store: any MetaStorage & LocalStateStorage
    let upstream: @Sendable (Message) -> Void
    /// The cloud connection (EdgeHub's): statuses go up only while it is up, all again after a reconnect.
    let connection: StateSignal<Bool>
    let logger: Logger
    let book = Mutex(TwinBook())
    /// Devices whose status the cloud has not seen yet.
    let unsent = Mutex<Set<String>>([])
    /// Devices whose reported side is not saved yet (nil value: removed).
    let unsaved = Mutex<Set<String>>([])
    let mappers = Mutex<[String: MapperInfo]>([:])
    /// When an event was last sent, by device and reason (repeats within a minute are dropped).
    let lastEvents = Mutex<[String: Int64]>([:])
    let (wakeups, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    let (calls, call) = AsyncStream<MapperCall>.makeStream()
    let mqtt: MQTTClient?
    let reports = Counter(label: "swiftedge_devicetwin_reports_total")
    let refused = Counter(label: "swiftedge_devicetwin_refused_total")
    let statusesSent = Counter(label: "swiftedge_devicetwin_statuses_sent_total")

    public init(configuration: DeviceTwinConfiguration, store: any MetaStorage & LocalStateStorage,
                upstream: @escaping @Sendable (Message) -> Void, connection: StateSignal<Bool>, logger: Logger)
    {
        self.configuration = configuration; self.store = store; self.upstream = upstream; self.connection = connection
        self.logger = logger
        let holder = TwinRef()
        if var m = configuration.mqtt {
            m.subscriptions = EventBusTopic.subscriptions(node: configuration.nodeName).map { ($0, .atLeastOnce) }
            mqtt = MQTTClient(configuration: m, logger: logger) { p in await holder.twin?.received(p) }
        } else {
            mqtt = nil
        }
        holder.set(self)
    }

    /// The channel to the cloud came up or went down: after a reconnect every status is sent again.
    public func connectionChanged(_ up: Bool) {
        guard up else { return }
        let all = book.withLock { Set($0.devices.keys) }
        unsent.withLock { $0.formUnion(all) }
        wake.yield()
    }

    public func run() async throws {
        let feed = store.changes()
        try await load()
        // Every child ends on graceful shutdown; none ends the others early.
        try await withThrowingTaskGroup(of: Void.self) { group in
            if let mqtt { group.addTask { try await mqtt.run() } }
            if let path = configuration.dmiSocket {
                group.addTask { try await self.serveDMI(path) }
            }
            group.addTask { await cancelWhenGracefulShutdown { await self.sendUpstream() } }
            group.addTask { await self.persistLoop() }
            group.addTask { await cancelWhenGracefulShutdown { await self.callMappers() } }
            group.addTask { for await up in self.connection.updates().cancelOnGracefulShutdown() { self.connectionChanged(up) } }
            group.addTask {
                await cancelWhenGracefulShutdown {
                    var feed = feed
                    while true {
                        for await change in feed where change.record.type == .device || change.record.type == .deviceModel {
                            await self.apply(change)
                        }
                        if Task.isCancelled || Task.isShuttingDownGracefully { return }
                        // Ended because it fell behind: subscribe again, then re-read the store.
                        feed = self.store.changes()
                        await self.reread()
                    }
                }
            }
            try await group.waitForAll()
        }
        // Whatever is still unsaved is written before the node stops.
        await persist()
    }

    // MARK: state from the store

    func load() async throws {
        let models = try await store.list(type: .deviceModel)
        let devices = try await store.list(type: .device)
        let saved = try await store.localState(kind: "devicetwin")
        let savedMappers = try await store.localState(kind: "devicemapper")
        book.withLock { b in
            for m in models { _ = b.setModel(m.value) }
            for d in devices { b.setDevice(d.value) }
            for (_, bytes) in saved { if let j = try? JSON.parse(bytes), let r = TwinPayload.restore(j) { b.restore(r) } }
        }
        mappers.withLock { m in
            for (_, bytes) in savedMappers {
                guard let j = try? JSON.parse(bytes), let p = j["protocol"].stringValue, let s = j["socket"].stringValue else { continue }
                m[p] = MapperInfo(name: j["name"].stringValue ?? p, protocolName: p, socket: s)
            }
        }
        let keys = book.withLock { Set($0.devices.keys) }
        unsent.withLock { $0.formUnion(keys) }
        logger.info("device twins loaded", metadata: ["devices": "\(devices.count)", "models": "\(models.count)", "mappers": "\(savedMappers.count)"])
    }

    /// Brings the twins back in line with the store after the change feed ended this subscriber:
    /// every model and device applied again, devices no longer stored removed.
    func reread() async {
        logger.warning("fell behind the local store's changes; re-reading devices and models")
        do {
            let models = try await store.list(type: .deviceModel)
            let devices = try await store.list(type: .device)
            for m in models { await apply(MetaChange(kind: .modified, record: m)) }
            for d in devices { await apply(MetaChange(kind: .modified, record: d)) }
            let stored = Set(devices.map { "\($0.value["metadata"]["namespace"].stringValue ?? "default")/\($0.value["metadata"]["name"].stringValue ?? "")" })
            for key in book.withLock({ Array($0.devices.keys) }) where !stored.contains(key) {
                let parts = key.split(separator: "/", maxSplits: 1).map(String.init)
                guard parts.count == 2 else { continue }
                let gone = MetaRecord(key: ResourceRef(namespace: parts[0], kind: .device, name: parts[1]).description, type: .device, uid: "",
                                      resourceVersion: 0, value: ["metadata": ["namespace": .string(parts[0]), "name": .string(parts[1])]])
                await apply(MetaChange(kind: .deleted, record: gone))
            }
        } catch {
            logger.error("cannot re-read devices from the local store", metadata: ["error": "\(error)"])
        }
    }

    func apply(_ change: MetaChange) async {
        let value = change.record.value
        let ns = value["metadata"]["namespace"].stringValue ?? "default", name = value["metadata"]["name"].stringValue ?? ""
        let key = "\(ns)/\(name)"
        switch (change.record.type, change.kind) {
        case (.deviceModel, .deleted):
            book.withLock { $0.removeModel(namespace: ns, name: name) }
            for m in mappers.withLock({ Array($0.values) }) { call.yield(.removeModel(m, namespace: ns, name: name)) }
        case (.deviceModel, _):
            _ = book.withLock { $0.setModel(value) }
            if let proto = value["spec"]["protocol"].stringValue, let m = mappers.withLock({ $0[proto] }) {
                call.yield(.updateModel(m, DMIConvert.model(value)))
            }
        case (.device, .deleted):
            let removed = book.withLock { $0.removeDevice(namespace: ns, name: name) }
            unsaved.withLock { _ = $0.insert(key) }
            if let r = removed, let m = mappers.withLock({ $0[r.protocolName] }) { call.yield(.removeDevice(m, namespace: ns, name: name)) }
            logger.info("device removed", metadata: ["device": "\(key)"])
        case (.device, let kind):
            let (changed, record) = book.withLock { b in (b.setDevice(value), b.devices[key]) }
            guard let record else { return }
            if let m = mappers.withLock({ $0[record.protocolName] }) {
                if kind == .added, let model = try? await store.get(ResourceRef(namespace: ns, kind: .deviceModel, name: record.model).description) {
                    call.yield(.updateModel(m, DMIConvert.model(model.value)))
                }
                call.yield(kind == .added ? .registerDevice(m, DMIConvert.device(value, record)) : .updateDevice(m, DMIConvert.device(value, record)))
            }
            if !changed.isEmpty {
                let invalid = book.withLock { $0.invalidDesired(key) }
                for (prop, why) in invalid.sorted(by: { $0.key < $1.key }) where changed.contains(prop) {
                    logger.warning("desired value refused", metadata: ["device": "\(key)", "reason": "\(why)"])
                    event(record, type: "Warning", reason: "InvalidDesiredValue", message: why)
                }
            }
            if !changed.isEmpty, let delta = TwinPayload.delta(record, eventID: Self.eventID(), now: KubeTime.now().milliseconds) {
                await publish(EventBusTopic.device(ns, name, "twin/update/delta"), delta)
            }
            unsent.withLock { _ = $0.insert(key) }
            wake.yield()
            logger.debug("device updated", metadata: ["device": "\(key)", "desiredChanged": "\(changed)"])
        default: break
        }
    }

    // MARK: reports (DMI and MQTT)

    /// Applies a report; publishes the document of what changed. Throws what was wrong with it.
    func report(namespace: String, name: String, _ values: [TwinBook.Report]) async throws(TwinError) {
        let now = KubeTime.now().milliseconds
        let outcome = book.withLock { b -> Result<(DeviceRecord?, [String: PropertyTwin]), TwinError> in
            do throws(TwinError) {
                let before = try b.report(namespace: namespace, name: name, values, at: now)
                return .success((b.devices["\(namespace)/\(name)"], before))
            } catch { return .failure(error) }
        }
        let (record, before): (DeviceRecord?, [String: PropertyTwin])
        switch outcome {
        case .success(let r): (record, before) = r
        case .failure(let e):
            refused.increment()
            if let d = book.withLock({ $0.devices["\(namespace)/\(name)"] }) {
                event(d, type: "Warning", reason: "TwinReportRefused", message: e.reason)
            }
            throw e
        }
        reports.increment()
        guard let record, !before.isEmpty else { return }
        let key = record.key
        unsaved.withLock { _ = $0.insert(key) }
        unsent.withLock { _ = $0.insert(key) }
        wake.yield()
        await publish(EventBusTopic.device(namespace, name, "twin/update/document"),
                      TwinPayload.document(record, before: before, eventID: Self.eventID(), now: now))
    }

    func setState(namespace: String, name: String, _ state: String) async throws(TwinError) {
        let now = KubeTime.now().rfc3339
        let outcome = book.withLock { b -> Result<Bool, TwinError> in
            do throws(TwinError) { return .success(try b.setState(namespace: namespace, name: name, state, now: now)) } catch { return .failure(error) }
        }
        guard try outcome.get() else { return }
        logger.info("device state", metadata: ["device": "\(namespace)/\(name)", "state": "\(state)"])
        if let d = book.withLock({ $0.devices["\(namespace)/\(name)"] }) {
            let online = ["online", "ok"].contains(state.lowercased())
            event(d, type: online ? "Normal" : "Warning", reason: online ? "DeviceOnline" : "DeviceOffline",
                  message: "the mapper reports the device \(state.lowercased())", limit: 0)
        }
        unsaved.withLock { _ = $0.insert("\(namespace)/\(name)") }
        unsent.withLock { _ = $0.insert("\(namespace)/\(name)") }
        wake.yield()
    }

    // MARK: EventBus

    func received(_ p: MQTTPacket.Publish) async {
        guard let topic = EventBusTopic(p.topic) else { return }
        let payload = try? JSON.parse(p.payload)
        let eventID = payload?["event_id"].stringValue ?? ""
        let now = KubeTime.now().milliseconds
        switch topic {
        case .twinUpdate(let ns, let name):
            let resultTopic = EventBusTopic.device(ns, name, "twin/update/result")
            do throws(TwinError) {
                guard let payload, payload.isObject else { throw TwinError(400, "twin update is not a JSON object") }
                guard let twin = payload["twin"].objectValue else { throw TwinError(400, "twin update without a \"twin\" object") }
                var values: [TwinBook.Report] = []
                for (prop, t) in twin.sorted(by: { $0.key < $1.key }) {
                    if !t["expected"].isNull {
                        throw TwinError(400, "property \"\(prop)\": desired values are set in the cloud (Device spec.properties[].desired), not over MQTT")
                    }
                    guard let v = t["actual"]["value"].stringValue else {
                        throw TwinError(400, "property \"\(prop)\" has no actual.value string")
                    }
                    values.append(.init(property: prop, value: v))
                }
                try await report(namespace: ns, name: name, values)
                var ok = TwinPayload.base(eventID, now)
                ok["twin"] = .object(twin)
                await publish(resultTopic, ok)
            } catch {
                logger.info("twin update refused", metadata: ["device": "\(ns)/\(name)", "reason": "\(error.reason)"])
                await publish(resultTopic, TwinPayload.error(eventID, now, error))
            }
        case .twinGet(let ns, let name):
            let resultTopic = EventBusTopic.device(ns, name, "twin/get/result")
            if let d = book.withLock({ $0.devices["\(ns)/\(name)"] }) {
                var o = TwinPayload.base(eventID, now)
                o["twin"] = TwinPayload.twin(d)
                o["state"] = .string(d.state)
                await publish(resultTopic, o)
            } else {
                await publish(resultTopic, TwinPayload.error(eventID, now, TwinError(404, "device \(ns)/\(name) is not on this node")))
            }
        case .stateUpdate(let ns, let name):
            let resultTopic = EventBusTopic.device(ns, name, "state/update/result")
            do throws(TwinError) {
                guard let state = payload?["state"].stringValue else { throw TwinError(400, "state update without a \"state\" string") }
                try await setState(namespace: ns, name: name, state)
                var ok = TwinPayload.base(eventID, now)
                ok["state"] = .string(state)
                await publish(resultTopic, ok)
            } catch {
                await publish(resultTopic, TwinPayload.error(eventID, now, error))
            }
        case .membershipGet(let node):
            guard node == configuration.nodeName else { return }
            var o = TwinPayload.base(eventID, now)
            let devices = book.withLock { Array($0.devices.values) }.sorted { $0.key < $1.key }
            o["devices"] = .array(devices.map { d in
                ["id": .string(d.key), "name": .string(d.name), "namespace": .string(d.namespace), "state": .string(d.state),
                 "twin": TwinPayload.twin(d)]
            })
            await publish("$hw/events/node/\(node)/membership/get/result", o)
        case .uploadRecords, .user:
            // Rules (the cloud's Router) consume these; forwarded as KubeEdge's edge does.
            let content: JSON = payload ?? .string(String(decoding: p.payload, as: UTF8.self))
            upstream(Message(route: Route(source: "eventbus", group: "user", operation: .upload, resource: p.topic), content: content))
        }
    }

    func publish(_ topic: String, _ payload: JSON) async {
        guard let mqtt else { return }
        do { try await mqtt.publish(topic, payload.serialized(), qos: .atMostOnce) } catch {
            logger.debug("MQTT publish dropped", metadata: ["topic": "\(topic)", "error": "\(error)"])
        }
    }

    // MARK: upstream and persistence

    func sendUpstream() async {
        for await _ in wakeups {
            while connection.value {
                let batch = unsent.withLock { s -> [String] in
                    let b = Array(s.prefix(configuration.uploadBatch))
                    s.subtract(b)
                    return b
                }
                if batch.isEmpty { break }
                let items = book.withLock { b in batch.compactMap { b.devices[$0].map(TwinPayload.status) } }
                if items.isEmpty { continue }
                upstream(UpstreamReport.deviceStatus(report: ["items": .array(items)]).message(source: MessageSource.twin))
                statusesSent.increment(by: items.count)
                // The channel carries a few dozen messages a second (EdgeHub's rate limit, shared
                // with pods and the node): reports that arrive meanwhile go in the next batch.
                try? await Task.sleep(for: configuration.uploadInterval)
            }
        }
    }

    func persistLoop() async {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.configuration.persistInterval) }
            await persist()
        }
    }

    func persist() async {
        let keys = unsaved.withLock { s in defer { s = [] }; return s }
        guard !keys.isEmpty else { return }
        var entries: [String: [UInt8]?] = [:]
        book.withLock { b in for k in keys { entries[k] = b.devices[k].map { TwinPayload.saved($0).serialized() } } }
        do { try await store.saveLocalState(kind: "devicetwin", entries) } catch {
            logger.error("saving device twins failed", metadata: ["error": "\(error)"])
            unsaved.withLock { $0.formUnion(keys) }
        }
    }

    /// Sends a core/v1 Event about a device upstream (`<ns>/event/<name>`), at most once a
    /// minute per device and reason unless `limit` says otherwise (milliseconds).
    func event(_ d: DeviceRecord, type: String, reason: String, message: String, limit: Int64 = 60_000) {
        let time = KubeTime.now()
        let now = time.milliseconds
        let k = "\(d.key)|\(reason)"
        let allowed = lastEvents.withLock { last in
            if let t = last[k], now - t < limit { return false }
            last[k] = now
            return true
        }
        guard allowed, connection.value else { return }
        let name = "\(d.name).\(String(UInt64(time.micros) &* 1000 &+ UInt64.random(in: 0..<1000), radix: 16))"
        let e: JSON = [
            "apiVersion": "v1", "kind": "Event",
            "metadata": ["name": .string(name), "namespace": .string(d.namespace)],
            "involvedObject": ["apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device", "namespace": .string(d.namespace),
                               "name": .string(d.name), "uid": .string(d.uid)],
            "reason": .string(reason), "message": .string(message), "type": .string(type),
            "source": ["component": "devicetwin", "host": .string(configuration.nodeName)],
            "firstTimestamp": .string(time.rfc3339), "lastTimestamp": .string(time.rfc3339), "count": 1,
            "reportingComponent": "devicetwin", "reportingInstance": .string(configuration.nodeName),
        ]
        upstream(UpstreamReport.event(namespace: d.namespace, name: name, event: e).message(source: MessageSource.twin))
    }

    static func eventID() -> String {
        let r = UInt64.random(in: 0...UInt64.max)
        let hex = String(r, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}

/// Lets the MQTT client's callback reach the twin that owns it (set once, in `init`).
final class TwinRef: Sendable {
    struct Weak { weak var twin: DeviceTwin? }
    let value = Mutex(Weak())
    var twin: DeviceTwin? { value.withLock { $0.twin } }
    func set(_ t: DeviceTwin) { value.withLock { $0.twin = t } }
}
