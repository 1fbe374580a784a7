import AsyncSupport
import KubeAPI
import Logging
import Metrics
import NIOCore
import NIOWebSocket
import Synchronization

/// Writes tunnel frames to one WebSocket peer; safe from many tasks.
struct FrameWriter: Sendable {
    let outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>
    let isClient: Bool

    func send(_ f: TunnelFrame) async throws {
        try await outbound.write(WebSocketFrame(fin: true, opcode: .binary, maskKey: isClient ? .random() : nil, data: f.encoded()))
    }

    func pong(_ data: ByteBuffer) async throws {
        try await outbound.write(WebSocketFrame(fin: true, opcode: .pong, maskKey: isClient ? .random() : nil, data: data))
    }
}

/// Reads frames until the peer closes: data and control frames go to `handle`.
func readFrames(_ inbound: NIOAsyncChannelInboundStream<WebSocketFrame>, writer: FrameWriter,
                _ handle: (TunnelFrame) async throws -> Void) async throws
{
    for try await frame in inbound {
        switch frame.opcode {
        case .binary: try await handle(try TunnelFrame(decoding: frame.unmaskedData))
        case .ping: try await writer.pong(frame.unmaskedData)
        case .connectionClose: return
        case .pong, .continuation: continue
        default: throw TunnelError("unexpected WebSocket frame \(frame.opcode) on the stream tunnel")
        }
    }
}

/// The bytes one end of a stream receives, as it consumes them: every ``TunnelFrame/creditBatch``
/// bytes taken, credit goes back to the sender, which never has more than its window in flight.
/// The same flow control serves both directions (node → cloud output, cloud → node input).
public struct TunnelStreamData: AsyncSequence, Sendable {
    public typealias Element = [UInt8]
    let base: AsyncThrowingStream<[UInt8], any Error>
    let grant: @Sendable (Int) async -> Void

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<[UInt8], any Error>.AsyncIterator
        let grant: @Sendable (Int) async -> Void
        var consumed = 0

        public mutating func next() async throws -> [UInt8]? {
            guard let chunk = try await base.next() else { return nil }
            consumed += chunk.count
            if consumed >= TunnelFrame.creditBatch {
                await grant(consumed)
                consumed = 0
            }
            return chunk
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: base.makeAsyncIterator(), grant: grant) }

    /// A receive buffer (unbounded: the sender's window bounds it) and the data read from it;
    /// consuming it grants credit to stream `id` through `writer`.
    static func make(id: UInt32, writer: FrameWriter) -> (TunnelStreamData, AsyncThrowingStream<[UInt8], any Error>.Continuation) {
        let (base, sink) = AsyncThrowingStream<[UInt8], any Error>.makeStream(bufferingPolicy: .unbounded)
        return (TunnelStreamData(base: base, grant: { try? await writer.send(.credit(id, $0)) }), sink)
    }
}

/// One stream opened by the cloud: the bytes the node sends (each chunk starts with its channel
/// byte) until it closes the stream; closing it early tells the node to stop.
public struct TunnelStream: Sendable {
    public let id: UInt32
    public let data: TunnelStreamData
    let writer: FrameWriter
    /// What the node still accepts on this stream before it has consumed more.
    let window: SendWindow
    let forget: @Sendable () -> Void

    /// Sends bytes to the node on a channel (stdin, resize, port-forward data); waits while the
    /// node's window is full. Throws once the stream has ended.
    public func send(channel: UInt8, _ bytes: [UInt8]) async throws {
        try await window.acquire(bytes.count + 1)
        try await writer.send(TunnelFrame(stream: id, kind: .data, payload: [channel] + bytes))
    }

    /// Ends the stream from this side (the client went away); `error` tells the other end why.
    public func close(error: String? = nil) async {
        forget()
        try? await writer.send(.close(id, error: error))
    }

    /// Sends a chunk as received from another stream (its first byte is the channel).
    func forward(_ chunk: [UInt8]) async throws {
        guard let channel = chunk.first else { return }
        try await send(channel: channel, Array(chunk.dropFirst()))
    }
}

/// Stream ids a node opens have the high bit set; the cloud's never do.
let nodeOpenedBit: UInt32 = 0x8000_0000

/// The cloud end of the stream tunnels: one connection per node (dialled by the node), streams
/// opened on demand for `kubectl logs` and friends.
public final class TunnelServer: Sendable {
    final class NodeTunnel: Sendable {
        let writer: FrameWriter
        struct Entry { var sink: AsyncThrowingStream<[UInt8], any Error>.Continuation; var window: SendWindow }
        let streams = Mutex<[UInt32: Entry]>([:])
        let nextID = Atomic<UInt32>(0)
        init(writer: FrameWriter) { self.writer = writer }

