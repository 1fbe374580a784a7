import Foundation
import KubeAPI

/// An HTTP request carried by the router (KubeEdge's `HTTPRequest`: `header`, `method`, `body` in base64).
public struct RouterHTTPRequest: Codable, Sendable, Equatable {
    public var header: [String: [String]]
    public var method: String
    /// Base64, as Go encodes `[]byte`.
    public var body: String

    public init(method: String, header: [String: [String]] = [:], body: [UInt8] = []) {
        self.method = method; self.header = header; self.body = Data(body).base64EncodedString()
    }

    public var bodyBytes: [UInt8] { Data(base64Encoded: body).map { Array($0) } ?? [] }

    /// The headers to pass on when the request is made again elsewhere: without the
    /// connection's own (`Host`, `Content-Length`, `Connection`, `Transfer-Encoding`), which the
    /// new connection sets itself.
    public var forwardedHeaders: [(name: String, value: String)] {
        let hopByHop: Set<String> = ["host", "content-length", "connection", "transfer-encoding"]
        return header.sorted { $0.key < $1.key }.filter { !hopByHop.contains($0.key.lowercased()) }.flatMap { k, vs in vs.map { (k, $0) } }
    }

    enum CodingKeys: String, CodingKey { case header, method, body }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        header = try c.decodeIfPresent([String: [String]].self, forKey: .header) ?? [:]
        method = try c.decodeIfPresent(String.self, forKey: .method) ?? "GET"
        body = try c.decodeIfPresent(String.self, forKey: .body) ?? ""
    }
}

/// An HTTP response carried by the router (KubeEdge's `HTTPResponse`: `header`, `status_code`, `body` in base64).
public struct RouterHTTPResponse: Codable, Sendable, Equatable {
    public var header: [String: [String]]
    public var statusCode: Int
    public var body: String

    public init(statusCode: Int, header: [String: [String]] = [:], body: [UInt8] = []) {
        self.statusCode = statusCode; self.header = header; self.body = Data(body).base64EncodedString()
    }

    public var bodyBytes: [UInt8] { Data(base64Encoded: body).map { Array($0) } ?? [] }

    enum CodingKeys: String, CodingKey { case header, statusCode = "status_code", body }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        header = try c.decodeIfPresent([String: [String]].self, forKey: .header) ?? [:]
        statusCode = try c.decodeIfPresent(Int.self, forKey: .statusCode) ?? 500
        body = try c.decodeIfPresent(String.self, forKey: .body) ?? ""
    }
}

/// KubeEdge's router messages (group `user`), decoded once: the cloud's Rules move data between
/// its REST ingress and REST endpoints, and a node's eventbus (MQTT) and servicebus (HTTP).
/// Resource strings are KubeEdge's: `node/<node>/<topic>` (eventbus), `node/<node>/<port>:<path>`
/// (servicebus calls), `bus/node/<node>/<topic>` and `servicebus/node/<node>/<url>` (upstream).
public enum RouterMessage: Sendable, Equatable {
    // Cloud → edge.
    /// Subscribe the node's eventbus to an MQTT topic (a Rule with an eventbus source).
    case subscribe(node: String, topic: String)
    case unsubscribe(node: String, topic: String)
    /// Publish `payload` on an MQTT topic at the node (a Rule with an eventbus target).
    case publish(node: String, topic: String, payload: String)
    /// Call `http://127.0.0.1:<port><path>` on the node and answer with the response (servicebus target).
    case serviceCall(node: String, port: Int, path: String, request: RouterHTTPRequest)
    /// Allow (or stop allowing) apps on the node to reach `url` through the servicebus (servicebus source).
    case allowTarget(node: String, url: String)
    case disallowTarget(node: String, url: String)
    // Edge → cloud.
    /// A message an app published on a subscribed topic.
    case event(node: String, topic: String, payload: String)
    /// A request an app sent to the servicebus for an allowed `url`.
    case serviceRequest(node: String, url: String, request: RouterHTTPRequest)
    /// The answer to a `serviceCall` or `serviceRequest` (the message's parent id says which).
    case serviceResponse(RouterHTTPResponse)

    public static let group = "user"
    public static let eventBusSource = "router_eventbus"
    public static let serviceBusSource = "router_servicebus"
    public static let edgeEventBus = "eventbus"
    public static let edgeServiceBus = "servicebus"

    static let methods: [Operation: String] = [.httpGet: "GET", .httpPost: "POST", .httpPut: "PUT", .httpDelete: "DELETE",
                                               .httpPatch: "PATCH", .httpHead: "HEAD"]

