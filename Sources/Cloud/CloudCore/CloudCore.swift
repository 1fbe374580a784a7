import DefaultSettings
import StreamTunnel
import CloudEdgeProtocol
import CloudHub
import CSIDriver
import CloudStream
import DeviceController
import EdgeController
import NIOSSL
import ControllerRuntime
import Foundation
import KubeAPI
import KubeClient
import Logging
import PKI
import ReliableSync
import RuleRouter
import ServiceLifecycle

/// CloudCore settings.
public struct CloudCoreConfiguration: Sendable {
    public var hub = CloudHubConfiguration()
    /// Certificate service port (KubeEdge: 10002).
    public var certPort = Defaults.certificatePort
    /// Addresses edge nodes use to reach the cloud (certificate SANs).
    public var advertiseAddresses: [String] = []
    /// How often a fresh join token is minted (valid twice as long; KubeEdge: 12 h).
    public var tokenRefresh: Duration = .seconds(12 * 3600)
    public var sync = ReliableSyncOptions()
    /// Lifetime of node certificates issued at join and renewal (KubeEdge: 365 days).
    public var edgeCertificateValidity: Duration = .seconds(365 * 86400)
    /// Serves the nodes' stream tunnels (`kubectl logs`) when set.
    public var tunnels: TunnelServer?
    /// The kubelet-style stream server for an external kube-apiserver (KubeEdge's CloudStream
    /// :10003): its port, and the CA whose client certificates it accepts (PEM). Off when nil;
    /// needs ``tunnels``.
    public var streamServer: (port: Int, clientCAPEM: String)?
    public var onStreamServerListening: @Sendable (Int) async -> Void = { _ in }
    /// KubeEdge's router (Rules, the REST ingress) when set.
    public var router: RuleRouterConfiguration?
    /// Install the `local-path` StorageClass and CSIDriver (SwiftEdge's built-in driver on edge nodes).
    public var localPathStorage = true
    public var onRouterListening: @Sendable (Int) async -> Void = { _ in }
    public init() {}
}

extension CloudHub: AcknowledgedSender {}

/// The cloud side: certificates and join tokens, CloudHub with its certificate service, and
/// reliable delivery of each edge node's objects — all through the Kubernetes API (embedded
/// server or any cluster).
public struct CloudCore: Service {
    let configuration: CloudCoreConfiguration
    let makeClient: @Sendable () async throws -> KubeClient
    let logger: Logger
    let onReady: @Sendable (_ hubPort: Int, _ certPort: Int) async -> Void

    public init(configuration: CloudCoreConfiguration, logger: Logger, onReady: @escaping @Sendable (Int, Int) async -> Void = { _, _ in },
                makeClient: @escaping @Sendable () async throws -> KubeClient)
    {
        self.configuration = configuration; self.logger = logger; self.makeClient = makeClient; self.onReady = onReady
    }

    public func run() async throws {
        let client = try await makeClient()
        do { try await runWith(client) } catch {
            try? await client.shutdown()
            throw error
        }
        try? await client.shutdown()
    }

