import AsyncSupport
import CloudEdgeProtocol
import NIOCore
import NIOWebSocket
import KubeAPI
import Synchronization

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

    /// Writes several messages with one flush (one system call for the lot); returns their size.
    @discardableResult
    public func send(batch messages: [Message]) async throws -> Int {
        var total = 0
        let frames = messages.map { m -> WebSocketFrame in
            let bytes = m.encoded()
            total += bytes.count
            return frame(.text, ByteBuffer(bytes: bytes))
        }
        try await outbound.write(contentsOf: frames)
        return total
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

    /// A message, or nil for a well-formed one with an operation this side does not know
    /// (skipped); anything malformed ends the connection.
    static func decode(_ frame: WebSocketFrame) throws -> Message? {
        do { return try Message(bytes: frame.unmaskedData.readableBytesView) } catch {
            if error.reason == .unknownOperation { return nil }
            throw ConnectionClosed("bad message: \(error)")
        }
    }

    /// Calls `handle` for each message until the peer closes; throws on a protocol violation.
    public func run(_ handle: (Message, _ bytes: Int) async throws -> Void) async throws {
        for try await frame in inbound {
            switch frame.opcode {
            case .text, .binary:
                guard frame.data.readableBytes <= maxMessageBytes else {
                    throw ConnectionClosed("message of \(frame.data.readableBytes) bytes exceeds the 1 MiB limit")
                }
                guard let message = try Self.decode(frame) else { continue }
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

/// Messages waiting to be written to one connection, drained in batches by one task (one flush
/// per batch instead of one per message). Closed when the connection ends; enqueueing then throws.
public final class MessageOutbox: Sendable {
    let state = Mutex<(messages: [Message], closed: Bool)>(([], false))
    let ready = WakeSignal()
    /// Most messages written with one flush.
    let batchLimit: Int

    public init(batchLimit: Int = 64) { self.batchLimit = batchLimit }

    public func enqueue(_ m: Message) throws {
        try state.withLock { o in
            if o.closed { throw ConnectionClosed("the connection is closing") }
            o.messages.append(m)
        }
        ready.signal()
    }

    /// Refuses further messages and drops queued ones.
    public func close() { state.withLock { $0.closed = true; $0.messages.removeAll() } }

    /// Writes queued messages until cancelled or a write fails; reports each batch written.
    public func drain(to writer: MessageWriter, written: (_ messages: Int, _ bytes: Int) -> Void = { _, _ in }) async throws {
        while true {
            var batch = state.withLock { o in defer { o.messages.removeAll(keepingCapacity: true) }; return o.messages }
            if batch.isEmpty {
                await ready.wait()
                try Task.checkCancellation()
                continue
            }
            while !batch.isEmpty {
                let chunk = Array(batch.prefix(batchLimit))
                batch.removeFirst(chunk.count)
                written(chunk.count, try await writer.send(batch: chunk))
            }
        }
    }
}
