import Foundation
import KubeAPI
import KubeAuth
import Synchronization

/// kube-apiserver's audit policy (`audit.k8s.io/v1` Policy, `--audit-policy-file`): the first rule
/// that matches a request decides its level; no match is `None`. Levels: None, Metadata (who,
/// what, when, the answer's code), Request (and the request body), RequestResponse (and the
/// response body). `omitStages` at the policy and the rule level.
public struct AuditPolicy: Sendable, Equatable {
    public enum Level: String, Sendable, Comparable {
        case none = "None", metadata = "Metadata", request = "Request", requestResponse = "RequestResponse"
        public static func < (a: Level, b: Level) -> Bool { a.rank < b.rank }
        var rank: Int { switch self { case .none: 0; case .metadata: 1; case .request: 2; case .requestResponse: 3 } }
    }
    public enum Stage: String, Sendable, Hashable { case requestReceived = "RequestReceived", responseStarted = "ResponseStarted",
                                                         responseComplete = "ResponseComplete", panic = "Panic" }

    public struct GroupResources: Sendable, Equatable {
        var group: String
        var resources: [String]
        var resourceNames: [String]
    }

    public struct Rule: Sendable, Equatable {
        var level: Level
        var users: [String]
        var userGroups: [String]
        var verbs: [String]
        var resources: [GroupResources]
        var namespaces: [String]
        var nonResourceURLs: [String]
        var omitStages: Set<Stage>
    }

    var rules: [Rule]
    var omitStages: Set<Stage>

    /// Reads a Policy document (YAML or JSON); a clear error names what is wrong.
    public init(document: [UInt8]) throws(StatusError) {
        let doc = try BodyDecoding.decode(document, contentType: "application/yaml")
        func fail(_ why: String) -> StatusError { StatusError.badRequest("audit policy: \(why)") }
        guard doc["kind"].stringValue == "Policy", ["audit.k8s.io/v1", "audit.k8s.io/v1beta1"].contains(doc["apiVersion"].stringValue ?? "") else {
            throw fail("expected kind Policy of apiVersion audit.k8s.io/v1, got \(doc["kind"].stringValue ?? "nothing") \(doc["apiVersion"].stringValue ?? "")")
        }
        func strings(_ v: JSON, _ what: String) throws(StatusError) -> [String] {
            if v.isNull { return [] }
            guard let a = v.arrayValue else { throw fail("\(what) must be a list of strings") }
            var out: [String] = []
            for x in a {
                guard let s = x.stringValue else { throw fail("\(what) must be a list of strings") }
                out.append(s)
            }
            return out
        }
        func stages(_ v: JSON, _ what: String) throws(StatusError) -> Set<Stage> {
            var out = Set<Stage>()
            for s in try strings(v, what) {
                guard let st = Stage(rawValue: s) else { throw fail("\(what): unknown stage \"\(s)\"") }
                out.insert(st)
            }
            return out
        }
        omitStages = try stages(doc["omitStages"], "omitStages")
        var parsed: [Rule] = []
        guard let list = doc["rules"].arrayValue, !list.isEmpty else { throw fail("rules: at least one rule is required") }
        for (i, r) in list.enumerated() {
            guard let ls = r["level"].stringValue, let level = Level(rawValue: ls) else {
                throw fail("rules[\(i)].level must be one of None, Metadata, Request, RequestResponse")
            }
            var groups: [GroupResources] = []
            for (j, g) in (r["resources"].arrayValue ?? []).enumerated() {
                groups.append(GroupResources(group: g["group"].stringValue ?? "", resources: try strings(g["resources"], "rules[\(i)].resources[\(j)].resources"),
                                             resourceNames: try strings(g["resourceNames"], "rules[\(i)].resources[\(j)].resourceNames")))
            }
            let nonResource = try strings(r["nonResourceURLs"], "rules[\(i)].nonResourceURLs")
            if !nonResource.isEmpty && (!groups.isEmpty || !r["namespaces"].isNull) {
                throw fail("rules[\(i)]: nonResourceURLs may not be combined with resources or namespaces")
            }
            parsed.append(Rule(level: level, users: try strings(r["users"], "rules[\(i)].users"),
                               userGroups: try strings(r["userGroups"], "rules[\(i)].userGroups"), verbs: try strings(r["verbs"], "rules[\(i)].verbs"),
                               resources: groups, namespaces: try strings(r["namespaces"], "rules[\(i)].namespaces"), nonResourceURLs: nonResource,
                               omitStages: try stages(r["omitStages"], "rules[\(i)].omitStages")))
        }
        rules = parsed
    }

