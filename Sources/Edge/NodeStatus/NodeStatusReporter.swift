import CloudEdgeProtocol
import DefaultSettings
import EdgeHub
import Foundation
import KubeAPI
import Logging
import ServiceLifecycle

/// Facts about the machine the edge node runs on, as the Node object reports them.
public struct HostFacts: Sendable {
    public var cpus: Int
    public var memoryBytes: Int64
    public var kernelVersion: String
    public var osImage: String
    public var architecture: String
    public var hostname: String

    /// Reads /proc, uname and /etc/os-release.
    public static func current() -> HostFacts {
        var u = utsname()
        uname(&u)
        func field<T>(_ v: T) -> String {
            withUnsafeBytes(of: v) { raw in String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self) }
        }
        let meminfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        let memKB = meminfo.split(separator: "\n").first { $0.hasPrefix("MemTotal:") }?
            .split(separator: " ").dropFirst().first.flatMap { Int64($0) } ?? 0
        let osRelease = (try? String(contentsOfFile: "/etc/os-release", encoding: .utf8)) ?? ""
        let pretty = osRelease.split(separator: "\n").first { $0.hasPrefix("PRETTY_NAME=") }
            .map { String($0.dropFirst("PRETTY_NAME=".count).trimming(where: { $0 == "\"" })) } ?? "Linux"
        let machine = field(u.machine)
        let arch = ["x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"][machine] ?? machine
        return HostFacts(cpus: ProcessInfo.processInfo.activeProcessorCount, memoryBytes: memKB * 1024,
                         kernelVersion: field(u.release), osImage: pretty, architecture: arch, hostname: field(u.nodename))
    }
}

/// The container runtime as the node reports it: its version and whether it answers (a node
/// whose runtime is down is not Ready, as with kubelet).
public struct RuntimeHealth: Sendable {
    public var ready: Bool
    public var version: String
    public init(ready: Bool, version: String) { self.ready = ready; self.version = version }
}

/// What the node reports about itself.
public struct NodeIdentity: Sendable {
    public var name: String
    public var labels: [String: String]
    /// The node's address edge workloads and the cloud know it by.
    public var internalIP: String
    public var maxPods = 110
    public init(name: String, labels: [String: String] = [:], internalIP: String) {
        self.name = name; self.labels = labels; self.internalIP = internalIP
    }
}

/// Registers the node with the cloud and keeps its status fresh, as KubeEdge's edged does over
/// the channel: a `default/node/<name>` insert with the whole Node on every connect, then a
/// `default/nodestatus/<name>` update every `interval` (KubeEdge: 10 s) carrying conditions with
/// a fresh heartbeat, capacity and node info. The cloud's node lifecycle controller sees the
/// heartbeats; while the node is disconnected they stop and the node turns Ready=Unknown (its
/// pods stay: edge nodes are expected to go dark).
public struct NodeStatusReporter: Service {
    let identity: NodeIdentity
    let hub: EdgeHub
    let interval: Duration
    let facts: @Sendable () -> HostFacts
    let connections: AsyncStream<Bool>
    let runtime: (@Sendable () -> RuntimeHealth)?
    let logger: Logger
    /// When this process started reporting (the conditions' lastTransitionTime).
    let since = KubeTime.now()

    /// - Parameter connections: EdgeHub's connection changes (true on each connect).
    /// - Parameter runtime: the container runtime's health, when the node runs pods.
    public init(identity: NodeIdentity, hub: EdgeHub, connections: AsyncStream<Bool>, interval: Duration = .seconds(10),
                facts: @escaping @Sendable () -> HostFacts = { HostFacts.current() },
                runtime: (@Sendable () -> RuntimeHealth)? = nil, logger: Logger)
    {
        self.identity = identity; self.hub = hub; self.connections = connections; self.interval = interval
        self.facts = facts; self.runtime = runtime; self.logger = logger
    }

    /// The Node object the node registers with.
    public func node(now: KubeTime = .now()) -> JSON {
        var labels: [String: JSON] = [
            "node-role.kubernetes.io/edge": "",
            "kubernetes.io/hostname": .string(identity.name),
            "kubernetes.io/os": "linux",
        ]
        let f = facts()
        labels["kubernetes.io/arch"] = .string(f.architecture)
        for (k, v) in identity.labels { labels[k] = .string(v) }
        return ["apiVersion": "v1", "kind": "Node",
                "metadata": ["name": .string(identity.name), "labels": .object(labels)],
                "spec": [:],
                "status": status(now: now, facts: f)]
    }

