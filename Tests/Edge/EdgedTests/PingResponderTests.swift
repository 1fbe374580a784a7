import Logging
import NIOCore
import NIOEmbedded
import Testing
@testable import ContainerRuntime

/// The CRI connection's PING answering beneath NIOHTTP2: frames followed across arbitrary read
/// and write boundaries, answers never written inside an outbound frame.
@Suite struct PingResponderTests {
    static func frame(type: UInt8, flags: UInt8 = 0, stream: UInt32 = 0, payload: [UInt8]) -> [UInt8] {
        let n = payload.count
        return [UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff), type, flags,
                UInt8(stream >> 24 & 0x7f), UInt8(stream >> 16 & 0xff), UInt8(stream >> 8 & 0xff), UInt8(stream & 0xff)] + payload
    }

    static let settings = frame(type: 0x4, payload: [0, 3, 0, 0, 0, 100])
    static let ping = frame(type: 0x6, payload: [1, 2, 3, 4, 5, 6, 7, 8])
    static let pingAck = frame(type: 0x6, flags: 0x1, payload: [9, 9, 9, 9, 9, 9, 9, 9])
    static let headers = frame(type: 0x1, flags: 0x4, stream: 1, payload: [0x88, 1, 2, 3, 4])
    static let data = frame(type: 0x0, flags: 0x1, stream: 1, payload: Array(repeating: 0x6, count: 300))
    static let emptyData = frame(type: 0x0, stream: 3, payload: [])
    /// A PING with a wrong length is a protocol error NIOHTTP2 must see, so it passes.
    static let badPing = frame(type: 0x6, payload: [1, 2, 3])

    @Test func removesPingsThatNeedAnAnswerWhateverTheReadBoundaries() {
        let stream = Self.settings + Self.ping + Self.headers + Self.pingAck + Self.emptyData + Self.ping + Self.data + Self.badPing
        let expected = Self.settings + Self.headers + Self.pingAck + Self.emptyData + Self.data + Self.badPing
        for chunk in [1, 2, 5, 9, 10, 17, 64, stream.count] {
            var filter = HTTP2PingFilter()
            var passed: [UInt8] = []
            var pings: [[UInt8]] = []
            var offset = 0
            while offset < stream.count {
                let end = min(offset + chunk, stream.count)
                let (out, answers) = filter.receive(ByteBuffer(bytes: stream[offset..<end]))
                passed += out.readableBytesView
                pings += answers
                offset = end
            }
            #expect(passed == expected, "chunk \(chunk)")
            #expect(pings == [[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8]], "chunk \(chunk)")
        }
    }

    @Test func knowsOutboundFrameBoundaries() {
        var filter = HTTP2PingFilter()
        #expect(!filter.atFrameBoundary)  // nothing may precede the preface
        filter.sent(ByteBuffer(bytes: Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)))
        #expect(filter.atFrameBoundary)
        let frame = Self.data
        filter.sent(ByteBuffer(bytes: frame[0..<4]))
        #expect(!filter.atFrameBoundary)  // half a header
        filter.sent(ByteBuffer(bytes: frame[4..<9]))
        #expect(!filter.atFrameBoundary)  // header whole, payload to come
        filter.sent(ByteBuffer(bytes: frame[9..<100]))
        #expect(!filter.atFrameBoundary)
        filter.sent(ByteBuffer(bytes: frame[100...] + Self.emptyData))
        #expect(filter.atFrameBoundary)
        let answer = filter.answer([1, 2, 3, 4, 5, 6, 7, 8])
        #expect(Array(answer.readableBytesView) == Self.frame(type: 0x6, flags: 0x1, payload: [1, 2, 3, 4, 5, 6, 7, 8]))
        #expect(filter.answered == 1)
    }

    @Test func answersBetweenOutboundFramesOnly() throws {
        let channel = EmbeddedChannel(handler: HTTP2PingResponder(logger: Logger(label: "test")))
        defer { _ = try? channel.finish() }
        func written() throws -> [UInt8] {
            var bytes: [UInt8] = []
            while let data = try channel.readOutbound(as: IOData.self) {
                guard case .byteBuffer(let b) = data else { Issue.record("file region"); continue }
                bytes += b.readableBytesView
            }
            return bytes
        }
        let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        try channel.writeAndFlush(IOData.byteBuffer(ByteBuffer(bytes: preface + Self.settings))).wait()
        _ = try written()

        // Between frames: answered at once, and not passed on.
        try channel.writeInbound(ByteBuffer(bytes: Self.settings + Self.ping))
        #expect(try written() == Self.frame(type: 0x6, flags: 0x1, payload: [1, 2, 3, 4, 5, 6, 7, 8]))
        #expect(Array(try channel.readInbound(as: ByteBuffer.self)!.readableBytesView) == Self.settings)
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)

        // Mid-frame (header written, payload not yet): the answer waits for the frame's end.
        try channel.writeOutbound(IOData.byteBuffer(ByteBuffer(bytes: Self.data[0..<9])))
        try channel.writeInbound(ByteBuffer(bytes: Self.ping))
        #expect(try written() == Array(Self.data[0..<9]))
        try channel.writeAndFlush(IOData.byteBuffer(ByteBuffer(bytes: Self.data[9...]))).wait()
        #expect(try written() == Array(Self.data[9...]) + Self.frame(type: 0x6, flags: 0x1, payload: [1, 2, 3, 4, 5, 6, 7, 8]))
    }
}
