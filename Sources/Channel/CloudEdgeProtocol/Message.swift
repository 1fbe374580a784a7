import KubeAPI
import Synchronization

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
    /// A servicebus call carries its HTTP method as the operation (KubeEdge's router).
    case httpGet = "GET", httpPost = "POST", httpPut = "PUT", httpDelete = "DELETE", httpPatch = "PATCH", httpHead = "HEAD"
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

    /// The cloud's answer to an edge request (KubeEdge's edge controller answers edgecore's
    /// SendSync calls this way): `response` from `edgecontroller`, group `resource`, the request's
    /// resource echoed, `parent_msg_id` = the request's id.
    public func response(content: JSON, resourceVersion: String? = nil) -> Message {
        Message(parentID: id, resourceVersion: resourceVersion,
                route: Route(source: MessageSource.edgeController, group: MessageGroup.resource, operation: .response, resource: route.resource),
                content: content)
    }

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
        guard let op = Operation(rawValue: opName) else {
            throw ProtocolError("message \(id): unknown operation \"\(opName)\"", reason: .unknownOperation)
        }
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
    public enum Reason: Sendable, Equatable {
        /// Not well-formed (JSON, header, resource string, content).
        case malformed
        /// Well-formed, but of a resource kind outside the vocabulary (``EdgeResourceKind``).
        case unknownKind
        /// Well-formed, about a synced kind, but not an insert/update/delete (a query, an error
        /// reply…): nothing to store.
        case notAnObjectChange
        /// Well-formed, with an operation outside ``Operation`` (edgecore's task manager sends
        /// some): skipped, as KubeEdge skips what it does not handle; the connection goes on.
        case unknownOperation
    }
    public var message: String
    public var reason: Reason
    public init(_ message: String, reason: Reason = .malformed) { self.message = message; self.reason = reason }
    public var description: String { message }
}

/// Message ids in UUID (version 4) form, as beehive's `NewMessage` uses for `msg_id`: 64 random
/// bits drawn once per process and a 64-bit counter, mixed so that ids look random. Unique within
/// the process and, with overwhelming probability, across processes — without a system call per
/// message (drawing 16 random bytes per id cost 16 `getrandom` calls).
enum MessageIDs {
    static let seed: (UInt64, UInt64) = {
        var g = SystemRandomNumberGenerator()
        return (g.next(), g.next())
    }()
    static let counter = Atomic<UInt64>(0)
    static let hexDigits = Array("0123456789abcdef".utf8)

