import KubeAPI

/// A device as the node knows it: identity, protocol, and per property the model's type and
/// access mode, the desired value from the cloud (`spec.properties[].desired`) and what was last
/// reported.
public struct DeviceRecord: Sendable, Equatable {
    public var namespace: String
    public var name: String
    public var model: String
    public var protocolName: String
    public var properties: [String: PropertyTwin]
    public var uid = ""
    /// `online`, `offline`, `unknown`, … as the mapper last reported.
    public var state: String = "unknown"
    public var lastOnlineTime: String?

    public var key: String { "\(namespace)/\(name)" }
}

/// One twin property.
public struct PropertyTwin: Sendable, Equatable {
    /// The model's type: INT, FLOAT, DOUBLE, STRING, BOOLEAN, BYTES, STREAM.
    public var type: String
    public var writable: Bool
    public var desired: String?
    /// Version of the desired value: the Device's resourceVersion when it was set.
    public var desiredVersion: UInt64 = 0
    public var reported: String?
    /// Milliseconds since the epoch of the last report.
    public var reportedAt: Int64 = 0
    /// Increases with every accepted report.
    public var reportedVersion: UInt64 = 0
    /// The desired value the mapper last said it applied.
    public var observedDesired: String?
}

/// Why a twin request was refused (`code`/`reason` in MQTT results).
public struct TwinError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: Int
    public var reason: String
    public init(_ code: Int, _ reason: String) { self.code = code; self.reason = reason }
    public var description: String { reason }
}

/// Every device on the node and its twins: a value type, so the rules (what a Device object
/// means, which reports are accepted, what changed) are tested without I/O. ``DeviceTwin`` holds
/// one and performs the effects its operations return.
public struct TwinBook: Sendable, Equatable {
    public private(set) var devices: [String: DeviceRecord] = [:]
    /// DeviceModels by `<ns>/<name>`: property name → (type, writable).
    public private(set) var models: [String: [String: (type: String, writable: Bool)]] = [:]

    public init() {}

    public static func == (a: TwinBook, b: TwinBook) -> Bool {
        a.devices == b.devices && a.models.keys.sorted() == b.models.keys.sorted()
    }

    /// A DeviceModel arrived or changed; devices of that model pick up its types.
    public mutating func setModel(_ model: JSON) -> [String] {
        let ns = model["metadata"]["namespace"].stringValue ?? "default", name = model["metadata"]["name"].stringValue ?? ""
        var props: [String: (type: String, writable: Bool)] = [:]
        for p in model["spec"]["properties"].arrayValue ?? [] {
            guard let n = p["name"].stringValue else { continue }
            props[n] = ((p["type"].stringValue ?? "STRING").uppercased(), (p["accessMode"].stringValue ?? "ReadWrite") == "ReadWrite")
        }
        models["\(ns)/\(name)"] = props
        var touched: [String] = []
        for (key, d) in devices where d.namespace == ns && d.model == name {
            for (pn, meta) in props where devices[key]!.properties[pn] != nil {
                devices[key]!.properties[pn]!.type = meta.type
                devices[key]!.properties[pn]!.writable = meta.writable
            }
            touched.append(key)
        }
        return touched
    }

    public mutating func removeModel(namespace: String, name: String) { models["\(namespace)/\(name)"] = nil }

    /// A Device object arrived or changed. Returns the properties whose desired value changed.
    @discardableResult
    public mutating func setDevice(_ device: JSON) -> [String] {
        let ns = device["metadata"]["namespace"].stringValue ?? "default", name = device["metadata"]["name"].stringValue ?? ""
        let key = "\(ns)/\(name)"
        let model = device["spec"]["deviceModelRef"]["name"].stringValue ?? ""
        let rv = UInt64(device["metadata"]["resourceVersion"].stringValue ?? "") ?? 0
        let modelProps = models["\(ns)/\(model)"] ?? [:]
        var record = devices[key] ?? DeviceRecord(namespace: ns, name: name, model: model, protocolName: "", properties: [:])
        record.model = model
        record.uid = device["metadata"]["uid"].stringValue ?? record.uid
        record.protocolName = device["spec"]["protocol"]["protocolName"].stringValue ?? ""
        var properties: [String: PropertyTwin] = [:]
        var changed: [String] = []
        // Properties are the model's; the Device adds desired values and visitors.
        var names = Set(modelProps.keys)
        for p in device["spec"]["properties"].arrayValue ?? [] { if let n = p["name"].stringValue { names.insert(n) } }
        for pn in names {
            let meta = modelProps[pn]
            var twin = record.properties[pn] ?? PropertyTwin(type: meta?.type ?? "STRING", writable: meta?.writable ?? true)
            twin.type = meta?.type ?? twin.type
            twin.writable = meta?.writable ?? twin.writable
            let spec = (device["spec"]["properties"].arrayValue ?? []).first { $0["name"].stringValue == pn }
            let desired = spec?["desired"]["value"].stringValue.flatMap { $0.isEmpty ? nil : $0 }
            if desired != twin.desired {
                twin.desired = desired
                twin.desiredVersion = rv
                changed.append(pn)
            }
            properties[pn] = twin
        }
        record.properties = properties
        devices[key] = record
        return changed.sorted()
    }

