import DMI
import DMIValues
import Modbus

/// Where a device is and how to reach it (KubeEdge's Modbus `protocol.configData`).
public struct ModbusEndpoint: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var slaveID: UInt8

    public init(host: String, port: Int, slaveID: UInt8) { self.host = host; self.port = port; self.slaveID = slaveID }

    /// Reads `{communicateMode: TCP, ip, port, slaveID}` (also the older `tcp: {ip, port}` form).
    public init(_ config: [String: DMIValue]) throws(ModbusError) {
        let mode = config["communicateMode"]?.description.uppercased() ?? "TCP"
        guard mode == "TCP" else {
            throw ModbusError("communicateMode \(mode): this mapper speaks Modbus TCP only (RTU needs a serial line)")
        }
        var ip = config["ip"]?.description
        var port = config["port"]?.intValue
        if ip == nil, case .string(let tcp)? = config["tcp"] {
            // {"ip":"…","port":502} as JSON text.
            ip = Self.field("ip", in: tcp)
            port = Self.field("port", in: tcp).flatMap { Int64($0) }
        }
        guard let ip, !ip.isEmpty else { throw ModbusError("protocol.configData has no ip") }
        host = ip
        self.port = Int(port ?? 502)
        guard (1...65535).contains(self.port) else { throw ModbusError("protocol.configData port \(self.port) out of range") }
        let slave = config["slaveID"]?.intValue ?? 1
        guard (0...247).contains(slave) else { throw ModbusError("protocol.configData slaveID \(slave) out of range (0–247)") }
        slaveID = UInt8(slave)
    }

    /// A scalar field of a small flat JSON object, without a JSON parser.
    static func field(_ name: String, in json: String) -> String? {
        guard let r = json.range(of: "\"\(name)\"") else { return nil }
        var rest = json[r.upperBound...].drop { $0 == " " || $0 == ":" }
        if rest.first == "\"" { rest = rest.dropFirst(); return String(rest.prefix { $0 != "\"" }) }
        return String(rest.prefix { $0.isNumber || $0 == "-" || $0 == "." })
    }
}

/// How one property maps to registers (KubeEdge's Modbus visitor `configData`).
public struct ModbusVisitor: Sendable, Equatable {
    public enum Register: String, Sendable { case coil = "CoilRegister", discreteInput = "DiscreteInputRegister",
                                                 holding = "HoldingRegister", input = "InputRegister" }
    public var register: Register
    public var offset: UInt16
    public var limit: UInt16
    public var scale: Double
    public var isSwap: Bool
    public var isRegisterSwap: Bool
    /// int, float, double, boolean, string.
    public var dataType: String
    public var max: Double?
    public var min: Double?

    public init(_ config: [String: DMIValue], modelType: String?) throws(ModbusError) {
        guard let r = config["register"]?.description, let reg = Register(rawValue: r) else {
            throw ModbusError("visitor register \"\(config["register"]?.description ?? "")\" is not CoilRegister, DiscreteInputRegister, HoldingRegister or InputRegister")
        }
        register = reg
        guard let off = config["offset"]?.intValue ?? 0 as Int64?, (0...65535).contains(off) else { throw ModbusError("visitor offset out of range") }
        offset = UInt16(off)
        let lim = config["limit"]?.intValue ?? 1
        guard (1...125).contains(lim) else { throw ModbusError("visitor limit \(lim) out of range (1–125)") }
        limit = UInt16(lim)
        scale = config["scale"]?.doubleValue ?? 1
        if scale == 0 { scale = 1 }
        isSwap = config["isSwap"]?.boolValue ?? false
        isRegisterSwap = config["isRegisterSwap"]?.boolValue ?? false
        dataType = (config["dataType"]?.description ?? modelType ?? "int").lowercased()
        if dataType == "integer" { dataType = "int" }
        max = config["max"]?.doubleValue
        min = config["min"]?.doubleValue
    }

    public var writable: Bool { register == .coil || register == .holding }

    public var readRequest: ModbusRequest {
        switch register {
        case .coil: .readCoils(address: offset, count: limit)
        case .discreteInput: .readDiscreteInputs(address: offset, count: limit)
        case .holding: .readHoldingRegisters(address: offset, count: limit)
        case .input: .readInputRegisters(address: offset, count: limit)
        }
    }

