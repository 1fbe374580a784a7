import AsyncSupport
import CRI
import GRPCCore
import GRPCNIOTransportHTTP2
import KubeAPI
import Logging
import NIOCore
import ServiceLifecycle

/// A failed call to the container runtime, naming the call and what the runtime said.
public struct RuntimeError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable { case notFound, unavailable, deadlineExceeded, other }
    public var operation: String
    public var kind: Kind
    public var message: String
    public init(operation: String, kind: Kind, message: String) {
        self.operation = operation; self.kind = kind; self.message = message
    }
    public var description: String { "container runtime \(operation): \(message)" }
}

/// The result of running a command in a container to completion (exec probes).
public struct ExecResult: Sendable {
    public var exitCode: Int32
    public var stdout: [UInt8]
    public var stderr: [UInt8]
    public init(exitCode: Int32, stdout: [UInt8], stderr: [UInt8]) {
        self.exitCode = exitCode; self.stdout = stdout; self.stderr = stderr
    }
}

/// The calls Edged makes to a CRI runtime (containerd, CRI-O): pod sandboxes, containers and
/// images. Types are the CRI's own messages.
public protocol ContainerRuntime: Sendable {
    func version() async throws -> Runtime_V1_VersionResponse
    func status() async throws -> Runtime_V1_RuntimeStatus
    func runPodSandbox(_ config: Runtime_V1_PodSandboxConfig) async throws -> String
    func stopPodSandbox(_ id: String) async throws
    func removePodSandbox(_ id: String) async throws
    func listPodSandboxes(labels: [String: String]) async throws -> [Runtime_V1_PodSandbox]
    func podSandboxStatus(_ id: String) async throws -> Runtime_V1_PodSandboxStatus
    func createContainer(sandboxID: String, config: Runtime_V1_ContainerConfig, sandboxConfig: Runtime_V1_PodSandboxConfig) async throws -> String
    func startContainer(_ id: String) async throws
    func stopContainer(_ id: String, timeoutSeconds: Int64) async throws
    func removeContainer(_ id: String) async throws
    func listContainers(labels: [String: String]) async throws -> [Runtime_V1_Container]
    func containerStatus(_ id: String) async throws -> Runtime_V1_ContainerStatus
    func execSync(_ id: String, command: [String], timeoutSeconds: Int64) async throws -> ExecResult
    /// Prepares a streaming exec; returns the runtime's streaming URL to connect to.
    func exec(_ id: String, command: [String], stdin: Bool, stdout: Bool, stderr: Bool, tty: Bool) async throws -> String
    /// Prepares a streaming attach to the container's main process; returns the streaming URL.
    func attach(_ id: String, stdin: Bool, stdout: Bool, stderr: Bool, tty: Bool) async throws -> String
    /// The streaming URL for forwarding `port` of a pod sandbox (CRI `PortForward`).
    func portForward(sandbox: String, port: Int32) async throws -> String
    /// CPU and memory usage of the containers carrying these labels.
    func listContainerStats(labels: [String: String]) async throws -> [Runtime_V1_ContainerStats]
    /// The image's id if the runtime has it, nil otherwise.
    func imageID(_ image: String) async throws -> String?
    func pullImage(_ image: String, sandboxConfig: Runtime_V1_PodSandboxConfig) async throws -> String
}

/// ``ContainerRuntime`` over the CRI's gRPC API on the runtime's unix socket (containerd's
/// `/run/containerd/containerd.sock`, CRI-O's `/var/run/crio/crio.sock`). A `Service`: its
/// connection runs while the service runs; calls made before it starts wait for it.
public final class CRIRuntime: ContainerRuntime, Service {
    let client: GRPCClient<HTTP2ClientTransport.Posix>
    let runtime: Runtime_V1_RuntimeService.Client<HTTP2ClientTransport.Posix>
    let images: Runtime_V1_ImageService.Client<HTTP2ClientTransport.Posix>
    public let endpoint: String
    let logger: Logger
    /// Most calls; sandbox creation, stops and pulls get their own longer deadlines.
    let timeout: Duration = .seconds(60)

