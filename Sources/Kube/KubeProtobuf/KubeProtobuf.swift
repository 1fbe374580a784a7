import KubeAPI
import KubeProtoTable

/// A protobuf body that cannot be read.
public struct ProtobufDecodingError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
}

/// Reads Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`, as kubectl's
/// typed clients and client-go controllers send them) into the JSON object model, using the field
/// table of the served built-in types.
public enum KubeProtobuf {
    /// `k8s\0`, the prefix of every Kubernetes protobuf body.
    public static let magic: [UInt8] = [0x6B, 0x38, 0x73, 0x00]

    /// Go struct embedding (`json:",inline"`): these fields' members appear in the parent object.
    /// (Only message-typed fields of these names: RuntimeClass's string `handler` stays.)
    public static let inlineFields: Set<String> = ["localObjectReference", "ephemeralContainerCommon", "persistentVolumeSource",
                                            "volumeSource", "ingressRuleValue", "handler"]

    /// Decodes a `k8s\0` + `runtime.Unknown` envelope into a JSON object with apiVersion and kind.
    public static func decode(_ bytes: [UInt8]) throws(ProtobufDecodingError) -> JSON {
        guard bytes.count >= 4, Array(bytes[0..<4]) == magic else {
            throw ProtobufDecodingError(message: "not a Kubernetes protobuf body (missing k8s\\0 prefix)")
        }
        let schema = ProtoSchema.shared
        let envelope = try decodeMessage(bytes[4...], type: "k8s.io.apimachinery.pkg.runtime.Unknown", schema: schema, raw: true)
        let apiVersion = envelope["typeMeta"]["apiVersion"].stringValue ?? ""
        let kind = envelope["typeMeta"]["kind"].stringValue ?? ""
        guard case .string(let rawB64) = envelope["raw"], let raw = Base64.decode(rawB64) else {
            throw ProtobufDecodingError(message: "protobuf envelope has no object")
        }
        guard let type = messageName(apiVersion: apiVersion, kind: kind), schema.messages[type] != nil else {
            throw ProtobufDecodingError(message: "no protobuf schema for \(apiVersion), Kind=\(kind); send application/json")
        }
        var obj = try decodeMessage(raw[...], type: type, schema: schema, raw: false)
        obj["apiVersion"] = .string(apiVersion)
        obj["kind"] = .string(kind)
        return obj
    }

    static let metaKinds: Set<String> = ["DeleteOptions", "Status", "ListOptions", "GetOptions", "CreateOptions",
                                         "UpdateOptions", "PatchOptions", "WatchEvent", "Table", "PartialObjectMetadata"]

    static func messageName(apiVersion: String, kind: String) -> String? {
        if metaKinds.contains(kind) { return "k8s.io.apimachinery.pkg.apis.meta.v1.\(kind)" }
        let parts = apiVersion.split(separator: "/")
        let (group, version) = parts.count == 2 ? (String(parts[0]), String(parts[1])) : ("", String(parts.first ?? ""))
        let pkg: String
        switch group {
        case "": pkg = "core"
        case "rbac.authorization.k8s.io": pkg = "rbac"
        default: pkg = String(group.split(separator: ".").first ?? "")
        }
        return "k8s.io.api.\(pkg).\(version).\(kind)"
    }

    // MARK: Wire format

    struct Reader {
        var bytes: ArraySlice<UInt8>
        var pos: Int
        init(_ b: ArraySlice<UInt8>) { bytes = b; pos = b.startIndex }
        var atEnd: Bool { pos >= bytes.endIndex }

        mutating func varint() throws(ProtobufDecodingError) -> UInt64 {
            var result: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                guard pos < bytes.endIndex, shift < 64 else { throw ProtobufDecodingError(message: "truncated varint") }
                let b = bytes[pos]
                pos += 1
                result |= UInt64(b & 0x7F) << shift
                if b & 0x80 == 0 { return result }
                shift += 7
            }
        }