    public mutating func removeDevice(namespace: String, name: String) -> DeviceRecord? {
        devices.removeValue(forKey: "\(namespace)/\(name)")
    }

    /// Restores what was reported before a restart (the desired side comes from the Device).
    public mutating func restore(_ saved: DeviceRecord) {
        guard var d = devices[saved.key] else { return }
        d.state = saved.state
        d.lastOnlineTime = saved.lastOnlineTime
        for (pn, s) in saved.properties where d.properties[pn] != nil {
            d.properties[pn]!.reported = s.reported
            d.properties[pn]!.reportedAt = s.reportedAt
            d.properties[pn]!.reportedVersion = s.reportedVersion
            d.properties[pn]!.observedDesired = s.observedDesired
        }
        devices[saved.key] = d
    }

    /// One reported value, as a mapper (DMI) or a device (MQTT `twin/update`) sends it.
    public struct Report: Sendable, Equatable {
        public var property: String
        public var value: String
        public var observedDesired: String?
        public init(property: String, value: String, observedDesired: String? = nil) {
            self.property = property; self.value = value; self.observedDesired = observedDesired
        }
    }

    /// Applies reported values, all or nothing: an unknown device or property, or a value that
    /// does not fit the property's type, refuses the whole report. Returns the properties whose
    /// value changed, with the twin before the change.
    public mutating func report(namespace: String, name: String, _ reports: [Report], at time: Int64) throws(TwinError) -> [String: PropertyTwin] {
        let key = "\(namespace)/\(name)"
        guard var d = devices[key] else { throw TwinError(404, "device \(key) is not on this node") }
        var before: [String: PropertyTwin] = [:]
        for r in reports {
            guard var twin = d.properties[r.property] else {
                throw TwinError(400, "device \(key) has no property \"\(r.property)\" (model \(d.model))")
            }
            guard Self.fits(r.value, type: twin.type) else {
                throw TwinError(400, "value \"\(r.value)\" of property \"\(r.property)\" is not of type \(twin.type)")
            }
            let old = twin
            if twin.reported != r.value || (r.observedDesired != nil && twin.observedDesired != r.observedDesired) {
                twin.reported = r.value
                if let o = r.observedDesired { twin.observedDesired = o }
                twin.reportedVersion += 1
                before[r.property] = old
            }
            twin.reportedAt = time
            d.properties[r.property] = twin
        }
        devices[key] = d
        return before
    }

    /// The mapper's view of the device's state. Returns whether it changed.
    public mutating func setState(namespace: String, name: String, _ state: String, now: String) throws(TwinError) -> Bool {
        let key = "\(namespace)/\(name)"
        guard var d = devices[key] else { throw TwinError(404, "device \(key) is not on this node") }
        let s = state.lowercased()
        guard ["online", "offline", "ok", "unknown", "disconnected", "unhealthy"].contains(s) else {
            throw TwinError(400, "unknown device state \"\(state)\" (online, offline, ok, unknown, disconnected, unhealthy)")
        }
        let changed = d.state != s
        d.state = s
        if s == "online" || s == "ok" { d.lastOnlineTime = now }
        devices[key] = d
        return changed
    }

    /// Desired values that cannot be applied: not of the property's type, or on a read-only
    /// property (property → why). They are not passed to the mapper.
    public func invalidDesired(_ key: String) -> [String: String] {
        var out: [String: String] = [:]
        for (n, t) in devices[key]?.properties ?? [:] {
            guard let want = t.desired else { continue }
            if !t.writable { out[n] = "property \"\(n)\" is read-only; its desired value \"\(want)\" is ignored" }
            else if !Self.fits(want, type: t.type) { out[n] = "desired value \"\(want)\" of property \"\(n)\" is not of type \(t.type); it is not written to the device" }
        }
        return out
    }

    /// Whether `value` can be a value of a property of `type`.
    public static func fits(_ value: String, type: String) -> Bool {
        switch type.uppercased() {
        case "INT": return Int64(value) != nil
        case "FLOAT", "DOUBLE": return Double(value) != nil
        case "BOOLEAN", "BOOL": return value == "true" || value == "false"
        default: return true
        }
    }
}
