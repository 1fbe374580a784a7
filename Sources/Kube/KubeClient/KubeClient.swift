import AsyncHTTPClient
import Foundation
import KubeAPI
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import Yams

/// Where and how to reach a Kubernetes API server.
public struct KubeConfig: Sendable {
    public var server: String
    public var caPEM: String?
    public var token: String?
    public var clientCertificatePEM: String?
    public var clientKeyPEM: String?
    public var insecureSkipTLSVerify: Bool
    public var namespace: String

    public init(server: String, caPEM: String? = nil, token: String? = nil, clientCertificatePEM: String? = nil,
                clientKeyPEM: String? = nil, insecureSkipTLSVerify: Bool = false, namespace: String = "default")
    {
        self.server = server; self.caPEM = caPEM; self.token = token; self.clientCertificatePEM = clientCertificatePEM
        self.clientKeyPEM = clientKeyPEM; self.insecureSkipTLSVerify = insecureSkipTLSVerify; self.namespace = namespace
    }

    /// Reads a kubeconfig file (its current context).
    public static func load(path: String) throws -> KubeConfig {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw KubeClientError("cannot read kubeconfig \(path): \(error)")
        }
        guard let root = try Yams.load(yaml: text) as? [String: Any] else { throw KubeClientError("kubeconfig \(path) is not a YAML map") }
        let current = root["current-context"] as? String ?? ""
        func named(_ list: String, _ name: String) -> [String: Any]? {
            (root[list] as? [[String: Any]])?.first { ($0["name"] as? String) == name }
        }
        guard let ctx = named("contexts", current)?["context"] as? [String: Any] else {
            throw KubeClientError("kubeconfig \(path): current context \"\(current)\" not found")
        }
        guard let cluster = named("clusters", ctx["cluster"] as? String ?? "")?["cluster"] as? [String: Any],
            let server = cluster["server"] as? String
        else { throw KubeClientError("kubeconfig \(path): cluster of context \"\(current)\" not found") }
        let user = named("users", ctx["user"] as? String ?? "")?["user"] as? [String: Any] ?? [:]
        func inline(_ dataKey: String, _ fileKey: String, in m: [String: Any]) throws -> String? {
            if let d = m[dataKey] as? String, let raw = Data(base64Encoded: d) { return String(decoding: raw, as: UTF8.self) }
            if let f = m[fileKey] as? String { return try String(contentsOfFile: f, encoding: .utf8) }
            return nil
        }
        return KubeConfig(server: server,
                          caPEM: try inline("certificate-authority-data", "certificate-authority", in: cluster),
                          token: user["token"] as? String,
                          clientCertificatePEM: try inline("client-certificate-data", "client-certificate", in: user),
                          clientKeyPEM: try inline("client-key-data", "client-key", in: user),
                          insecureSkipTLSVerify: cluster["insecure-skip-tls-verify"] as? Bool ?? false,
                          namespace: ctx["namespace"] as? String ?? "default")
    }
}

/// A client-side failure (transport, decoding, configuration). API errors are ``StatusError``s.
public struct KubeClientError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One event of a watch stream.
public struct KubeWatchEvent: Sendable {
    public enum EventType: String, Sendable { case added = "ADDED", modified = "MODIFIED", deleted = "DELETED", bookmark = "BOOKMARK" }
    public var type: EventType
    public var object: JSON
    public init(type: EventType, object: JSON) { self.type = type; self.object = object }
}

/// The Kubernetes API as controllers and the cloud side use it: REST verbs and watch over the
/// unstructured JSON model. Controllers reach the API only through it, so they run the same against
/// the embedded server, an existing cluster (``HTTPKubeClient``) and an in-memory fake in unit tests.
/// API errors are thrown as ``StatusError``s (404, 409, 410 Expired …), as a server answers them.
public protocol KubeClient: Sendable {
    func get(_ type: ResourceType, namespace: String?, name: String) async throws -> JSON
    /// A list (`items`, `metadata.resourceVersion`, `metadata.continue`).
    func list(_ type: ResourceType, namespace: String?, labelSelector: String?, fieldSelector: String?,
              limit: Int?, continueToken: String?, resourceVersion: String?) async throws -> JSON
    func create(_ type: ResourceType, namespace: String?, _ object: JSON, fieldManager: String) async throws -> JSON
    /// POSTs to an object's subresource (`pods/<name>/binding`, `pods/<name>/eviction`).
    func post(_ type: ResourceType, namespace: String?, name: String, subresource: String, _ body: JSON) async throws -> JSON
    func update(_ type: ResourceType, namespace: String?, _ object: JSON, subresource: String?, fieldManager: String) async throws -> JSON
    func patch(_ type: ResourceType, namespace: String?, name: String, body: JSON, patchType: PatchType,
               subresource: String?, fieldManager: String) async throws -> JSON
    /// Deletes (`options`: a DeleteOptions body: `gracePeriodSeconds`, `preconditions`, `propagationPolicy`).
    func delete(_ type: ResourceType, namespace: String?, name: String, options: JSON?) async throws -> JSON
    /// Watches a collection from `resourceVersion`; the sequence ends when the server closes it.
    /// An expired resourceVersion surfaces as a thrown ``StatusError`` with code 410.
    func watch(_ type: ResourceType, namespace: String?, resourceVersion: String?, labelSelector: String?,
               fieldSelector: String?, timeoutSeconds: Int) async throws -> KubeWatchStream
    /// Releases connections; the client is unusable afterwards.
    func shutdown() async throws
}

