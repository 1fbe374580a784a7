import AsyncSupport
import CloudEdgeProtocol
import Foundation
import KubeAPI
import Logging
import MetaStore
import ServiceLifecycle
import StreamTunnel

/// EdgeMesh's settings (KubeEdge's edgemesh-agent: EdgeDNS + EdgeProxy + tunnel).
public struct EdgeMeshConfiguration: Sendable {
    public var nodeName: String
    /// The DNS address pods are given (KubeEdge's 169.254.96.16), made local to the node.
    public var dnsAddress = IPv4Address(0xA9FE_6010)  // 169.254.96.16
    public var dnsPort = 53
    public var clusterDomain = "cluster.local"
    /// The Services' ClusterIP range (the API server's --service-cluster-ip-range), made local to
    /// the node so the proxy can listen on every ClusterIP.
    public var serviceCIDR = IPv4Network(IPv4Address(0x0A60_0000), prefix: 12)  // 10.96.0.0/12
    /// Upstream DNS servers (`host[:port]`) for names outside the cluster domain.
    public var upstream: [String] = []
    /// Add (and at stop remove) the local routes of the DNS address and the service range
    /// (`ip route … table local`); off: they are set up by someone else.
    public var manageRoutes = true

    public init(nodeName: String) { self.nodeName = nodeName }

    /// Nameservers of a resolv.conf, without `exclude` (the mesh's own address).
    public static func nameservers(resolvConf text: String, excluding exclude: IPv4Address) -> [String] {
        text.split(separator: "\n").compactMap { line in
            let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard f.count >= 2, f[0] == "nameserver", let ip = IPv4Address(f[1]), ip != exclude else { return nil }
            return "\(ip):53"
        }
    }
}

/// The node's service mesh, in the edge agent (no extra process: it reads Services and Endpoints
/// from the node's own store, so discovery and proxying keep working with the cloud gone, and it
/// adds no second copy of that state). DNS for cluster names, a TCP proxy for ClusterIPs, traffic
/// to pods on other nodes relayed through the cloud's tunnel.
public struct EdgeMesh: Service {
    let configuration: EdgeMeshConfiguration
    let store: any MetaStorage
    let directory = ServiceDirectory()
    let relay: MeshRelay?
    let logger: Logger

    public init(configuration: EdgeMeshConfiguration, store: any MetaStorage, relay: MeshRelay?, logger: Logger) {
        self.configuration = configuration; self.store = store; self.relay = relay; self.logger = logger
    }

    public func run() async throws {
        let routes = MeshRoutes(local: [IPv4Network(configuration.dnsAddress, prefix: 32), configuration.serviceCIDR], logger: logger)
        if configuration.manageRoutes { try routes.add() }
        defer { if configuration.manageRoutes { routes.remove() } }
        let dns = MeshDNSServer(resolver: MeshResolver(directory: directory, domain: configuration.clusterDomain),
                                host: configuration.dnsAddress.description, port: configuration.dnsPort, upstream: configuration.upstream, logger: logger)
        let proxy = MeshProxy(directory: directory, nodeName: configuration.nodeName, relay: relay, logger: logger)
        // Until the node stops: then the DNS server and every listener close (a cancelled
        // server ends quietly; any other failure of it stops the node with its error).
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await self.follow() }
            group.addTask {
                do { try await dns.run() } catch is CancellationError {}
            }
            group.addTask { await proxy.run() }
            do { try await gracefulShutdown() } catch is CancellationError {}
            group.cancelAll()
        }
    }

    /// Keeps the directory in step with the store's Services and Endpoints.
    func follow() async {
        while !Task.isCancelled {
            let changes = store.changes()  // subscribed before the read: nothing falls between
            do {
                for r in try await store.list(type: .service) { apply(r.key, r.value, deleted: false) }
                for r in try await store.list(type: .endpoints) { apply(r.key, r.value, deleted: false) }
            } catch {
                logger.error("cannot read Services from the node's store", metadata: ["error": "\(error)"])
            }
            for await c in changes where c.record.type == .service || c.record.type == .endpoints {
                apply(c.record.key, c.record.value, deleted: c.kind == .deleted)
            }
        }
    }

    func apply(_ key: String, _ value: JSON, deleted: Bool) {
        guard let ref = try? ResourceRef(parsing: key), let name = ref.name else { return }
        let ns = ref.namespace ?? "default"
        switch ref.kind {
        case .service: directory.setService(namespace: ns, name: name, deleted ? nil : value)
        case .endpoints: directory.setEndpoints(namespace: ns, name: name, deleted ? nil : value)
        default: break
        }
    }
}

/// Local routes (`ip route replace local <net> dev lo table local`): every address of the
/// networks is the node's own, so the mesh can listen on them and a port nobody listens on is
/// refused at once. Arguments are typed addresses: nothing from the wire reaches a shell.
struct MeshRoutes: Sendable {
    let local: [IPv4Network]
    let logger: Logger

    func add() throws {
        for n in local {
            let (ok, out) = Self.ip(["route", "replace", "local", n.description, "dev", "lo", "table", "local"])
            guard ok else { throw MeshError("cannot add the local route \(n) (EdgeMesh needs CAP_NET_ADMIN): \(out)") }
        }
        logger.info("EdgeMesh routes added", metadata: ["local": "\(local.map(\.description).joined(separator: ","))"])
    }

    func remove() {
        for n in local {
            let (ok, out) = Self.ip(["route", "del", "local", n.description, "dev", "lo", "table", "local"])
            if !ok { logger.warning("cannot remove the local route", metadata: ["route": "\(n)", "error": "\(out)"]) }
        }
    }

    static func ip(_ args: [String]) -> (Bool, String) {
        let p = Process()
        let candidates = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        guard let path = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            return (false, "the `ip` command (iproute2) is not installed")
        }
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        do { try p.run() } catch { return (false, "\(error)") }
        let out = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus == 0, String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
