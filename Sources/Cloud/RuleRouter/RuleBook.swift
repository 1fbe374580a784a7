import KubeAPI

/// The `rules.kubeedge.io/v1` fields the router acts on.
struct RuleEndpointSpec: Sendable, Equatable {
    enum Kind: String, Sendable { case rest, eventbus, servicebus }
    var namespace: String
    var name: String
    var kind: Kind?
    var typeName: String
    var properties: [String: String]

    private struct Wire: Decodable {
        struct Meta: Decodable { var name: String?; var namespace: String? }
        struct Spec: Decodable { var ruleEndpointType: String?; var properties: [String: String]? }
        var metadata: Meta?
        var spec: Spec?
    }

    init?(_ o: JSON) {
        guard let w = try? JSONValueDecoder().decode(Wire.self, from: o), let name = w.metadata?.name else { return nil }
        self.name = name
        namespace = w.metadata?.namespace ?? "default"
        typeName = w.spec?.ruleEndpointType ?? ""
        kind = Kind(rawValue: typeName)
        properties = w.spec?.properties ?? [:]
    }
}

struct RuleSpec: Sendable, Equatable {
    var namespace: String
    var name: String
    var source: String
    var sourceResource: [String: String]
    var target: String
    var targetResource: [String: String]
    /// The counts the object already shows (kept across restarts).
    var successMessages: Int64
    var failMessages: Int64
    var errors: [String]

    private struct Wire: Decodable {
        struct Meta: Decodable { var name: String?; var namespace: String? }
        struct Spec: Decodable { var source: String?; var sourceResource: [String: String]?; var target: String?; var targetResource: [String: String]? }
        struct Status: Decodable { var successMessages: Int64?; var failMessages: Int64?; var errors: [String]? }
        var metadata: Meta?
        var spec: Spec?
        var status: Status?
    }

    init?(_ o: JSON) {
        guard let w = try? JSONValueDecoder().decode(Wire.self, from: o), let name = w.metadata?.name else { return nil }
        self.name = name
        namespace = w.metadata?.namespace ?? "default"
        source = w.spec?.source ?? ""
        sourceResource = w.spec?.sourceResource ?? [:]
        target = w.spec?.target ?? ""
        targetResource = w.spec?.targetResource ?? [:]
        successMessages = w.status?.successMessages ?? 0
        failMessages = w.status?.failMessages ?? 0
        errors = w.status?.errors ?? []
    }

    var key: String { "\(namespace)/\(name)" }
}

/// Where a Rule sends what its source receives.
enum RuleTarget: Sendable, Equatable {
    /// POST to this URL (a `rest` RuleEndpoint's `resource`).
    case rest(url: String)
    /// Publish on this topic at the node (an `eventbus` RuleEndpoint).
    case eventBus(topic: String)
    /// Call `127.0.0.1:<port><path>` on the node (a `servicebus` RuleEndpoint's `service_port`).
    case serviceBus(port: Int, path: String)
}

/// A Rule resolved against its RuleEndpoints.
struct ResolvedRule: Sendable, Equatable {
    enum Source: Sendable, Equatable {
        /// The REST ingress, `/<node>/<namespace>/<path>…`.
        case rest(path: String)
        /// An MQTT topic at a node (subscribed there as `<namespace>/<topic>`, as KubeEdge does).
        case eventBus(node: String, topic: String)
        /// Apps on a node calling `url` through its servicebus.
        case serviceBus(node: String, url: String)
    }
    var key: String
    var namespace: String
    var source: Source
    var target: RuleTarget
}

/// The Rules and RuleEndpoints the cloud holds, resolved into routes (KubeEdge's four pairs:
/// rest→eventbus, rest→servicebus, eventbus→rest, servicebus→rest). Pure state, no I/O; the
/// router keeps it behind its lock.
struct RuleBook: Sendable {
    var rules: [String: RuleSpec] = [:]
    var endpoints: [String: RuleEndpointSpec] = [:]

    /// The routes of every Rule that resolves, and why each other one does not.
    func resolve() -> (routes: [ResolvedRule], problems: [String: String]) {
        var routes: [ResolvedRule] = [], problems: [String: String] = [:]
        for r in rules.values {
            switch resolve(r) {
            case .success(let route): routes.append(route)
            case .failure(let why): problems[r.key] = why.message
            }
        }
        return (routes, problems)
    }

    struct Problem: Error { var message: String }

