import DMI
import SwiftProtobuf

/// A scalar of a DMI `CustomizedValue` (protocol and visitor `configData`). KubeEdge packs each
/// JSON value into a `google.protobuf.Any` holding a wrapper type (StringValue, Int64Value,
/// DoubleValue, BoolValue …); objects and lists travel as their JSON text in a StringValue.
public enum DMIValue: Sendable, Equatable, CustomStringConvertible {
    case string(String), int(Int64), double(Double), bool(Bool)

    public var description: String {
        switch self {
        case .string(let s): s
        case .int(let i): String(i)
        case .double(let d): String(d)
        case .bool(let b): String(b)
        }
    }

    public var intValue: Int64? {
        switch self {
        case .int(let i): i
        case .double(let d): d.rounded() == d ? Int64(exactly: d) : nil
        case .string(let s): Int64(s)
        case .bool: nil
        }
    }

    public var doubleValue: Double? {
        switch self {
        case .int(let i): Double(i)
        case .double(let d): d
        case .string(let s): Double(s)
        case .bool: nil
        }
    }

    public var boolValue: Bool? {
        switch self {
        case .bool(let b): b
        case .string(let s): s == "true" ? true : s == "false" ? false : nil
        case .int(let i): i != 0
        case .double: nil
        }
    }

    func packed() throws -> Google_Protobuf_Any {
        switch self {
        case .string(let s): try Google_Protobuf_Any(message: Google_Protobuf_StringValue(s))
        case .int(let i): try Google_Protobuf_Any(message: Google_Protobuf_Int64Value(i))
        case .double(let d): try Google_Protobuf_Any(message: Google_Protobuf_DoubleValue(d))
        case .bool(let b): try Google_Protobuf_Any(message: Google_Protobuf_BoolValue(b))
        }
    }

    init?(_ any: Google_Protobuf_Any) {
        if any.isA(Google_Protobuf_StringValue.self), let v = try? Google_Protobuf_StringValue(unpackingAny: any) { self = .string(v.value) }
        else if any.isA(Google_Protobuf_Int64Value.self), let v = try? Google_Protobuf_Int64Value(unpackingAny: any) { self = .int(v.value) }
        else if any.isA(Google_Protobuf_Int32Value.self), let v = try? Google_Protobuf_Int32Value(unpackingAny: any) { self = .int(Int64(v.value)) }
        else if any.isA(Google_Protobuf_UInt32Value.self), let v = try? Google_Protobuf_UInt32Value(unpackingAny: any) { self = .int(Int64(v.value)) }
        else if any.isA(Google_Protobuf_DoubleValue.self), let v = try? Google_Protobuf_DoubleValue(unpackingAny: any) { self = .double(v.value) }
        else if any.isA(Google_Protobuf_FloatValue.self), let v = try? Google_Protobuf_FloatValue(unpackingAny: any) { self = .double(Double(v.value)) }
        else if any.isA(Google_Protobuf_BoolValue.self), let v = try? Google_Protobuf_BoolValue(unpackingAny: any) { self = .bool(v.value) }
        else { return nil }
    }
}

extension V1beta1_CustomizedValue {
    /// Packs `values` as KubeEdge does.
    public init(values: [String: DMIValue]) throws {
        self.init()
        for (k, v) in values { data[k] = try v.packed() }
    }

    /// The scalars it holds (entries of other types are left out).
    public var values: [String: DMIValue] {
        var out: [String: DMIValue] = [:]
        for (k, v) in data { if let value = DMIValue(v) { out[k] = value } }
        return out
    }
}
