import CSI
import CloudEdgeProtocol
import GRPCCore
import GRPCNIOTransportHTTP2

/// Calls to one CSI plugin over its unix socket. Each call dials anew (a plugin that restarts
/// is reached again on the next call) and has a deadline, so a plugin that hangs fails the call
/// instead of the pod worker.
public struct CSIPluginClient: Sendable {
    public let endpoint: String
    public init(endpoint: String) {
        var p = endpoint
        if p.hasPrefix("unix://") { p.removeFirst("unix://".count) }
        self.endpoint = p
    }

    func options(_ timeout: Duration) -> CallOptions {
        var o = CallOptions.defaults
        o.timeout = timeout
        o.waitForReady = false
        return o
    }

    func with<R: Sendable>(_ body: @Sendable (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> R) async throws(CSICallError) -> R {
        do {
            let transport = try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: endpoint), transportSecurity: .plaintext)
            return try await withGRPCClient(transport: transport) { try await body($0) }
        } catch let e as RPCError {
            throw CSICallError(code: Self.codeName(e.code), message: e.message)
        } catch let e as CSICallError {
            throw e
        } catch {
            throw CSICallError(code: "UNAVAILABLE", message: "\(endpoint): \(error)")
        }
    }

    public func identity<R: Sendable>(timeout: Duration, _ body: @Sendable (Csi_V1_Identity.Client<HTTP2ClientTransport.Posix>, CallOptions) async throws -> R) async throws(CSICallError) -> R {
        let o = options(timeout)
        return try await with { try await body(Csi_V1_Identity.Client(wrapping: $0), o) }
    }

    public func node<R: Sendable>(timeout: Duration, _ body: @Sendable (Csi_V1_Node.Client<HTTP2ClientTransport.Posix>, CallOptions) async throws -> R) async throws(CSICallError) -> R {
        let o = options(timeout)
        return try await with { try await body(Csi_V1_Node.Client(wrapping: $0), o) }
    }

    public func controller<R: Sendable>(timeout: Duration, _ body: @Sendable (Csi_V1_Controller.Client<HTTP2ClientTransport.Posix>, CallOptions) async throws -> R) async throws(CSICallError) -> R {
        let o = options(timeout)
        return try await with { try await body(Csi_V1_Controller.Client(wrapping: $0), o) }
    }

    public func registration<R: Sendable>(timeout: Duration, _ body: @Sendable (Pluginregistration_Registration.Client<HTTP2ClientTransport.Posix>, CallOptions) async throws -> R) async throws(CSICallError) -> R {
        let o = options(timeout)
        return try await with { try await body(Pluginregistration_Registration.Client(wrapping: $0), o) }
    }

    /// The gRPC code as the CSI spec names it.
    public static func codeName(_ code: RPCError.Code) -> String {
        switch code {
        case .cancelled: "CANCELLED"
        case .unknown: "UNKNOWN"
        case .invalidArgument: "INVALID_ARGUMENT"
        case .deadlineExceeded: "DEADLINE_EXCEEDED"
        case .notFound: "NOT_FOUND"
        case .alreadyExists: "ALREADY_EXISTS"
        case .permissionDenied: "PERMISSION_DENIED"
        case .resourceExhausted: "RESOURCE_EXHAUSTED"
        case .failedPrecondition: "FAILED_PRECONDITION"
        case .aborted: "ABORTED"
        case .outOfRange: "OUT_OF_RANGE"
        case .unimplemented: "UNIMPLEMENTED"
        case .internalError: "INTERNAL"
        case .unavailable: "UNAVAILABLE"
        case .dataLoss: "DATA_LOSS"
        case .unauthenticated: "UNAUTHENTICATED"
        default: "UNKNOWN"
        }
    }
}
