import KubeAPI
import NIOCore

/// One frame of the stream tunnel (the node's second WebSocket, KubeEdge's CloudStream/
/// EdgeStream): binary WebSocket messages `[stream id: u32][kind: u8][payload]`, many streams
/// multiplexed on one connection.
public struct TunnelFrame: Sendable, Equatable {
    public enum Kind: UInt8, Sendable {
        /// A new stream; payload is the ``StreamRequest`` JSON. Cloud → edge, or edge → cloud
        /// for a `relay` (whose stream id has the high bit set).
        case open = 0
        /// Either way: stream bytes; the payload's first byte is the channel (Kubernetes
        /// remotecommand numbering: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize).
        case data = 1
        /// Either way: the stream ended; payload is `{"error": "..."}` or empty.
        case close = 2
        /// Cloud → edge: the cloud consumed this many more bytes of the stream (u32 payload); the
        /// node may send that much more (flow control: a slow reader holds the node back instead
        /// of buffering without bound or losing data).
        case credit = 3
    }

    /// Bytes a node may send on a stream before the cloud's first credit.
    public static let initialWindow = 256 * 1024
    /// The cloud returns credit once it has consumed this much.
    public static let creditBatch = 64 * 1024

    public static func credit(_ stream: UInt32, _ bytes: Int) -> TunnelFrame {
        var b: [UInt8] = []
        let n = UInt32(clamping: bytes)
        b.append(contentsOf: [UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)])
        return TunnelFrame(stream: stream, kind: .credit, payload: b)
    }

    /// The byte count of a credit frame.
    public var creditBytes: Int? {
        guard kind == .credit, payload.count == 4 else { return nil }
        return payload.reduce(0) { $0 << 8 | Int($1) }
    }

    public var stream: UInt32
    public var kind: Kind
    public var payload: [UInt8]

    public init(stream: UInt32, kind: Kind, payload: [UInt8] = []) {
        self.stream = stream; self.kind = kind; self.payload = payload
    }

    public func encoded() -> ByteBuffer {
        var b = ByteBuffer()
        b.reserveCapacity(5 + payload.count)
        b.writeInteger(stream)
        b.writeInteger(kind.rawValue)
        b.writeBytes(payload)
        return b
    }

    public init(decoding buffer: ByteBuffer) throws(TunnelError) {
        var b = buffer
        guard let stream = b.readInteger(as: UInt32.self), let k = b.readInteger(as: UInt8.self) else {
            throw TunnelError("tunnel frame shorter than its 5-byte header")
        }
        guard let kind = Kind(rawValue: k) else { throw TunnelError("unknown tunnel frame kind \(k)") }
        self.stream = stream
        self.kind = kind
        payload = b.readBytes(length: b.readableBytes) ?? []
    }

    public static func close(_ stream: UInt32, error: String?) -> TunnelFrame {
        TunnelFrame(stream: stream, kind: .close, payload: error.map { JSON.object(["error": .string($0)]).serialized() } ?? [])
    }
}

/// A tunnel failure with what happened.
public struct TunnelError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// What the cloud asks a node to stream.
public struct StreamRequest: Sendable, Equatable {
    /// `stats`: the node's and its pods' CPU and memory usage (``NodeUsage`` JSON on channel 1).
    /// `portforward`: a TCP connection to ``port`` in the pod; bytes to it on channel 0, from it
    /// on channel 1, `[255, 0]` from the cloud when the client stopped sending.
    /// `relay` (node → cloud): a `portforward` to ``pod`` on ``node``, opened by the cloud on
    /// that node's tunnel and joined to this stream (EdgeMesh traffic between nodes that cannot
    /// dial each other).
    public enum Kind: String, Sendable { case log, exec, attach, stats, portforward, relay }
    public var kind: Kind
    public var namespace: String
    public var pod: String
    public var container: String
    public var log: LogOptions
    public var exec: ExecOptions
    public var port: Int?
    /// The node a `relay` goes to.
    public var node: String?

