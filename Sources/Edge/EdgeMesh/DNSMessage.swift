/// DNS wire format (RFC 1035) for what the mesh answers: one question, A / AAAA / SRV / PTR /
/// CNAME / TXT queries, answers built from the node's store. Parsing never trusts a length or
/// pointer it has not checked; anything malformed is a ``DNSFormatError``.
public struct DNSFormatError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public enum DNSType: UInt16, Sendable {
    case a = 1, ns = 2, cname = 5, soa = 6, ptr = 12, txt = 16, aaaa = 28, srv = 33, opt = 41, any = 255
}

public enum DNSResponseCode: UInt8, Sendable {
    case noError = 0, formatError = 1, serverFailure = 2, nameError = 3, notImplemented = 4, refused = 5
}

/// A query as received: the header fields a reply echoes and its one question.
public struct DNSQuery: Sendable, Equatable {
    public var id: UInt16
    public var recursionDesired: Bool
    /// Lower-cased, without the trailing dot (`web.default.svc.cluster.local`).
    public var name: String
    public var type: UInt16
    public var qclass: UInt16
    /// The question's bytes as sent (echoed in the reply, original case).
    public var questionBytes: [UInt8]
    /// The largest UDP reply the client accepts (512, or its EDNS0 size).
    public var udpPayloadSize: Int

    /// Parses a query. Throws for anything that is not a well-formed standard query with exactly
    /// one question; `id` is still given (when the header was readable) so a FORMERR can be sent.
    public init(_ bytes: [UInt8]) throws(DNSFormatError) {
        guard bytes.count >= 12 else { throw DNSFormatError("message shorter than the 12-byte header") }
        guard bytes.count <= 65535 else { throw DNSFormatError("message longer than 65535 bytes") }
        id = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
        let flags = UInt16(bytes[2]) << 8 | UInt16(bytes[3])
        guard flags & 0x8000 == 0 else { throw DNSFormatError("a response, not a query") }
        guard (flags >> 11) & 0xF == 0 else { throw DNSFormatError("opcode \((flags >> 11) & 0xF) is not a standard query") }
        recursionDesired = flags & 0x0100 != 0
        let qd = Int(bytes[4]) << 8 | Int(bytes[5])
        let an = Int(bytes[6]) << 8 | Int(bytes[7])
        let ns = Int(bytes[8]) << 8 | Int(bytes[9])
        let ar = Int(bytes[10]) << 8 | Int(bytes[11])
        guard qd == 1 else { throw DNSFormatError("\(qd) questions (one expected)") }
        guard an == 0, ns == 0 else { throw DNSFormatError("a query with answer or authority records") }
        var at = 12
        let (labels, end) = try Self.readName(bytes, at)
        guard end + 4 <= bytes.count else { throw DNSFormatError("question cut short") }
        type = UInt16(bytes[end]) << 8 | UInt16(bytes[end + 1])
        qclass = UInt16(bytes[end + 2]) << 8 | UInt16(bytes[end + 3])
        questionBytes = Array(bytes[at..<(end + 4)])
        name = labels.joined(separator: ".").lowercased()
        at = end + 4
        udpPayloadSize = 512
        // Additional records: an EDNS0 OPT record states the client's UDP size; others are skipped.
        for _ in 0..<ar {
            let (_, e) = try Self.readName(bytes, at)
            guard e + 10 <= bytes.count else { throw DNSFormatError("additional record cut short") }
            let rtype = UInt16(bytes[e]) << 8 | UInt16(bytes[e + 1])
            let rclass = Int(bytes[e + 2]) << 8 | Int(bytes[e + 3])
            let rdlen = Int(bytes[e + 8]) << 8 | Int(bytes[e + 9])
            guard e + 10 + rdlen <= bytes.count else { throw DNSFormatError("additional record data cut short") }
            if rtype == DNSType.opt.rawValue { udpPayloadSize = min(4096, max(512, rclass)) }
            at = e + 10 + rdlen
        }
    }

    /// The header ID of a message too broken to parse (nil: not even that).
    public static func id(of bytes: [UInt8]) -> UInt16? { bytes.count >= 2 ? UInt16(bytes[0]) << 8 | UInt16(bytes[1]) : nil }