        mutating func fixed(_ n: Int) throws(ProtobufDecodingError) -> UInt64 {
            guard pos + n <= bytes.endIndex else { throw ProtobufDecodingError(message: "truncated fixed field") }
            var v: UInt64 = 0
            for i in 0..<n { v |= UInt64(bytes[pos + i]) << (8 * UInt64(i)) }
            pos += n
            return v
        }

        mutating func lengthDelimited() throws(ProtobufDecodingError) -> ArraySlice<UInt8> {
            let n = Int(try varint())
            guard n >= 0, pos + n <= bytes.endIndex else { throw ProtobufDecodingError(message: "truncated length-delimited field") }
            let s = bytes[pos..<pos + n]
            pos += n
            return s
        }
    }

    enum WireValue {
        case varint(UInt64)
        case fixed64(UInt64)
        case fixed32(UInt64)
        case bytes(ArraySlice<UInt8>)
    }

    static func fields(_ data: ArraySlice<UInt8>) throws(ProtobufDecodingError) -> [(Int, WireValue)] {
        var r = Reader(data)
        var out: [(Int, WireValue)] = []
        while !r.atEnd {
            let key = try r.varint()
            let num = Int(key >> 3)
            switch key & 7 {
            case 0: out.append((num, .varint(try r.varint())))
            case 1: out.append((num, .fixed64(try r.fixed(8))))
            case 2: out.append((num, .bytes(try r.lengthDelimited())))
            case 5: out.append((num, .fixed32(try r.fixed(4))))
            default: throw ProtobufDecodingError(message: "unsupported wire type \(key & 7)")
            }
        }
        return out
    }

    // MARK: Messages

    static func decodeMessage(_ data: ArraySlice<UInt8>, type: String, schema: ProtoSchema, raw: Bool) throws(ProtobufDecodingError) -> JSON {
        if let special = try decodeSpecial(data, type: type) { return special }
        guard let msg = schema.messages[type] else {
            throw ProtobufDecodingError(message: "no protobuf schema for message \(type)")
        }
        var out: [String: JSON] = [:]
        for (num, value) in try fields(data) {
            guard let f = msg[num] else { continue }  // unknown fields are skipped, as proto readers do
            switch f.label {
            case .optional:
                out[f.name] = try scalarOrMessage(value, f.type, schema: schema)
            case .repeated:
                var list = out[f.name]?.arrayValue ?? []
                if case .bytes(let b) = value, isPackable(f.type) {
                    var r = Reader(b)
                    while !r.atEnd {
                        let v: WireValue = f.type == "double" || f.type == "fixed64" ? .fixed64(try r.fixed(8))
                            : f.type == "float" || f.type == "fixed32" ? .fixed32(try r.fixed(4)) : .varint(try r.varint())
                        list.append(try scalarOrMessage(v, f.type, schema: schema))
                    }
                } else {
                    list.append(try scalarOrMessage(value, f.type, schema: schema))
                }
                out[f.name] = .array(list)
            case .map(let k, let v):
                guard case .bytes(let entry) = value else { throw ProtobufDecodingError(message: "bad map entry for \(f.name)") }
                var key = ""
                var val: JSON = .null
                for (n, ev) in try fields(entry) {
                    if n == 1 { key = try scalarOrMessage(ev, k, schema: schema).stringValue ?? "" }
                    if n == 2 { val = try scalarOrMessage(ev, v, schema: schema) }
                }
                if case .null = val, v == "string" { val = "" }
                if case .null = val, v == "bytes" { val = "" }
                var m = out[f.name]?.objectValue ?? [:]
                m[key] = val
                out[f.name] = .object(m)
            }
        }
        if !raw {
            // Go's JSON omits empty strings and zero times; embedded structs are inlined.
            for (k, v) in out {
                if case .string(let s) = v, s.isEmpty { out.removeValue(forKey: k) }
                if case .null = v { out.removeValue(forKey: k) }
            }
            if type == "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta", out["generation"] == .int(0) {
                out.removeValue(forKey: "generation")
            }
            for k in inlineFields {
                if let inner = out[k]?.objectValue {
                    out.removeValue(forKey: k)
                    for (ik, iv) in inner { out[ik] = iv }
                }
            }
        }
        return .object(out)
    }

    static func isPackable(_ t: String) -> Bool {
        ["int32", "int64", "uint32", "uint64", "bool", "double", "float", "sint32", "sint64", "fixed32", "fixed64"].contains(t)
    }

    static func scalarOrMessage(_ value: WireValue, _ type: String, schema: ProtoSchema) throws(ProtobufDecodingError) -> JSON {
        switch (type, value) {
        case ("string", .bytes(let b)): return .string(String(decoding: b, as: UTF8.self))
        case ("bytes", .bytes(let b)): return .string(Base64.encode(Array(b)))
        case ("int32", .varint(let v)): return .int(Int64(Int32(truncatingIfNeeded: v)))
        case ("int64", .varint(let v)): return .int(Int64(bitPattern: v))
        case ("uint32", .varint(let v)), ("uint64", .varint(let v)): return .int(Int64(bitPattern: v))
        case ("sint32", .varint(let v)), ("sint64", .varint(let v)):
            return .int(Int64(bitPattern: (v >> 1) ^ (0 &- (v & 1))))
        case ("bool", .varint(let v)): return .bool(v != 0)
        case ("double", .fixed64(let v)): return .double(Double(bitPattern: v))
        case ("float", .fixed32(let v)): return .double(Double(Float(bitPattern: UInt32(v))))
        case (_, .bytes(let b)) where !isPackable(type) && type != "string" && type != "bytes":
            return try decodeMessage(b, type: type, schema: schema, raw: false)
        default:
            throw ProtobufDecodingError(message: "field of type \(type) has an unexpected wire encoding")
        }
    }

    /// Types whose JSON form is not their protobuf structure.
    static func decodeSpecial(_ data: ArraySlice<UInt8>, type: String) throws(ProtobufDecodingError) -> JSON? {
        switch type {
        case "k8s.io.apimachinery.pkg.apis.meta.v1.Time", "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime":
            var secs: Int64 = 0, nanos: Int64 = 0
            for (n, v) in try fields(data) {
                if case .varint(let x) = v { if n == 1 { secs = Int64(bitPattern: x) } else if n == 2 { nanos = Int64(Int32(truncatingIfNeeded: x)) } }
            }
            if secs == 0 && nanos == 0 { return .null }
            let t = KubeTime(micros: secs * 1_000_000 + nanos / 1000)
            return .string(type.hasSuffix("MicroTime") ? t.rfc3339Micro : t.rfc3339)
        case "k8s.io.apimachinery.pkg.apis.meta.v1.Duration":
            for (n, v) in try fields(data) where n == 1 {
                if case .varint(let x) = v { return .string(goDuration(nanos: Int64(bitPattern: x))) }
            }
            return .string("0s")
        case "k8s.io.apimachinery.pkg.api.resource.Quantity":
            for (n, v) in try fields(data) where n == 1 {
                if case .bytes(let b) = v { return .string(String(decoding: b, as: UTF8.self)) }
            }
            return .string("0")
        case "k8s.io.apimachinery.pkg.util.intstr.IntOrString":
            var kind: UInt64 = 0, i: Int64 = 0, s = ""
            for (n, v) in try fields(data) {
                switch (n, v) {
                case (1, .varint(let x)): kind = x
                case (2, .varint(let x)): i = Int64(Int32(truncatingIfNeeded: x))
                case (3, .bytes(let b)): s = String(decoding: b, as: UTF8.self)
                default: break
                }
            }
            return kind == 1 ? .string(s) : .int(i)
        case "k8s.io.apimachinery.pkg.runtime.RawExtension", "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1":
            for (n, v) in try fields(data) where n == 1 {
                if case .bytes(let b) = v, !b.isEmpty {
                    do { return try JSON.parse(b) } catch { throw ProtobufDecodingError(message: "embedded object is not JSON: \(error)") }
                }
            }
            return .null
        default:
            return nil
        }
    }

    static func goDuration(nanos: Int64) -> String {
        if nanos == 0 { return "0s" }
        if abs(nanos) < 1_000_000_000 { return "\(Double(nanos) / 1e6)ms" }
        var s = nanos / 1_000_000_000
        var out = ""
        if s >= 3600 { out += "\(s / 3600)h"; s %= 3600 }
        if !out.isEmpty || s >= 60 { out += "\(s / 60)m"; s %= 60 }
        return out + "\(s)s"
    }
}

