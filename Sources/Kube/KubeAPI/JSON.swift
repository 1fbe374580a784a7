/// A JSON value: the unstructured representation of every Kubernetes object.
///
/// Integers and floating-point numbers are kept apart so that `replicas: 3` never becomes `3.0`.
public enum JSON: Sendable, Hashable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSON])
    case object([String: JSON])

    public static let emptyObject: JSON = .object([:])

    public var objectValue: [String: JSON]? { if case .object(let o) = self { return o } else { return nil } }
    public var arrayValue: [JSON]? { if case .array(let a) = self { return a } else { return nil } }
    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    public var intValue: Int64? {
        switch self {
        case .int(let i): return i
        case .double(let d) where d == d.rounded() && abs(d) < 9e15: return Int64(d)
        default: return nil
        }
    }
    public var doubleValue: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }
    public var isNull: Bool { if case .null = self { return true } else { return false } }
    public var isObject: Bool { objectValue != nil }

    /// Member access on objects; `.null` for anything missing.
    public subscript(key: String) -> JSON {
        get { objectValue?[key] ?? .null }
        set {
            var o = objectValue ?? [:]
            if case .null = newValue { o.removeValue(forKey: key) } else { o[key] = newValue }
            self = .object(o)
        }
    }

    /// Reads a nested value by path; `.null` when any step is missing.
    public subscript(path path: [String]) -> JSON {
        get {
            var cur = self
            for p in path { cur = cur[p] }
            return cur
        }
        set {
            guard let first = path.first else { self = newValue; return }
            var child = self[first]
            child[path: Array(path.dropFirst())] = newValue
            if case .null = newValue, path.count > 1, child.objectValue?.isEmpty == true, self[first].isNull {
                return
            }
            self[first] = child
        }
    }

    /// A short name of the JSON type, for error messages.
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .int: return "integer"
        case .double: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }
}

extension JSON: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral, ExpressibleByFloatLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSON...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSON)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, b in b }))
    }
    public init(nilLiteral: ()) { self = .null }
    public init(floatLiteral value: Double) { self = .double(value) }
}

/// A JSON syntax error with the byte offset where parsing stopped.
public struct JSONParseError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var offset: Int
    public var description: String { "invalid JSON at byte \(offset): \(message)" }
}

extension JSON {
    /// Parses UTF-8 JSON text. Duplicate keys keep the last value (as Go's encoding/json does).
    public static func parse(_ bytes: some Collection<UInt8>) throws(JSONParseError) -> JSON {
        let array = Array(bytes)
        return try array.withUnsafeBufferPointer { buf throws(JSONParseError) -> JSON in
            var p = JSONParser(buf: buf)
            p.skipWS()
            let v = try p.parseValue(depth: 0)
            p.skipWS()
            if p.pos != buf.count { throw JSONParseError(message: "unexpected trailing data", offset: p.pos) }
            return v
        }
    }

    public static func parse(_ string: String) throws(JSONParseError) -> JSON {
        try parse(Array(string.utf8))
    }
}

struct JSONParser {
    let buf: UnsafeBufferPointer<UInt8>
    var pos = 0
    static let maxDepth = 512

    init(buf: UnsafeBufferPointer<UInt8>) { self.buf = buf }

    mutating func skipWS() {
        while pos < buf.count {
            let c = buf[pos]
            if c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { pos += 1 } else { break }
        }
    }

    func err(_ m: String) -> JSONParseError { JSONParseError(message: m, offset: pos) }

    mutating func parseValue(depth: Int) throws(JSONParseError) -> JSON {
        guard depth < Self.maxDepth else { throw err("nesting too deep") }
        guard pos < buf.count else { throw err("unexpected end of input") }
        switch buf[pos] {
        case UInt8(ascii: "{"):
            pos += 1
            var dict: [String: JSON] = [:]
            skipWS()
            if pos < buf.count, buf[pos] == UInt8(ascii: "}") { pos += 1; return .object(dict) }
            while true {
                skipWS()
                guard pos < buf.count, buf[pos] == UInt8(ascii: "\"") else { throw err("expected object key") }
                let key = try parseString()
                skipWS()
                guard pos < buf.count, buf[pos] == UInt8(ascii: ":") else { throw err("expected ':'") }
                pos += 1
                skipWS()
                dict[key] = try parseValue(depth: depth + 1)
                skipWS()
                guard pos < buf.count else { throw err("unexpected end of input in object") }
                if buf[pos] == UInt8(ascii: ",") { pos += 1; continue }
                if buf[pos] == UInt8(ascii: "}") { pos += 1; return .object(dict) }
                throw err("expected ',' or '}'")
            }
        case UInt8(ascii: "["):
            pos += 1
            var arr: [JSON] = []
            skipWS()
            if pos < buf.count, buf[pos] == UInt8(ascii: "]") { pos += 1; return .array(arr) }
            while true {
                skipWS()
                arr.append(try parseValue(depth: depth + 1))
                skipWS()
                guard pos < buf.count else { throw err("unexpected end of input in array") }
                if buf[pos] == UInt8(ascii: ",") { pos += 1; continue }
                if buf[pos] == UInt8(ascii: "]") { pos += 1; return .array(arr) }
                throw err("expected ',' or ']'")
            }
        case UInt8(ascii: "\""):
            return .string(try parseString())
        case UInt8(ascii: "t"):
            try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"):
            try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"):
            try expectLiteral("null"); return .null
        default:
            return try parseNumber()
        }
    }