    func runWith(_ client: KubeClient) async throws {
        let c = configuration
        let secrets = try await CloudSecrets.ensure(client: client, addresses: c.advertiseAddresses + [c.hub.host], logger: logger)
        _ = try await secrets.refreshToken(client: client, validity: Double(c.tokenRefresh.components.seconds) * 2)
        try await ObjectSyncRecorder.installCRDs(client)
        if c.localPathStorage {
            do { try await LocalPathStorage.install(client, logger: logger) } catch {
                logger.warning("cannot install the local-path StorageClass", metadata: ["error": "\(error)"])
            }
        }
        let recorder = ObjectSyncRecorder(client: client, logger: logger)
        let restored = try await recorder.load()

        let informers = InformerFactory(client: client, logger: logger)
        let objects = EdgeObjects(informers: informers)
        let syncBox = SyncBox()
        let devices = DeviceStatusWriter(client: client, logger: logger, deviceNode: { objects.deviceNode(namespace: $0, name: $1) })
        var forward: (@Sendable (ForwardedAPIRequest) async throws -> ForwardedAPIRequest.Answer)?
        if let http = client as? HTTPKubeClient {
            forward = { request in try await Self.forward(request, with: http) }
        }
        let upstream = NodeUpstream(client: client, logger: logger, deviceNode: { objects.deviceNode(namespace: $0, name: $1) },
                                    deviceStatuses: { try await devices.writeDeviceStatuses(node: $0, $1) },
                                    mayRead: { node, ref in objects.isReferenced(ref, by: node) },
                                    caPEM: secrets.ca.certificatePEM, pod: { objects.pod(namespace: $0, name: $1) },
                                    forward: forward) { node, session, part, parts, records in
            await syncBox.sync()?.inventory(node, session: session, part: part, parts: parts, records: records)
        }
        let ports = PortPair()
        // The hub answers requests from inside its own event handler: set once it exists.
        let hubBox = AwaitedValue<CloudHub>()
        let router = c.router.map { rc in
            RuleRouter(configuration: rc, client: client, informers: informers, logger: logger, onListening: c.onRouterListening) { message, node in
                try await hubBox.value.send(message, to: node)
            }
        }
        let hub = try CloudHub(configuration: c.hub, ca: secrets.ca, serverCertificate: secrets.serverCertificate,
                               authorizer: NodeAuthorizer { ns, name in objects.podNode(namespace: ns, name: name) },
                               tunnels: c.tunnels, logger: logger,
                               onRunning: { await ports.set(hub: $0) }) { event in
            switch event {
            case .connected(let node):
                await syncBox.sync()?.connected(node)
                await router?.connected(node)
            case .disconnected(let node, _):
                await syncBox.sync()?.disconnected(node)
                router?.disconnected(node)
            case .router(let node, let routed, let message):
                // Queued, not awaited in the node's session: a slow REST endpoint must not hold up the node's reports.
                router?.submit(routed, message: message, from: node)
            case .report(let node, let report, let request):
                // Awaited in the node's session: one node's messages apply in order, and a slow
                // API server slows that node's reads (back-pressure), not the others.
                let answer = await upstream.handle(node: node, report)
                // edgecore waits for the answer of each request it sends synchronously (group
                // `meta`, header `sync`); SwiftEdge's edge asks for none.
                if let answer, request.sync || request.route.group == MessageGroup.meta {
                    try? await hubBox.value.send(answer.response(to: request), to: node)
                }
            case .refused: break
            }
        }
        hubBox.set(hub)
        // CSI volumes of edge nodes' drivers: provisioned, attached and deleted through the nodes.
        let csi = CSIControllers(client: client, informers: informers, channel: CloudHubCSIChannel { await hubBox.value }, logger: logger)
        let sync = ReliableSync(source: objects, sender: hub, recorder: recorder, options: c.sync, logger: logger)
        for (node, records) in restored { sync.restore(node: node, records) }
        objects.attach(sync)
        // (Nodes connect only after the caches synced: CloudHub starts then.)
        await syncBox.set(sync)
        let certs = CertificateServer(host: c.hub.host, port: c.certPort, ca: secrets.ca, serverCertificate: secrets.serverCertificate,
                                      certificateValidity: c.edgeCertificateValidity,
                                      logger: logger, onRunning: { await ports.set(cert: $0) })
        logger.info("cloudcore starting", metadata: ["restoredNodes": "\(restored.count)", "restoredObjects": "\(restored.values.reduce(0) { $0 + $1.count })"])
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await cancelWhenGracefulShutdown { try await informers.run() } }
            group.addTask { try await recorder.run() }
            group.addTask {
                // Nodes may connect only once the caches can answer what they should have.
                await informers.waitForSync()
                try await sync.run()
            }
            group.addTask {
                await informers.waitForSync()
                try await hub.run()
            }
            group.addTask { try await certs.run() }
            group.addTask {
                await informers.waitForSync()
                try await cancelWhenGracefulShutdown { await csi.run() }
            }
            if let router {
                group.addTask {
                    await informers.waitForSync()
                    try await router.run()
                }
            }
            if let (port, clientCA) = c.streamServer, let tunnels = c.tunnels {
                var tls = try secrets.serverCertificate.serverTLSConfiguration(trusting: clientCA)
                tls.certificateVerification = .noHostnameVerification  // a client certificate is required
                var sc = KubeletStreamServerConfiguration(tls: tls)
                sc.host = c.hub.host
                sc.port = port
                let stream = KubeletStreamServer(configuration: sc, tunnels: tunnels, logger: logger, onListening: c.onStreamServerListening) { address in
                    objects.node(forAddress: address)
                }
                group.addTask {
                    await informers.waitForSync()
                    try await stream.run()
                }
            }
            group.addTask {
                guard let (h, ce) = await ports.both() else { return }
                await onReady(h, ce)
                while !Task.isShuttingDownGracefully {
                    // Cancelled by a graceful shutdown: the loop ends without an error.
                    try? await cancelWhenGracefulShutdown { try await Task.sleep(for: c.tokenRefresh) }
                    if Task.isShuttingDownGracefully { break }
                    do { _ = try await secrets.refreshToken(client: client, validity: Double(c.tokenRefresh.components.seconds) * 2) } catch {
                        logger.warning("join token refresh failed", metadata: ["error": "\(error)"])
                    }
                }
            }
            // The first server to fail (a port in use, say) ends CloudCore with its error: the others
            // are cancelled, and the wait for both ports ends (waitForAll would wait for them all).
            do { while try await group.next() != nil {} } catch {
                await ports.abandon()
                throw error
            }
        }
    }
}