/// Standard base64 without Foundation.
enum Base64 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func encode(_ data: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((data.count + 2) / 3 * 4)
        var i = 0
        while i + 2 < data.count {
            let n = UInt32(data[i]) << 16 | UInt32(data[i + 1]) << 8 | UInt32(data[i + 2])
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)], alphabet[Int(n & 63)]]
            i += 3
        }
        let rest = data.count - i
        if rest == 1 {
            let n = UInt32(data[i]) << 16
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], 61, 61]
        } else if rest == 2 {
            let n = UInt32(data[i]) << 16 | UInt32(data[i + 1]) << 8
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)], 61]
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ s: String) -> [UInt8]? {
        var lookup = [Int](repeating: -1, count: 256)
        for (i, c) in alphabet.enumerated() { lookup[Int(c)] = i }
        var out: [UInt8] = []
        var buf: UInt32 = 0, bits = 0
        for c in s.utf8 {
            if c == 61 { break }
            let v = lookup[Int(c)]
            guard v >= 0 else { return nil }
            buf = buf << 6 | UInt32(v)
            bits += 6
            if bits >= 8 { bits -= 8; out.append(UInt8(buf >> UInt32(bits) & 0xFF)) }
        }
        return out
    }
}

/// The field table, parsed once from ``table``.
final class ProtoSchema: Sendable {
    enum Label: Sendable { case optional, repeated, map(String, String) }
    struct Field: Sendable { let name: String; let label: Label; let type: String }
    let messages: [String: [Int: Field]]

