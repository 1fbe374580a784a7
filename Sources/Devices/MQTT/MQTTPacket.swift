/// MQTT 3.1.1 packets (OASIS standard, what mosquitto and KubeEdge's mappers speak), as values;
/// ``MQTTPacket/encoded()`` and ``MQTTPacketReader`` are the only places bytes are handled.
public enum MQTTPacket: Equatable, Sendable {
    public enum QoS: UInt8, Sendable, Comparable {
        case atMostOnce = 0, atLeastOnce = 1, exactlyOnce = 2
        public static func < (a: QoS, b: QoS) -> Bool { a.rawValue < b.rawValue }
    }

    public struct Will: Equatable, Sendable {
        public var topic: String
        public var payload: [UInt8]
        public var qos: QoS
        public var retain: Bool
        public init(topic: String, payload: [UInt8], qos: QoS = .atMostOnce, retain: Bool = false) {
            self.topic = topic; self.payload = payload; self.qos = qos; self.retain = retain
        }
    }

    public struct Connect: Equatable, Sendable {
        public var clientID: String
        public var keepAliveSeconds: UInt16
        public var cleanSession: Bool
        public var username: String?
        public var password: [UInt8]?
        public var will: Will?
        public init(clientID: String, keepAliveSeconds: UInt16 = 30, cleanSession: Bool = true, username: String? = nil,
                    password: [UInt8]? = nil, will: Will? = nil)
        {
            self.clientID = clientID; self.keepAliveSeconds = keepAliveSeconds; self.cleanSession = cleanSession
            self.username = username; self.password = password; self.will = will
        }
    }

    public struct Publish: Equatable, Sendable {
        public var topic: String
        public var payload: [UInt8]
        public var qos: QoS
        public var retain: Bool
        public var duplicate: Bool
        /// Present when `qos` is above at-most-once.
        public var packetID: UInt16?
        public init(topic: String, payload: [UInt8], qos: QoS = .atMostOnce, retain: Bool = false, duplicate: Bool = false,
                    packetID: UInt16? = nil)
        {
            self.topic = topic; self.payload = payload; self.qos = qos; self.retain = retain; self.duplicate = duplicate
            self.packetID = packetID
        }
    }

    case connect(Connect)
    /// `returnCode` 0 is accepted; 1–5 are the standard refusals.
    case connack(sessionPresent: Bool, returnCode: UInt8)
    case publish(Publish)
    case puback(packetID: UInt16)
    case pubrec(packetID: UInt16)
    case pubrel(packetID: UInt16)
    case pubcomp(packetID: UInt16)
    case subscribe(packetID: UInt16, topics: [(filter: String, qos: QoS)])
    /// One granted QoS per filter; 0x80 is a refusal.
    case suback(packetID: UInt16, returnCodes: [UInt8])
    case unsubscribe(packetID: UInt16, filters: [String])
    case unsuback(packetID: UInt16)
    case pingreq
    case pingresp
    case disconnect

    public static func == (a: MQTTPacket, b: MQTTPacket) -> Bool {
        switch (a, b) {
        case (.subscribe(let i, let t), .subscribe(let j, let u)):
            return i == j && t.map(\.filter) == u.map(\.filter) && t.map(\.qos) == u.map(\.qos)
        case (.connect(let x), .connect(let y)): return x == y
        case (.connack(let s, let r), .connack(let t, let q)): return s == t && r == q
        case (.publish(let x), .publish(let y)): return x == y
        case (.puback(let i), .puback(let j)), (.pubrec(let i), .pubrec(let j)), (.pubrel(let i), .pubrel(let j)),
             (.pubcomp(let i), .pubcomp(let j)), (.unsuback(let i), .unsuback(let j)):
            return i == j
        case (.suback(let i, let r), .suback(let j, let s)): return i == j && r == s
        case (.unsubscribe(let i, let f), .unsubscribe(let j, let g)): return i == j && f == g
        case (.pingreq, .pingreq), (.pingresp, .pingresp), (.disconnect, .disconnect): return true
        default: return false
        }
    }

    /// A message refused by the codec, with why.
    public struct Malformed: Error, Equatable, Sendable, CustomStringConvertible {
        public var description: String
        public init(_ d: String) { description = d }
    }

