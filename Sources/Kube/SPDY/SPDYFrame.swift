/// SPDY/3.1 frames (what kubectl's port-forward speaks, tunnelled in WebSocket binary messages:
/// `SPDY/3.1+portforward.k8s.io`). Header blocks stay compressed here; ``HeaderCompressor`` and
/// ``HeaderDecompressor`` turn them into pairs.
public enum SPDYFrame: Equatable, Sendable {
    case data(stream: UInt32, fin: Bool, payload: [UInt8])
    case synStream(stream: UInt32, associated: UInt32, fin: Bool, headerBlock: [UInt8])
    case synReply(stream: UInt32, fin: Bool, headerBlock: [UInt8])
    case rstStream(stream: UInt32, status: UInt32)
    case settings
    case ping(id: UInt32)
    case goAway(lastGoodStream: UInt32, status: UInt32)
    case headers(stream: UInt32, fin: Bool, headerBlock: [UInt8])
    case windowUpdate(stream: UInt32, delta: UInt32)
    /// A control frame type this server has no use for (skipped).
    case other(type: UInt16)

    static let version: UInt16 = 3
    static let flagFin: UInt8 = 0x01
    /// RST_STREAM status codes used here.
    public static let refusedStream: UInt32 = 3
    public static let cancel: UInt32 = 5
    public static let internalError: UInt32 = 6

    public func encoded() -> [UInt8] {
        func u32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }
        func control(_ type: UInt16, flags: UInt8, _ payload: [UInt8]) -> [UInt8] {
            let n = UInt32(payload.count)
            return [0x80 | UInt8(Self.version >> 8), UInt8(Self.version & 0xff), UInt8(type >> 8), UInt8(type & 0xff), flags,
                    UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)] + payload
        }
        switch self {
        case .data(let s, let fin, let payload):
            let n = UInt32(payload.count)
            return u32(s & 0x7fff_ffff) + [fin ? Self.flagFin : 0, UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)] + payload
        case .synStream(let s, let a, let fin, let block):
            return control(1, flags: fin ? Self.flagFin : 0, u32(s) + u32(a) + [0, 0] + block)
        case .synReply(let s, let fin, let block):
            return control(2, flags: fin ? Self.flagFin : 0, u32(s) + block)
        case .rstStream(let s, let status):
            return control(3, flags: 0, u32(s) + u32(status))
        case .settings:
            return control(4, flags: 0, u32(0))
        case .ping(let id):
            return control(6, flags: 0, u32(id))
        case .goAway(let last, let status):
            return control(7, flags: 0, u32(last) + u32(status))
        case .headers(let s, let fin, let block):
            return control(8, flags: fin ? Self.flagFin : 0, u32(s) + block)
        case .windowUpdate(let s, let delta):
            return control(9, flags: 0, u32(s) + u32(delta))
        case .other(let t):
            return control(t, flags: 0, [])
        }
    }
}

/// Cuts a byte stream (WebSocket messages need not align with frames) into SPDY frames.
public struct SPDYFrameReader: Sendable {
    /// Frames above this size are refused (the 24-bit length allows 16 MiB).
    public static let maxFrame = 1 << 20
    var buffer: [UInt8] = []
    var start = 0

    public init() {}

    public mutating func append(_ bytes: some Sequence<UInt8>) {
        if start > 64 * 1024 { buffer.removeFirst(start); start = 0 }
        buffer.append(contentsOf: bytes)
    }

    /// The next whole frame, or nil until more bytes arrive.
    public mutating func next() throws -> SPDYFrame? {
        guard buffer.count - start >= 8 else { return nil }
        let h = buffer[start..<start + 8]
        let b = Array(h)
        let length = Int(b[5]) << 16 | Int(b[6]) << 8 | Int(b[7])
        guard length <= Self.maxFrame else { throw SPDYError("SPDY frame of \(length) bytes (limit \(Self.maxFrame))") }
        guard buffer.count - start >= 8 + length else { return nil }
        let payload = Array(buffer[start + 8..<start + 8 + length])
        start += 8 + length
        let flags = b[4]
        let fin = flags & SPDYFrame.flagFin != 0
        func u32(_ p: [UInt8], _ at: Int) throws -> UInt32 {
            guard p.count >= at + 4 else { throw SPDYError("SPDY frame too short") }
            return UInt32(p[at]) << 24 | UInt32(p[at + 1]) << 16 | UInt32(p[at + 2]) << 8 | UInt32(p[at + 3])
        }
        if b[0] & 0x80 == 0 {
            let stream = (UInt32(b[0]) << 24 | UInt32(b[1]) << 16 | UInt32(b[2]) << 8 | UInt32(b[3])) & 0x7fff_ffff
            return .data(stream: stream, fin: fin, payload: payload)
        }
        let version = (UInt16(b[0] & 0x7f) << 8) | UInt16(b[1])
        guard version == SPDYFrame.version else { throw SPDYError("SPDY version \(version) (only 3 is spoken)") }
        switch UInt16(b[2]) << 8 | UInt16(b[3]) {
        case 1:
            guard payload.count >= 10 else { throw SPDYError("SYN_STREAM too short") }
            return .synStream(stream: try u32(payload, 0) & 0x7fff_ffff, associated: try u32(payload, 4) & 0x7fff_ffff, fin: fin,
                              headerBlock: Array(payload[10...]))
        case 2: return .synReply(stream: try u32(payload, 0) & 0x7fff_ffff, fin: fin, headerBlock: Array(payload.dropFirst(4)))
        case 3: return .rstStream(stream: try u32(payload, 0) & 0x7fff_ffff, status: try u32(payload, 4))
        case 4: return .settings
        case 6: return .ping(id: try u32(payload, 0))
        case 7: return .goAway(lastGoodStream: try u32(payload, 0) & 0x7fff_ffff, status: (try? u32(payload, 4)) ?? 0)
        case 8: return .headers(stream: try u32(payload, 0) & 0x7fff_ffff, fin: fin, headerBlock: Array(payload.dropFirst(4)))
        case 9: return .windowUpdate(stream: try u32(payload, 0) & 0x7fff_ffff, delta: try u32(payload, 4) & 0x7fff_ffff)
        case let t: return .other(type: t)
        }
    }
}
