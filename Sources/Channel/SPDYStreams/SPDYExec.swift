import KubeAPI
import Logging
import SPDY
import StreamTunnel

/// `exec` and `attach` over a plain SPDY/3.1 connection, as kube-apiserver speaks them to the
/// kubelet port (remotecommand `v4.channel.k8s.io`): the client opens an `error` stream and, as
/// asked, `stdin`, `stdout`, `stderr` (not with a TTY) and `resize` (with a TTY); each gets a
/// SYN_REPLY. Once all expected streams are there the tunnel stream to the node is opened: the
/// node's stdout/stderr go out on their streams, its final Status on `error`; the client's stdin
/// (FIN = end of input) and resize events go to the node.
public enum SPDYExec {
    public static let protocolVersion = "v4.channel.k8s.io"

    public struct Streams: Sendable, Equatable {
        public var error: UInt32?
        public var stdin: UInt32?
        public var stdout: UInt32?
        public var stderr: UInt32?
        public var resize: UInt32?

        /// Whether every stream `options` needs has been opened.
        func complete(for o: ExecOptions) -> Bool {
            error != nil && (!o.stdin || stdin != nil) && (!o.stdout || stdout != nil) && (o.tty || !o.stderr || stderr != nil)
                && (!o.tty || resize != nil)
        }
    }

    /// A failure Status as kubelet writes one on the error stream.
    public static func failure(_ message: String) -> [UInt8] {
        let s: JSON = ["metadata": [:], "status": "Failure", "message": .string(message), "reason": "InternalError"]
        return s.serialized()
    }

    /// Serves one session. `request` is what the URL asked for; nil with `refusal` set reports the
    /// refusal on the error stream once the client opened it.
    public static func serve<Input: AsyncSequence>(input: Input, send: @escaping @Sendable (SPDYFrame) async throws -> Void,
                                                   request: StreamRequest?, refusal: String?,
                                                   open: @escaping @Sendable (StreamRequest) async throws -> TunnelStream,
                                                   close: @escaping @Sendable () async -> Void,
                                                   logger: Logger) async throws where Input.Element == [UInt8]
    {
        let compressor = try HeaderCompressor()
        let decompressor = try HeaderDecompressor()
        var reader = SPDYFrameReader()
        var streams = Streams()
        let options = request?.exec ?? ExecOptions()
        var iterator = input.makeAsyncIterator()

        // 1. The client opens its streams.
        collect: while true {
            while let frame = try reader.next() {
                switch frame {
                case .synStream(let id, _, _, let block):
                    let headers = Dictionary(try decompressor.decompress(block), uniquingKeysWith: { a, _ in a })
                    try await send(.synReply(stream: id, fin: false, headerBlock: try compressor.compress([])))
                    switch headers["streamtype"] {
                    case "error": streams.error = id
                    case "stdin": streams.stdin = id
                    case "stdout": streams.stdout = id
                    case "stderr": streams.stderr = id
                    case "resize": streams.resize = id
                    default: try await send(.rstStream(stream: id, status: 1))
                    }
                case .ping(let id): try await send(.ping(id: id))
                case .goAway: return
                default: continue
                }
                if let e = streams.error, request == nil || refusal != nil {
                    try await send(.data(stream: e, fin: true, payload: failure(refusal ?? "invalid request")))
                    try await send(.goAway(lastGoodStream: e, status: 0))
                    return
                }
                if streams.complete(for: options) { break collect }
            }
            guard let bytes = try await iterator.next() else { return }
            reader.append(bytes)
        }
        guard let request, let errorStream = streams.error else { return }

        // 2. The command runs on the node.
        let tunnel: TunnelStream
        do { tunnel = try await open(request) } catch {
            try await send(.data(stream: errorStream, fin: true, payload: failure("\(error)")))
            try await send(.goAway(lastGoodStream: errorStream, status: 0))
            return
        }
        let s = streams
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                var status: [UInt8]?
                do {
                    for try await chunk in tunnel.data where chunk.count > 1 {
                        let payload = Array(chunk.dropFirst())
                        switch chunk[0] {
                        case 1: if let o = s.stdout { try await send(.data(stream: o, fin: false, payload: payload)) }
                        case 2: if let e = s.stderr ?? s.stdout { try await send(.data(stream: e, fin: false, payload: payload)) }
                        case 3: status = (status ?? []) + payload
                        default: continue
                        }
                    }
                } catch is CancellationError {
                    return
                } catch {
                    status = failure("\(error)")
                }
                for id in [s.stdout, s.stderr].compactMap({ $0 }) { try? await send(.data(stream: id, fin: true, payload: [])) }
                try? await send(.data(stream: errorStream, fin: true, payload: status ?? []))
                try? await send(.goAway(lastGoodStream: errorStream, status: 0))
                // The session is over: closing the connection ends the input loop below.
                await close()
            }
            // The client's stdin and resize events, until it goes away or the command ends.
            input: while true {
                while let frame = try reader.next() {
                    switch frame {
                    case .data(let id, let fin, let payload) where id == s.stdin:
                        if !payload.isEmpty { try? await tunnel.send(channel: 0, payload) }
                        if fin { try? await tunnel.send(channel: 255, [0]) }
                    case .data(let id, _, let payload) where id == s.resize:
                        // One JSON object per line ({"Width":…,"Height":…}).
                        for line in payload.split(separator: UInt8(ascii: "\n")) where !line.isEmpty {
                            try? await tunnel.send(channel: 4, Array(line))
                        }
                    case .ping(let id): try await send(.ping(id: id))
                    case .goAway: break input
                    case .rstStream(let id, _) where id == s.error: break input
                    default: continue
                    }
                }
                guard let bytes = try? await iterator.next() else { break input }
                reader.append(bytes)
            }
            await tunnel.close()
            group.cancelAll()
        }
        logger.debug("exec session ended", metadata: ["pod": "\(request.namespace)/\(request.pod)", "container": "\(request.container)"])
    }
}