    public func encoded() -> [UInt8] {
        var body: [UInt8] = []
        func u16(_ v: UInt16) { body += [UInt8(v >> 8), UInt8(v & 0xff)] }
        func string(_ s: String) { u16(UInt16(clamping: s.utf8.count)); body += Array(s.utf8.prefix(65535)) }
        func bytes(_ b: [UInt8]) { u16(UInt16(clamping: b.count)); body += b.prefix(65535) }
        let first: UInt8
        switch self {
        case .connect(let c):
            first = 0x10
            string("MQTT")
            body.append(4)  // protocol level 3.1.1
            var flags: UInt8 = c.cleanSession ? 0x02 : 0
            if let w = c.will { flags |= 0x04 | (w.qos.rawValue << 3) | (w.retain ? 0x20 : 0) }
            if c.password != nil { flags |= 0x40 }
            if c.username != nil { flags |= 0x80 }
            body.append(flags)
            u16(c.keepAliveSeconds)
            string(c.clientID)
            if let w = c.will { string(w.topic); bytes(w.payload) }
            if let u = c.username { string(u) }
            if let p = c.password { bytes(p) }
        case .connack(let present, let code):
            first = 0x20
            body = [present ? 1 : 0, code]
        case .publish(let p):
            first = 0x30 | (p.duplicate ? 0x08 : 0) | (p.qos.rawValue << 1) | (p.retain ? 0x01 : 0)
            string(p.topic)
            if p.qos != .atMostOnce { u16(p.packetID ?? 0) }
            body += p.payload
        case .puback(let id): first = 0x40; u16(id)
        case .pubrec(let id): first = 0x50; u16(id)
        case .pubrel(let id): first = 0x62; u16(id)
        case .pubcomp(let id): first = 0x70; u16(id)
        case .subscribe(let id, let topics):
            first = 0x82
            u16(id)
            for t in topics { string(t.filter); body.append(t.qos.rawValue) }
        case .suback(let id, let codes): first = 0x90; u16(id); body += codes
        case .unsubscribe(let id, let filters):
            first = 0xA2
            u16(id)
            for f in filters { string(f) }
        case .unsuback(let id): first = 0xB0; u16(id)
        case .pingreq: first = 0xC0
        case .pingresp: first = 0xD0
        case .disconnect: first = 0xE0
        }
        var out = [first]
        var n = body.count
        repeat {
            var byte = UInt8(n % 128)
            n /= 128
            if n > 0 { byte |= 0x80 }
            out.append(byte)
        } while n > 0
        return out + body
    }
}

/// Cuts a TCP byte stream into MQTT packets; refuses malformed or oversized ones.
public struct MQTTPacketReader: Sendable {
    public var maxPacket: Int
    var buffer: [UInt8] = []
    var start = 0

    public init(maxPacket: Int = 1 << 20) { self.maxPacket = maxPacket }

    public mutating func append(_ bytes: some Sequence<UInt8>) {
        if start > 64 * 1024 { buffer.removeFirst(start); start = 0 }
        buffer.append(contentsOf: bytes)
    }

    /// The next whole packet, or nil until more bytes arrive.
    public mutating func next() throws(MQTTPacket.Malformed) -> MQTTPacket? {
        guard buffer.count - start >= 2 else { return nil }
        var length = 0, multiplier = 1, i = start + 1
        while true {
            guard i < buffer.count else { return nil }
            let b = Int(buffer[i])
            length += (b & 0x7f) * multiplier
            i += 1
            if b & 0x80 == 0 { break }
            multiplier *= 128
            guard multiplier <= 128 * 128 * 128 else { throw MQTTPacket.Malformed("remaining length longer than 4 bytes") }
        }
        guard length <= maxPacket else { throw MQTTPacket.Malformed("packet of \(length) bytes (limit \(maxPacket))") }
        guard buffer.count - i >= length else { return nil }
        let first = buffer[start]
        let body = Array(buffer[i..<i + length])
        start = i + length
        return try Self.decode(first: first, body: body)
    }

