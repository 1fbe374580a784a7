import KubeAPI
import KubeAuth
import PKI

/// A transport-independent HTTP request as the API handlers see it.
public struct APIRequest: Sendable {
    public var method: String
    public var path: String
    public var query: [String: String]
    public var headers: [String: String]
    public var body: [UInt8]
    /// The TLS client certificate's identity, when the client presented one the CA signed.
    public var clientIdentity: CertificateIdentity?
    /// Who the request acts as, once authenticated (impersonation applied).
    public var user: UserInfo?
    /// The client's IP address (for the audit log's `sourceIPs`).
    public var remoteAddress: String?

    public init(method: String, path: String, query: [String: String] = [:], headers: [String: String] = [:], body: [UInt8] = [],
                clientIdentity: CertificateIdentity? = nil) {
        self.method = method; self.path = path; self.query = query; self.headers = headers; self.body = body
        self.clientIdentity = clientIdentity
    }

    public func header(_ name: String) -> String? { headers[name.lowercased()] }

    /// Splits `a=1&b=%2F` into decoded pairs (last value wins).
    public static func parseQuery(_ q: Substring) -> [String: String] {
        var out: [String: String] = [:]
        for (k, v) in URLQuery.pairs(q) { out[k] = v }
        return out
    }

    var wantsTable: Bool {
        guard let a = header("accept") else { return false }
        return a.contains("as=Table")
    }

    var wantsAggregatedDiscovery: Bool {
        header("accept")?.contains("as=APIGroupDiscoveryList") ?? false
    }

    func bool(_ name: String) -> Bool {
        guard let v = query[name] else { return false }
        return v == "true" || v == "1" || v == "True"
    }
}

/// A response from the API handlers.
public enum APIResponse: Sendable {
    case json(Int, JSON, headers: [String: String] = [:])
    case raw(Int, [UInt8], contentType: String, headers: [String: String] = [:])
    /// A chunked stream (watch): the producer writes chunks until it returns.
    case stream(Int, contentType: String, producer: @Sendable (inout any ChunkWriter) async throws -> Void)

    static func error(_ e: StatusError) -> APIResponse { .json(e.code, e.status) }

    var statusCode: Int {
        switch self {
        case .json(let c, _, _), .raw(let c, _, _, _), .stream(let c, _, _): return c
        }
    }
}

/// Where a request points, resolved from its URL.
struct RequestTarget {
    var type: ResourceType
    var namespace: String?
    var name: String?
    var subresource: Subresource?
    /// What follows `…/proxy` in a proxy URL (`/index.html`).
    var proxyPath = ""
}

/// Writes chunks of a streamed response; a write throws once the client is gone.
public protocol ChunkWriter {
    mutating func write(_ bytes: [UInt8]) async throws
}
