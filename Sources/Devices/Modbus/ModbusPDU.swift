/// A Modbus request (the application PDU of the Modbus specification v1.1b3), as a value.
public enum ModbusRequest: Equatable, Sendable {
    case readCoils(address: UInt16, count: UInt16)
    case readDiscreteInputs(address: UInt16, count: UInt16)
    case readHoldingRegisters(address: UInt16, count: UInt16)
    case readInputRegisters(address: UInt16, count: UInt16)
    case writeSingleCoil(address: UInt16, value: Bool)
    case writeSingleRegister(address: UInt16, value: UInt16)
    case writeMultipleCoils(address: UInt16, values: [Bool])
    case writeMultipleRegisters(address: UInt16, values: [UInt16])

    public var functionCode: UInt8 {
        switch self {
        case .readCoils: 1
        case .readDiscreteInputs: 2
        case .readHoldingRegisters: 3
        case .readInputRegisters: 4
        case .writeSingleCoil: 5
        case .writeSingleRegister: 6
        case .writeMultipleCoils: 15
        case .writeMultipleRegisters: 16
        }
    }

    /// The PDU bytes (function code first).
    public func pdu() throws(ModbusError) -> [UInt8] {
        var out: [UInt8] = [functionCode]
        func u16(_ v: UInt16) { out += [UInt8(v >> 8), UInt8(v & 0xff)] }
        switch self {
        case .readCoils(let a, let n), .readDiscreteInputs(let a, let n):
            guard (1...2000).contains(n) else { throw ModbusError("read of \(n) bits: Modbus allows 1–2000") }
            u16(a); u16(n)
        case .readHoldingRegisters(let a, let n), .readInputRegisters(let a, let n):
            guard (1...125).contains(n) else { throw ModbusError("read of \(n) registers: Modbus allows 1–125") }
            u16(a); u16(n)
        case .writeSingleCoil(let a, let v): u16(a); u16(v ? 0xFF00 : 0)
        case .writeSingleRegister(let a, let v): u16(a); u16(v)
        case .writeMultipleCoils(let a, let values):
            guard (1...1968).contains(values.count) else { throw ModbusError("write of \(values.count) coils: Modbus allows 1–1968") }
            u16(a); u16(UInt16(values.count))
            let bytes = ModbusCodec.packBits(values)
            out.append(UInt8(bytes.count)); out += bytes
        case .writeMultipleRegisters(let a, let values):
            guard (1...123).contains(values.count) else { throw ModbusError("write of \(values.count) registers: Modbus allows 1–123") }
            u16(a); u16(UInt16(values.count))
            out.append(UInt8(values.count * 2))
            for v in values { u16(v) }
        }
        return out
    }
}

/// A device's answer to a ``ModbusRequest``.
public enum ModbusResponse: Equatable, Sendable {
    case bits([Bool])
    case registers([UInt16])
    /// A write was confirmed.
    case written
}

/// A Modbus failure: an exception answer, a malformed frame, a timeout, a closed connection.
public struct ModbusError: Error, Equatable, Sendable, CustomStringConvertible {
    public var description: String
    /// The device's exception code, when it answered with one.
    public var exceptionCode: UInt8?
    public init(_ d: String, exceptionCode: UInt8? = nil) { description = d; self.exceptionCode = exceptionCode }

    static func exception(_ code: UInt8, function: UInt8) -> ModbusError {
        let name: String = switch code {
        case 1: "illegal function"
        case 2: "illegal data address"
        case 3: "illegal data value"
        case 4: "server device failure"
        case 5: "acknowledge"
        case 6: "server device busy"
        case 10: "gateway path unavailable"
        case 11: "gateway target device failed to respond"
        default: "exception \(code)"
        }
        return ModbusError("the device answered function \(function) with exception \(code) (\(name))", exceptionCode: code)
    }
}

