import KubeAPI

/// The MQTT topics the EventBus serves (KubeEdge's set), parsed once at the boundary.
public enum EventBusTopic: Sendable, Equatable {
    /// `$hw/events/device/<ns>/<name>/twin/update`: a device or legacy mapper reports values.
    case twinUpdate(namespace: String, name: String)
    /// `$hw/events/device/<ns>/<name>/twin/get`: asks for the twin (answer on `…/get/result`).
    case twinGet(namespace: String, name: String)
    /// `$hw/events/device/<ns>/<name>/state/update`: `{"state": "online"}`.
    case stateUpdate(namespace: String, name: String)
    /// `$hw/events/node/<node>/membership/get`: the node's devices (answer on `…/get/result`).
    case membershipGet(node: String)
    /// `SYS/dis/upload_records`, forwarded to the cloud.
    case uploadRecords
    /// `<anything>/user/<…>`, forwarded to the cloud.
    case user(String)

    /// What the EventBus subscribes to.
    public static func subscriptions(node: String) -> [String] {
        ["$hw/events/device/+/+/twin/update", "$hw/events/device/+/+/twin/get", "$hw/events/device/+/+/state/update",
         "$hw/events/node/\(node)/membership/get", "SYS/dis/upload_records", "+/user/#"]
    }

    public init?(_ topic: String) {
        let p = topic.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        if p.count == 7, p[0] == "$hw", p[1] == "events", p[2] == "device", !p[3].isEmpty, !p[4].isEmpty {
            switch (p[5], p[6]) {
            case ("twin", "update"): self = .twinUpdate(namespace: p[3], name: p[4])
            case ("twin", "get"): self = .twinGet(namespace: p[3], name: p[4])
            case ("state", "update"): self = .stateUpdate(namespace: p[3], name: p[4])
            default: return nil
            }
        } else if p.count == 6, p[0] == "$hw", p[1] == "events", p[2] == "node", p[4] == "membership", p[5] == "get" {
            self = .membershipGet(node: p[3])
        } else if topic == "SYS/dis/upload_records" {
            self = .uploadRecords
        } else if p.count >= 3, p[1] == "user" {
            self = .user(topic)
        } else {
            return nil
        }
    }

    static func device(_ ns: String, _ name: String, _ suffix: String) -> String { "$hw/events/device/\(ns)/\(name)/\(suffix)" }
}

/// KubeEdge's DeviceTwin JSON payloads.
enum TwinPayload {
    /// A property as `twin/get/result` and deltas show it: expected (desired) and actual (reported).
    static func property(_ t: PropertyTwin) -> JSON {
        var o: JSON = ["optional": false, "metadata": ["type": .string(t.type.lowercased())]]
        if let d = t.desired { o["expected"] = ["value": .string(d), "metadata": ["timestamp": .int(0)]]; o["expected_version"] = ["cloud": .int(Int64(t.desiredVersion)), "edge": 0] }
        if let r = t.reported {
            o["actual"] = ["value": .string(r), "metadata": ["timestamp": .int(t.reportedAt)]]
            o["actual_version"] = ["cloud": 0, "edge": .int(Int64(t.reportedVersion))]
        }
        return o
    }

    static func twin(_ d: DeviceRecord) -> JSON {
        var twin: [String: JSON] = [:]
        for (n, t) in d.properties { twin[n] = property(t) }
        return .object(twin)
    }

    static func base(_ eventID: String, _ now: Int64) -> JSON { ["event_id": .string(eventID), "timestamp": .int(now)] }

    static func error(_ eventID: String, _ now: Int64, _ e: TwinError) -> JSON {
        var o = base(eventID, now)
        o["code"] = .int(Int64(e.code)); o["reason"] = .string(e.reason)
        return o
    }

    /// `twin/update/document`: each changed property before and after.
    static func document(_ d: DeviceRecord, before: [String: PropertyTwin], eventID: String, now: Int64) -> JSON {
        var o = base(eventID, now)
        var twin: [String: JSON] = [:]
        for (n, old) in before { if let cur = d.properties[n] { twin[n] = ["last": property(old), "current": property(cur)] } }
        o["twin"] = .object(twin)
        return o
    }

    /// `twin/update/delta`: the properties whose desired value differs from the reported one.
    static func delta(_ d: DeviceRecord, eventID: String, now: Int64) -> JSON? {
        var delta: [String: JSON] = [:]
        for (n, t) in d.properties { if let want = t.desired, want != t.reported { delta[n] = .string(want) } }
        guard !delta.isEmpty else { return nil }
        var o = base(eventID, now)
        o["twin"] = twin(d)
        o["delta"] = .object(delta)
        return o
    }

    /// One device's status for the cloud's DeviceStatus (`.status`).
    static func status(_ d: DeviceRecord) -> JSON {
        var twins: [JSON] = []
        for (n, t) in d.properties.sorted(by: { $0.key < $1.key }) {
            var tw: JSON = ["propertyName": .string(n)]
            if let r = t.reported {
                tw["reported"] = ["value": .string(r), "metadata": ["timestamp": .string(String(t.reportedAt)), "type": .string(t.type.lowercased())]]
            }
            if let o = t.observedDesired { tw["observedDesired"] = ["value": .string(o), "metadata": ["type": .string(t.type.lowercased())]] }
            twins.append(tw)
        }
        var o: JSON = ["namespace": .string(d.namespace), "name": .string(d.name), "twins": .array(twins), "state": .string(d.state)]
        if let t = d.lastOnlineTime { o["lastOnlineTime"] = .string(t) }
        return o
    }

    /// The local copy of a device's reported side (restored after a restart).
    static func saved(_ d: DeviceRecord) -> JSON {
        var props: [String: JSON] = [:]
        for (n, t) in d.properties where t.reported != nil || t.observedDesired != nil {
            var p: JSON = ["at": .int(t.reportedAt), "version": .int(Int64(t.reportedVersion))]
            if let r = t.reported { p["reported"] = .string(r) }
            if let o = t.observedDesired { p["observedDesired"] = .string(o) }
            props[n] = p
        }
        var o: JSON = ["namespace": .string(d.namespace), "name": .string(d.name), "state": .string(d.state), "properties": .object(props)]
        if let t = d.lastOnlineTime { o["lastOnlineTime"] = .string(t) }
        return o
    }

    static func restore(_ j: JSON) -> DeviceRecord? {
        guard let ns = j["namespace"].stringValue, let name = j["name"].stringValue else { return nil }
        var d = DeviceRecord(namespace: ns, name: name, model: "", protocolName: "", properties: [:])
        d.state = j["state"].stringValue ?? "unknown"
        d.lastOnlineTime = j["lastOnlineTime"].stringValue
        for (n, p) in j["properties"].objectValue ?? [:] {
            var t = PropertyTwin(type: "STRING", writable: true)
            t.reported = p["reported"].stringValue
            t.observedDesired = p["observedDesired"].stringValue
            t.reportedAt = p["at"].intValue ?? 0
            t.reportedVersion = UInt64(p["version"].intValue ?? 0)
            d.properties[n] = t
        }
        return d
    }
}