    func resolve(_ r: RuleSpec) -> Result<ResolvedRule, Problem> {
        guard let src = endpoints["\(r.namespace)/\(r.source)"] else { return .failure(Problem(message: "source RuleEndpoint \(r.source) not found")) }
        guard let dst = endpoints["\(r.namespace)/\(r.target)"] else { return .failure(Problem(message: "target RuleEndpoint \(r.target) not found")) }
        guard let sk = src.kind else { return .failure(Problem(message: "RuleEndpoint \(src.name) has unknown type \"\(src.typeName)\"")) }
        guard let tk = dst.kind else { return .failure(Problem(message: "RuleEndpoint \(dst.name) has unknown type \"\(dst.typeName)\"")) }
        let source: ResolvedRule.Source
        switch sk {
        case .rest:
            guard let p = r.sourceResource["path"], !p.isEmpty else { return .failure(Problem(message: "sourceResource has no \"path\"")) }
            source = .rest(path: Self.normalize(p))
        case .eventbus:
            guard let t = r.sourceResource["topic"], !t.isEmpty else { return .failure(Problem(message: "sourceResource has no \"topic\"")) }
            guard let n = r.sourceResource["node_name"], !n.isEmpty else { return .failure(Problem(message: "sourceResource has no \"node_name\"")) }
            source = .eventBus(node: n, topic: "\(r.namespace)/\(t)")
        case .servicebus:
            guard let u = r.sourceResource["target_url"], !u.isEmpty else { return .failure(Problem(message: "sourceResource has no \"target_url\"")) }
            guard let n = r.sourceResource["node_name"], !n.isEmpty else { return .failure(Problem(message: "sourceResource has no \"node_name\"")) }
            source = .serviceBus(node: n, url: u)
        }
        let target: RuleTarget
        switch tk {
        case .rest:
            guard let u = r.targetResource["resource"], !u.isEmpty else { return .failure(Problem(message: "targetResource has no \"resource\"")) }
            target = .rest(url: u)
        case .eventbus:
            guard let t = r.targetResource["topic"], !t.isEmpty else { return .failure(Problem(message: "targetResource has no \"topic\"")) }
            target = .eventBus(topic: t)
        case .servicebus:
            guard let p = r.targetResource["path"] else { return .failure(Problem(message: "targetResource has no \"path\"")) }
            guard let portText = dst.properties["service_port"], let port = Int(portText), (1...65535).contains(port) else {
                return .failure(Problem(message: "RuleEndpoint \(dst.name) has no valid \"service_port\""))
            }
            target = .serviceBus(port: port, path: p.hasPrefix("/") ? p : "/" + p)
        }
        switch (sk, tk) {
        case (.rest, .eventbus), (.rest, .servicebus), (.eventbus, .rest), (.servicebus, .rest): break
        default: return .failure(Problem(message: "\(sk.rawValue) to \(tk.rawValue) is not a supported pair (rest→eventbus, rest→servicebus, eventbus→rest, servicebus→rest)"))
        }
        return .success(ResolvedRule(key: r.key, namespace: r.namespace, source: source, target: target))
    }

    static func normalize(_ p: String) -> String {
        var s = Substring(p)
        while s.hasPrefix("/") { s = s.dropFirst() }
        while s.hasSuffix("/") { s = s.dropLast() }
        return String(s)
    }

    /// The rule for a REST ingress request to `path` (after `/<node>/<namespace>/`): the one
    /// whose path is the longest whole-segment prefix; the rest of the path is its parameter.
    static func restRoute(_ routes: [ResolvedRule], namespace: String, path: String) -> (ResolvedRule, param: String)? {
        let p = normalize(path)
        var best: (ResolvedRule, String)?
        for r in routes where r.namespace == namespace {
            guard case .rest(let rp) = r.source else { continue }
            guard p == rp || p.hasPrefix(rp + "/") else { continue }
            if best.map({ if case .rest(let bp) = $0.0.source { return rp.count > bp.count } else { return true } }) ?? true {
                best = (r, String(p.dropFirst(rp.count)))
            }
        }
        return best
    }

    /// What a node's eventbus must subscribe to and which URLs its servicebus may call.
    static func nodeState(_ routes: [ResolvedRule], node: String) -> (topics: Set<String>, urls: Set<String>) {
        var topics = Set<String>(), urls = Set<String>()
        for r in routes {
            switch r.source {
            case .eventBus(let n, let t) where n == node: topics.insert(t)
            case .serviceBus(let n, let u) where n == node: urls.insert(u)
            default: break
            }
        }
        return (topics, urls)
    }
}
