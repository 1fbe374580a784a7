import Foundation
import NIOCore
import NIOPosix
import SPDY
import StreamTunnel

/// The runtime's streaming server spoken over SPDY/3.1 (what kubelet's clients use): unlike its
/// WebSocket `v4` protocol, SPDY can end stdin on its own (a FIN on the stdin stream), so
/// `echo x | kubectl exec -i pod -- cat` ends. Streams as in `remotecommand` v4: `error` (the exit
/// Status), `stdin`, `stdout`, `stderr`, `resize`.
enum RuntimeSPDY {
    /// The runtime answered the upgrade with something other than 101.
    struct Refused: Error, CustomStringConvertible {
        var status: String
        var description: String { "the runtime's streaming server refused SPDY: \(status)" }
    }

    /// Dials `host:port`, upgrades `path` to SPDY and relays until the runtime ends the session:
    /// input chunks (channel byte first: 0 stdin, 4 resize, `[255, 0]` end of stdin) go to the
    /// runtime, its streams come back as chunks on channels 1, 2 and 3.
    /// Where a CRI streaming URL (from `Exec`, `Attach`, `PortForward`) points.
    static func target(_ url: String) throws(TunnelError) -> (host: String, port: Int, path: String) {
        guard let u = URLComponents(string: url), let host = u.host, let port = u.port else {
            throw TunnelError("the runtime returned an unusable streaming URL \(url)")
        }
        return (host, port, u.percentEncodedPath + (u.percentEncodedQuery.map { "?" + $0 } ?? ""))
    }