    /// SplitMix64 finaliser: a bijection, so distinct counters give distinct outputs.
    static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    static func next() -> String {
        let n = counter.wrappingAdd(1, ordering: .relaxed).newValue
        let hi = seed.0
        let lo = mix(n ^ seed.1)
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in 0..<8 { bytes[i] = UInt8(truncatingIfNeeded: hi >> (56 - 8 * UInt64(i))) }
        for i in 0..<8 { bytes[8 + i] = UInt8(truncatingIfNeeded: lo >> (56 - 8 * UInt64(i))) }
        bytes[6] = (bytes[6] & 0x0F) | 0x40
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        var out: [UInt8] = []
        out.reserveCapacity(36)
        for (i, b) in bytes.enumerated() {
            if i == 4 || i == 6 || i == 8 || i == 10 { out.append(UInt8(ascii: "-")) }
            out.append(hexDigits[Int(b >> 4)])
            out.append(hexDigits[Int(b & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// A new message id (UUID version 4 form).
public func newMessageID() -> String { MessageIDs.next() }

/// The resource string of an edge-side message, parsed: `<namespace>/<type>[/<name>]`
/// (cluster-scoped objects use namespace `null`, as KubeEdge does).
/// The same string is the key of the object in the node's store.
public struct ResourceRef: Sendable, Hashable, CustomStringConvertible {
    public var namespace: String?
    public var kind: EdgeResourceKind
    public var name: String?

    public init(namespace: String?, kind: EdgeResourceKind, name: String? = nil) { self.namespace = namespace; self.kind = kind; self.name = name }

    /// Parses a resource string; a malformed one and one of a kind outside the vocabulary are
    /// refused (``ProtocolError/reason`` tells which).
    public init(parsing s: String) throws(ProtocolError) {
        let parts = s.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2 || parts.count == 3, !parts[1].isEmpty else { throw ProtocolError("malformed resource \"\(s)\"") }
        namespace = parts[0] == "null" || parts[0].isEmpty ? nil : parts[0]
        kind = try EdgeResourceKind(wireName: parts[1])
        name = parts.count == 3 ? parts[2] : nil
    }

    public var description: String {
        var s = "\(namespace ?? "null")/\(kind.wireName)"
        if let name { s += "/\(name)" }
        return s
    }
}

/// One object an edge node holds: its meta key (`<ns>/<type>/<name>`), uid and version.
public struct InventoryItem: Sendable, Equatable {
    public var key: String
    public var uid: String
    public var resourceVersion: UInt64
    public init(key: String, uid: String, resourceVersion: UInt64) { self.key = key; self.uid = uid; self.resourceVersion = resourceVersion }
}

/// What an edge node holds, sent upstream on every connect (a SwiftEdge extension: KubeEdge's
/// cloud trusts its ObjectSync records alone, which lag a crash and know nothing of a node that
/// lost its store). Route: `query` of `null/objectsync/<node>` from `metamanager`; content
/// `{"session", "part", "parts", "items": [{"key", "uid", "resourceVersion"}]}`, in parts of at
/// most `partSize` items so that every message stays far below the 1 MiB frame limit.
public struct InventoryPart: Sendable, Equatable {
    public var session: String
    public var part: Int
    public var parts: Int
    public var items: [InventoryItem]

    public static let partSize = 2000

    public init(session: String, part: Int, parts: Int, items: [InventoryItem]) {
        self.session = session; self.part = part; self.parts = parts; self.items = items
    }

    /// Splits an inventory into messages (at least one, so an empty store is reported too).
    public static func messages(node: String, items: [InventoryItem], session: String = newMessageID()) -> [Message] {
        let chunks = stride(from: 0, to: max(items.count, 1), by: partSize).map { Array(items[$0..<min($0 + partSize, items.count)]) }
        return chunks.enumerated().map { i, chunk in
            InventoryPart(session: session, part: i + 1, parts: chunks.count, items: chunk).message(node: node)
        }
    }

    public func message(node: String) -> Message {
        UpstreamReport.inventory(node: node, self).message(source: MessageSource.metaManager)
    }

    /// The message content: `{"session", "part", "parts", "items": [{"key", "uid", "resourceVersion"}]}`.
    public var content: JSON {
        let list: [JSON] = items.map { ["key": .string($0.key), "uid": .string($0.uid), "resourceVersion": .string(String($0.resourceVersion))] }
        return ["session": .string(session), "part": .int(Int64(part)), "parts": .int(Int64(parts)), "items": .array(list)]
    }

    /// Reads the content of an inventory message.
    public init(content: JSON) throws(ProtocolError) {
        guard let session = content["session"].stringValue, let part = content["part"].intValue, let parts = content["parts"].intValue,
              part >= 1, part <= parts, parts <= 100_000, let list = content["items"].arrayValue
        else { throw ProtocolError("malformed inventory: expected session, part ≤ parts and items") }
        var items: [InventoryItem] = []
        for item in list {
            guard let key = item["key"].stringValue, let uid = item["uid"].stringValue,
                  let rv = item["resourceVersion"].stringValue.flatMap({ UInt64($0) })
            else { throw ProtocolError("malformed inventory item \(item.serializedString())") }
            items.append(InventoryItem(key: key, uid: uid, resourceVersion: rv))
        }
        self.init(session: session, part: Int(part), parts: Int(parts), items: items)
    }
}
