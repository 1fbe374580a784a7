/// Decodes `Decodable` types straight from a ``JSON`` value (no bytes, no Foundation): how the
/// edge reads the typed view of an object it stores as JSON. A property typed ``JSON`` takes the
/// subtree as it is (unknown fields are kept wherever a type says so). Integers read from
/// floating-point values only when they are whole; a missing key decodes an optional as nil.
public struct JSONValueDecoder: Sendable {
    public init() {}

    public func decode<T: Decodable>(_ type: T.Type = T.self, from value: JSON) throws(JSONDecodingError) -> T {
        do { return try ValueDecoder(value: value, path: []).decodeValue(T.self) } catch let e as JSONDecodingError { throw e } catch {
            throw JSONDecodingError(path: "", message: "\(error)")
        }
    }
}

/// A value that does not have the shape its type needs, with where (`spec.containers[0].ports`).
public struct JSONDecodingError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var message: String
    public init(path: String, message: String) { self.path = path; self.message = message }
    public var description: String { path.isEmpty ? message : "\(path): \(message)" }
}

extension JSON: Decodable {
    public init(from decoder: any Decoder) throws {
        if let d = decoder as? ValueDecoder { self = d.value; return }
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int64.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSON].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSON].self)) }
    }
}

struct JSONKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue; intValue = nil }
    init(intValue: Int) { stringValue = String(intValue); self.intValue = intValue }
}

func render(_ path: [any CodingKey]) -> String {
    var s = ""
    for k in path {
        if let i = k.intValue { s += "[\(i)]" } else { s += s.isEmpty ? k.stringValue : "." + k.stringValue }
    }
    return s
}

struct ValueDecoder: Decoder {
    let value: JSON
    let path: [any CodingKey]
    var codingPath: [any CodingKey] { path }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func fail(_ message: String) -> JSONDecodingError { JSONDecodingError(path: render(path), message: message) }