    /// Dials `host:port` and upgrades `path` to SPDY with `protocolVersion`; `body` gets the
    /// connection's remaining bytes (iterator and frame reader) and a frame sender.
    static func session(host: String, port: Int, path: String, protocolVersion: String,
                        _ body: (inout NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator, inout SPDYFrameReader,
                                 @escaping @Sendable (SPDYFrame) async throws -> Void) async throws -> Void) async throws
    {
        let channel = try await ClientBootstrap(group: .singletonMultiThreadedEventLoopGroup)
            .connectTimeout(.seconds(10))
            .connect(host: host, port: port) { ch in
                ch.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch) }
            }
        try await channel.executeThenClose { inbound, outbound in
            let request = "POST \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                + "X-Stream-Protocol-Version: \(protocolVersion)\r\nContent-Length: 0\r\n\r\n"
            try await outbound.write(ByteBuffer(string: request))
            var iterator = inbound.makeAsyncIterator()
            // The HTTP answer, then SPDY on the same bytes.
            var head: [UInt8] = []
            var reader = SPDYFrameReader()
            while true {
                guard let b = try await iterator.next() else { throw Refused(status: "connection closed before an answer") }
                head += b.readableBytesView
                if let end = head.firstRange(of: Array("\r\n\r\n".utf8)) {
                    let statusLine = String(decoding: head[..<(head.firstIndex(of: 13) ?? end.lowerBound)], as: UTF8.self)
                    guard statusLine.split(separator: " ").dropFirst().first == "101" else { throw Refused(status: statusLine) }
                    reader.append(head[end.upperBound...])
                    break
                }
                guard head.count < 16 * 1024 else { throw Refused(status: "oversized HTTP answer") }
            }
            try await body(&iterator, &reader, { try await outbound.write(ByteBuffer(bytes: $0.encoded())) })
        }
    }

    /// Dials `host:port`, upgrades `path` to SPDY and relays until the runtime ends the session:
    /// input chunks (channel byte first: 0 stdin, 4 resize, `[255, 0]` end of stdin) go to the
    /// runtime, its streams come back as chunks on channels 1, 2 and 3.
    static func relay(host: String, port: Int, path: String, options: ExecOptions, input: TunnelStreamData,
                      write: @escaping @Sendable ([UInt8]) async throws -> Void) async throws
    {
        try await session(host: host, port: port, path: path, protocolVersion: "v4.channel.k8s.io") { iterator, reader, send in
            let compressor = try HeaderCompressor(), decompressor = try HeaderDecompressor()
            // Client streams have odd ids; kubelet's server waits for all the streams the request named.
            var ids: [String: UInt32] = [:]
            var next: UInt32 = 1
            var kinds = ["error"]
            if options.stdin { kinds.append("stdin") }
            if options.stdout { kinds.append("stdout") }
            if options.stderr && !options.tty { kinds.append("stderr") }
            if options.tty { kinds.append("resize") }
            for k in kinds {
                ids[k] = next
                try await send(.synStream(stream: next, associated: 0, fin: false, headerBlock: try compressor.compress([("streamType", k)])))
                next += 2
            }
            var channelOf: [UInt32: UInt8] = [:]  // the runtime's streams → tunnel channels
            for (kind, c) in [("stdout", UInt8(1)), ("stderr", 2), ("error", 3)] { if let id = ids[kind] { channelOf[id] = c } }
            try await withThrowingTaskGroup(of: Void.self) { group in
                let stdinID = ids["stdin"], resizeID = ids["resize"]
                group.addTask {
                    for try await chunk in input {
                        guard let c = chunk.first else { continue }
                        if c == 0, let s = stdinID { try await send(.data(stream: s, fin: false, payload: Array(chunk.dropFirst()))) }
                        if c == 4, let r = resizeID { try await send(.data(stream: r, fin: false, payload: Array(chunk.dropFirst()))) }
                        if c == 255, chunk.dropFirst().first == 0, let s = stdinID {
                            try await send(.data(stream: s, fin: true, payload: []))  // end of stdin
                        }
                    }
                }
                try await receive(&iterator, &reader, awaiting: Set(channelOf.keys), decompressor: decompressor, send: send) { id, payload in
                    if let c = channelOf[id], !payload.isEmpty { try await write([c] + payload) }
                }
                group.cancelAll()
            }
        }
    }

    /// Reads the runtime's frames until every stream in `awaiting` has ended (FIN or RST_STREAM)
    /// or the runtime goes away: DATA payloads go to `onData`; header blocks keep the zlib
    /// context in step, streams the runtime opens are refused and pings answered.
    static func receive(_ iterator: inout NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator, _ reader: inout SPDYFrameReader,
                        awaiting: Set<UInt32>, decompressor: HeaderDecompressor,
                        send: @Sendable (SPDYFrame) async throws -> Void,
                        onData: (_ stream: UInt32, _ payload: [UInt8]) async throws -> Void) async throws
    {
        var open = awaiting
        while !open.isEmpty {
            while let frame = try reader.next() {
                switch frame {
                case .data(let id, let fin, let payload):
                    if open.contains(id) { try await onData(id, payload) }
                    if fin { open.remove(id) }
                case .synReply(_, _, let block), .headers(_, _, let block):
                    _ = try decompressor.decompress(block)
                case .synStream(let id, _, _, let block):
                    _ = try decompressor.decompress(block)
                    try await send(.rstStream(stream: id, status: SPDYFrame.refusedStream))
                case .rstStream(let id, _):
                    open.remove(id)
                case .ping(let id):
                    try await send(.ping(id: id))
                case .goAway:
                    return
                case .settings, .windowUpdate, .other:
                    continue
                }
            }
            if open.isEmpty { return }
            guard let b = try await iterator.next() else { return }
            reader.append(b.readableBytesView)
        }
    }

    /// One forwarded connection through the runtime's streaming server (`portforward.k8s.io`: an
    /// `error` and a `data` stream with `port` and `requestID` headers): input chunks on channel 0
    /// go to the pod's port, `[255, 0]` half-closes; what the pod sends comes back on channel 1;
    /// the runtime's error (e.g. nothing listens) is thrown.
    static func forward(host: String, port: Int, path: String, podPort: Int, input: TunnelStreamData,
                        write: @escaping @Sendable ([UInt8]) async throws -> Void) async throws
    {
        try await session(host: host, port: port, path: path, protocolVersion: "portforward.k8s.io") { iterator, reader, send in
            let compressor = try HeaderCompressor(), decompressor = try HeaderDecompressor()
            let errorID: UInt32 = 1, dataID: UInt32 = 3
            for (id, kind) in [(errorID, "error"), (dataID, "data")] {
                try await send(.synStream(stream: id, associated: 0, fin: false, headerBlock: try compressor.compress(
                    [("streamType", kind), ("port", String(podPort)), ("requestID", "0")])))
            }
            var failure: [UInt8] = []
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await chunk in input {
                        guard let c = chunk.first else { continue }
                        if c == 0 { try await send(.data(stream: dataID, fin: false, payload: Array(chunk.dropFirst()))) }
                        if c == 255 { try await send(.data(stream: dataID, fin: true, payload: [])); return }
                    }
                }
                // The pair is over once the runtime closed both streams: kubelet's server writes
                // a failure on the error stream before it closes the pair, and the data stream's
                // FIN may arrive first.
                try await receive(&iterator, &reader, awaiting: [dataID, errorID], decompressor: decompressor, send: send) { id, payload in
                    if id == dataID, !payload.isEmpty { try await write([1] + payload) }
                    if id == errorID { failure += payload }
                }
                group.cancelAll()
            }
            if !failure.isEmpty { throw TunnelError(String(decoding: failure, as: UTF8.self)) }
        }
    }
}
