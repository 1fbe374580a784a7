import KubeAPI

/// The parts of a Pod that Edged acts on, read once from the Pod JSON the node received (typed
/// through ``Core/Pod``; the JSON itself stays in ``object`` for labels, annotations and field references).
public struct PodModel: Sendable, Equatable {
    public var uid: String
    public var name: String
    public var namespace: String
    public var resourceVersion: UInt64
    public var containers: [ContainerSpec]
    public var restartPolicy: RestartPolicy
    public var hostNetwork: Bool
    public var hostPID: Bool
    /// Containers see each other's processes (`shareProcessNamespace`); otherwise each has its own.
    public var shareProcessNamespace: Bool
    public var hostIPC: Bool
    public var serviceAccountName: String
    public var terminationGracePeriodSeconds: Int64
    public var deleting: Bool
    public var labels: [String: String]
    public var annotations: [String: String]
    public var volumes: [Core.Volume]
    /// `ClusterFirst` (default), `ClusterFirstWithHostNet`, `Default` or `None`.
    public var dnsPolicy: String
    public var dnsConfig: Core.PodDNSConfig?
    /// The pod's security settings (fsGroup ownership of its writable volumes).
    public var securityContext: Core.PodSecurityContext?
    /// The whole object, as stored (passed on unchanged; `status` is read from it).
    public var object: JSON

    public enum RestartPolicy: String, Sendable { case always = "Always", onFailure = "OnFailure", never = "Never" }

    public init(_ pod: JSON) throws(PodSpecError) {
        let typed: Core.Pod
        do { typed = try JSONValueDecoder().decode(Core.Pod.self, from: pod) } catch {
            let who = [pod["metadata"]["namespace"].stringValue, pod["metadata"]["name"].stringValue].compactMap { $0 }.joined(separator: "/")
            throw PodSpecError("pod \(who.isEmpty ? "(unnamed)" : who): \(error)")
        }
        let meta = typed.metadata
        guard let uid = meta?.uid, let name = meta?.name else {
            throw PodSpecError("pod without metadata.uid or metadata.name")
        }
        self.uid = uid
        self.name = name
        namespace = meta?.namespace ?? "default"
        resourceVersion = meta?.resourceVersion.flatMap { UInt64($0) } ?? 0
        let spec = typed.spec
        var containers: [ContainerSpec] = []
        for c in spec?.containers ?? [] { containers.append(try ContainerSpec(c)) }
        guard !containers.isEmpty else { throw PodSpecError("pod \(namespace)/\(name) has no containers") }
        self.containers = containers
        let policy = spec?.restartPolicy ?? "Always"
        guard let p = RestartPolicy(rawValue: policy) else { throw PodSpecError("pod \(namespace)/\(name): unknown restartPolicy \(policy)") }
        restartPolicy = p
        hostNetwork = spec?.hostNetwork ?? false
        hostPID = spec?.hostPID ?? false
        shareProcessNamespace = spec?.shareProcessNamespace ?? false
        hostIPC = spec?.hostIPC ?? false
        serviceAccountName = spec?.serviceAccountName ?? "default"
        terminationGracePeriodSeconds = spec?.terminationGracePeriodSeconds ?? 30
        deleting = meta?.deletionTimestamp != nil
        labels = meta?.labels ?? [:]
        annotations = meta?.annotations ?? [:]
        volumes = spec?.volumes ?? []
        dnsPolicy = spec?.dnsPolicy ?? "ClusterFirst"
        dnsConfig = spec?.dnsConfig
        securityContext = spec?.securityContext
        object = pod
    }

    /// Whether a spec change needs the pod's containers recreated (Kubernetes allows only image
    /// changes on a running pod; anything else is ignored as the API server would refuse it).
    func sameContainers(as other: PodModel) -> Bool {
        containers.map(\.image) == other.containers.map(\.image)
    }
}

/// A pod the node cannot run as written.
public struct PodSpecError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One container of a pod spec.
public struct ContainerSpec: Sendable, Equatable {
    public var name: String
    public var image: String
    public var command: [String]
    public var args: [String]
    public var workingDir: String
    public var env: [Core.EnvVar]
    public var envFrom: [Core.EnvFromSource]
    public var volumeMounts: [Core.VolumeMount]
    public var ports: [Core.ContainerPort]
    public var resources: Core.ResourceRequirements
    public var imagePullPolicy: String
    public var liveness: ProbeSpec?
    public var readiness: ProbeSpec?
    public var startup: ProbeSpec?
    public var stdin: Bool
    public var tty: Bool

