/// A Kubernetes API error, rendered as a `meta/v1 Status` object with the matching HTTP code.
public struct StatusError: Error, Sendable, CustomStringConvertible {
    /// The `reason` field of a Status (NotFound, AlreadyExists, Conflict, Invalid, ...).
    public struct Reason: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public let code: Int
        public init(_ rawValue: String, code: Int) { self.rawValue = rawValue; self.code = code }
        public var description: String { rawValue }

        public static let notFound = Reason("NotFound", code: 404)
        public static let alreadyExists = Reason("AlreadyExists", code: 409)
        public static let conflict = Reason("Conflict", code: 409)
        public static let invalid = Reason("Invalid", code: 422)
        public static let badRequest = Reason("BadRequest", code: 400)
        public static let methodNotAllowed = Reason("MethodNotAllowed", code: 405)
        public static let gone = Reason("Gone", code: 410)
        public static let expired = Reason("Expired", code: 410)
        public static let unsupportedMediaType = Reason("UnsupportedMediaType", code: 415)
        public static let notAcceptable = Reason("NotAcceptable", code: 406)
        public static let unauthorized = Reason("Unauthorized", code: 401)
        public static let forbidden = Reason("Forbidden", code: 403)
        public static let tooManyRequests = Reason("TooManyRequests", code: 429)
        public static let requestEntityTooLarge = Reason("RequestEntityTooLarge", code: 413)
        public static let internalError = Reason("InternalError", code: 500)
        public static let timeout = Reason("Timeout", code: 504)
        public static let serviceUnavailable = Reason("ServiceUnavailable", code: 503)
    }

    /// One entry of `details.causes`.
    public struct Cause: Sendable {
        public var reason: String
        public var message: String
        public var field: String?
        public init(reason: String, message: String, field: String? = nil) {
            self.reason = reason; self.message = message; self.field = field
        }
    }

    public var reason: Reason
    public var message: String
    public var name: String?
    public var group: String?
    public var kind: String?
    public var causes: [Cause]
    public var codeOverride: Int?

    public init(_ reason: Reason, _ message: String, name: String? = nil, group: String? = nil,
                kind: String? = nil, causes: [Cause] = [], code: Int? = nil) {
        self.reason = reason; self.message = message; self.name = name; self.group = group
        self.kind = kind; self.causes = causes; self.codeOverride = code
    }

    public var code: Int { codeOverride ?? reason.code }
    public var description: String { "\(reason.rawValue) (\(code)): \(message)" }

    /// The `Status` object for this error.
    public var status: JSON {
        var details: [String: JSON] = [:]
        if let name { details["name"] = .string(name) }
        if let group, !group.isEmpty { details["group"] = .string(group) }
        if let kind { details["kind"] = .string(kind) }
        if !causes.isEmpty {
            details["causes"] = .array(causes.map { c in
                var o: [String: JSON] = ["reason": .string(c.reason), "message": .string(c.message)]
                if let f = c.field { o["field"] = .string(f) }
                return .object(o)
            })
        }
        var o: [String: JSON] = [
            "kind": "Status", "apiVersion": "v1", "metadata": .emptyObject, "status": "Failure",
            "message": .string(message), "reason": .string(reason.rawValue), "code": .int(Int64(code)),
        ]
        if !details.isEmpty { o["details"] = .object(details) }
        return .object(o)
    }

    // MARK: Constructors in kube-apiserver's wording

    static func qualified(_ resource: String, _ group: String) -> String {
        group.isEmpty ? resource : "\(resource).\(group)"
    }

    public static func notFound(_ resource: String, group: String = "", name: String) -> StatusError {
        StatusError(.notFound, "\(qualified(resource, group)) \"\(name)\" not found", name: name, group: group, kind: resource)
    }

    public static func alreadyExists(_ resource: String, group: String = "", name: String) -> StatusError {
        StatusError(.alreadyExists, "\(qualified(resource, group)) \"\(name)\" already exists", name: name, group: group, kind: resource)
    }

    public static func conflict(_ resource: String, group: String = "", name: String, _ why: String =
        "the object has been modified; please apply your changes to the latest version and try again") -> StatusError
    {
        StatusError(.conflict, "Operation cannot be fulfilled on \(qualified(resource, group)) \"\(name)\": \(why)",
                    name: name, group: group, kind: resource)
    }

    public static func invalid(kind: String, group: String = "", name: String, causes: [Cause]) -> StatusError {
        let list = causes.map { c in c.field.map { "\($0): \(c.message)" } ?? c.message }.joined(separator: ", ")
        let q = group.isEmpty ? kind : "\(kind).\(group)"
        return StatusError(.invalid, "\(q) \"\(name)\" is invalid: \(list)",
                           name: name, group: group, kind: kind, causes: causes)
    }

    public static func badRequest(_ message: String) -> StatusError { StatusError(.badRequest, message) }
}