/// Hands the delivery engine to CloudHub's event callback once it exists.
actor SyncBox {
    var value: ReliableSync?
    func set(_ s: ReliableSync) { value = s }
    func sync() -> ReliableSync? { value }
}

/// The two ports, known once both servers listen.
actor PortPair {
    var hub: Int?
    var cert: Int?
    var abandoned = false
    var waiters: [CheckedContinuation<(Int, Int)?, Never>] = []
    func set(hub p: Int) { hub = p; flush() }
    func set(cert p: Int) { cert = p; flush() }
    func flush() {
        guard let h = hub, let c = cert else { return }
        for w in waiters { w.resume(returning: (h, c)) }
        waiters = []
    }
    /// A server failed: waiters get nil, now and later.
    func abandon() {
        abandoned = true
        for w in waiters { w.resume(returning: nil) }
        waiters = []
    }
    /// Both ports once both servers listen; nil when one failed first.
    func both() async -> (Int, Int)? {
        if let h = hub, let c = cert { return (h, c) }
        if abandoned { return nil }
        return await withCheckedContinuation { waiters.append($0) }
    }
}

extension CloudCore {
    /// An edge pod's request, made as its ServiceAccount (kube's impersonation headers): the
    /// cluster's RBAC and admission decide, as for any in-cluster client.
    static func forward(_ r: ForwardedAPIRequest, with client: HTTPKubeClient) async throws -> ForwardedAPIRequest.Answer {
        var headers: [(String, String)] = [("Impersonate-User", r.username), ("Accept", "application/json")]
        if !r.uid.isEmpty { headers.append(("Impersonate-Uid", r.uid)) }
        for g in r.groups where g != "system:authenticated" { headers.append(("Impersonate-Group", g)) }
        for (k, values) in r.extra.sorted(by: { $0.key < $1.key }) {
            for v in values { headers.append(("Impersonate-Extra-" + URLQuery.escape(k), v)) }
        }
        if let ct = r.contentType { headers.append(("Content-Type", ct)) }
        let answer = try await client.raw(method: r.method, path: r.uri, headers: headers, body: r.bodyBytes)
        return ForwardedAPIRequest.Answer(status: answer.status, contentType: answer.contentType, body: answer.body)
    }
}
