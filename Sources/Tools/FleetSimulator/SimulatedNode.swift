import CloudEdgeProtocol
import EdgeHub
import KubeAPI
import Logging
import PKI
import ServiceLifecycle
import Synchronization

/// What a simulated node holds: meta key → (uid, resourceVersion), newest version wins and
/// deletes remove, exactly as the edge's MetaManager applies messages (kept in memory).
public final class SimulatedStore: Sendable {
    public struct Entry: Sendable, Hashable { public var uid: String; public var resourceVersion: UInt64 }
    let items = Mutex<[String: Entry]>([:])
    let appliedCount = Atomic<Int>(0)

    public init() {}

    public func apply(_ m: Message) throws {
        // A query or error reply about a stored kind changes nothing (acknowledged, as before).
        guard let sync = try ObjectSync.change(in: m) else { return }
        let key = sync.ref.description
        let rv = UInt64(sync.resourceVersion ?? "") ?? UInt64(sync.object["metadata"]["resourceVersion"].stringValue ?? "") ?? 0
        let uid = sync.object["metadata"]["uid"].stringValue ?? ""
        items.withLock { i in
            switch sync.change {
            case .delete: i[key] = nil
            case .insert, .update:
                if let cur = i[key], cur.uid == uid, cur.resourceVersion > rv { return }
                i[key] = Entry(uid: uid, resourceVersion: rv)
            }
        }
        appliedCount.wrappingAdd(1, ordering: .relaxed)
    }

    public var snapshot: [String: Entry] { items.withLock { $0 } }

    public var inventory: [InventoryItem] {
        items.withLock { i in i.map { InventoryItem(key: $0.key, uid: $0.value.uid, resourceVersion: $0.value.resourceVersion) } }
    }
    /// Messages applied since start.
    public var applied: Int { appliedCount.load(ordering: .relaxed) }
}

/// One simulated edge node: joins with a token (or reuses its stored certificate), keeps an
/// EdgeHub connection like `swiftedge edge`, and applies what it receives to a ``SimulatedStore``.
/// The building block of fleet tests and connection benchmarks.
public final class SimulatedNode: Sendable {
    public let name: String
    public let store = SimulatedStore()
    let hub: EdgeHub

    /// - Parameters:
    ///   - directory: where the node keeps its certificate (reused on the next start).
    public static func join(name: String, cloudHost: String, certPort: Int, hubPort: Int, token: String?, directory: String,
                            heartbeat: Duration = .seconds(15), reconnectBase: Duration = .seconds(1), reconnectMax: Duration = .seconds(30),
                            logger: Logger) async throws -> SimulatedNode
    {
        let bootstrap = NodeBootstrap(certServer: "\(cloudHost):\(certPort)", nodeName: name, directory: directory, logger: logger)
        let creds = try await bootstrap.credentials(token: token)
        var cfg = EdgeHubConfiguration(cloudHost: cloudHost, nodeName: name, credentials: creds)
        cfg.cloudPort = hubPort
        cfg.heartbeat = heartbeat
        cfg.reconnectBase = reconnectBase
        cfg.reconnectMax = reconnectMax
        return try SimulatedNode(name: name, configuration: cfg, logger: logger)
    }

    public init(name: String, configuration: EdgeHubConfiguration, logger: Logger) throws {
        self.name = name
        let store = self.store
        // As `swiftedge edge` does: report what it holds on every connect.
        hub = try EdgeHub(configuration: configuration, logger: logger, inventory: { store.inventory }) { try store.apply($0) }
    }

    public var isConnected: Bool { hub.isConnected }

    /// Runs the node's connection until cancelled or graceful shutdown.
    public func run() async throws { try await hub.run() }

    /// Drops the connection (the node redials after its back-off).
    public func disconnect(reason: String) async { await hub.dropConnection(reason: reason) }
}