/// The optional arguments, as the HTTP client has always taken them.
extension KubeClient {
    public func list(_ type: ResourceType, namespace: String?, labelSelector: String? = nil, fieldSelector: String? = nil,
                     limit: Int? = nil, continueToken: String? = nil) async throws -> JSON
    {
        try await list(type, namespace: namespace, labelSelector: labelSelector, fieldSelector: fieldSelector, limit: limit,
                       continueToken: continueToken, resourceVersion: nil)
    }

    public func create(_ type: ResourceType, namespace: String?, _ object: JSON) async throws -> JSON {
        try await create(type, namespace: namespace, object, fieldManager: "swiftedge")
    }

    public func update(_ type: ResourceType, namespace: String?, _ object: JSON, subresource: String? = nil) async throws -> JSON {
        try await update(type, namespace: namespace, object, subresource: subresource, fieldManager: "swiftedge")
    }

    public func update(_ type: ResourceType, namespace: String?, _ object: JSON, fieldManager: String) async throws -> JSON {
        try await update(type, namespace: namespace, object, subresource: nil, fieldManager: fieldManager)
    }

    public func patch(_ type: ResourceType, namespace: String?, name: String, _ patch: JSON, patchType: PatchType = .merge,
                      subresource: String? = nil, fieldManager: String = "swiftedge") async throws -> JSON
    {
        try await self.patch(type, namespace: namespace, name: name, body: patch, patchType: patchType, subresource: subresource,
                             fieldManager: fieldManager)
    }

    @discardableResult
    public func delete(_ type: ResourceType, namespace: String?, name: String) async throws -> JSON {
        try await delete(type, namespace: namespace, name: name, options: nil)
    }

    public func watch(_ type: ResourceType, namespace: String?, resourceVersion: String?, labelSelector: String? = nil,
                      fieldSelector: String? = nil) async throws -> KubeWatchStream
    {
        try await watch(type, namespace: namespace, resourceVersion: resourceVersion, labelSelector: labelSelector,
                        fieldSelector: fieldSelector, timeoutSeconds: 300)
    }
}

/// ``KubeClient`` over HTTPS to any Kubernetes API server, configured from a kubeconfig.
public final class HTTPKubeClient: KubeClient {
    public let config: KubeConfig
    let http: HTTPClient
    let logger: Logger

