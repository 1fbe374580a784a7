import Logging
import SPDY
import StreamTunnel
import Synchronization

/// `kubectl port-forward`'s SPDY session, served the same whether it arrives inside a WebSocket
/// (kubectl ≥ 1.31 to the embedded API server) or as a plain SPDY upgrade (kube-apiserver to the
/// kubelet port, i.e. the cloud stream server). For each local connection the client opens an
/// `error` and a `data` stream (headers `streamType`, `port`, `requestID`); each data stream
/// becomes one stream-tunnel connection to the pod's port on its node.
public enum SPDYPortForward {
    /// kubectl ≥ 1.31's WebSocket subprotocol (SPDY inside the WebSocket).
    public static let webSocketProtocol = "SPDY/3.1+portforward.k8s.io"
    /// The protocol negotiated for a plain SPDY upgrade (`X-Stream-Protocol-Version`).
    public static let protocolVersion = "portforward.k8s.io"

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

    /// Serves one SPDY session: `input` is the client's bytes (in any chunking), `send` writes a
    /// frame to it, `open` opens a tunnel stream to the pod's node.
    public static func serve<Input: AsyncSequence>(input: Input, send: @escaping @Sendable (SPDYFrame) async throws -> Void,
                                                   namespace: String, pod: String, node: String,
                                                   open: @escaping @Sendable (StreamRequest) async throws -> TunnelStream,
                                                   logger: Logger) async throws where Input.Element == [UInt8]
    {
        let compressor = try HeaderCompressor()
        let decompressor = try HeaderDecompressor()
        var reader = SPDYFrameReader()
        var errorStreams: [String: UInt32] = [:]  // requestID → error stream
        let forwards = Forwards()  // data stream → forward
        try await withThrowingDiscardingTaskGroup { group in
            messages: for try await bytes in input {
                reader.append(bytes)
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
                            tunnel = try await open(StreamRequest(kind: .portforward, namespace: namespace, pod: pod, container: "", port: port))
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