    public init(kind: Kind, namespace: String, pod: String, container: String, log: LogOptions = LogOptions(),
                exec: ExecOptions = ExecOptions(), port: Int? = nil, node: String? = nil)
    {
        self.kind = kind; self.namespace = namespace; self.pod = pod; self.container = container; self.log = log; self.exec = exec
        self.port = port; self.node = node
    }

    public var json: JSON {
        ["kind": .string(kind.rawValue), "namespace": .string(namespace), "pod": .string(pod), "container": .string(container),
         "log": log.json, "exec": exec.json, "port": port.map { .int(Int64($0)) } ?? .null, "node": node.map { .string($0) } ?? .null]
    }

    public init(json j: JSON) throws(TunnelError) {
        guard let k = j["kind"].stringValue.flatMap(Kind.init(rawValue:)) else { throw TunnelError("unknown stream kind \(j["kind"])") }
        guard let ns = j["namespace"].stringValue, let pod = j["pod"].stringValue, let c = j["container"].stringValue else {
            throw TunnelError("stream request without namespace, pod or container")
        }
        self.init(kind: k, namespace: ns, pod: pod, container: c, log: LogOptions(json: j["log"]), exec: ExecOptions(json: j["exec"]),
                  port: j["port"].intValue.map { Int($0) }, node: j["node"].stringValue)
    }
}

/// `pods/log` options (kubectl logs flags).
public struct LogOptions: Sendable, Equatable {
    public var follow = false
    public var previous = false
    public var timestamps = false
    public var tailLines: Int64?
    public var sinceSeconds: Int64?
    public var limitBytes: Int64?

    public init(follow: Bool = false, previous: Bool = false, timestamps: Bool = false, tailLines: Int64? = nil,
                sinceSeconds: Int64? = nil, limitBytes: Int64? = nil)
    {
        self.follow = follow; self.previous = previous; self.timestamps = timestamps
        self.tailLines = tailLines; self.sinceSeconds = sinceSeconds; self.limitBytes = limitBytes
    }

    var json: JSON {
        var o: JSON = ["follow": .bool(follow), "previous": .bool(previous), "timestamps": .bool(timestamps)]
        if let tailLines { o["tailLines"] = .int(tailLines) }
        if let sinceSeconds { o["sinceSeconds"] = .int(sinceSeconds) }
        if let limitBytes { o["limitBytes"] = .int(limitBytes) }
        return o
    }

    init(json j: JSON) {
        follow = j["follow"].boolValue ?? false
        previous = j["previous"].boolValue ?? false
        timestamps = j["timestamps"].boolValue ?? false
        tailLines = j["tailLines"].intValue
        sinceSeconds = j["sinceSeconds"].intValue
        limitBytes = j["limitBytes"].intValue
    }
}

/// `pods/exec` and `pods/attach` options (kubectl exec/attach flags).
public struct ExecOptions: Sendable, Equatable {
    public var command: [String] = []
    public var stdin = false
    public var stdout = true
    public var stderr = true
    public var tty = false

    public init(command: [String] = [], stdin: Bool = false, stdout: Bool = true, stderr: Bool = true, tty: Bool = false) {
        self.command = command; self.stdin = stdin; self.stdout = stdout; self.stderr = stderr; self.tty = tty
    }

    var json: JSON {
        ["command": .array(command.map { .string($0) }), "stdin": .bool(stdin), "stdout": .bool(stdout), "stderr": .bool(stderr), "tty": .bool(tty)]
    }

    init(json j: JSON) {
        command = (j["command"].arrayValue ?? []).compactMap(\.stringValue)
        stdin = j["stdin"].boolValue ?? false
        stdout = j["stdout"].boolValue ?? true
        stderr = j["stderr"].boolValue ?? true
        tty = j["tty"].boolValue ?? false
    }
}