    init(_ c: Core.Container) throws(PodSpecError) {
        guard let name = c.name, !name.isEmpty else { throw PodSpecError("container without a name") }
        guard let image = c.image, !image.isEmpty else { throw PodSpecError("container \(name) has no image") }
        self.name = name
        self.image = image
        command = c.command ?? []
        args = c.args ?? []
        workingDir = c.workingDir ?? ""
        env = c.env ?? []
        envFrom = c.envFrom ?? []
        volumeMounts = c.volumeMounts ?? []
        ports = c.ports ?? []
        resources = c.resources ?? Core.ResourceRequirements()
        let tag = image.split(separator: "/").last.map { $0.contains(":" as Character) ? String($0.split(separator: ":").last!) : "latest" } ?? "latest"
        imagePullPolicy = c.imagePullPolicy ?? (tag == "latest" ? "Always" : "IfNotPresent")
        liveness = try ProbeSpec(c.livenessProbe ?? .null, container: name)
        readiness = try ProbeSpec(c.readinessProbe ?? .null, container: name)
        startup = try ProbeSpec(c.startupProbe ?? .null, container: name)
        stdin = c.stdin ?? false
        tty = c.tty ?? false
    }
}

/// A liveness, readiness or startup probe.
public struct ProbeSpec: Sendable, Equatable {
    public enum Action: Sendable, Equatable {
        case exec([String])
        case http(scheme: String, host: String?, port: PortRef, path: String, headers: [(String, String)])
        case tcp(host: String?, port: PortRef)

        public static func == (a: Action, b: Action) -> Bool {
            switch (a, b) {
            case let (.exec(x), .exec(y)): x == y
            case let (.http(s1, h1, p1, pa1, hd1), .http(s2, h2, p2, pa2, hd2)):
                s1 == s2 && h1 == h2 && p1 == p2 && pa1 == pa2 && hd1.map { $0.0 + ":" + $0.1 } == hd2.map { $0.0 + ":" + $0.1 }
            case let (.tcp(h1, p1), .tcp(h2, p2)): h1 == h2 && p1 == p2
            default: false
            }
        }
    }

    /// A port by number or by the container port's name.
    public enum PortRef: Sendable, Equatable { case number(Int), name(String) }

    public var action: Action
    public var initialDelaySeconds: Int64
    public var periodSeconds: Int64
    public var timeoutSeconds: Int64
    public var successThreshold: Int64
    public var failureThreshold: Int64

    init?(_ p: JSON, container: String) throws(PodSpecError) {
        if p.isNull { return nil }
        func port(_ j: JSON) throws(PodSpecError) -> PortRef {
            if let n = j.intValue { return .number(Int(n)) }
            if let s = j.stringValue { return Int(s).map { .number($0) } ?? .name(s) }
            throw PodSpecError("container \(container): probe without a port")
        }
        if let cmd = p["exec"]["command"].arrayValue {
            action = .exec(cmd.compactMap(\.stringValue))
        } else if !p["httpGet"].isNull {
            let h = p["httpGet"]
            let headers = (h["httpHeaders"].arrayValue ?? []).compactMap { x -> (String, String)? in
                guard let n = x["name"].stringValue else { return nil }
                return (n, x["value"].stringValue ?? "")
            }
            action = .http(scheme: h["scheme"].stringValue ?? "HTTP", host: h["host"].stringValue, port: try port(h["port"]),
                           path: h["path"].stringValue ?? "/", headers: headers)
        } else if !p["tcpSocket"].isNull {
            action = .tcp(host: p["tcpSocket"]["host"].stringValue, port: try port(p["tcpSocket"]["port"]))
        } else {
            throw PodSpecError("container \(container): probe has no exec, httpGet or tcpSocket")
        }
        initialDelaySeconds = p["initialDelaySeconds"].intValue ?? 0
        periodSeconds = max(1, p["periodSeconds"].intValue ?? 10)
        timeoutSeconds = max(1, p["timeoutSeconds"].intValue ?? 1)
        successThreshold = max(1, p["successThreshold"].intValue ?? 1)
        failureThreshold = max(1, p["failureThreshold"].intValue ?? 3)
    }
}