        func fail(_ why: String) {
            for e in streams.withLock({ s in defer { s = [:] }; return Array(s.values) }) {
                e.sink.finish(throwing: TunnelError(why))
                e.window.close()
            }
        }
    }

    let tunnels = Mutex<[String: NodeTunnel]>([:])
    let logger: Logger
    let relays = Counter(label: "swiftedge_stream_tunnel_relays_total")

    public init(logger: Logger) { self.logger = logger }

    /// Whether the node's tunnel is up.
    public func isConnected(_ node: String) -> Bool { tunnels.withLock { $0[node] != nil } }

    /// Serves one node's tunnel connection until it closes (CloudHub hands it over after
    /// authenticating the node).
    public func serve(node: String, inbound: NIOAsyncChannelInboundStream<WebSocketFrame>,
                      outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>) async
    {
        let tunnel = NodeTunnel(writer: FrameWriter(outbound: outbound, isClient: false))
        let replaced = tunnels.withLock { t in defer { t[node] = tunnel }; return t[node] }
        replaced?.fail("the node opened a new stream tunnel")
        logger.info("stream tunnel connected", metadata: ["node": "\(node)"])
        var reason = "closed by the node"
        do {
            try await withThrowingDiscardingTaskGroup { relaying in
            try await readFrames(inbound, writer: tunnel.writer) { f in
                switch f.kind {
                case .data:
                    _ = tunnel.streams.withLock { $0[f.stream] }?.sink.yield(f.payload)
                case .close:
                    guard let e = tunnel.streams.withLock({ $0.removeValue(forKey: f.stream) }) else { break }
                    e.window.close()
                    if let error = (try? JSON.parse(f.payload))?["error"].stringValue { e.sink.finish(throwing: TunnelError(error)) } else { e.sink.finish() }
                case .credit:
                    if let n = f.creditBytes { tunnel.streams.withLock { $0[f.stream] }?.window.grant(n) }
                case .open:
                    guard f.stream & nodeOpenedBit != 0 else { throw TunnelError("a node's stream ids have the high bit set") }
                    let request: StreamRequest
                    do {
                        request = try StreamRequest(json: try JSON.parse(f.payload))
                        guard request.kind == .relay, let target = request.node, request.port != nil else {
                            throw TunnelError("a node may only open relay streams (with node, pod and port)")
                        }
                        _ = target
                    } catch {
                        try await tunnel.writer.send(.close(f.stream, error: "bad relay request: \(error)"))
                        break
                    }
                    let id = f.stream
                    let (data, sink) = TunnelStreamData.make(id: id, writer: tunnel.writer)
                    let window = SendWindow(TunnelFrame.initialWindow)
                    tunnel.streams.withLock { $0[id] = NodeTunnel.Entry(sink: sink, window: window) }
                    let stream = TunnelStream(id: id, data: data, writer: tunnel.writer, window: window, forget: {
                        tunnel.streams.withLock { $0.removeValue(forKey: id) }?.window.close()
                    })
                    relaying.addTask { await self.relay(from: node, stream, request) }
                }
            }
            relaying.cancelAll()
            }
        } catch {
            reason = "\(error)"
        }
        tunnels.withLock { t in if t[node] === tunnel { t[node] = nil } }
        tunnel.fail("stream tunnel to node \(node) closed: \(reason)")
        outbound.finish()
        logger.info("stream tunnel closed", metadata: ["node": "\(node)", "reason": "\(reason)"])
    }

    /// A node's relay stream (EdgeMesh traffic to a pod on another node): a port-forward stream
    /// opened on the pod's node, bytes passed both ways until either end closes.
    func relay(from node: String, _ a: TunnelStream, _ request: StreamRequest) async {
        guard let target = request.node, let port = request.port else { return }
        relays.increment()
        let b: TunnelStream
        do {
            b = try await open(node: target, StreamRequest(kind: .portforward, namespace: request.namespace, pod: request.pod, container: "", port: port))
        } catch {
            await a.close(error: "relay to node \(target): \(error)")
            return
        }
        logger.debug("relaying", metadata: ["from": "\(node)", "to": "\(target)", "pod": "\(request.namespace)/\(request.pod)", "port": "\(port)"])
        // The first side to end ends the other (with its error, if it failed).
        let why = await withTaskGroup(of: String?.self) { g -> String? in
            g.addTask {
                do { for try await chunk in a.data { try await b.forward(chunk) } } catch { return "\(error)" }
                return nil
            }
            g.addTask {
                do { for try await chunk in b.data { try await a.forward(chunk) } } catch { return "\(error)" }
                return nil
            }
            defer { g.cancelAll() }
            return await g.next() ?? nil
        }
        await a.close(error: why)
        await b.close()
    }

