import AsyncSupport
import KubeAPI
import Synchronization

/// The Service fields the mesh acts on, decoded from the stored object.
struct MeshService: Sendable, Equatable {
    struct Port: Sendable, Equatable {
        var name: String
        var proto: MeshProtocol
        var port: Int
    }

    var namespace: String
    var name: String
    /// nil for headless (`None`) and ExternalName Services.
    var clusterIP: IPv4Address?
    var headless: Bool
    var externalName: String?
    var ports: [Port]
    /// `sessionAffinity: ClientIP`: how long a client sticks to its endpoint (nil: no affinity).
    var affinityTimeout: Duration?

    private struct Wire: Decodable {
        struct Meta: Decodable { var name: String?; var namespace: String? }
        struct Spec: Decodable {
            struct Port: Decodable { var name: String?; var `protocol`: String?; var port: Int? }
            struct Affinity: Decodable { struct ClientIP: Decodable { var timeoutSeconds: Int? }; var clientIP: ClientIP? }
            var type: String?
            var clusterIP: String?
            var externalName: String?
            var ports: [Port]?
            var sessionAffinity: String?
            var sessionAffinityConfig: Affinity?
        }
        var metadata: Meta?
        var spec: Spec?
    }

    init?(_ object: JSON) {
        guard let w = try? JSONValueDecoder().decode(Wire.self, from: object), let name = w.metadata?.name else { return nil }
        self.name = name
        namespace = w.metadata?.namespace ?? "default"
        let spec = w.spec
        externalName = spec?.type == "ExternalName" ? spec?.externalName : nil
        headless = spec?.clusterIP == "None"
        clusterIP = spec?.clusterIP.flatMap { IPv4Address($0) }
        ports = (spec?.ports ?? []).compactMap { p in
            guard let n = p.port, (1...65535).contains(n), let proto = MeshProtocol(rawValue: p.protocol ?? "TCP") else { return nil }
            return Port(name: p.name ?? "", proto: proto, port: n)
        }
        affinityTimeout = spec?.sessionAffinity == "ClientIP" ? .seconds(spec?.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? 10800) : nil
    }
}

public enum MeshProtocol: String, Sendable, Hashable { case tcp = "TCP", udp = "UDP", sctp = "SCTP" }

/// One address of a Service's Endpoints.
struct MeshEndpoint: Sendable, Equatable, Hashable {
    var ip: IPv4Address
    var ready: Bool
    var hostname: String?
    var nodeName: String?
    /// The pod behind the address (`targetRef`), for relaying to it through its node.
    var podNamespace: String?
    var podName: String?
    /// Port name → port of this address's subset.
    var ports: [String: Int]
    var protocols: [String: MeshProtocol]
}

/// The Endpoints fields the mesh acts on.
enum MeshEndpoints {
    private struct Wire: Decodable {
        struct Address: Decodable {
            struct Ref: Decodable { var kind: String?; var name: String?; var namespace: String? }
            var ip: String?
            var hostname: String?
            var nodeName: String?
            var targetRef: Ref?
        }
        struct Port: Decodable { var name: String?; var port: Int?; var `protocol`: String? }
        struct Subset: Decodable { var addresses: [Address]?; var notReadyAddresses: [Address]?; var ports: [Port]? }
        var subsets: [Subset]?
    }

    static func decode(_ object: JSON) -> [MeshEndpoint] {
        guard let w = try? JSONValueDecoder().decode(Wire.self, from: object) else { return [] }
        var out: [MeshEndpoint] = []
        for s in w.subsets ?? [] {
            var ports: [String: Int] = [:], protocols: [String: MeshProtocol] = [:]
            for p in s.ports ?? [] {
                guard let n = p.port, (1...65535).contains(n) else { continue }
                ports[p.name ?? ""] = n
                protocols[p.name ?? ""] = MeshProtocol(rawValue: p.protocol ?? "TCP") ?? .tcp
            }
            for (list, ready) in [(s.addresses ?? [], true), (s.notReadyAddresses ?? [], false)] {
                for a in list {
                    guard let ip = a.ip.flatMap({ IPv4Address($0) }) else { continue }
                    let pod = a.targetRef?.kind == nil || a.targetRef?.kind == "Pod" ? a.targetRef : nil
                    out.append(MeshEndpoint(ip: ip, ready: ready, hostname: a.hostname, nodeName: a.nodeName, podNamespace: pod?.namespace,
                                            podName: pod?.name, ports: ports, protocols: protocols))
                }
            }
        }
        return out
    }
}