    /// The twin value (a string, as KubeEdge's twins are) of an answer.
    public func value(of response: ModbusResponse) throws(ModbusError) -> String {
        switch response {
        case .bits(let bits):
            guard let b = bits.first else { throw ModbusError("empty bit answer") }
            return dataType == "boolean" ? String(b) : (b ? "1" : "0")
        case .registers(let regs):
            let words = ordered(regs)
            switch dataType {
            case "string":
                return String(decoding: words.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] }.prefix { $0 != 0 }, as: UTF8.self)
            case "boolean":
                return String(words.contains { $0 != 0 })
            case "float", "double":
                let raw: Double
                switch words.count {
                case 2: raw = Double(Float(bitPattern: UInt32(words[0]) << 16 | UInt32(words[1])))
                case 4: raw = Double(bitPattern: words.reduce(UInt64(0)) { $0 << 16 | UInt64($1) })
                default: raw = Double(words.reduce(UInt64(0)) { $0 << 16 | UInt64($1) })
                }
                return Self.format(raw * scale)
            default:
                let raw = words.prefix(4).reduce(UInt64(0)) { $0 << 16 | UInt64($1) }
                let scaled = Double(raw) * scale
                return scaled.rounded() == scaled && abs(scaled) < 9e15 ? String(Int64(scaled)) : Self.format(scaled)
            }
        case .written:
            throw ModbusError("a write confirmation is not a value")
        }
    }

    /// The write that sets the property to `value`.
    public func writeRequest(_ value: String) throws(ModbusError) -> ModbusRequest {
        guard writable else { throw ModbusError("\(register.rawValue) is read-only") }
        if register == .coil {
            guard let b = ["true": true, "1": true, "false": false, "0": false][value.lowercased()] else {
                throw ModbusError("\"\(value)\" is not a boolean (true/false/1/0)")
            }
            return .writeSingleCoil(address: offset, value: b)
        }
        guard let number = Double(value) else { throw ModbusError("\"\(value)\" is not a number") }
        if let max, number > max { throw ModbusError("\(value) is above the maximum \(Self.format(max))") }
        if let min, number < min { throw ModbusError("\(value) is below the minimum \(Self.format(min))") }
        let raw = number / scale
        var words: [UInt16]
        switch (dataType, limit) {
        case ("float", 2), ("double", 2):
            let bits = Float(raw).bitPattern
            words = [UInt16(bits >> 16), UInt16(bits & 0xffff)]
        case ("double", 4):
            let bits = raw.bitPattern
            words = (0..<4).map { UInt16((bits >> (48 - 16 * UInt64($0))) & 0xffff) }
        default:
            let r = raw.rounded()
            let maxRaw = limit >= 4 ? Double(UInt64.max) : Double((UInt64(1) << (16 * UInt64(limit))) - 1)
            guard r >= 0 || limit == 1, r <= maxRaw, r >= -32768 else { throw ModbusError("\(value) does not fit \(limit) register(s)") }
            if r < 0 {
                words = [UInt16(bitPattern: Int16(r))]
            } else {
                let u = UInt64(r)
                words = (0..<Int(limit)).map { i in UInt16((u >> (16 * UInt64(Int(limit) - 1 - i))) & 0xffff) }
            }
        }
        words = ordered(words)  // the swaps are their own inverse
        return words.count == 1 ? .writeSingleRegister(address: offset, value: words[0]) : .writeMultipleRegisters(address: offset, values: words)
    }

    func ordered(_ regs: [UInt16]) -> [UInt16] {
        var w = isRegisterSwap ? Array(regs.reversed()) : regs
        if isSwap { w = w.map { $0.byteSwapped } }
        return w
    }

    static func format(_ d: Double) -> String {
        if d.rounded() == d && abs(d) < 9e15 { return String(Int64(d)) }
        return String(d)
    }
}

/// Collect and report cycles: milliseconds, as KubeEdge's docs state; values too large to be
/// milliseconds (over a day) are taken as the nanoseconds of KubeEdge's Go durations.
func cycle(_ v: Int64, default d: Duration) -> Duration {
    if v <= 0 { return d }
    if v > 86_400_000 { return .nanoseconds(v) }
    return .milliseconds(v)
}
