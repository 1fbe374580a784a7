import DMI
import DMIValues
import Testing
@testable import Modbus
@testable import ModbusMapper

/// Modbus TCP framing and the mapper's register ↔ value rules, without I/O.
@Suite struct ModbusTests {
    @Test func requestFrames() throws {
        // Read 2 holding registers at 1, transaction 7, unit 1 (bytes from the Modbus TCP spec's layout).
        let pdu = try ModbusRequest.readHoldingRegisters(address: 1, count: 2).pdu()
        #expect(ModbusCodec.frame(transaction: 7, unit: 1, pdu: pdu) == [0, 7, 0, 0, 0, 6, 1, 3, 0, 1, 0, 2])
        #expect(try ModbusRequest.writeSingleCoil(address: 3, value: true).pdu() == [5, 0, 3, 0xFF, 0])
        #expect(try ModbusRequest.writeMultipleRegisters(address: 0, values: [1, 0x0203]).pdu() == [16, 0, 0, 0, 2, 4, 0, 1, 2, 3])
        #expect(try ModbusRequest.writeMultipleCoils(address: 0, values: [true, false, true]).pdu() == [15, 0, 0, 0, 3, 1, 0b101])
        #expect(throws: ModbusError.self) { try ModbusRequest.readInputRegisters(address: 0, count: 200).pdu() }
        #expect(throws: ModbusError.self) { try ModbusRequest.readCoils(address: 0, count: 0).pdu() }
    }