    func status(now: KubeTime, facts f: HostFacts) -> JSON {
        let resources: JSON = ["cpu": .string(String(f.cpus)), "memory": .string("\(f.memoryBytes / 1024)Ki"),
                               "pods": .string(String(identity.maxPods))]
        func condition(_ type: String, _ status: String, _ reason: String, _ message: String) -> JSON {
            ["type": .string(type), "status": .string(status), "reason": .string(reason), "message": .string(message),
             "lastHeartbeatTime": .string(now.rfc3339), "lastTransitionTime": .string(since.rfc3339)]
        }
        let health = runtime?()
        let ready = health.map { $0.ready } ?? true
        return [
            "capacity": resources, "allocatable": resources,
            "conditions": [
                ready ? condition("Ready", "True", "EdgeReady", "edge node is posting ready status")
                    : condition("Ready", "False", "ContainerRuntimeNotReady", "container runtime is down"),
                condition("MemoryPressure", "False", "EdgeHasSufficientMemory", "edge node has sufficient memory available"),
                condition("DiskPressure", "False", "EdgeHasNoDiskPressure", "edge node has no disk pressure"),
                condition("PIDPressure", "False", "EdgeHasSufficientPID", "edge node has sufficient PID available"),
            ],
            "addresses": [["type": "InternalIP", "address": .string(identity.internalIP)],
                          ["type": "Hostname", "address": .string(f.hostname)]],
            "nodeInfo": ["architecture": .string(f.architecture), "operatingSystem": "linux", "osImage": .string(f.osImage),
                         "kernelVersion": .string(f.kernelVersion), "kubeletVersion": "v1.32.0-swiftedge",
                         "kubeProxyVersion": "", "containerRuntimeVersion": .string(health?.version ?? ""), "machineID": "", "systemUUID": "", "bootID": ""],
            "daemonEndpoints": ["kubeletEndpoint": ["Port": .int(Int64(Defaults.kubeletPort))]],
        ]
    }

    func register() {
        hub.send(UpstreamReport.nodeRegistration(name: identity.name, node: node()).message(source: MessageSource.edged))
    }

    /// Renews the node's Lease (`kube-node-lease/lease/<node>`), kubelet's cheap heartbeat, the way
    /// edgecore's kubelet does it through cloudcore: query it (NotFound: insert it), then update it
    /// carrying the resourceVersion the cloud last returned; a refused update queries again.
    /// `known`: the Lease's resourceVersion the cloud last returned (nil: query it first); returns the new one.
    func renewLease(_ known: String?) async -> String? {
        func lease(_ rv: String?) -> JSON {
            var meta: JSON = ["name": .string(identity.name), "namespace": "kube-node-lease"]
            if let rv { meta["resourceVersion"] = .string(rv) }
            return ["apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                    "spec": ["holderIdentity": .string(identity.name), "leaseDurationSeconds": 40,
                             "renewTime": .string(KubeTime.now().rfc3339Micro)]]
        }
        func ask(_ op: CloudEdgeProtocol.Operation, _ content: JSON) async -> LeaseAnswer {
            guard let r = await hub.request(UpstreamReport.lease(name: identity.name, operation: op, lease: content).message(source: MessageSource.edged),
                                            timeout: .seconds(5))
            else { return .none }
            return LeaseAnswer(r.content)
        }
        var rv = known
        if rv == nil {
            switch await ask(.query, .null) {
            case .lease(let v): rv = v
            case .notFound:
                if case .lease(let v) = await ask(.insert, lease(nil)) { return v }
                return nil
            case .failed, .none:
                return nil
            }
        }
        switch await ask(.update, lease(rv)) {
        case .lease(let v): return v
        case .notFound, .failed: return nil
        case .none: return rv
        }
    }

    func report() {
        hub.send(UpstreamReport.nodeStatus(name: identity.name, content: ["status": status(now: .now(), facts: facts())])
            .message(source: MessageSource.edged))
    }

    public func run() async throws {
        try? await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await up in connections where up {
                        logger.info("registering node with the cloud", metadata: ["node": "\(identity.name)"])
                        register()
                    }
                }
                group.addTask {
                    // Reports every `interval`, and at once when the runtime's health changes.
                    let tick = min(interval, .seconds(1))
                    var last = ContinuousClock.now
                    var lastHealth = runtime?()
                    var leaseVersion: String?
                    while !Task.isCancelled {
                        do { try await Task.sleep(for: tick) } catch { return }
                        let health = runtime?()
                        let changed = health?.ready != lastHealth?.ready || health?.version != lastHealth?.version
                        guard changed || ContinuousClock.now - last >= interval, hub.isConnected else { continue }
                        report()
                        leaseVersion = await renewLease(leaseVersion)
                        last = .now
                        lastHealth = health
                    }
                }
                await group.waitForAll()
            }
        }
    }
}

/// The cloud's answer about the node's Lease (`{"Object": <Lease>, "Err": …}`).
enum LeaseAnswer: Equatable {
    case lease(resourceVersion: String?)
    case notFound
    case failed
    case none

    init(_ content: JSON) {
        switch ObjectResponse(content: content) {
        case .object(let lease): self = .lease(resourceVersion: lease["metadata"]["resourceVersion"].stringValue)
        case .error(let status): self = status["code"].intValue == 404 || status["reason"].stringValue == "NotFound" ? .notFound : .failed
        case nil: self = .failed
        }
    }
}
