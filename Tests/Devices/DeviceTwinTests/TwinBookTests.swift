import KubeAPI
import Testing
@testable import DeviceTwin

/// The twin rules, without I/O: what Device/DeviceModel objects mean, which reports are taken,
/// what the EventBus topics and payloads are.
@Suite struct TwinBookTests {
    static let model: JSON = ["metadata": ["name": "thermostat", "namespace": "default"],
                              "spec": ["protocol": "modbus", "properties": [
                                  ["name": "temperature", "type": "INT", "accessMode": "ReadOnly"],
                                  ["name": "setpoint", "type": "INT", "accessMode": "ReadWrite"],
                                  ["name": "ratio", "type": "FLOAT", "accessMode": "ReadWrite"],
                              ]]]

    static func device(desired: String?, rv: String = "10") -> JSON {
        var setpoint: JSON = ["name": "setpoint"]
        if let desired { setpoint["desired"] = ["value": .string(desired)] }
        return ["metadata": ["name": "thermo-1", "namespace": "default", "resourceVersion": .string(rv)],
                "spec": ["deviceModelRef": ["name": "thermostat"], "nodeName": "n1",
                         "protocol": ["protocolName": "modbus"], "properties": [["name": "temperature"], setpoint]]]
    }

    func book() -> TwinBook {
        var b = TwinBook()
        _ = b.setModel(Self.model)
        b.setDevice(Self.device(desired: "20"))
        return b
    }

    @Test func deviceTakesModelPropertiesAndDesiredValues() {
        let b = book()
        let d = b.devices["default/thermo-1"]!
        #expect(d.protocolName == "modbus")
        #expect(Set(d.properties.keys) == ["temperature", "setpoint", "ratio"])
        #expect(d.properties["temperature"]!.writable == false)
        #expect(d.properties["setpoint"]!.desired == "20")
        #expect(d.properties["setpoint"]!.desiredVersion == 10)
        #expect(d.properties["ratio"]!.type == "FLOAT")
    }

    @Test func desiredChangesAreReportedOnce() {
        var b = book()
        #expect(b.setDevice(Self.device(desired: "20", rv: "11")) == [])
        #expect(b.setDevice(Self.device(desired: "42", rv: "12")) == ["setpoint"])
        #expect(b.devices["default/thermo-1"]!.properties["setpoint"]!.desiredVersion == 12)
        #expect(b.setDevice(Self.device(desired: nil, rv: "13")) == ["setpoint"])
        #expect(b.devices["default/thermo-1"]!.properties["setpoint"]!.desired == nil)
    }

