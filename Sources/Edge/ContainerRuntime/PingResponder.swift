import Logging
import NIOCore

/// Why this exists: containerd and CRI-O serve the CRI with grpc-go, whose server sends an HTTP/2
/// PING (a bandwidth-delay probe) after nearly every request it receives. NIOHTTP2 counts inbound
/// PINGs against a flood limit (200 per 30 s) that the CRI client's transport does not let us
/// configure; past it, our own client sends GOAWAY ENHANCE_YOUR_CALM and drops the runtime
/// connection, failing the calls in flight (a StartContainer cut off that way can leave the runtime
/// with a task it no longer tracks). The runtime is a local, trusted peer, so its PINGs are answered
/// here, below NIOHTTP2, and never reach the flood counter.
///
/// `HTTP2PingFilter` is the byte-level state: it follows HTTP/2 frame boundaries in both
/// directions (client side of the connection), removes inbound PINGs that need an answer, and
/// tells when an answer can be written without splitting an outbound frame.
struct HTTP2PingFilter: Sendable {
    static let frameHeaderLength = 9
    static let pingType: UInt8 = 0x6
    static let ackFlag: UInt8 = 0x1
    /// The client connection preface ("PRI * HTTP/2.0…"), written before any frame.
    static let clientPrefaceLength = 24

    // Inbound: the frame being read.
    private var inHeader: [UInt8] = []
    private var inRemaining = 0
    private var inPing: [UInt8]? = nil

    // Outbound: how far into the current frame the written bytes are.
    private var outPrefaceLeft = HTTP2PingFilter.clientPrefaceLength
    private var outHeader: [UInt8] = []
    private var outRemaining = 0

    /// PINGs answered so far.
    private(set) var answered = 0

    /// Takes bytes read from the runtime. Returns the bytes to pass on (everything except PINGs
    /// that need an answer; a frame header cut by a read is held until it is whole) and the
    /// payloads of the PINGs to answer.
    mutating func receive(_ input: ByteBuffer) -> (passed: ByteBuffer, pings: [[UInt8]]) {
        var input = input
        var out = ByteBuffer()
        out.reserveCapacity(input.readableBytes + inHeader.count)
        var pings: [[UInt8]] = []
        while input.readableBytes > 0 {
            if inRemaining == 0 && inPing == nil {
                let take = min(Self.frameHeaderLength - inHeader.count, input.readableBytes)
                inHeader.append(contentsOf: input.readBytes(length: take)!)
                if inHeader.count < Self.frameHeaderLength { break }
                let length = Int(inHeader[0]) << 16 | Int(inHeader[1]) << 8 | Int(inHeader[2])
                let streamIsRoot = inHeader[5] & 0x7f == 0 && inHeader[6] == 0 && inHeader[7] == 0 && inHeader[8] == 0
                if inHeader[3] == Self.pingType && inHeader[4] & Self.ackFlag == 0 && length == 8 && streamIsRoot {
                    inPing = []
                } else {
                    // Anything else, malformed PINGs included, is NIOHTTP2's to judge.
                    out.writeBytes(inHeader)
                }
                inRemaining = length
                inHeader.removeAll(keepingCapacity: true)
            }
            let take = min(inRemaining, input.readableBytes)
            if inPing != nil {
                inPing!.append(contentsOf: input.readBytes(length: take)!)
            } else if take > 0 {
                var slice = input.readSlice(length: take)!
                out.writeBuffer(&slice)
            }
            inRemaining -= take
            if inRemaining == 0, let payload = inPing {
                pings.append(payload)
                inPing = nil
            }
        }
        return (out, pings)
    }

    /// Follows bytes written toward the runtime.
    mutating func sent(_ bytes: ByteBuffer) {
        var bytes = bytes
        while bytes.readableBytes > 0 {
            if outPrefaceLeft > 0 {
                let take = min(outPrefaceLeft, bytes.readableBytes)
                bytes.moveReaderIndex(forwardBy: take)
                outPrefaceLeft -= take
            } else if outRemaining == 0 {
                let take = min(Self.frameHeaderLength - outHeader.count, bytes.readableBytes)
                outHeader.append(contentsOf: bytes.readBytes(length: take)!)
                if outHeader.count == Self.frameHeaderLength {
                    outRemaining = Int(outHeader[0]) << 16 | Int(outHeader[1]) << 8 | Int(outHeader[2])
                    outHeader.removeAll(keepingCapacity: true)
                }
            } else {
                let take = min(outRemaining, bytes.readableBytes)
                bytes.moveReaderIndex(forwardBy: take)
                outRemaining -= take
            }
        }
    }

    /// Follows written bytes that cannot be read (a file region): they can only be frame payload.
    mutating func sent(count: Int) {
        outRemaining = max(0, outRemaining - count)
    }

    /// True between two outbound frames (after the preface), where a PING answer may go.
    var atFrameBoundary: Bool { outPrefaceLeft == 0 && outHeader.isEmpty && outRemaining == 0 }

    /// The PING ACK frame answering `payload`.
    mutating func answer(_ payload: [UInt8]) -> ByteBuffer {
        answered += 1
        var frame = ByteBuffer()
        frame.writeBytes([0, 0, 8, Self.pingType, Self.ackFlag, 0, 0, 0, 0])
        frame.writeBytes(payload)
        return frame
    }
}

/// Answers the runtime's HTTP/2 PINGs beneath NIOHTTP2 (see ``HTTP2PingFilter``). Sits nearest
/// the socket in the CRI connection's pipeline.
final class HTTP2PingResponder: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    private var filter = HTTP2PingFilter()
    private var waiting: [[UInt8]] = []
    private let logger: Logger

    init(logger: Logger) { self.logger = logger }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let (passed, pings) = filter.receive(unwrapInboundIn(data))
        if !pings.isEmpty {
            waiting.append(contentsOf: pings)
            if writeWaiting(context: context) { context.flush() }
        }
        if passed.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(passed)) }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .byteBuffer(let bytes): filter.sent(bytes)
        case .fileRegion(let region): filter.sent(count: region.readableBytes)
        }
        context.write(data, promise: promise)
        // Whoever wrote this frame flushes it, and the answer with it.
        _ = writeWaiting(context: context)
    }

    /// Writes the waiting answers if no outbound frame is half written. True if any was written.
    private func writeWaiting(context: ChannelHandlerContext) -> Bool {
        guard !waiting.isEmpty, filter.atFrameBoundary else { return false }
        for payload in waiting {
            context.write(wrapOutboundOut(.byteBuffer(filter.answer(payload))), promise: nil)
        }
        logger.trace("answered runtime PINGs", metadata: ["count": "\(waiting.count)", "total": "\(filter.answered)"])
        waiting.removeAll(keepingCapacity: true)
        return true
    }
}