    @Test func answers() throws {
        #expect(try ModbusCodec.decode([3, 4, 0, 215, 1, 0], for: .readHoldingRegisters(address: 0, count: 2)) == .registers([215, 256]))
        #expect(try ModbusCodec.decode([1, 1, 0b101], for: .readCoils(address: 0, count: 3)) == .bits([true, false, true]))
        #expect(try ModbusCodec.decode([6, 0, 1, 0, 42], for: .writeSingleRegister(address: 1, value: 42)) == .written)
        // Exceptions are named; garbage and answers that do not fit are refused.
        #expect(throws: ModbusError("the device answered function 4 with exception 2 (illegal data address)", exceptionCode: 2)) {
            try ModbusCodec.decode([0x84, 2], for: .readInputRegisters(address: 500, count: 1))
        }
        #expect(throws: ModbusError.self) { try ModbusCodec.decode([3, 2, 0], for: .readHoldingRegisters(address: 0, count: 1)) }
        #expect(throws: ModbusError.self) { try ModbusCodec.decode([4, 2, 0, 1], for: .readHoldingRegisters(address: 0, count: 1)) }
        #expect(throws: ModbusError.self) { try ModbusCodec.decode([], for: .readHoldingRegisters(address: 0, count: 1)) }
    }

    @Test func frameReaderCutsTheStream() throws {
        var r = ModbusFrameReader()
        let a = ModbusCodec.frame(transaction: 1, unit: 1, pdu: [3, 2, 0, 5]), b = ModbusCodec.frame(transaction: 2, unit: 1, pdu: [0x83, 2])
        for byte in a + b.prefix(3) { r.append([byte]) }
        let first = try r.next()
        #expect(first?.transaction == 1 && first?.pdu == [3, 2, 0, 5])
        #expect(try r.next() == nil)
        r.append(b.dropFirst(3))
        #expect(try r.next()?.pdu == [0x83, 2])
        var bad = ModbusFrameReader()
        bad.append([0, 1, 0x12, 0x34, 0, 3, 1, 3, 0])  // protocol id 0x1234: not Modbus
        #expect(throws: ModbusError.self) { try bad.next() }
        var huge = ModbusFrameReader()
        huge.append([0, 1, 0, 0, 0xFF, 0xFF, 1])
        #expect(throws: ModbusError.self) { try huge.next() }
    }

    func visitor(_ c: [String: DMIValue], type: String? = nil) throws -> ModbusVisitor { try ModbusVisitor(c, modelType: type) }

    @Test func visitorsReadValues() throws {
        let temp = try visitor(["register": .string("InputRegister"), "offset": .int(0), "limit": .int(1), "scale": .double(0.1), "dataType": .string("float")])
        #expect(temp.readRequest == .readInputRegisters(address: 0, count: 1))
        #expect(try temp.value(of: .registers([215])) == "21.5")
        let count = try visitor(["register": .string("HoldingRegister"), "offset": .int(4), "limit": .int(2), "dataType": .string("int")])
        #expect(try count.value(of: .registers([1, 2])) == "65538")
        let swapped = try visitor(["register": .string("HoldingRegister"), "limit": .int(2), "isRegisterSwap": .bool(true), "dataType": .string("int")])
        #expect(try swapped.value(of: .registers([2, 1])) == "65538")
        let bytes = try visitor(["register": .string("HoldingRegister"), "isSwap": .bool(true)], type: "INT")
        #expect(try bytes.value(of: .registers([0x0100])) == "1")
        let f32 = try visitor(["register": .string("HoldingRegister"), "limit": .int(2), "dataType": .string("float")])
        let bits = Float(1.5).bitPattern
        #expect(try f32.value(of: .registers([UInt16(bits >> 16), UInt16(bits & 0xffff)])) == "1.5")
        let coil = try visitor(["register": .string("CoilRegister"), "dataType": .string("boolean")])
        #expect(try coil.value(of: .bits([true])) == "true")
        #expect(throws: ModbusError.self) { try visitor(["register": .string("Holding")]) }
        #expect(throws: ModbusError.self) { try visitor(["register": .string("HoldingRegister"), "limit": .int(0)]) }
    }

    @Test func visitorsWriteValues() throws {
        let setpoint = try visitor(["register": .string("HoldingRegister"), "offset": .int(1), "dataType": .string("int"), "max": .int(100), "min": .int(0)])
        #expect(try setpoint.writeRequest("42") == .writeSingleRegister(address: 1, value: 42))
        #expect(throws: ModbusError("150 is above the maximum 100")) { try setpoint.writeRequest("150") }
        #expect(throws: ModbusError("\"warm\" is not a number")) { try setpoint.writeRequest("warm") }
        let scaled = try visitor(["register": .string("HoldingRegister"), "scale": .double(0.1), "limit": .int(2), "isRegisterSwap": .bool(true)])
        #expect(try scaled.writeRequest("6553.8") == .writeMultipleRegisters(address: 0, values: [2, 1]))
        // What is written reads back as the same value.
        #expect(try scaled.value(of: .registers([2, 1])) == "6553.8")
        let coil = try visitor(["register": .string("CoilRegister")])
        #expect(try coil.writeRequest("true") == .writeSingleCoil(address: 0, value: true))
        let input = try visitor(["register": .string("InputRegister")])
        #expect(throws: ModbusError.self) { try input.writeRequest("1") }
    }

    @Test func endpoints() throws {
        let e = try ModbusEndpoint(["communicateMode": .string("TCP"), "ip": .string("10.0.0.5"), "port": .int(5020), "slaveID": .int(3)])
        #expect(e == ModbusEndpoint(host: "10.0.0.5", port: 5020, slaveID: 3))
        let legacy = try ModbusEndpoint(["tcp": .string(#"{"ip": "10.0.0.6", "port": 502}"#), "slaveID": .int(1)])
        #expect(legacy.host == "10.0.0.6" && legacy.port == 502)
        #expect(throws: ModbusError.self) { try ModbusEndpoint(["communicateMode": .string("RTU"), "ip": .string("x")]) }
        #expect(throws: ModbusError.self) { try ModbusEndpoint(["port": .int(502)]) }
    }

    @Test func cycles() {
        #expect(cycle(500, default: .seconds(1)) == .milliseconds(500))
        #expect(cycle(0, default: .seconds(1)) == .seconds(1))
        #expect(cycle(10_000_000_000, default: .seconds(1)) == .seconds(10))  // KubeEdge's Go duration (ns)
    }
}