    /// Decodes a router message; nil for a message of another group. Throws for a malformed one.
    public init?(_ m: Message) throws(ProtocolError) {
        guard m.route.group == Self.group else { return nil }
        let r = m.route.resource
        func split(_ prefix: String) throws(ProtocolError) -> (node: String, rest: String) {
            guard r.hasPrefix(prefix) else { throw ProtocolError("router resource \"\(r)\" does not start with \(prefix)") }
            let tail = r.dropFirst(prefix.count)
            guard let slash = tail.firstIndex(of: "/"), slash != tail.startIndex, tail.index(after: slash) != tail.endIndex else {
                throw ProtocolError("router resource \"\(r)\" names no node and target")
            }
            return (String(tail[..<slash]), String(tail[tail.index(after: slash)...]))
        }
        func content<T: Decodable>(_ type: T.Type) throws(ProtocolError) -> T {
            do { return try JSONValueDecoder().decode(T.self, from: m.content) } catch {
                throw ProtocolError("router message \(m.id): content is not a \(T.self): \(error)")
            }
        }
        switch m.route.operation {
        case .response:
            self = .serviceResponse(try content(RouterHTTPResponse.self))
        case .subscribe, .unsubscribe:
            let (node, topic) = try split("node/")
            self = m.route.operation == .subscribe ? .subscribe(node: node, topic: topic) : .unsubscribe(node: node, topic: topic)
        case .publish:
            let (node, topic) = try split("node/")
            self = .publish(node: node, topic: topic, payload: m.content.stringValue ?? m.content.serializedString())
        case .start, .stop:
            let (node, url) = try split("node/")
            self = m.route.operation == .start ? .allowTarget(node: node, url: url) : .disallowTarget(node: node, url: url)
        case .upload:
            if r.hasPrefix("bus/") {
                let (node, topic) = try split("bus/node/")
                self = .event(node: node, topic: topic, payload: m.content.stringValue ?? m.content.serializedString())
            } else {
                let (node, url) = try split("servicebus/node/")
                self = .serviceRequest(node: node, url: url, request: try content(RouterHTTPRequest.self))
            }
        default:
            guard Self.methods[m.route.operation] != nil else { throw ProtocolError("router message \(m.id): operation \(m.route.operation.rawValue) is not a router operation") }
            let (node, target) = try split("node/")
            guard let colon = target.firstIndex(of: ":"), let port = Int(target[..<colon]), (1...65535).contains(port) else {
                throw ProtocolError("servicebus resource \"\(r)\" has no <port>:<path>")
            }
            var path = String(target[target.index(after: colon)...])
            if !path.hasPrefix("/") { path = "/" + path }
            self = .serviceCall(node: node, port: port, path: path, request: try content(RouterHTTPRequest.self))
        }
    }

    /// The node the message is for or from (nil for a response, which its parent id places).
    public var node: String? {
        switch self {
        case .subscribe(let n, _), .unsubscribe(let n, _), .publish(let n, _, _), .serviceCall(let n, _, _, _), .allowTarget(let n, _),
             .disallowTarget(let n, _), .event(let n, _, _), .serviceRequest(let n, _, _):
            n
        case .serviceResponse: nil
        }
    }

    /// The message (a response answers `parentID`).
    public func message(id: String = newMessageID(), parentID: String? = nil) -> Message {
        func encode(_ v: some Encodable) -> JSON { (try? JSON.parse(Array(JSONEncoder().encode(v)))) ?? .null }
        let (source, op, resource, content): (String, Operation, String, JSON) = switch self {
        case .subscribe(let n, let t): (Self.eventBusSource, .subscribe, "node/\(n)/\(t)", "")
        case .unsubscribe(let n, let t): (Self.eventBusSource, .unsubscribe, "node/\(n)/\(t)", "")
        case .publish(let n, let t, let p): (Self.eventBusSource, .publish, "node/\(n)/\(t)", .string(p))
        case .serviceCall(let n, let port, let path, let req):
            (Self.serviceBusSource, Self.methods.first { $0.value == req.method.uppercased() }?.key ?? .httpPost, "node/\(n)/\(port):\(path)", encode(req))
        case .allowTarget(let n, let u): (Self.serviceBusSource, .start, "node/\(n)/\(u)", "")
        case .disallowTarget(let n, let u): (Self.serviceBusSource, .stop, "node/\(n)/\(u)", "")
        case .event(let n, let t, let p): (Self.edgeEventBus, .upload, "bus/node/\(n)/\(t)", .string(p))
        case .serviceRequest(let n, let u, let req): (Self.edgeServiceBus, .upload, "servicebus/node/\(n)/\(u)", encode(req))
        case .serviceResponse(let resp): (Self.edgeServiceBus, .response, "", encode(resp))
        }
        return Message(id: id, parentID: parentID, route: Route(source: source, group: Self.group, operation: op, resource: resource), content: content)
    }
}
