import Foundation
import KubeAPI
import KubeProtobuf
import Yams

enum BodyDecoding {
    /// Bodies are JSON, YAML or Kubernetes protobuf; CBOR gets 415.
    static func checkMediaType(_ contentType: String?) throws(StatusError) {
        let ct = (contentType ?? "application/json").lowercased()
        if ct.contains("cbor") {
            throw StatusError(.unsupportedMediaType, "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml")
        }
    }

    /// Decodes a request body as JSON, or YAML when the content type says so (or the body is not JSON).
    static func decode(_ body: [UInt8], contentType: String?) throws(StatusError) -> JSON {
        let ct = contentType?.lowercased() ?? ""
        if ct.contains("protobuf") {
            do { return try KubeProtobuf.decode(body) } catch {
                throw StatusError.badRequest("the body of the request could not be decoded as protobuf: \(error.description)")
            }
        }
        let first = body.first { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }
        if ct.contains("yaml") && first != UInt8(ascii: "{") && first != UInt8(ascii: "[") {
            return try yaml(body)
        }
        do {
            return try JSON.parse(body)
        } catch {
            if ct.contains("yaml") { return try yaml(body) }
            throw StatusError.badRequest("the body of the request could not be decoded as JSON: \(error.description)")
        }
    }

    static func yaml(_ body: [UInt8]) throws(StatusError) -> JSON {
        let text = String(decoding: body, as: UTF8.self)
        do {
            guard let node = try Yams.compose(yaml: text) else { return .null }
            return try fromYAML(node)
        } catch let e as StatusError {
            throw e
        } catch {
            throw StatusError.badRequest("error converting YAML to JSON: \(error)")
        }
    }

    static func fromYAML(_ node: Node) throws -> JSON {
        switch node {
        case .scalar(let s):
            if s.style == .doubleQuoted || s.style == .singleQuoted || s.style == .literal || s.style == .folded {
                return .string(s.string)
            }
            let v = s.string
            switch v {
            case "null", "~", "": return .null
            case "true", "True", "TRUE": return .bool(true)
            case "false", "False", "FALSE": return .bool(false)
            default: break
            }
            if let i = Int64(v) { return .int(i) }
            if v.first.map({ $0.isNumber || $0 == "-" || $0 == "." }) == true, let d = Double(v), !v.hasPrefix("0x") {
                return .double(d)
            }
            return .string(v)
        case .mapping(let m):
            var o: [String: JSON] = [:]
            for (k, v) in m {
                guard case .scalar(let ks) = k else { throw StatusError.badRequest("YAML map keys must be scalars") }
                o[ks.string] = try fromYAML(v)
            }
            return .object(o)
        case .sequence(let seq):
            return .array(try seq.map(fromYAML))
        case .alias:
            throw StatusError.badRequest("YAML aliases are not supported")
        }
    }
}
