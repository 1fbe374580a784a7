import CloudEdgeProtocol
import NIOCore
import NIOWebSocket

/// The largest message either side accepts (KubeEdge's lane read limit).
public let maxMessageBytes = 1 << 20

/// Why a connection was closed.
public struct ConnectionClosed: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// Writes messages to one WebSocket peer (one JSON message per text frame, as KubeEdge's
/// `WSLaneWithoutPack`). Safe to use from many tasks.
public struct MessageWriter: Sendable {
    let outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>
    let isClient: Bool

    public init(outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>, isClient: Bool) {
        self.outbound = outbound; self.isClient = isClient
    }

    /// Writes one message; returns its size on the wire (payload bytes).
    @discardableResult
    public func send(_ message: Message) async throws -> Int {
        let bytes = message.encoded()
        try await outbound.write(frame(.text, ByteBuffer(bytes: bytes)))
        return bytes.count
    }

    func frame(_ op: WebSocketOpcode, _ data: ByteBuffer) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: op, maskKey: isClient ? .random() : nil, data: data)
    }

    /// Sends a close frame with a reason (the peer sees why).
    public func close(_ code: WebSocketErrorCode, reason: String) async {
        var buf = ByteBuffer()
        buf.write(webSocketErrorCode: code)
        buf.writeString(String(reason.utf8.prefix(120)) ?? "")
        try? await outbound.write(frame(.connectionClose, buf))
        outbound.finish()
    }

    /// Ends the outbound side (the connection closes once pending writes are done).
    public func finish() { outbound.finish() }

    func pong(_ data: ByteBuffer) async throws { try await outbound.write(frame(.pong, data)) }
}

/// What arrives on a connection.
public enum Inbound: Sendable {
    case message(Message)
    /// The peer closed the connection (with its reason, if any).
    case closed(String)
}

/// Turns inbound WebSocket frames into ``Message``s: answers pings, refuses malformed JSON,
/// unknown operations and oversized frames with a ``ConnectionClosed`` error naming the reason.
public struct MessageReader: Sendable {
    let inbound: NIOAsyncChannelInboundStream<WebSocketFrame>
    let writer: MessageWriter

    public init(inbound: NIOAsyncChannelInboundStream<WebSocketFrame>, writer: MessageWriter) {
        self.inbound = inbound; self.writer = writer
    }

    /// Calls `handle` for each message until the peer closes; throws on a protocol violation.
    public func run(_ handle: (Message, _ bytes: Int) async throws -> Void) async throws {
        for try await frame in inbound {
            switch frame.opcode {
            case .text, .binary:
                guard frame.data.readableBytes <= maxMessageBytes else {
                    throw ConnectionClosed("message of \(frame.data.readableBytes) bytes exceeds the 1 MiB limit")
                }
                let message: Message
                do { message = try Message(bytes: frame.unmaskedData.readableBytesView) } catch {
                    throw ConnectionClosed("bad message: \(error)")
                }
                try await handle(message, frame.data.readableBytes)
            case .ping:
                try await writer.pong(frame.unmaskedData)
            case .pong:
                continue
            case .connectionClose:
                return
            default:
                throw ConnectionClosed("unexpected WebSocket frame \(frame.opcode)")
            }
        }
    }
}