    /// The level and omitted stages for a request (kube's policy rule evaluator).
    public func decide(_ a: RequestAttributes) -> (level: Level, omit: Set<Stage>) {
        for r in rules where Self.matches(r, a) { return (r.level, omitStages.union(r.omitStages)) }
        return (.none, omitStages)
    }

    static func matches(_ r: Rule, _ a: RequestAttributes) -> Bool {
        if !r.users.isEmpty && !r.users.contains(a.user.username) { return false }
        if !r.userGroups.isEmpty && !r.userGroups.contains(where: { a.user.groups.contains($0) }) { return false }
        if !r.verbs.isEmpty && !r.verbs.contains(a.verb) { return false }
        if !r.nonResourceURLs.isEmpty {
            guard !a.isResourceRequest else { return false }
            return r.nonResourceURLs.contains { p in p == "*" || p == a.path || (p.hasSuffix("*") && a.path.hasPrefix(String(p.dropLast()))) }
        }
        if r.resources.isEmpty && r.namespaces.isEmpty { return true }
        guard a.isResourceRequest else { return false }
        if !r.namespaces.isEmpty && !r.namespaces.contains(a.namespace) { return false }
        if r.resources.isEmpty { return true }
        let full = a.subresource.isEmpty ? a.resource : a.resource + "/" + a.subresource
        return r.resources.contains { g in
            guard g.group == a.apiGroup || g.group == "*" else { return false }
            if !g.resources.isEmpty {
                let hit = g.resources.contains { x in
                    x == "*" || x == full || (a.subresource.isEmpty && x == a.resource) || x == "*/" + a.subresource || x == a.resource + "/*"
                }
                if !hit { return false }
            }
            return g.resourceNames.isEmpty || g.resourceNames.contains(a.name)
        }
    }
}

/// Where audit events go: JSON lines appended to a file (`--audit-log-path`; `-` is standard
/// output), rotated when it passes `maxSize` bytes (renamed `<path>-<timestamp>`, at most
/// `maxBackups` kept; 0 keeps all), as kube-apiserver's log backend does.
public final class AuditLog: Sendable {
    let path: String
    let maxSize: Int
    let maxBackups: Int
    let state: Mutex<(handle: FileHandle?, size: Int)>

    public init(path: String, maxSizeMB: Int = 0, maxBackups: Int = 0) throws {
        self.path = path; self.maxSize = maxSizeMB * 1_000_000; self.maxBackups = maxBackups
        if path == "-" {
            state = Mutex((FileHandle.standardOutput, 0))
            return
        }
        let fm = FileManager.default
        try fm.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        if !fm.fileExists(atPath: path) {
            guard fm.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
                throw StatusError(.internalError, "cannot create the audit log \(path)")
            }
        }
        guard let h = FileHandle(forWritingAtPath: path) else { throw StatusError(.internalError, "cannot open the audit log \(path)") }
        let size = Int(h.seekToEndOfFile())
        state = Mutex((h, size))
    }

    /// Appends one event (a line); a write failure is returned, the request is not failed by it.
    func write(_ event: JSON) throws {
        let line = event.serialized() + [10]
        try state.withLock { s in
            if maxSize > 0, path != "-", s.size + line.count > maxSize, s.size > 0 { try rotate(&s) }
            try s.handle?.write(contentsOf: line)
            s.size += line.count
        }
    }

    func rotate(_ s: inout (handle: FileHandle?, size: Int)) throws {
        try s.handle?.close()
        let stamp = KubeTime.now().rfc3339.replacingOccurrences(of: ":", with: "-")
        let fm = FileManager.default
        var target = "\(path)-\(stamp)"
        var n = 1
        while fm.fileExists(atPath: target) { target = "\(path)-\(stamp).\(n)"; n += 1 }
        try fm.moveItem(atPath: path, toPath: target)
        if maxBackups > 0 {
            let dir = (path as NSString).deletingLastPathComponent, base = (path as NSString).lastPathComponent + "-"
            let old = ((try? fm.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasPrefix(base) }.sorted()
            for f in old.dropLast(maxBackups) { try? fm.removeItem(atPath: dir + "/" + f) }
        }
        _ = fm.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600])
        s.handle = FileHandle(forWritingAtPath: path)
        s.size = 0
    }
}

/// Auditing of the API server: the policy and where events go.
public struct AuditOptions: Sendable {
    public var policy: AuditPolicy
    public var log: AuditLog
    public init(policy: AuditPolicy, log: AuditLog) { self.policy = policy; self.log = log }
}