    static let shared = ProtoSchema()

    init() {
        var msgs: [String: [Int: Field]] = [:]
        var current = ""
        for line in KubeProtoTable.table.split(separator: "\n") {
            let p = line.split(separator: " ")
            if p.first == "M", p.count == 2 { current = String(p[1]); msgs[current] = [:]; continue }
            guard p.first == "F", p.count == 5, let num = Int(p[1]) else { continue }
            let label: Label
            switch p[3] {
            case "r": label = .repeated
            case "m":
                let kv = p[4].split(separator: ",")
                label = .map(String(kv[0]), String(kv.count > 1 ? kv[1] : "string"))
            default: label = .optional
            }
            msgs[current]?[num] = Field(name: String(p[2]), label: label, type: String(p[4]))
        }
        messages = msgs
    }
}

extension KubeProtobuf {
    /// One field of a built-in type as the API defines it: its JSON name, whether it is a list or
    /// a map (then its type is the value's), and its type (a scalar such as `string`, `int32`, or a
    /// message name such as `k8s.io.api.core.v1.PodSpec`). What the OpenAPI schemas are made of.
    public struct FieldShape: Sendable {
        public let name: String
        public let repeated: Bool
        /// A map with string keys; `type` is then the value type.
        public let isMap: Bool
        public let type: String
    }

    /// The message name of a built-in kind (`k8s.io.api.apps.v1.Deployment`).
    public static func message(apiVersion: String, kind: String) -> String? { messageName(apiVersion: apiVersion, kind: kind) }

    /// The fields of a message in field-number order; nil for a message outside the table.
    public static func fields(of message: String) -> [FieldShape]? {
        guard let fields = ProtoSchema.shared.messages[message] else { return nil }
        return fields.sorted { $0.key < $1.key }.map { _, f in
            switch f.label {
            case .optional: FieldShape(name: f.name, repeated: false, isMap: false, type: f.type)
            case .repeated: FieldShape(name: f.name, repeated: true, isMap: false, type: f.type)
            case .map(_, let value): FieldShape(name: f.name, repeated: false, isMap: true, type: value)
            }
        }
    }
}