    /// Opens a stream to a node. Throws if the node has no tunnel.
    public func open(node: String, _ request: StreamRequest) async throws -> TunnelStream {
        guard let tunnel = tunnels.withLock({ $0[node] }) else {
            throw TunnelError("no stream tunnel to node \"\(node)\" (is it connected?)")
        }
        let id = tunnel.nextID.wrappingAdd(1, ordering: .relaxed).newValue
        let (data, sink) = TunnelStreamData.make(id: id, writer: tunnel.writer)
        let window = SendWindow(TunnelFrame.initialWindow)
        tunnel.streams.withLock { $0[id] = NodeTunnel.Entry(sink: sink, window: window) }
        try await tunnel.writer.send(TunnelFrame(stream: id, kind: .open, payload: request.json.serialized()))
        return TunnelStream(id: id, data: data, writer: tunnel.writer, window: window, forget: {
            tunnel.streams.withLock { $0.removeValue(forKey: id) }?.window.close()
        })
    }
}

/// Serves the streams the cloud opens on a node: writes data chunks (channel byte first) until
/// done; throwing ends the stream with the error's text.
public protocol StreamProvider: Sendable {
    /// - Parameter input: what the cloud sends on the stream (stdin, resize; channel byte first);
    ///   consuming it lets the cloud send more.
    func serve(_ request: StreamRequest, input: TunnelStreamData, write: @escaping @Sendable ([UInt8]) async throws -> Void) async throws
}

/// The streams a node opens on its tunnel (`relay`), while the tunnel is up.
public final class TunnelDialer: Sendable {
    struct Link {
        var writer: FrameWriter
        var streams: [UInt32: (sink: AsyncThrowingStream<[UInt8], any Error>.Continuation, window: SendWindow)] = [:]
    }

    let link = Mutex<Link?>(nil)
    let nextID = Atomic<UInt32>(0)
    /// Whether a tunnel is up (streams can be opened).
    public let connected = StateSignal(false)

    public init() {}

    /// Opens a stream through the cloud; throws when no tunnel is up.
    public func open(_ request: StreamRequest) async throws -> TunnelStream {
        let id = nodeOpenedBit | (nextID.wrappingAdd(1, ordering: .relaxed).newValue & ~nodeOpenedBit)
        let window = SendWindow(TunnelFrame.initialWindow)
        let made = link.withLock { l -> (TunnelStreamData, FrameWriter)? in
            guard let w = l?.writer else { return nil }
            let (data, sink) = TunnelStreamData.make(id: id, writer: w)
            l?.streams[id] = (sink, window)
            return (data, w)
        }
        guard let (data, writer) = made else { throw TunnelError("no stream tunnel to the cloud (offline?)") }
        do { try await writer.send(TunnelFrame(stream: id, kind: .open, payload: request.json.serialized())) } catch {
            _ = link.withLock { $0?.streams.removeValue(forKey: id) }
            throw error
        }
        return TunnelStream(id: id, data: data, writer: writer, window: window, forget: { [self] in
            link.withLock { $0?.streams.removeValue(forKey: id) }?.window.close()
        })
    }

    func attach(_ writer: FrameWriter) {
        link.withLock { $0 = Link(writer: writer) }
        _ = connected.set(true)
    }

    func detach(_ why: String) {
        let streams = link.withLock { l in defer { l = nil }; return l.map { Array($0.streams.values) } ?? [] }
        _ = connected.set(false)
        for s in streams {
            s.sink.finish(throwing: TunnelError(why))
            s.window.close()
        }
    }

    /// A frame of a stream this node opened.
    func handle(_ f: TunnelFrame) {
        switch f.kind {
        case .data: _ = link.withLock { $0?.streams[f.stream]?.sink }?.yield(f.payload)
        case .close:
            guard let e = link.withLock({ $0?.streams.removeValue(forKey: f.stream) }) else { return }
            e.window.close()
            if let error = (try? JSON.parse(f.payload))?["error"].stringValue { e.sink.finish(throwing: TunnelError(error)) } else { e.sink.finish() }
        case .credit: if let n = f.creditBytes { link.withLock { $0?.streams[f.stream]?.window }?.grant(n) }
        case .open: break
        }
    }
}

