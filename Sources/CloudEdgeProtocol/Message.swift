import KubeAPI

/// Operations KubeEdge's cloud and edge exchange (beehive model, edge and cloudhub extras).
/// Anything else on the wire is refused.
public enum Operation: String, Sendable, Hashable, CaseIterable {
    case insert, delete, query, update, patch, upload, response, error
    case unholdUpgrade = "unhold-upgrade"
    case connect, subscribe, unsubscribe, message, publish, keepalive, start, stop
    case getResult = "get_result"
    case get, list, detail, delta, document, updated, deleted, connected, disconnected
    case watch, create, updateStatus = "updatestatus", applicationResponse
    case createVolume = "createvolume", deleteVolume = "deletevolume"
    case controllerPublishVolume = "controllerpublishvolume", controllerUnpublishVolume = "controllerunpublishvolume"
}

/// Where a message goes: KubeEdge's `route` object.
public struct Route: Sendable, Hashable {
    /// Sending module (`edgecontroller`, `websocket`, `edged`, …).
    public var source: String
    public var destination: String?
    /// Message group on the wire: `resource`, `func`, `user`, `twin`, `taskmanager`, …
    public var group: String
    public var operation: Operation
    /// The resource string (`<namespace>/<type>/<name>` at the edge); see ``ResourceRef``.
    public var resource: String

    public init(source: String, destination: String? = nil, group: String, operation: Operation, resource: String) {
        self.source = source; self.destination = destination; self.group = group; self.operation = operation; self.resource = resource
    }
}

/// One message of the cloud–edge channel. JSON (`header`/`route`/`content`) is only its wire
/// encoding (``Message/wireJSON`` and ``Message/init(wire:)``).
public struct Message: Sendable, Hashable {
    public var id: String
    public var parentID: String?
    /// Milliseconds since the epoch.
    public var timestamp: Int64
    /// The resourceVersion of the Kubernetes object carried, for reliable delivery.
    public var resourceVersion: String?
    public var sync: Bool
    public var type: String?
    public var route: Route
    public var content: JSON

    public init(id: String = newMessageID(), parentID: String? = nil, timestamp: Int64 = KubeTime.now().micros / 1000,
                resourceVersion: String? = nil, sync: Bool = false, type: String? = nil, route: Route, content: JSON)
    {
        self.id = id; self.parentID = parentID; self.timestamp = timestamp; self.resourceVersion = resourceVersion
        self.sync = sync; self.type = type; self.route = route; self.content = content
    }

    /// The acknowledgement KubeEdge expects: route copied, operation `response`, content `"OK"`,
    /// `parent_msg_id` = this message's id.
    public func ack() -> Message {
        var r = route
        r.operation = .response
        return Message(parentID: id, route: r, content: "OK")
    }

    public var isAck: Bool { route.operation == .response && content == "OK" && parentID != nil }

    /// The KubeEdge wire form.
    public var wireJSON: JSON {
        var header: JSON = ["msg_id": .string(id), "timestamp": .int(timestamp)]
        if let parentID, !parentID.isEmpty { header["parent_msg_id"] = .string(parentID) }
        if let resourceVersion, !resourceVersion.isEmpty { header["resourceversion"] = .string(resourceVersion) }
        if sync { header["sync"] = true }
        if let type, !type.isEmpty { header["type"] = .string(type) }
        var r: JSON = ["operation": .string(route.operation.rawValue)]
        if !route.source.isEmpty { r["source"] = .string(route.source) }
        if let d = route.destination, !d.isEmpty { r["destination"] = .string(d) }
        if !route.group.isEmpty { r["group"] = .string(route.group) }
        if !route.resource.isEmpty { r["resource"] = .string(route.resource) }
        return ["header": header, "route": r, "content": content]
    }

    public func encoded() -> [UInt8] { wireJSON.serialized() }

    /// Decodes the wire form, refusing what KubeEdge would not produce.
    public init(wire v: JSON) throws(ProtocolError) {
        guard v.isObject else { throw ProtocolError("message is not a JSON object") }
        let h = v["header"], r = v["route"]
        guard let id = h["msg_id"].stringValue, !id.isEmpty else { throw ProtocolError("message has no header.msg_id") }
        guard let opName = r["operation"].stringValue else { throw ProtocolError("message \(id) has no route.operation") }
        guard let op = Operation(rawValue: opName) else { throw ProtocolError("message \(id): unknown operation \"\(opName)\"") }
        if !h["timestamp"].isNull && h["timestamp"].intValue == nil { throw ProtocolError("message \(id): header.timestamp is not an integer") }
        self.init(id: id, parentID: h["parent_msg_id"].stringValue.flatMap { $0.isEmpty ? nil : $0 },
                  timestamp: h["timestamp"].intValue ?? 0, resourceVersion: h["resourceversion"].stringValue.flatMap { $0.isEmpty ? nil : $0 },
                  sync: h["sync"].boolValue ?? false, type: h["type"].stringValue,
                  route: Route(source: r["source"].stringValue ?? "", destination: r["destination"].stringValue,
                               group: r["group"].stringValue ?? "", operation: op, resource: r["resource"].stringValue ?? ""),
                  content: v["content"])
    }

    public init(bytes: some Collection<UInt8>) throws(ProtocolError) {
        let v: JSON
        do { v = try JSON.parse(bytes) } catch { throw ProtocolError("malformed JSON: \(error)") }
        try self.init(wire: v)
    }
}

/// A malformed or unacceptable message.
public struct ProtocolError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A random UUID (version 4) string, as beehive's `NewMessage` uses for `msg_id`.
public func newMessageID() -> String {
    var g = SystemRandomNumberGenerator()
    var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) }
    bytes[6] = (bytes[6] & 0x0F) | 0x40
    bytes[8] = (bytes[8] & 0x3F) | 0x80
    let hex = bytes.map { b -> String in let s = String(b, radix: 16); return s.count == 1 ? "0" + s : s }.joined()
    var out = ""
    for (i, c) in hex.enumerated() {
        if [8, 12, 16, 20].contains(i) { out.append("-") }
        out.append(c)
    }
    return out
}

/// The resource string of an edge-side message, parsed: `<namespace>/<type>[/<name>]`
/// (cluster-scoped objects use namespace `null`, as KubeEdge does).
public struct ResourceRef: Sendable, Hashable, CustomStringConvertible {
    public var namespace: String?
    public var type: String
    public var name: String?

    public init(namespace: String?, type: String, name: String? = nil) { self.namespace = namespace; self.type = type; self.name = name }

    public init(parsing s: String) throws(ProtocolError) {
        let parts = s.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2 || parts.count == 3, !parts[1].isEmpty else { throw ProtocolError("malformed resource \"\(s)\"") }
        namespace = parts[0] == "null" || parts[0].isEmpty ? nil : parts[0]
        type = parts[1]
        name = parts.count == 3 ? parts[2] : nil
    }

    public var description: String {
        var s = "\(namespace ?? "null")/\(type)"
        if let name { s += "/\(name)" }
        return s
    }
}