extension APIHandler {
    /// Writes the audit events of one request (kube's audit filter): `RequestReceived` (unless
    /// omitted) and `ResponseComplete` — `ResponseStarted` for watches, whose response goes on.
    func audit(_ req: APIRequest, user: UserInfo?, response: APIResponse, received: KubeTime) {
        guard let audit = options.audit else { return }
        let anonymous = UserInfo(username: UserInfo.anonymousUser, groups: [UserInfo.unauthenticatedGroup])
        let a = Self.attributes(method: req.method, path: req.path, query: req.query, user: user ?? anonymous)
        let (level, omit) = audit.policy.decide(a)
        guard level != .none else { return }
        let id = req.header("audit-id").flatMap { $0.isEmpty ? nil : $0 } ?? UUID().uuidString.lowercased()
        var query = req.query.sorted { $0.key < $1.key }.map { "\(URLQuery.escape($0.key))=\(URLQuery.escape($0.value))" }.joined(separator: "&")
        if !query.isEmpty { query = "?" + query }
        var event: JSON = ["kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": .string(level.rawValue), "auditID": .string(id),
                           "requestURI": .string(req.path + query), "verb": .string(a.verb), "user": (user ?? anonymous).json,
                           "sourceIPs": .array(req.remoteAddress.map { [.string($0)] } ?? []),
                           "requestReceivedTimestamp": .string(received.rfc3339Micro)]
        if let ua = req.header("user-agent") { event["userAgent"] = .string(ua) }
        if a.isResourceRequest {
            var ref: JSON = ["resource": .string(a.resource), "apiVersion": .string(a.apiVersion)]
            if !a.namespace.isEmpty { ref["namespace"] = .string(a.namespace) }
            if !a.name.isEmpty { ref["name"] = .string(a.name) }
            if !a.apiGroup.isEmpty { ref["apiGroup"] = .string(a.apiGroup) }
            if !a.subresource.isEmpty { ref["subresource"] = .string(a.subresource) }
            event["objectRef"] = ref
        }
        let writes = ["POST", "PUT", "PATCH", "DELETE"].contains(req.method)
        do {
            if !omit.contains(.requestReceived) {
                var e = event
                e["stage"] = .string(AuditPolicy.Stage.requestReceived.rawValue)
                e["stageTimestamp"] = .string(received.rfc3339Micro)
                try audit.log.write(e)
            }
            let watch = a.verb == "watch" || req.query["follow"] == "true"
            let stage: AuditPolicy.Stage = watch ? .responseStarted : .responseComplete
            guard !omit.contains(stage) else { return }
            event["stage"] = .string(stage.rawValue)
            event["stageTimestamp"] = .string(KubeTime.now().rfc3339Micro)
            let code = response.statusCode
            var status: JSON = ["metadata": [:], "code": .int(Int64(code))]
            if code >= 300, case .json(_, let body, _) = response {
                status["status"] = body["status"]
                status["message"] = body["message"]
                status["reason"] = body["reason"]
            }
            event["responseStatus"] = status
            if level >= .request, writes, !req.body.isEmpty,
               let body = try? BodyDecoding.decode(req.body, contentType: req.header("content-type")), !body.isNull
            {
                event["requestObject"] = Self.redacted(body)
                // kube names the created object in objectRef once it has read the request body.
                if a.verb == "create", a.name.isEmpty, let name = body["metadata"]["name"].stringValue, !event["objectRef"].isNull {
                    event["objectRef"]["name"] = .string(name)
                }
            }
            if level >= .requestResponse {
                switch response {
                case .json(_, let body, _): event["responseObject"] = Self.redacted(body)
                case .raw(_, let bytes, let contentType, _) where contentType.hasPrefix("application/json"):
                    if let body = try? JSON.parse(bytes) { event["responseObject"] = Self.redacted(body) }
                default: break  // protobuf, streams, plain text: not recorded
                }
            }
            try audit.log.write(event)
        } catch {
            logger.error("cannot write the audit log", metadata: ["error": "\(error)"])
        }
    }

    /// Secret contents never reach the audit log (kube's policies usually keep Secrets at
    /// Metadata; this holds even when one does not): `data`/`stringData` values of Secrets, and
    /// TokenRequest tokens, are replaced.
    static func redacted(_ o: JSON) -> JSON {
        var o = o
        if o["kind"].stringValue == "Secret" {
            for f in ["data", "stringData"] {
                if let m = o[f].objectValue { o[f] = .object(m.mapValues { _ in .string("<redacted>") }) }
            }
        } else if o["kind"].stringValue == "SecretList", let items = o["items"].arrayValue {
            o["items"] = .array(items.map(redacted))
        } else if o["kind"].stringValue == "TokenRequest", !o["status"]["token"].isNull {
            o["status"]["token"] = "<redacted>"
        }
        return o
    }
}