    /// Reads a (possibly compressed) name at `start`: its labels and where the record continues.
    static func readName(_ b: [UInt8], _ start: Int) throws(DNSFormatError) -> ([String], Int) {
        var labels: [String] = []
        var at = start
        var end: Int?
        var jumps = 0
        var total = 0
        while true {
            guard at < b.count else { throw DNSFormatError("name runs past the end of the message") }
            let len = Int(b[at])
            if len == 0 {
                return (labels, end ?? at + 1)
            } else if len & 0xC0 == 0xC0 {
                guard at + 1 < b.count else { throw DNSFormatError("compression pointer cut short") }
                let target = (len & 0x3F) << 8 | Int(b[at + 1])
                jumps += 1
                guard jumps <= 16, target < at else { throw DNSFormatError("compression pointer loops or points forward") }
                if end == nil { end = at + 2 }
                at = target
            } else if len & 0xC0 != 0 {
                throw DNSFormatError("unknown label type")
            } else {
                guard at + 1 + len <= b.count else { throw DNSFormatError("label runs past the end of the message") }
                total += len + 1
                guard total <= 255 else { throw DNSFormatError("name longer than 255 bytes") }
                labels.append(String(decoding: b[(at + 1)...(at + len)], as: UTF8.self))
                at += 1 + len
            }
        }
    }
}

/// One resource record of a reply.
public struct DNSRecord: Sendable, Equatable {
    public enum Data: Sendable, Equatable {
        case a(IPv4Bytes)
        case cname(String)
        case ptr(String)
        case srv(priority: UInt16, weight: UInt16, port: UInt16, target: String)
        case txt(String)
    }

    public typealias IPv4Bytes = [UInt8]
    public var name: String
    public var ttl: UInt32
    public var data: Data

    public init(name: String, ttl: UInt32, data: Data) { self.name = name; self.ttl = ttl; self.data = data }

    var type: UInt16 {
        switch data {
        case .a: DNSType.a.rawValue
        case .cname: DNSType.cname.rawValue
        case .ptr: DNSType.ptr.rawValue
        case .srv: DNSType.srv.rawValue
        case .txt: DNSType.txt.rawValue
        }
    }
}

/// Builds replies.
public enum DNSReply {
    /// Encodes a name (no compression); a label over 63 bytes or a name over 255 is refused.
    static func encodeName(_ name: String) -> [UInt8]? {
        var out: [UInt8] = []
        for label in name.split(separator: ".") {
            let bytes = Array(label.utf8)
            guard !bytes.isEmpty, bytes.count <= 63 else { return nil }
            out.append(UInt8(bytes.count))
            out += bytes
        }
        out.append(0)
        return out.count <= 255 ? out : nil
    }

    static func u16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
    static func u32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }

    static func encode(_ r: DNSRecord) -> [UInt8]? {
        guard let name = encodeName(r.name) else { return nil }
        var rdata: [UInt8]
        switch r.data {
        case .a(let ip): rdata = ip
        case .cname(let n), .ptr(let n):
            guard let e = encodeName(n) else { return nil }
            rdata = e
        case .srv(let priority, let weight, let port, let target):
            guard let e = encodeName(target) else { return nil }
            rdata = u16(priority) + u16(weight) + u16(port) + e
        case .txt(let text):
            let b = Array(text.utf8.prefix(255))
            rdata = [UInt8(b.count)] + b
        }
        return name + u16(r.type) + u16(1) + u32(r.ttl) + u16(UInt16(rdata.count)) + rdata
    }

    /// A reply to `q`: authoritative for names the mesh answers. Records that do not fit in
    /// `limit` bytes are left out and the reply is marked truncated (the client retries on TCP).
    public static func make(_ q: DNSQuery, code: DNSResponseCode, answers: [DNSRecord] = [], additional: [DNSRecord] = [],
                            authoritative: Bool = true, limit: Int = 65535) -> [UInt8]
    {
        var flags: UInt16 = 0x8000 | 0x0080  // QR, RA
        if authoritative { flags |= 0x0400 }
        if q.recursionDesired { flags |= 0x0100 }
        var body: [UInt8] = q.questionBytes
        var an = 0, ar = 0
        var truncated = false
        for r in answers {
            guard let e = encode(r) else { continue }
            if 12 + body.count + e.count > limit { truncated = true; break }
            body += e
            an += 1
        }
        if !truncated {
            for r in additional {
                guard let e = encode(r), 12 + body.count + e.count <= limit else { break }
                body += e
                ar += 1
            }
        }
        if truncated { flags |= 0x0200 }
        flags |= UInt16(code.rawValue)
        return u16(q.id) + u16(flags) + u16(1) + u16(UInt16(an)) + u16(0) + u16(UInt16(ar)) + body
    }

    /// FORMERR for a message whose question could not be read (header only).
    public static func formatError(id: UInt16) -> [UInt8] {
        u16(id) + u16(0x8000 | 0x0080 | UInt16(DNSResponseCode.formatError.rawValue)) + [0, 0, 0, 0, 0, 0, 0, 0]
    }
}
