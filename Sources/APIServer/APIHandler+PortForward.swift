import Hummingbird
import HummingbirdWebSocket
import KubeAPI
import Logging
import NIOCore
import SPDY
import StreamTunnel
import Synchronization

/// `kubectl port-forward` (≥ 1.31): a WebSocket with subprotocol `SPDY/3.1+portforward.k8s.io`
/// carrying a SPDY session. For each local connection kubectl opens an `error` and a `data`
/// stream (headers `streamType`, `port`, `requestID`); each data stream becomes one stream-tunnel
/// connection to the pod's port on its node.
enum PortForwardSession {
    static let webSocketProtocol = "SPDY/3.1+portforward.k8s.io"

    /// One forwarded connection's SPDY streams and tunnel stream.
    final class Forward: Sendable {
        let dataStream: UInt32
        let errorStream: UInt32?
        let tunnel: TunnelStream
        init(dataStream: UInt32, errorStream: UInt32?, tunnel: TunnelStream) {
            self.dataStream = dataStream; self.errorStream = errorStream; self.tunnel = tunnel
        }
    }

    final class Forwards: Sendable {
        let m = Mutex<[UInt32: Forward]>([:])
        func withLock<T>(_ body: (inout [UInt32: Forward]) -> T) -> T { m.withLock { body(&$0) } }
    }

    static func serve(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, node: String, namespace: String, pod: String,
                      streams: any PodStreams, logger: Logger) async throws
    {
        let send: @Sendable (SPDYFrame) async throws -> Void = { try await outbound.writeBinaryMessage(ByteBuffer(bytes: $0.encoded())) }
        let compressor = try HeaderCompressor()
        let decompressor = try HeaderDecompressor()
        var reader = SPDYFrameReader()
        var errorStreams: [String: UInt32] = [:]  // requestID → error stream
        let forwards = Forwards()  // data stream → forward
        try await withThrowingDiscardingTaskGroup { group in
            messages: for try await message in inbound.messages(maxSize: 1 << 20) {
                guard case .binary(let b) = message else { continue }
                reader.append(b.readableBytesView)
                while let frame = try reader.next() {
                    switch frame {
                    case .synStream(let id, _, _, let block):
                        let headers = Dictionary(try decompressor.decompress(block), uniquingKeysWith: { a, _ in a })
                        try await send(.synReply(stream: id, fin: false, headerBlock: try compressor.compress([])))
                        let requestID = headers["requestid"] ?? ""
                        guard headers["streamtype"] == "data" else {
                            errorStreams[requestID] = id
                            continue
                        }
                        let errorStream = errorStreams.removeValue(forKey: requestID)
                        guard let portText = headers["port"], let port = Int(portText), (1...65535).contains(port) else {
                            try await fail(send, data: id, error: errorStream, "invalid port \(headers["port"] ?? "(none)")")
                            continue
                        }
                        let tunnel: TunnelStream
                        do {
                            tunnel = try await streams.open(node: node, StreamRequest(kind: .portforward, namespace: namespace, pod: pod,
                                                                                       container: "", port: port))
                        } catch {
                            try await fail(send, data: id, error: errorStream, "cannot reach node \"\(node)\": \(error)")
                            continue
                        }
                        let forward = Forward(dataStream: id, errorStream: errorStream, tunnel: tunnel)
                        forwards.withLock { $0[id] = forward }
                        logger.debug("port-forward connection", metadata: ["pod": "\(namespace)/\(pod)", "port": "\(port)", "node": "\(node)"])
                        group.addTask {
                            var failure: String?
                            do {
                                for try await chunk in tunnel.data where chunk.first == 1 && chunk.count > 1 {
                                    try await send(.data(stream: id, fin: false, payload: Array(chunk.dropFirst())))
                                }
                            } catch {
                                failure = "\(error)"
                            }
                            forwards.withLock { _ = $0.removeValue(forKey: id) }
                            if let failure, let e = errorStream { try? await send(.data(stream: e, fin: false, payload: Array(failure.utf8))) }
                            try? await send(.data(stream: id, fin: true, payload: []))
                            if let e = errorStream { try? await send(.data(stream: e, fin: true, payload: [])) }
                        }
                    case .data(let id, let fin, let payload):
                        guard let f = forwards.withLock({ $0[id] }) else { continue }
                        // Waits while the node's window for this connection is full; a
                        // connection whose tunnel stream already ended drops what still arrives.
                        if !payload.isEmpty { try? await f.tunnel.send(channel: 0, payload) }
                        if fin { try? await f.tunnel.send(channel: 255, [0]) }
                    case .rstStream(let id, _):
                        if let f = forwards.withLock({ $0.removeValue(forKey: id) }) { await f.tunnel.close() }
                    case .ping(let id):
                        try await send(.ping(id: id))
                    case .goAway:
                        break messages
                    case .synReply, .settings, .headers, .windowUpdate, .other:
                        continue
                    }
                }
            }
            // The client went away: stop every forward it had.
            for f in forwards.withLock({ f in defer { f = [:] }; return Array(f.values) }) { await f.tunnel.close() }
        }
    }

    /// Reports a failure on the request's error stream and ends both streams.
    static func fail(_ send: @Sendable (SPDYFrame) async throws -> Void, data: UInt32, error: UInt32?, _ message: String) async throws {
        if let e = error {
            try await send(.data(stream: e, fin: false, payload: Array(message.utf8)))
            try await send(.data(stream: e, fin: true, payload: []))
        }
        try await send(.data(stream: data, fin: true, payload: []))
    }
}