/// The edge end: serves the streams of one tunnel connection (each in its own child task;
/// a close from the cloud cancels it), and carries the streams `dialer` opens. Returns when the
/// connection closes.
public func serveTunnel(inbound: NIOAsyncChannelInboundStream<WebSocketFrame>, outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>,
                        provider: any StreamProvider, dialer: TunnelDialer? = nil, logger: Logger) async throws
{
    let writer = FrameWriter(outbound: outbound, isClient: true)
    dialer?.attach(writer)
    defer { dialer?.detach("the stream tunnel closed") }
    let running = StreamCancels()
    let (frames, sink) = AsyncThrowingStream<TunnelFrame, any Error>.makeStream()
    try await withThrowingDiscardingTaskGroup { group in
        group.addTask {
            do {
                try await readFrames(inbound, writer: writer) { sink.yield($0) }
                sink.finish()
            } catch {
                sink.finish(throwing: error)
            }
        }
        defer { for s in running.all() { s.signal() } }
        for try await f in frames {
            if f.stream & nodeOpenedBit != 0 {
                dialer?.handle(f)
                continue
            }
            switch f.kind {
            case .open:
                let request: StreamRequest
                do { request = try StreamRequest(json: try JSON.parse(f.payload)) } catch {
                    try await writer.send(.close(f.stream, error: "bad stream request: \(error)"))
                    continue
                }
                let id = f.stream
                let cancel = WakeSignal()
                let (input, inputSink) = TunnelStreamData.make(id: id, writer: writer)
                let window = SendWindow(TunnelFrame.initialWindow)
                running.set(id, StreamCancels.Entry(cancel: cancel, input: inputSink, window: window))
                group.addTask {
                    await withTaskGroup(of: Void.self) { g in
                        g.addTask {
                            var failure: String?
                            do {
                                try await provider.serve(request, input: input) { bytes in
                                    try await window.acquire(bytes.count)
                                    try await writer.send(TunnelFrame(stream: id, kind: .data, payload: bytes))
                                }
                            } catch is CancellationError {
                                return
                            } catch {
                                failure = "\(error)"
                            }
                            try? await writer.send(.close(id, error: failure))
                        }
                        g.addTask { await cancel.wait() }
                        await g.next()
                        g.cancelAll()
                    }
                    running.remove(id)?.input.finish()
                }
            case .close:
                running.remove(f.stream)?.cancel.signal()
            case .data:
                running.input(f.stream)?.yield(f.payload)
            case .credit:
                if let n = f.creditBytes { running.window(f.stream)?.grant(n) }
            }
        }
        logger.info("stream tunnel closed by the cloud")
    }
}

/// The streams a node is serving: how to cancel each, its input, its send window.
final class StreamCancels: Sendable {
    struct Entry { var cancel: WakeSignal; var input: AsyncThrowingStream<[UInt8], any Error>.Continuation; var window: SendWindow }
    let m = Mutex<[UInt32: Entry]>([:])
    func set(_ id: UInt32, _ e: Entry) { m.withLock { $0[id] = e } }
    @discardableResult
    func remove(_ id: UInt32) -> Entry? { m.withLock { $0.removeValue(forKey: id) } }
    func input(_ id: UInt32) -> AsyncThrowingStream<[UInt8], any Error>.Continuation? { m.withLock { $0[id]?.input } }
    func window(_ id: UInt32) -> SendWindow? { m.withLock { $0[id]?.window } }
    func all() -> [WakeSignal] { m.withLock { $0.values.map(\.cancel) } }
}

/// The bytes a node may still send on one stream before the cloud has consumed them. A chunk may
/// go out while any credit is left (so a chunk larger than the window cannot deadlock); then the
/// sender waits for the cloud's next credit.
final class SendWindow: Sendable {
    /// Credit left; nil once the stream ended.
    let credit: Mutex<Int?>
    let more = WakeSignal()

    init(_ initial: Int) { credit = Mutex(initial) }

    func grant(_ n: Int) {
        credit.withLock { c in c = c.map { $0 + n } }
        more.signal()
    }

    /// The stream ended: a waiting sender (and any later one) fails instead of waiting forever.
    func close() {
        credit.withLock { $0 = nil }
        more.signal()
    }

    /// Waits until the chunk may be sent; one sender per stream.
    func acquire(_ n: Int) async throws {
        while true {
            try Task.checkCancellation()
            let granted = try credit.withLock { c -> Bool in
                guard let left = c else { throw TunnelError("the stream has ended") }
                guard left > 0 else { return false }
                c = left - n
                return true
            }
            if granted { return }
            await more.wait()
        }
    }
}