    @Test func reportsAreAllOrNothing() throws {
        var b = book()
        let before = try b.report(namespace: "default", name: "thermo-1", [.init(property: "temperature", value: "215")], at: 1)
        #expect(before["temperature"]?.reported == nil)
        #expect(b.devices["default/thermo-1"]!.properties["temperature"]!.reported == "215")
        let snapshot = b
        // One bad value refuses the whole report: nothing changes.
        #expect(throws: TwinError.self) {
            try b.report(namespace: "default", name: "thermo-1", [.init(property: "temperature", value: "216"), .init(property: "setpoint", value: "abc")], at: 2)
        }
        #expect(b == snapshot)
        #expect(throws: TwinError(400, "device default/thermo-1 has no property \"humidity\" (model thermostat)")) {
            try b.report(namespace: "default", name: "thermo-1", [.init(property: "humidity", value: "1")], at: 3)
        }
        #expect(throws: TwinError(404, "device default/other is not on this node")) {
            try b.report(namespace: "default", name: "other", [.init(property: "temperature", value: "1")], at: 3)
        }
        #expect(b == snapshot)
        // The same value again is no change (no document, nothing to send).
        #expect(try b.report(namespace: "default", name: "thermo-1", [.init(property: "temperature", value: "215")], at: 4).isEmpty)
        #expect(try b.report(namespace: "default", name: "thermo-1", [.init(property: "ratio", value: "0.5")], at: 5).keys.sorted() == ["ratio"])
    }

    @Test func observedDesiredIsKept() throws {
        var b = book()
        _ = try b.report(namespace: "default", name: "thermo-1", [.init(property: "setpoint", value: "20", observedDesired: "20")], at: 1)
        let t = b.devices["default/thermo-1"]!.properties["setpoint"]!
        #expect(t.observedDesired == "20" && t.reported == "20")
        let status = TwinPayload.status(b.devices["default/thermo-1"]!)
        let setpoint = status["twins"].arrayValue!.first { $0["propertyName"].stringValue == "setpoint" }!
        #expect(setpoint["reported"]["value"] == "20" && setpoint["observedDesired"]["value"] == "20")
        #expect(setpoint["reported"]["metadata"]["timestamp"] == "1")
    }

    @Test func statesAndLastOnline() throws {
        var b = book()
        #expect(try b.setState(namespace: "default", name: "thermo-1", "online", now: "2026-11-26T00:00:00Z"))
        #expect(try !b.setState(namespace: "default", name: "thermo-1", "online", now: "2026-11-26T00:00:01Z"))
        #expect(try b.setState(namespace: "default", name: "thermo-1", "offline", now: "2026-11-26T00:00:02Z"))
        let d = b.devices["default/thermo-1"]!
        #expect(d.state == "offline" && d.lastOnlineTime == "2026-11-26T00:00:01Z")
        #expect(throws: TwinError.self) { try b.setState(namespace: "default", name: "thermo-1", "exploded", now: "") }
    }

    @Test func savedStateSurvivesARestart() throws {
        var b = book()
        _ = try b.report(namespace: "default", name: "thermo-1", [.init(property: "temperature", value: "215"),
                                                                   .init(property: "setpoint", value: "20", observedDesired: "20")], at: 7)
        _ = try b.setState(namespace: "default", name: "thermo-1", "online", now: "t")
        let saved = TwinPayload.saved(b.devices["default/thermo-1"]!).serialized()
        var fresh = TwinBook()
        _ = fresh.setModel(Self.model)
        fresh.setDevice(Self.device(desired: "20"))
        fresh.restore(TwinPayload.restore(try JSON.parse(saved))!)
        #expect(fresh.devices == b.devices)
    }

    @Test func deltaOnlyForDesiredThatDiffers() throws {
        var b = book()
        #expect(TwinPayload.delta(b.devices["default/thermo-1"]!, eventID: "e", now: 1)?["delta"] == ["setpoint": "20"])
        _ = try b.report(namespace: "default", name: "thermo-1", [.init(property: "setpoint", value: "20")], at: 1)
        #expect(TwinPayload.delta(b.devices["default/thermo-1"]!, eventID: "e", now: 1) == nil)
    }

    @Test func valueTypes() {
        #expect(TwinBook.fits("-12", type: "INT") && !TwinBook.fits("1.5", type: "INT") && !TwinBook.fits("", type: "INT"))
        #expect(TwinBook.fits("1.5", type: "double") && !TwinBook.fits("x", type: "FLOAT"))
        #expect(TwinBook.fits("true", type: "BOOLEAN") && !TwinBook.fits("yes", type: "BOOLEAN"))
        #expect(TwinBook.fits("anything", type: "STRING"))
    }

    @Test func topics() {
        #expect(EventBusTopic("$hw/events/device/default/thermo-1/twin/update") == .twinUpdate(namespace: "default", name: "thermo-1"))
        #expect(EventBusTopic("$hw/events/device/default/thermo-1/twin/get") == .twinGet(namespace: "default", name: "thermo-1"))
        #expect(EventBusTopic("$hw/events/device/default/thermo-1/state/update") == .stateUpdate(namespace: "default", name: "thermo-1"))
        #expect(EventBusTopic("$hw/events/node/n1/membership/get") == .membershipGet(node: "n1"))
        #expect(EventBusTopic("SYS/dis/upload_records") == .uploadRecords)
        #expect(EventBusTopic("app/user/temperature") == .user("app/user/temperature"))
        // Our own answers (…/result, …/delta, …/document) are not requests.
        #expect(EventBusTopic("$hw/events/device/default/thermo-1/twin/update/result") == nil)
        #expect(EventBusTopic("$hw/events/device//thermo-1/twin/update") == nil)
        #expect(EventBusTopic("$hw/events/device/thermo-1/twin/update") == nil)
    }
}