    public init(config: KubeConfig, logger: Logger) throws {
        self.config = config
        self.logger = logger
        var tls = TLSConfiguration.makeClientConfiguration()
        if let ca = config.caPEM {
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(ca.utf8)))
        }
        if config.insecureSkipTLSVerify { tls.certificateVerification = .none }
        // A server busy streaming a watch may never answer close_notify; do not wait 5 s for it.
        tls.shutdownTimeout = .milliseconds(500)
        if let cert = config.clientCertificatePEM, let key = config.clientKeyPEM {
            tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(cert.utf8)).map { .certificate($0) }
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(key.utf8), format: .pem))
        }
        var c = HTTPClient.Configuration(tlsConfiguration: tls)
        c.timeout = .init(connect: .seconds(10))
        c.connectionPool = .init(idleTimeout: .seconds(90), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: c)
    }

    public func shutdown() async throws { try await http.shutdown() }

    // MARK: Paths

    public func path(_ type: ResourceType, namespace: String?, name: String? = nil, subresource: String? = nil) -> String {
        var p = type.group.isEmpty ? "/api/\(type.version)" : "/apis/\(type.group)/\(type.version)"
        if type.namespaced, let ns = namespace { p += "/namespaces/\(ns)" }
        p += "/\(type.resource)"
        if let name { p += "/\(name)" }
        if let subresource { p += "/\(subresource)" }
        return p
    }

    static func query(_ items: [(String, String?)]) -> String {
        let parts = items.compactMap { k, v -> String? in
            guard let v else { return nil }
            let enc = v.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? v
            return "\(k)=\(enc)"
        }
        return parts.isEmpty ? "" : "?" + parts.joined(separator: "&")
    }

    // MARK: Requests

    func request(_ method: HTTPMethod, _ path: String, body: JSON? = nil, contentType: String = "application/json",
                 timeout: TimeAmount = .seconds(60)) async throws -> JSON
    {
        var req = HTTPClientRequest(url: config.server + path)
        req.method = method
        req.headers.add(name: "Accept", value: "application/json")
        req.headers.add(name: "User-Agent", value: "swiftedge/v1")
        if let t = config.token { req.headers.add(name: "Authorization", value: "Bearer \(t)") }
        if let body {
            req.headers.add(name: "Content-Type", value: contentType)
            req.body = .bytes(ByteBuffer(bytes: body.serialized()))
        }
        let resp = try await http.execute(req, timeout: timeout)
        let buf = try await resp.body.collect(upTo: 256 * 1024 * 1024)
        let bytes = Array(buf.readableBytesView)
        let value = bytes.isEmpty ? JSON.null : ((try? JSON.parse(bytes)) ?? .string(String(decoding: bytes, as: UTF8.self)))
        guard (200..<300).contains(Int(resp.status.code)) else { throw Self.statusError(value, code: Int(resp.status.code)) }
        return value
    }

    /// Any request, answered as it came (status, content type, body), with extra headers (for
    /// example `Impersonate-User`): what MetaServer forwards for an edge pod.
    public func raw(method: String, path: String, headers: [(String, String)], body: [UInt8]?,
                    timeout: TimeAmount = .seconds(30)) async throws -> (status: Int, contentType: String, body: [UInt8]) {
        var req = HTTPClientRequest(url: config.server + path)
        req.method = HTTPMethod(rawValue: method)
        req.headers.add(name: "User-Agent", value: "swiftedge/v1")
        if let t = config.token { req.headers.add(name: "Authorization", value: "Bearer \(t)") }
        for (k, v) in headers { req.headers.add(name: k, value: v) }
        if let body { req.body = .bytes(ByteBuffer(bytes: body)) }
        let resp = try await http.execute(req, timeout: timeout)
        let buf = try await resp.body.collect(upTo: 8 * 1024 * 1024)
        return (Int(resp.status.code), resp.headers.first(name: "Content-Type") ?? "", Array(buf.readableBytesView))
    }

    static func statusError(_ v: JSON, code: Int) -> StatusError {
        let reason = v["reason"].stringValue ?? "Unknown"
        let message = v["message"].stringValue ?? v.stringValue ?? "HTTP \(code)"
        return StatusError(.init(reason, code: code), message, name: v["details"]["name"].stringValue,
                           kind: v["details"]["kind"].stringValue)
    }

    public func get(_ type: ResourceType, namespace: String?, name: String) async throws -> JSON {
        try await request(.GET, path(type, namespace: namespace, name: name))
    }

    public func list(_ type: ResourceType, namespace: String?, labelSelector: String?, fieldSelector: String?,
                     limit: Int?, continueToken: String?, resourceVersion: String?) async throws -> JSON
    {
        try await request(.GET, path(type, namespace: namespace) + Self.query([
            ("labelSelector", labelSelector), ("fieldSelector", fieldSelector), ("limit", limit.map(String.init)),
            ("continue", continueToken), ("resourceVersion", resourceVersion),
        ]))
    }

    public func create(_ type: ResourceType, namespace: String?, _ object: JSON, fieldManager: String) async throws -> JSON {
        try await request(.POST, path(type, namespace: namespace) + Self.query([("fieldManager", fieldManager)]), body: object)
    }

    /// POSTs to an object's subresource (`pods/<name>/binding`, `pods/<name>/eviction`).
    @discardableResult
    public func post(_ type: ResourceType, namespace: String?, name: String, subresource: String, _ body: JSON) async throws -> JSON {
        try await request(.POST, path(type, namespace: namespace, name: name, subresource: subresource), body: body)
    }

    public func update(_ type: ResourceType, namespace: String?, _ object: JSON, subresource: String?,
                       fieldManager: String) async throws -> JSON
    {
        let name = object["metadata"]["name"].stringValue ?? ""
        return try await request(.PUT, path(type, namespace: namespace, name: name, subresource: subresource)
            + Self.query([("fieldManager", fieldManager)]), body: object)
    }

    public func patch(_ type: ResourceType, namespace: String?, name: String, body patch: JSON, patchType: PatchType,
                      subresource: String?, fieldManager: String) async throws -> JSON
    {
        try await request(.PATCH, path(type, namespace: namespace, name: name, subresource: subresource)
            + Self.query([("fieldManager", fieldManager)]), body: patch, contentType: patchType.rawValue)
    }

    @discardableResult
    public func delete(_ type: ResourceType, namespace: String?, name: String, options: JSON?) async throws -> JSON {
        try await request(.DELETE, path(type, namespace: namespace, name: name), body: options)
    }

    /// Watches a collection from `resourceVersion`; the sequence ends when the server closes it.
    /// An expired resourceVersion surfaces as a thrown ``StatusError`` with code 410.
    public func watch(_ type: ResourceType, namespace: String?, resourceVersion: String?, labelSelector: String?,
                      fieldSelector: String?, timeoutSeconds: Int) async throws -> KubeWatchStream
    {
        var req = HTTPClientRequest(url: config.server + path(type, namespace: namespace) + Self.query([
            ("watch", "true"), ("allowWatchBookmarks", "true"), ("resourceVersion", resourceVersion),
            ("labelSelector", labelSelector), ("fieldSelector", fieldSelector), ("timeoutSeconds", String(timeoutSeconds)),
        ]))
        if let t = config.token { req.headers.add(name: "Authorization", value: "Bearer \(t)") }
        req.headers.add(name: "Accept", value: "application/json")
        let resp = try await http.execute(req, timeout: .seconds(Int64(timeoutSeconds + 30)))
        guard resp.status.code == 200 else {
            let buf = try await resp.body.collect(upTo: 1024 * 1024)
            throw Self.statusError((try? JSON.parse(Array(buf.readableBytesView))) ?? .null, code: Int(resp.status.code))
        }
        return KubeWatchStream(body: resp.body)
    }
}