/// Modbus TCP framing (MBAP header) and response decoding, without I/O.
public enum ModbusCodec {
    /// A Modbus TCP frame: MBAP header (transaction, protocol 0, length, unit) + PDU.
    public static func frame(transaction: UInt16, unit: UInt8, pdu: [UInt8]) -> [UInt8] {
        let length = UInt16(pdu.count + 1)
        return [UInt8(transaction >> 8), UInt8(transaction & 0xff), 0, 0, UInt8(length >> 8), UInt8(length & 0xff), unit] + pdu
    }

    /// Decodes the PDU a device sent in answer to `request`; exceptions and answers that do not
    /// fit the request are errors.
    public static func decode(_ pdu: [UInt8], for request: ModbusRequest) throws(ModbusError) -> ModbusResponse {
        guard let fc = pdu.first else { throw ModbusError("empty answer") }
        if fc == request.functionCode | 0x80 {
            guard pdu.count >= 2 else { throw ModbusError("exception answer without a code") }
            throw ModbusError.exception(pdu[1], function: request.functionCode)
        }
        guard fc == request.functionCode else { throw ModbusError("answer for function \(fc) to a request of function \(request.functionCode)") }
        func u16(_ i: Int) -> UInt16 { UInt16(pdu[i]) << 8 | UInt16(pdu[i + 1]) }
        switch request {
        case .readCoils(_, let n), .readDiscreteInputs(_, let n):
            guard pdu.count >= 2, Int(pdu[1]) == pdu.count - 2, Int(pdu[1]) == (Int(n) + 7) / 8 else {
                throw ModbusError("bit answer of \(pdu.count) bytes does not fit a read of \(n) bits")
            }
            return .bits(unpackBits(Array(pdu[2...]), count: Int(n)))
        case .readHoldingRegisters(_, let n), .readInputRegisters(_, let n):
            guard pdu.count >= 2, Int(pdu[1]) == pdu.count - 2, Int(pdu[1]) == Int(n) * 2 else {
                throw ModbusError("register answer of \(pdu.count) bytes does not fit a read of \(n) registers")
            }
            return .registers((0..<Int(n)).map { u16(2 + 2 * $0) })
        case .writeSingleCoil, .writeSingleRegister, .writeMultipleCoils, .writeMultipleRegisters:
            guard pdu.count == 5 else { throw ModbusError("write confirmation of \(pdu.count) bytes (expected 5)") }
            return .written
        }
    }

    static func packBits(_ bits: [Bool]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: (bits.count + 7) / 8)
        for (i, b) in bits.enumerated() where b { out[i / 8] |= 1 << (i % 8) }
        return out
    }

    static func unpackBits(_ bytes: [UInt8], count: Int) -> [Bool] {
        (0..<count).map { bytes[$0 / 8] & (1 << ($0 % 8)) != 0 }
    }
}

/// Cuts a Modbus TCP byte stream into (transaction, unit, PDU); refuses frames that are not Modbus.
public struct ModbusFrameReader: Sendable {
    var buffer: [UInt8] = []
    public init() {}
    public mutating func append(_ bytes: some Sequence<UInt8>) { buffer += bytes }

    public mutating func next() throws(ModbusError) -> (transaction: UInt16, unit: UInt8, pdu: [UInt8])? {
        guard buffer.count >= 7 else { return nil }
        let protocolID = UInt16(buffer[2]) << 8 | UInt16(buffer[3])
        let length = Int(UInt16(buffer[4]) << 8 | UInt16(buffer[5]))
        guard protocolID == 0 else { throw ModbusError("not a Modbus TCP frame (protocol id \(protocolID))") }
        guard (2...254).contains(length) else { throw ModbusError("Modbus TCP frame length \(length) out of range") }
        guard buffer.count >= 6 + length else { return nil }
        let t = UInt16(buffer[0]) << 8 | UInt16(buffer[1])
        let unit = buffer[6]
        let pdu = Array(buffer[7..<(6 + length)])
        buffer.removeFirst(6 + length)
        return (t, unit, pdu)
    }
}