    static func decode(first: UInt8, body: [UInt8]) throws(MQTTPacket.Malformed) -> MQTTPacket {
        var r = body[...]
        func u16() throws(MQTTPacket.Malformed) -> UInt16 {
            guard r.count >= 2 else { throw MQTTPacket.Malformed("truncated packet") }
            defer { r = r.dropFirst(2) }
            return UInt16(r[r.startIndex]) << 8 | UInt16(r[r.startIndex + 1])
        }
        func bytes() throws(MQTTPacket.Malformed) -> [UInt8] {
            let n = Int(try u16())
            guard r.count >= n else { throw MQTTPacket.Malformed("truncated string") }
            defer { r = r.dropFirst(n) }
            return Array(r.prefix(n))
        }
        func string() throws(MQTTPacket.Malformed) -> String {
            let b = try bytes()
            guard let s = String(validating: b, as: UTF8.self) else { throw MQTTPacket.Malformed("string is not UTF-8") }
            return s
        }
        func qos(_ v: UInt8) throws(MQTTPacket.Malformed) -> MQTTPacket.QoS {
            guard let q = MQTTPacket.QoS(rawValue: v) else { throw MQTTPacket.Malformed("QoS \(v)") }
            return q
        }
        switch first >> 4 {
        case 1:
            guard try string() == "MQTT", r.first == 4 else { throw MQTTPacket.Malformed("not MQTT 3.1.1") }
            r = r.dropFirst()
            guard let flags = r.first else { throw MQTTPacket.Malformed("truncated CONNECT") }
            r = r.dropFirst()
            let keepAlive = try u16()
            var c = MQTTPacket.Connect(clientID: try string(), keepAliveSeconds: keepAlive, cleanSession: flags & 0x02 != 0)
            if flags & 0x04 != 0 {
                c.will = MQTTPacket.Will(topic: try string(), payload: try bytes(), qos: try qos((flags >> 3) & 0x3), retain: flags & 0x20 != 0)
            }
            if flags & 0x80 != 0 { c.username = try string() }
            if flags & 0x40 != 0 { c.password = try bytes() }
            return .connect(c)
        case 2:
            guard body.count == 2 else { throw MQTTPacket.Malformed("CONNACK of \(body.count) bytes") }
            return .connack(sessionPresent: body[0] & 1 != 0, returnCode: body[1])
        case 3:
            let q = try qos((first >> 1) & 0x3)
            let topic = try string()
            let id: UInt16? = q == .atMostOnce ? nil : try u16()
            return .publish(.init(topic: topic, payload: Array(r), qos: q, retain: first & 1 != 0, duplicate: first & 0x08 != 0, packetID: id))
        case 4: return .puback(packetID: try u16())
        case 5: return .pubrec(packetID: try u16())
        case 6: return .pubrel(packetID: try u16())
        case 7: return .pubcomp(packetID: try u16())
        case 8:
            let id = try u16()
            var topics: [(filter: String, qos: MQTTPacket.QoS)] = []
            while !r.isEmpty {
                let f = try string()
                guard let q = r.first else { throw MQTTPacket.Malformed("SUBSCRIBE without QoS") }
                r = r.dropFirst()
                topics.append((f, try qos(q)))
            }
            return .subscribe(packetID: id, topics: topics)
        case 9:
            let id = try u16()
            return .suback(packetID: id, returnCodes: Array(r))
        case 10:
            let id = try u16()
            var filters: [String] = []
            while !r.isEmpty { filters.append(try string()) }
            return .unsubscribe(packetID: id, filters: filters)
        case 11: return .unsuback(packetID: try u16())
        case 12: return .pingreq
        case 13: return .pingresp
        case 14: return .disconnect
        default: throw MQTTPacket.Malformed("packet type \(first >> 4)")
        }
    }
}

/// MQTT topic filters: `+` matches one level, `#` the rest; topics starting with `$` are not
/// matched by a leading wildcard (`$hw/events/...` needs its own subscription).
public enum MQTTTopic {
    public static func matches(filter: String, topic: String) -> Bool {
        let f = filter.split(separator: "/", omittingEmptySubsequences: false)
        let t = topic.split(separator: "/", omittingEmptySubsequences: false)
        if topic.hasPrefix("$"), let first = f.first, first == "+" || first == "#" { return false }
        for (i, part) in f.enumerated() {
            if part == "#" { return i == f.count - 1 }
            guard i < t.count else { return false }
            if part != "+" && part != t[i] { return false }
        }
        return f.count == t.count
    }

    /// Whether a filter is well formed (`#` last and alone in its level, `+` alone in its level).
    public static func isValidFilter(_ filter: String) -> Bool {
        guard !filter.isEmpty else { return false }
        let parts = filter.split(separator: "/", omittingEmptySubsequences: false)
        for (i, p) in parts.enumerated() {
            if p.contains("#") && (p != "#" || i != parts.count - 1) { return false }
            if p.contains("+") && p != "+" { return false }
        }
        return true
    }
}