/// The events of one watch response, parsed line by line as the consumer iterates.
public struct KubeWatchStream: AsyncSequence, Sendable {
    public typealias Element = KubeWatchEvent
    enum Source: Sendable {
        case http(HTTPClientResponse.Body)
        case events(AsyncThrowingStream<KubeWatchEvent, any Error>)
    }
    let source: Source

    init(body: HTTPClientResponse.Body) { source = .http(body) }
    /// A watch fed by any event stream (in-memory clients); finishing the stream ends the watch,
    /// finishing it with an error throws that error to the consumer.
    public init(_ events: AsyncThrowingStream<KubeWatchEvent, any Error>) { source = .events(events) }

    public struct AsyncIterator: AsyncIteratorProtocol {
        enum Inner {
            case http(HTTPClientResponse.Body.AsyncIterator)
            case events(AsyncThrowingStream<KubeWatchEvent, any Error>.AsyncIterator)
        }
        var inner: Inner
        var buffer: [UInt8] = []

        public mutating func next() async throws -> KubeWatchEvent? {
            guard case .http(var body) = inner else {
                guard case .events(var events) = inner else { return nil }
                defer { inner = .events(events) }
                return try await events.next()
            }
            defer { inner = .http(body) }
            while true {
                while let nl = buffer.firstIndex(of: 0x0A) {
                    let line = Array(buffer[..<nl])
                    buffer.removeFirst(nl + 1)
                    guard !line.isEmpty else { continue }
                    let ev = try JSON.parse(line)
                    let t = ev["type"].stringValue ?? ""
                    if t == "ERROR" {
                        throw HTTPKubeClient.statusError(ev["object"], code: Int(ev["object"]["code"].intValue ?? 500))
                    }
                    if let type = KubeWatchEvent.EventType(rawValue: t) { return KubeWatchEvent(type: type, object: ev["object"]) }
                }
                guard let chunk = try await body.next() else { return nil }
                buffer.append(contentsOf: chunk.readableBytesView)
            }
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        switch source {
        case .http(let body): AsyncIterator(inner: .http(body.makeAsyncIterator()))
        case .events(let events): AsyncIterator(inner: .events(events.makeAsyncIterator()))
        }
    }
}
