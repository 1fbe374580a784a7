import Crypto
import Foundation
import KubeAPI

/// A CSI controller call the cloud makes through a node's CSI plugin (KubeEdge's csidriver →
/// edged path): resource `default/volume/<id>`, operation `createvolume`, `deletevolume`,
/// `controllerpublishvolume` or `controllerunpublishvolume`, content the CSI request as protojson
/// text (a JSON string, as KubeEdge's jsonpb marshalling sends it). KubeEdge's edged always calls
/// the plugin registered as `csi-hostpath`; SwiftEdge names the driver in `route.destination`
/// (`csi:<driver>`), which edgecore ignores.
public struct CSIControllerCall: Sendable, Equatable {
    public enum Operation: Sendable, Equatable, CaseIterable {
        case createVolume, deleteVolume, controllerPublishVolume, controllerUnpublishVolume

        public var wire: CloudEdgeProtocol.Operation {
            switch self {
            case .createVolume: .createVolume
            case .deleteVolume: .deleteVolume
            case .controllerPublishVolume: .controllerPublishVolume
            case .controllerUnpublishVolume: .controllerUnpublishVolume
            }
        }

        public init?(wire: CloudEdgeProtocol.Operation) {
            guard let op = Self.allCases.first(where: { $0.wire == wire }) else { return nil }
            self = op
        }
    }

    /// The driver KubeEdge's edged hard-codes for these calls.
    public static let kubeEdgeDriver = "csi-hostpath"
    static let destinationPrefix = "csi:"

    public var operation: Operation
    /// The driver whose controller service answers (nil: a call from KubeEdge's csidriver).
    public var driver: String?
    /// The `<id>` of `default/volume/<id>` (a fresh id for CreateVolume, the volume id otherwise).
    public var id: String
    /// The CSI request, protojson.
    public var request: String

    public init(operation: Operation, driver: String?, id: String, request: String) {
        self.operation = operation; self.driver = driver; self.id = id; self.request = request
    }

    public func message(id messageID: String = newMessageID()) -> Message {
        Message(id: messageID, sync: true,
                route: Route(source: "cloudhub", destination: driver.map { Self.destinationPrefix + $0 }, group: MessageGroup.resource,
                             operation: operation.wire, resource: "default/\(EdgeResourceKind.volume.wireName)/\(id)"),
                content: .string(request))
    }

    /// Reads a call; nil for a message that is not one.
    public init?(_ m: Message) throws(ProtocolError) {
        guard let op = Operation(wire: m.route.operation) else { return nil }
        let parts = m.route.resource.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[1] == Substring(EdgeResourceKind.volume.wireName), !parts[2].isEmpty else {
            throw ProtocolError("CSI call \(m.id): resource \"\(m.route.resource)\" is not <namespace>/volume/<id>")
        }
        let text: String
        switch m.content {
        case .string(let s): text = s
        case .object: text = String(decoding: m.content.serialized(), as: UTF8.self)
        default: throw ProtocolError("CSI call \(m.id): content is neither a protojson string nor an object")
        }
        var driver: String?
        if let d = m.route.destination, d.hasPrefix(Self.destinationPrefix), d.count > Self.destinationPrefix.count {
            driver = String(d.dropFirst(Self.destinationPrefix.count))
        }
        self.init(operation: op, driver: driver, id: String(parts[2]), request: text)
    }

    /// The node's answer: `response` with the CSI response (snake_case JSON, as edgecore's Go
    /// structs marshal it) or `error` with the error text; `parent_msg_id` is the call's id.
    public static func reply(to call: Message, _ result: Result<JSON, CSICallError>) -> Message {
        var r = call.route
        r.destination = nil
        switch result {
        case .success(let body):
            r.operation = .response
            return Message(parentID: call.id, route: r, content: body)
        case .failure(let e):
            r.operation = .error
            return Message(parentID: call.id, route: r, content: .string(e.description))
        }
    }
}

/// A CSI call that failed, with the gRPC status code name the plugin gave (`NOT_FOUND`, …, or
/// `UNAVAILABLE` when the plugin could not be reached).
public struct CSICallError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: String
    public var message: String
    public init(code: String, message: String) { self.code = code; self.message = message }
    public var description: String { "\(code): \(message)" }

    /// Reads the text of an `error` reply (`CODE: message`, or a bare message from another peer).
    public init(replyText text: String) {
        if let colon = text.firstIndex(of: ":"), text[..<colon].allSatisfy({ $0.isUppercase || $0 == "_" }), colon != text.startIndex {
            self.init(code: String(text[..<colon]), message: text[text.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        } else {
            self.init(code: "UNKNOWN", message: text)
        }
    }
}

/// The names kubelet's CSI volume plugin and kube's attach-detach controller derive from a
/// volume; cloud and node must agree on them.
public enum CSINames {
    static func sha256(_ s: String) -> String { SHA256.hash(data: Array(s.utf8)).map { String(format: "%02x", $0) }.joined() }

    /// The VolumeAttachment of a volume on a node: `csi-<sha256(handle + driver + node)>`.
    public static func attachment(volumeHandle: String, driver: String, node: String) -> String {
        "csi-" + sha256(volumeHandle + driver + node)
    }

    /// The directory a volume is staged below: `<plugins>/kubernetes.io/csi/<driver>/<sha256(handle)>`
    /// (its `globalmount` is the staging path, `vol_data.json` beside it).
    public static func stagingDirectory(pluginsDirectory: String, driver: String, volumeHandle: String) -> String {
        "\(pluginsDirectory)/kubernetes.io/csi/\(driver)/\(sha256(volumeHandle))"
    }
}