    mutating func expectLiteral(_ lit: StaticString) throws(JSONParseError) {
        let n = lit.utf8CodeUnitCount
        guard pos + n <= buf.count else { throw err("invalid literal") }
        let p = lit.utf8Start
        for i in 0..<n where buf[pos + i] != p[i] { throw err("invalid literal") }
        pos += n
    }

    mutating func parseNumber() throws(JSONParseError) -> JSON {
        let start = pos
        var isFloat = false
        if pos < buf.count, buf[pos] == UInt8(ascii: "-") { pos += 1 }
        let digitsStart = pos
        while pos < buf.count {
            let c = buf[pos]
            if c >= 0x30 && c <= 0x39 { pos += 1 }
            else if c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E")
                || ((c == UInt8(ascii: "+") || c == UInt8(ascii: "-")) && isFloat)
            { isFloat = true; pos += 1 }
            else { break }
        }
        guard pos > digitsStart else { throw err("invalid value") }
        let text = String(decoding: UnsafeBufferPointer(rebasing: buf[start..<pos]), as: UTF8.self)
        if !isFloat, let i = Int64(text) { return .int(i) }
        guard let d = Double(text) else { throw err("invalid number '\(text)'") }
        return .double(d)
    }

    mutating func parseHex4() throws(JSONParseError) -> UInt32 {
        guard pos + 4 <= buf.count else { throw err("invalid unicode escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = buf[pos]
            var d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw err("invalid unicode escape")
            }
            v = v * 16 + d
            pos += 1
        }
        return v
    }

    mutating func parseString() throws(JSONParseError) -> String {
        pos += 1  // opening quote
        let start = pos
        // Fast path: no escapes.
        while pos < buf.count {
            let c = buf[pos]
            if c == UInt8(ascii: "\"") {
                let s = String(decoding: UnsafeBufferPointer(rebasing: buf[start..<pos]), as: UTF8.self)
                pos += 1
                return s
            }
            if c == UInt8(ascii: "\\") { break }
            if c < 0x20 { throw err("control character in string") }
            pos += 1
        }
        var out = Array(buf[start..<pos])
        while pos < buf.count {
            let c = buf[pos]
            if c == UInt8(ascii: "\"") {
                pos += 1
                return String(decoding: out, as: UTF8.self)
            }
            if c < 0x20 { throw err("control character in string") }
            if c == UInt8(ascii: "\\") {
                pos += 1
                guard pos < buf.count else { break }
                let e = buf[pos]
                pos += 1
                switch e {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try parseHex4()
                    if scalar >= 0xD800 && scalar < 0xDC00, pos + 1 < buf.count, buf[pos] == UInt8(ascii: "\\"),
                        buf[pos + 1] == UInt8(ascii: "u")
                    {
                        pos += 2
                        let low = try parseHex4()
                        if low >= 0xDC00 && low < 0xE000 {
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            scalar = 0xFFFD
                        }
                    }
                    let u = Unicode.Scalar(scalar) ?? "\u{FFFD}"
                    out.append(contentsOf: Array(String(Character(u)).utf8))
                default: throw err("invalid escape")
                }
            } else {
                out.append(c)
                pos += 1
            }
        }
        throw err("unterminated string")
    }
}

extension JSON {
    /// Serializes to compact UTF-8 JSON with object keys sorted (stable output).
    public func serialized() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        write(to: &out)
        return out
    }

    public func serializedString() -> String { String(decoding: serialized(), as: UTF8.self) }

    public func write(to out: inout [UInt8]) {
        switch self {
        case .null: out.append(contentsOf: [0x6E, 0x75, 0x6C, 0x6C])
        case .bool(let b): out.append(contentsOf: b ? Array("true".utf8) : Array("false".utf8))
        case .int(let i): out.append(contentsOf: Array(String(i).utf8))
        case .double(let d):
            if d.isFinite, d == d.rounded(), abs(d) < 1e15 {
                out.append(contentsOf: Array(String(Int64(d)).utf8))
            } else if d.isFinite {
                out.append(contentsOf: Array("\(d)".utf8))
            } else {
                out.append(contentsOf: Array("null".utf8))
            }
        case .string(let s): JSON.writeString(s, to: &out)
        case .array(let a):
            out.append(UInt8(ascii: "["))
            for (i, v) in a.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                v.write(to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let o):
            out.append(UInt8(ascii: "{"))
            var first = true
            for k in o.keys.sorted() {
                if !first { out.append(UInt8(ascii: ",")) }
                first = false
                JSON.writeString(k, to: &out)
                out.append(UInt8(ascii: ":"))
                o[k]!.write(to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    public static func writeString(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for c in s.utf8 {
            switch c {
            case 0x22: out.append(0x5C); out.append(0x22)
            case 0x5C: out.append(0x5C); out.append(0x5C)
            case 0x0A: out.append(0x5C); out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(0x5C); out.append(UInt8(ascii: "r"))
            case 0x09: out.append(0x5C); out.append(UInt8(ascii: "t"))
            case 0..<0x20:
                out.append(contentsOf: Array("\\u00".utf8))
                out.append(hex[Int(c >> 4)])
                out.append(hex[Int(c & 0xF)])
            default: out.append(c)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

extension JSON: CustomStringConvertible {
    public var description: String { serializedString() }
}