    /// - Parameter endpoint: `unix:///path` or a plain socket path.
    public init(endpoint: String, logger: Logger) throws {
        var path = endpoint
        if path.hasPrefix("unix://") { path.removeFirst("unix://".count) }
        self.endpoint = path
        self.logger = logger
        var config = HTTP2ClientTransport.Posix.Config.defaults
        config.backoff.initial = .milliseconds(100)
        config.backoff.max = .seconds(2)
        config.http2.authority = "localhost"
        let connectionLogger = logger
        config.channelDebuggingCallbacks.onCreateTCPConnection = { channel in
            channel.eventLoop.makeCompletedFuture {
                // Nearest the socket: the PING answers (see HTTP2PingFilter), then the watcher.
                try channel.pipeline.syncOperations.addHandler(ConnectionWatcher(logger: connectionLogger), position: .first)
                try channel.pipeline.syncOperations.addHandler(HTTP2PingResponder(logger: connectionLogger), position: .first)
            }
        }
        let transport = try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: path), transportSecurity: .plaintext, config: config)
        client = GRPCClient(transport: transport)
        runtime = Runtime_V1_RuntimeService.Client(wrapping: client)
        images = Runtime_V1_ImageService.Client(wrapping: client)
    }

    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await client.runConnections()
        } onGracefulShutdown: {
            self.client.beginGracefulShutdown()
        }
    }

    /// Closes the runtime connection (for a one-off use outside a service group: `run()` returns).
    public func shutdown() { client.beginGracefulShutdown() }

    /// No gRPC deadline: grpc-swift implements one as a `Task.sleep` raced against the call, and a
    /// cancelled sleep stays allocated until its deadline (with 60–240 s deadlines, thousands of
    /// them on a node with 50 pods: ~3 MB, measured with heaptrack). ``call(_:timeout:_:)`` keeps
    /// the deadline with ``within(_:_:_:)``, whose timer is freed when the call ends.
    let callOptions: CallOptions = {
        var o = CallOptions.defaults
        o.waitForReady = true
        return o
    }()

    /// Calls that change nothing: retried when the runtime's connection closes under them (the
    /// runtime restarted, or the connection dropped; the client redials).
    static let idempotent: Set<String> = ["Version", "Status", "ListPodSandbox", "PodSandboxStatus", "ListContainers",
                                          "ContainerStatus", "ImageStatus", "StopContainer", "StopPodSandbox",
                                          "RemoveContainer", "RemovePodSandbox"]

    func call<T: Sendable>(_ operation: String, timeout: Duration? = nil, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        var attempt = 0
        while true {
            do { return try await Self.within(timeout ?? self.timeout, operation, body) } catch let e as RPCError where e.code == .unavailable && Self.idempotent.contains(operation) && attempt < 3 {
                attempt += 1
                logger.debug("container runtime call retried", metadata: ["operation": "\(operation)", "error": "\(e.message)"])
                try await Task.sleep(for: .milliseconds(20 * attempt))
            } catch {
                throw Self.runtimeError(operation, error)
            }
        }
    }

    /// Runs `body`, failing with `deadlineExceeded` if it has not finished within `timeout`
    /// (``withTimeLimit``: its timer is freed when the call ends).
    static func within<T: Sendable>(_ timeout: Duration, _ operation: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withTimeLimit(timeout, expired: RuntimeError(operation: operation, kind: .deadlineExceeded, message: "no answer within \(timeout)"), body)
    }

    static func runtimeError(_ operation: String, _ error: any Error) -> any Error {
        do { throw error } catch let e as RPCError {
            let kind: RuntimeError.Kind = switch e.code {
            case .notFound: .notFound
            case .unavailable: .unavailable
            case .deadlineExceeded: .deadlineExceeded
            default: .other
            }
            // containerd reports some missing objects as Unknown with "not found" in the text.
            let notFound = kind == .other && e.message.contains("not found")
            return RuntimeError(operation: operation, kind: notFound ? .notFound : kind, message: e.message)
        } catch {
            return error
        }
    }

    public func version() async throws -> Runtime_V1_VersionResponse {
        try await call("Version", timeout: .seconds(5)) { [self] in try await runtime.version(.init(), options: callOptions) }
    }

    public func status() async throws -> Runtime_V1_RuntimeStatus {
        try await call("Status", timeout: .seconds(5)) { [self] in try await runtime.status(.init(), options: callOptions).status }
    }

    public func runPodSandbox(_ config: Runtime_V1_PodSandboxConfig) async throws -> String {
        var r = Runtime_V1_RunPodSandboxRequest()
        r.config = config
        return try await call("RunPodSandbox", timeout: .seconds(240)) { [self, r] in try await runtime.runPodSandbox(r, options: callOptions).podSandboxID }
    }

    public func stopPodSandbox(_ id: String) async throws {
        var r = Runtime_V1_StopPodSandboxRequest()
        r.podSandboxID = id
        _ = try await call("StopPodSandbox", timeout: .seconds(120)) { [self, r] in try await runtime.stopPodSandbox(r, options: callOptions) }
    }

    public func removePodSandbox(_ id: String) async throws {
        var r = Runtime_V1_RemovePodSandboxRequest()
        r.podSandboxID = id
        _ = try await call("RemovePodSandbox") { [self, r] in try await runtime.removePodSandbox(r, options: callOptions) }
    }

    public func listPodSandboxes(labels: [String: String]) async throws -> [Runtime_V1_PodSandbox] {
        var r = Runtime_V1_ListPodSandboxRequest()
        r.filter.labelSelector = labels
        return try await call("ListPodSandbox") { [self, r] in try await runtime.listPodSandbox(r, options: callOptions).items }
    }

    public func podSandboxStatus(_ id: String) async throws -> Runtime_V1_PodSandboxStatus {
        var r = Runtime_V1_PodSandboxStatusRequest()
        r.podSandboxID = id
        return try await call("PodSandboxStatus") { [self, r] in try await runtime.podSandboxStatus(r, options: callOptions).status }
    }

    public func createContainer(sandboxID: String, config: Runtime_V1_ContainerConfig, sandboxConfig: Runtime_V1_PodSandboxConfig) async throws -> String {
        var r = Runtime_V1_CreateContainerRequest()
        r.podSandboxID = sandboxID
        r.config = config
        r.sandboxConfig = sandboxConfig
        return try await call("CreateContainer", timeout: .seconds(240)) { [self, r] in try await runtime.createContainer(r, options: callOptions).containerID }
    }

    public func startContainer(_ id: String) async throws {
        var r = Runtime_V1_StartContainerRequest()
        r.containerID = id
        _ = try await call("StartContainer", timeout: .seconds(240)) { [self, r] in try await runtime.startContainer(r, options: callOptions) }
    }

    public func stopContainer(_ id: String, timeoutSeconds: Int64) async throws {
        var r = Runtime_V1_StopContainerRequest()
        r.containerID = id
        r.timeout = timeoutSeconds
        _ = try await call("StopContainer", timeout: .seconds(timeoutSeconds + 60)) { [self, r] in try await runtime.stopContainer(r, options: callOptions) }
    }

    public func removeContainer(_ id: String) async throws {
        var r = Runtime_V1_RemoveContainerRequest()
        r.containerID = id
        _ = try await call("RemoveContainer") { [self, r] in try await runtime.removeContainer(r, options: callOptions) }
    }

    public func listContainers(labels: [String: String]) async throws -> [Runtime_V1_Container] {
        var r = Runtime_V1_ListContainersRequest()
        r.filter.labelSelector = labels
        return try await call("ListContainers") { [self, r] in try await runtime.listContainers(r, options: callOptions).containers }
    }

    public func listContainerStats(labels: [String: String]) async throws -> [Runtime_V1_ContainerStats] {
        var r = Runtime_V1_ListContainerStatsRequest()
        r.filter.labelSelector = labels
        return try await call("ListContainerStats") { [self, r] in try await runtime.listContainerStats(r, options: callOptions).stats }
    }

    public func containerStatus(_ id: String) async throws -> Runtime_V1_ContainerStatus {
        var r = Runtime_V1_ContainerStatusRequest()
        r.containerID = id
        return try await call("ContainerStatus") { [self, r] in try await runtime.containerStatus(r, options: callOptions).status }
    }

    public func execSync(_ id: String, command: [String], timeoutSeconds: Int64) async throws -> ExecResult {
        var r = Runtime_V1_ExecSyncRequest()
        r.containerID = id
        r.cmd = command
        r.timeout = timeoutSeconds
        let response = try await call("ExecSync", timeout: .seconds(timeoutSeconds + 10)) { [self, r] in try await runtime.execSync(r, options: callOptions) }
        return ExecResult(exitCode: response.exitCode, stdout: Array(response.stdout), stderr: Array(response.stderr))
    }

    public func exec(_ id: String, command: [String], stdin: Bool, stdout: Bool, stderr: Bool, tty: Bool) async throws -> String {
        var r = Runtime_V1_ExecRequest()
        r.containerID = id
        r.cmd = command
        r.stdin = stdin
        r.stdout = stdout
        r.stderr = stderr && !tty
        r.tty = tty
        return try await call("Exec") { [self, r] in try await runtime.exec(r, options: callOptions).url }
    }

    public func attach(_ id: String, stdin: Bool, stdout: Bool, stderr: Bool, tty: Bool) async throws -> String {
        var r = Runtime_V1_AttachRequest()
        r.containerID = id
        r.stdin = stdin
        r.stdout = stdout
        r.stderr = stderr && !tty
        r.tty = tty
        return try await call("Attach") { [self, r] in try await runtime.attach(r, options: callOptions).url }
    }

    public func portForward(sandbox: String, port: Int32) async throws -> String {
        var r = Runtime_V1_PortForwardRequest()
        r.podSandboxID = sandbox
        r.port = [port]
        return try await call("PortForward") { [self, r] in try await runtime.portForward(r, options: callOptions).url }
    }

    public func imageID(_ image: String) async throws -> String? {
        var r = Runtime_V1_ImageStatusRequest()
        r.image.image = image
        let response = try await call("ImageStatus") { [self, r] in try await images.imageStatus(r, options: callOptions) }
        return response.hasImage ? response.image.id : nil
    }

    public func pullImage(_ image: String, sandboxConfig: Runtime_V1_PodSandboxConfig) async throws -> String {
        var r = Runtime_V1_PullImageRequest()
        r.image.image = image
        r.sandboxConfig = sandboxConfig
        return try await call("PullImage", timeout: .seconds(600)) { [self, r] in try await images.pullImage(r, options: callOptions).imageRef }
    }
}

/// Logs why the runtime connection closed (the runtime restarting, a protocol error, …).
final class ConnectionWatcher: ChannelDuplexHandler, Sendable {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    let logger: Logger
    init(logger: Logger) { self.logger = logger }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.warning("container runtime connection error", metadata: ["error": "\(error)"])
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        logger.debug("container runtime connection closed")
        context.fireChannelInactive()
    }
}