/// Where a Service port's traffic goes: the address and port of one endpoint.
struct MeshTarget: Sendable, Equatable {
    var endpoint: MeshEndpoint
    var port: Int
}

/// What the node knows of Services and their endpoints (from its own store: works offline),
/// with the load-balancing state: one lock, no I/O. The DNS server and the proxy read it.
public final class ServiceDirectory: Sendable {
    struct State {
        var services: [String: MeshService] = [:]
        var endpoints: [String: [MeshEndpoint]] = [:]
        var byClusterIP: [IPv4Address: String] = [:]
        /// Round-robin position per service port.
        var next: [String: Int] = [:]
        /// ClientIP affinity: service port + client → endpoint IP and when it lapses.
        var affinity: [String: (ip: IPv4Address, until: ContinuousClock.Instant)] = [:]
        var version = 0
    }

    let state = Mutex(State())
    /// Bumped on every change (the proxy reconciles its listeners when it moves).
    let changed = StateSignal<Int>(0)

    public init() {}

    static func key(_ namespace: String, _ name: String) -> String { "\(namespace)/\(name)" }

    /// A Service was stored (or changed); nil object: deleted.
    public func setService(namespace: String, name: String, _ object: JSON?) {
        let k = Self.key(namespace, name)
        let v = state.withLock { s -> Int in
            if let old = s.services[k]?.clusterIP, s.byClusterIP[old] == k { s.byClusterIP[old] = nil }
            if let o = object, let svc = MeshService(o) {
                s.services[k] = svc
                if let ip = svc.clusterIP { s.byClusterIP[ip] = k }
            } else {
                s.services[k] = nil
            }
            s.version += 1
            return s.version
        }
        _ = changed.set(v)
    }

    /// An Endpoints object was stored (or changed); nil object: deleted.
    public func setEndpoints(namespace: String, name: String, _ object: JSON?) {
        let k = Self.key(namespace, name)
        let eps = object.map(MeshEndpoints.decode) ?? []
        let v = state.withLock { s -> Int in
            s.endpoints[k] = eps.isEmpty ? nil : eps
            s.version += 1
            return s.version
        }
        _ = changed.set(v)
    }

    func service(namespace: String, name: String) -> MeshService? { state.withLock { $0.services[Self.key(namespace, name)] } }
    func endpoints(namespace: String, name: String) -> [MeshEndpoint] { state.withLock { $0.endpoints[Self.key(namespace, name)] ?? [] } }
    var services: [MeshService] { state.withLock { Array($0.services.values) } }

    /// The endpoint a new connection to `service`'s `port` from `client` goes to: ready ones
    /// only, round-robin (or the client's previous one under ClientIP affinity). nil: none ready.
    func pick(namespace: String, name: String, port: MeshService.Port, client: IPv4Address?, now: ContinuousClock.Instant = .now) -> MeshTarget? {
        let k = Self.key(namespace, name)
        return state.withLock { s -> MeshTarget? in
            guard let svc = s.services[k] else { return nil }
            let candidates: [MeshTarget] = (s.endpoints[k] ?? []).compactMap { e in
                guard e.ready, let p = e.ports[port.name] ?? (e.ports.count == 1 && svc.ports.count == 1 ? e.ports.values.first : nil) else { return nil }
                return MeshTarget(endpoint: e, port: p)
            }.sorted { $0.endpoint.ip < $1.endpoint.ip }
            guard !candidates.isEmpty else { return nil }
            let slot = "\(k):\(port.name):\(port.proto.rawValue)"
            if let timeout = svc.affinityTimeout, let client {
                let a = "\(slot)@\(client)"
                if let held = s.affinity[a], held.until > now, let t = candidates.first(where: { $0.endpoint.ip == held.ip }) {
                    s.affinity[a] = (held.ip, now + timeout)
                    return t
                }
                let i = (s.next[slot] ?? 0) % candidates.count
                s.next[slot] = i + 1
                s.affinity[a] = (candidates[i].endpoint.ip, now + timeout)
                if s.affinity.count > 100_000 { s.affinity = s.affinity.filter { $0.value.until > now } }
                return candidates[i]
            }
            let i = (s.next[slot] ?? 0) % candidates.count
            s.next[slot] = i + 1
            return candidates[i]
        }
    }
}