    func decodeValue<T: Decodable>(_ type: T.Type) throws -> T {
        if T.self == JSON.self, let v = value as? T { return v }
        return try T(from: self)
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let o) = value else { throw fail("expected an object, got \(value.kindName)") }
        return KeyedDecodingContainer(Keyed<Key>(object: o, decoder: self))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let a) = value else { throw fail("expected a list, got \(value.kindName)") }
        return Unkeyed(items: a, decoder: self)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { Single(decoder: self) }

    func child(_ v: JSON, _ key: any CodingKey) -> ValueDecoder { ValueDecoder(value: v, path: path + [key]) }

    // Scalars, shared by all three containers.
    func bool() throws -> Bool {
        guard case .bool(let b) = value else { throw fail("expected a boolean, got \(value.kindName)") }
        return b
    }
    func string() throws -> String {
        guard case .string(let s) = value else { throw fail("expected a string, got \(value.kindName)") }
        return s
    }
    func double() throws -> Double {
        guard let d = value.doubleValue else { throw fail("expected a number, got \(value.kindName)") }
        return d
    }
    func integer<I: FixedWidthInteger>(_ type: I.Type) throws -> I {
        guard let i = value.intValue, let v = I(exactly: i) else { throw fail("expected an integer fitting \(I.self), got \(value.serializedString())") }
        return v
    }

    struct Keyed<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let object: [String: JSON]
        let decoder: ValueDecoder
        var codingPath: [any CodingKey] { decoder.path }
        var allKeys: [Key] { object.keys.compactMap { Key(stringValue: $0) } }

        func contains(_ key: Key) -> Bool { object[key.stringValue] != nil }
        func child(_ key: Key) throws -> ValueDecoder {
            guard let v = object[key.stringValue] else { throw decoder.child(.null, key).fail("missing") }
            return decoder.child(v, key)
        }
        func decodeNil(forKey key: Key) throws -> Bool { (object[key.stringValue] ?? .null).isNull }
        func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try child(key).bool() }
        func decode(_ type: String.Type, forKey key: Key) throws -> String { try child(key).string() }
        func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try child(key).double() }
        func decode(_ type: Float.Type, forKey key: Key) throws -> Float { Float(try child(key).double()) }
        func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try child(key).integer(Int.self) }
        func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try child(key).integer(Int8.self) }
        func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try child(key).integer(Int16.self) }
        func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try child(key).integer(Int32.self) }
        func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try child(key).integer(Int64.self) }
        func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try child(key).integer(UInt.self) }
        func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try child(key).integer(UInt8.self) }
        func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try child(key).integer(UInt16.self) }
        func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try child(key).integer(UInt32.self) }
        func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try child(key).integer(UInt64.self) }
        func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try child(key).decodeValue(T.self) }
        // An explicit null reads as absent, as Kubernetes treats it.
        func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
            guard let v = object[key.stringValue], !v.isNull else { return nil }
            return try decoder.child(v, key).decodeValue(T.self)
        }
        func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
            try child(key).container(keyedBy: type)
        }
        func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer { try child(key).unkeyedContainer() }
        func superDecoder() throws -> any Decoder { decoder }
        func superDecoder(forKey key: Key) throws -> any Decoder { try child(key) }
    }

    struct Unkeyed: UnkeyedDecodingContainer {
        let items: [JSON]
        let decoder: ValueDecoder
        var currentIndex = 0
        var codingPath: [any CodingKey] { decoder.path }
        var count: Int? { items.count }
        var isAtEnd: Bool { currentIndex >= items.count }

        mutating func next() throws -> ValueDecoder {
            guard !isAtEnd else { throw decoder.fail("list has only \(items.count) items") }
            defer { currentIndex += 1 }
            return decoder.child(items[currentIndex], JSONKey(intValue: currentIndex))
        }
        mutating func decodeNil() throws -> Bool {
            guard !isAtEnd, items[currentIndex].isNull else { return false }
            currentIndex += 1
            return true
        }
        mutating func decode(_ type: Bool.Type) throws -> Bool { try next().bool() }
        mutating func decode(_ type: String.Type) throws -> String { try next().string() }
        mutating func decode(_ type: Double.Type) throws -> Double { try next().double() }
        mutating func decode(_ type: Float.Type) throws -> Float { Float(try next().double()) }
        mutating func decode(_ type: Int.Type) throws -> Int { try next().integer(Int.self) }
        mutating func decode(_ type: Int8.Type) throws -> Int8 { try next().integer(Int8.self) }
        mutating func decode(_ type: Int16.Type) throws -> Int16 { try next().integer(Int16.self) }
        mutating func decode(_ type: Int32.Type) throws -> Int32 { try next().integer(Int32.self) }
        mutating func decode(_ type: Int64.Type) throws -> Int64 { try next().integer(Int64.self) }
        mutating func decode(_ type: UInt.Type) throws -> UInt { try next().integer(UInt.self) }
        mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try next().integer(UInt8.self) }
        mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try next().integer(UInt16.self) }
        mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try next().integer(UInt32.self) }
        mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try next().integer(UInt64.self) }
        mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try next().decodeValue(T.self) }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
            try next().container(keyedBy: type)
        }
        mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer { try next().unkeyedContainer() }
        mutating func superDecoder() throws -> any Decoder { try next() }
    }

    struct Single: SingleValueDecodingContainer {
        let decoder: ValueDecoder
        var codingPath: [any CodingKey] { decoder.path }
        func decodeNil() -> Bool { decoder.value.isNull }
        func decode(_ type: Bool.Type) throws -> Bool { try decoder.bool() }
        func decode(_ type: String.Type) throws -> String { try decoder.string() }
        func decode(_ type: Double.Type) throws -> Double { try decoder.double() }
        func decode(_ type: Float.Type) throws -> Float { Float(try decoder.double()) }
        func decode(_ type: Int.Type) throws -> Int { try decoder.integer(Int.self) }
        func decode(_ type: Int8.Type) throws -> Int8 { try decoder.integer(Int8.self) }
        func decode(_ type: Int16.Type) throws -> Int16 { try decoder.integer(Int16.self) }
        func decode(_ type: Int32.Type) throws -> Int32 { try decoder.integer(Int32.self) }
        func decode(_ type: Int64.Type) throws -> Int64 { try decoder.integer(Int64.self) }
        func decode(_ type: UInt.Type) throws -> UInt { try decoder.integer(UInt.self) }
        func decode(_ type: UInt8.Type) throws -> UInt8 { try decoder.integer(UInt8.self) }
        func decode(_ type: UInt16.Type) throws -> UInt16 { try decoder.integer(UInt16.self) }
        func decode(_ type: UInt32.Type) throws -> UInt32 { try decoder.integer(UInt32.self) }
        func decode(_ type: UInt64.Type) throws -> UInt64 { try decoder.integer(UInt64.self) }
        func decode<T: Decodable>(_ type: T.Type) throws -> T { try decoder.decodeValue(T.self) }
    }
}

extension JSON {
    /// `object`, `list`, `string`, … (for error messages).
    public var kindName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .int, .double: "a number"
        case .string: "a string"
        case .array: "a list"
        case .object: "an object"
        }
    }
}
