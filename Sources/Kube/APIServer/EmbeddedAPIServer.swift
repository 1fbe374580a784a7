import DefaultSettings
import Foundation
import KubeAPI
import KubeAuth
import Logging
import ObjectStore
import PKI
import ServiceLifecycle

/// Everything the embedded API server needs on disk, created on first start:
/// `<dataDir>/state.db` (objects), `<dataDir>/pki/` (CA, serving cert), `<dataDir>/admin.token`.
public struct EmbeddedAPIServerConfiguration: Sendable {
    public var dataDirectory: String
    public var host: String
    public var port: Int
    /// Serve plain HTTP instead of HTTPS (explicit opt-in).
    public var insecureHTTP: Bool
    /// Where to write the admin kubeconfig.
    public var kubeconfigPath: String
    public var fsyncEveryCommit: Bool
    public var historyLimit: Int
    public var compactionInterval: Duration
    public var bookmarkInterval: Duration
    /// Extra names/IPs for the serving certificate.
    public var extraSANs: [String]
    /// Renders Prometheus metrics for `/metrics`.
    public var metricsExporter: (@Sendable () -> [UInt8])?
    /// Streams to edge nodes for `pods/log` (the cloud's stream tunnels).
    public var podStreams: (any PodStreams)?
    /// kube-apiserver's `--service-cluster-ip-range`.
    public var serviceClusterIPRange = IPv4Network(IPv4Address(0x0A60_0000), prefix: 12)
    /// The random part of names made from `generateName` (tests replace it to force collisions).
    public var generatedNameSuffix: @Sendable () -> String = APIHandler.randomNameSuffix
    /// Enforce RBAC (kube's `--authorization-mode=RBAC`); false allows every authenticated caller everything (`AlwaysAllow`).
    public var enforceRBAC = true
    /// kube's `--audit-policy-file` and `--audit-log-path` (both, or neither).
    public var audit: AuditOptions?
    /// kube's `--encryption-provider-config`: which resources are encrypted at rest, with which keys.
    public var encryption: EncryptionConfiguration?
    /// Admission rules run in-process as webhooks (KubeEdge's admission in `swiftedge cloud`).
    public var inProcessWebhooks: InProcessWebhooks?
    /// Users of `--token-auth-file` (token → user), beside the admin token.
    public var staticTokens: [String: UserInfo] = [:]
    /// kube's `--enable-bootstrap-token-auth`.
    public var bootstrapTokens = false

    public init(dataDirectory: String, host: String = "127.0.0.1", port: Int = Defaults.apiServerPort, insecureHTTP: Bool = false,
                kubeconfigPath: String, fsyncEveryCommit: Bool = true, historyLimit: Int = 10_000,
                compactionInterval: Duration = .seconds(300), bookmarkInterval: Duration = .seconds(60), extraSANs: [String] = [])
    {
        self.dataDirectory = dataDirectory; self.host = host; self.port = port; self.insecureHTTP = insecureHTTP
        self.kubeconfigPath = kubeconfigPath; self.fsyncEveryCommit = fsyncEveryCommit; self.historyLimit = historyLimit
        self.compactionInterval = compactionInterval; self.bookmarkInterval = bookmarkInterval; self.extraSANs = extraSANs
    }
}

/// A typed bootstrap error.
public struct BootstrapError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// The embedded Kubernetes-compatible API server: store, handler, HTTP service and upkeep,
/// ready to be run in a `ServiceGroup`.
public struct EmbeddedAPIServer: Sendable {
    public let store: SQLiteObjectStore
    public let handler: APIHandler
    public let services: [any Service]
    public let adminToken: String
    public let caPEM: String
    public let serverURL: String
    /// The cluster CA (it signs client certificates: the CSR signer uses it).
    public let ca: CertificateAuthority

    public static func open(_ config: EmbeddedAPIServerConfiguration, logger: Logger,
                            onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws -> EmbeddedAPIServer
    {
        let fm = FileManager.default
        let dir = config.dataDirectory
        try fm.createDirectory(atPath: dir + "/pki", withIntermediateDirectories: true)
        var storeConfig = SQLiteStoreConfiguration(path: dir + "/state.db", historyLimit: config.historyLimit, fsyncEveryCommit: config.fsyncEveryCommit)
        storeConfig.transformer = config.encryption
        let store = try SQLiteObjectStore(configuration: storeConfig, indexer: APIHandler.indexer, logger: logger)
        let registry = ResourceRegistry()
        // CRDs already stored are served again at once.
        let crds = try await store.list(prefix: CRDSchema.crdType.storagePrefix, startAfter: nil, limit: nil, revision: nil, filter: nil)
        for c in crds.items { if let v = try? c.decode(), v["metadata"]["deletionTimestamp"].isNull { registry.register(crd: v) } }

        let token = try loadOrCreate(dir + "/admin.token") { randomHexToken() }
        let ca: CertificateAuthority
        let caCertPath = dir + "/pki/ca.crt", caKeyPath = dir + "/pki/ca.key"
        if fm.fileExists(atPath: caCertPath) {
            ca = try CertificateAuthority(certificatePEM: try String(contentsOfFile: caCertPath, encoding: .utf8),
                                          privateKeyPEM: try String(contentsOfFile: caKeyPath, encoding: .utf8))
        } else {
            ca = try CertificateAuthority.generate(commonName: "swiftedge-ca")
            try write(ca.privateKeyPEM, to: caKeyPath, mode: 0o600)
            try write(ca.certificatePEM, to: caCertPath, mode: 0o644)
        }
        var tls: CertificateAndKey?
        if !config.insecureHTTP {
            let certPath = dir + "/pki/apiserver.crt", keyPath = dir + "/pki/apiserver.key"
            if fm.fileExists(atPath: certPath) {
                tls = CertificateAndKey(certificatePEM: try String(contentsOfFile: certPath, encoding: .utf8),
                                        privateKeyPEM: try String(contentsOfFile: keyPath, encoding: .utf8))
            } else {
                var ips = ["127.0.0.1", config.serviceClusterIPRange.address(1)?.description ?? "10.96.0.1"]
                var dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
                for s in config.extraSANs + [config.host] where s != "0.0.0.0" {
                    if CertificateAuthority.isIPAddress(s) { if !ips.contains(s) { ips.append(s) } } else if !dns.contains(s) { dns.append(s) }
                }
                let issued = try ca.issue(commonName: "kube-apiserver", dnsNames: dns, ipAddresses: ips, server: true, client: false, days: 3650)
                try write(issued.privateKeyPEM, to: keyPath, mode: 0o600)
                try write(issued.certificatePEM, to: certPath, mode: 0o644)
                tls = issued
            }
        }
        let adminCert = config.insecureHTTP ? nil : try adminCertificate(directory: dir, ca: ca)
        let scheme = config.insecureHTTP ? "http" : "https"
        let host = config.host == "0.0.0.0" ? "127.0.0.1" : config.host
        let url = "\(scheme)://\(host):\(config.port)"
        var options = APIHandlerOptions(tokens: [token], bookmarkInterval: config.bookmarkInterval,
                                        advertiseAddress: "\(host):\(config.port)")
        // ServiceAccount tokens are signed with a key of their own (kube's --service-account-signing-key-file).
        let saKey = try loadOrCreate(dir + "/pki/sa.key") { ServiceAccountTokenIssuer.generateKeyPEM() }
        options.access = AccessOptions(tokens: config.staticTokens.merging([token: .admin]) { _, admin in admin },
                                       serviceAccountTokens: try ServiceAccountTokenIssuer(privateKeyPEM: saKey + "\n"), enforceRBAC: config.enforceRBAC)
        options.access.bootstrapTokens = config.bootstrapTokens
        options.audit = config.audit
        options.inProcessWebhooks = config.inProcessWebhooks
        options.metricsExporter = config.metricsExporter
        options.podStreams = config.podStreams
        options.serviceClusterIPRange = config.serviceClusterIPRange
        options.generatedNameSuffix = config.generatedNameSuffix
        options.rootCAPEM = ca.certificatePEM
        let handler = APIHandler(store: store, registry: registry, options: options, logger: logger)
        try await seed(handler, token: token)
        // The kubeconfig names the port actually bound (port 0 picks a free one).
        let kubeconfigPath = config.kubeconfigPath, caPEM = ca.certificatePEM, insecure = config.insecureHTTP
        if config.port != 0 { try writeKubeconfig(path: kubeconfigPath, server: url, caPEM: caPEM, token: token, certificate: adminCert, insecure: insecure) }
        let announce: @Sendable (Int) async -> Void = { port in
            do {
                try writeKubeconfig(path: kubeconfigPath, server: "\(scheme)://\(host):\(port)", caPEM: caPEM, token: token, certificate: adminCert,
                                    insecure: insecure)
            } catch {
                logger.error("cannot write the admin kubeconfig", metadata: ["path": "\(kubeconfigPath)", "error": "\(error)"])
            }
            await onRunning(port)
        }
        let http = APIServerService(handler: handler, configuration: .init(host: config.host, port: config.port, tls: tls, clientCAPEM: ca.certificatePEM),
                                    logger: logger, onRunning: announce)
        let upkeep = Maintenance(store: store, registry: registry, compactionInterval: config.compactionInterval, logger: logger)
        let watchers = [StoreChangeWatcher.policies(handler.policies), StoreChangeWatcher.webhooks(handler.webhooks)]
        return EmbeddedAPIServer(store: store, handler: handler, services: watchers + [http, upkeep], adminToken: token,
                                 caPEM: ca.certificatePEM, serverURL: url, ca: ca)
    }

    static func loadOrCreate(_ path: String, _ make: () -> String) throws -> String {
        if let s = try? String(contentsOfFile: path, encoding: .utf8) {
            let t = s.trimmingCharacters(in: .whitespacesAndNewlines)
            if !t.isEmpty { return t }
        }
        let t = make()
        try write(t + "\n", to: path, mode: 0o600)
        return t
    }

    static func write(_ s: String, to path: String, mode: Int) throws {
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        guard FileManager.default.createFile(atPath: path, contents: Data(s.utf8), attributes: [.posixPermissions: mode]) else {
            throw BootstrapError(message: "cannot write \(path)")
        }
    }

    /// Seeds the namespaces and objects every cluster has.
    static func seed(_ handler: APIHandler, token: String) async throws {
        let auth = ["authorization": "Bearer \(token)", "content-type": "application/json", "user-agent": "swiftedge-apiserver/v1"]
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body: JSON = ["apiVersion": "v1", "kind": "Namespace", "metadata": ["name": .string(ns)]]
            let r = await handler.handle(APIRequest(method: "POST", path: "/api/v1/namespaces", headers: auth, body: body.serialized()))
            if r.statusCode >= 300 && r.statusCode != 409 { throw BootstrapError(message: "seeding namespace \(ns) failed (\(r.statusCode))") }
            try await Admission.ensureNamespaceDefaults(ns, handler: handler)
        }
        let svc: JSON = ["apiVersion": "v1", "kind": "Service",
                         "metadata": ["name": "kubernetes", "namespace": "default", "labels": ["component": "apiserver", "provider": "kubernetes"]],
                         "spec": ["clusterIP": .string(handler.options.serviceClusterIPRange.address(1)?.description ?? "10.96.0.1"), "ports": [["name": "https", "port": 443, "protocol": "TCP", "targetPort": .int(Int64(Defaults.apiServerPort))]]]]
        _ = await handler.handle(APIRequest(method: "POST", path: "/api/v1/namespaces/default/services", headers: auth, body: svc.serialized()))
        // What kube-apiserver bootstraps: the system priority classes and the user-facing roles
        // (admin/edit/view aggregate rules from labelled ClusterRoles, as kube's do).
        let classes: [(String, Int64, String)] = [("system-node-critical", 2_000_001_000, "Used for system critical pods that must not be moved from their current node."),
                                                  ("system-cluster-critical", 2_000_000_000, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.")]
        for (name, value, description) in classes {
            let pc: JSON = ["apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": ["name": .string(name)],
                            "value": .int(value), "description": .string(description), "preemptionPolicy": "PreemptLowerPriority"]
            _ = await handler.handle(APIRequest(method: "POST", path: "/apis/scheduling.k8s.io/v1/priorityclasses", headers: auth, body: pc.serialized()))
        }
        for role in BootstrapPolicy.clusterRoles {
            _ = await handler.handle(APIRequest(method: "POST", path: "/apis/rbac.authorization.k8s.io/v1/clusterroles", headers: auth, body: role.serialized()))
        }
        for binding in BootstrapPolicy.clusterRoleBindings {
            _ = await handler.handle(APIRequest(method: "POST", path: "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", headers: auth, body: binding.serialized()))
        }
    }

    /// The admin kubeconfig's client certificate (CN=kubernetes-admin, O=system:masters, as kubeadm's
    /// admin.conf), in `pki/admin.{crt,key}` (0600); issued again at start when it expires within 30 days.
    static func adminCertificate(directory dir: String, ca: CertificateAuthority) throws -> CertificateAndKey {
        let certPath = dir + "/pki/admin.crt", keyPath = dir + "/pki/admin.key"
        if let stored = CertificateAndKey.stored(certificatePath: certPath, keyPath: keyPath, validFor: 30 * 86400) { return stored }
        let issued = try ca.issue(commonName: UserInfo.admin.username, organization: UserInfo.mastersGroup, server: false, client: true, days: 365)
        try issued.save(certificatePath: certPath, keyPath: keyPath, certificateMode: 0o600)
        return issued
    }

    /// The admin kubeconfig: the admin's client certificate, or (plain HTTP) the admin token.
    static func writeKubeconfig(path: String, server: String, caPEM: String, token: String, certificate: CertificateAndKey?, insecure: Bool) throws {
        let credentials = certificate.map { c in
            "client-certificate-data: \(Data(c.certificatePEM.utf8).base64EncodedString())\n    client-key-data: \(Data(c.privateKeyPEM.utf8).base64EncodedString())"
        } ?? "token: \(token)"
        let ca = Data(caPEM.utf8).base64EncodedString()
        let cluster = insecure ? "    server: \(server)\n" : "    certificate-authority-data: \(ca)\n    server: \(server)\n"
        let text = """
            apiVersion: v1
            kind: Config
            clusters:
            - cluster:
            \(cluster)  name: swiftedge
            contexts:
            - context:
                cluster: swiftedge
                namespace: default
                user: swiftedge-admin
              name: swiftedge
            current-context: swiftedge
            preferences: {}
            users:
            - name: swiftedge-admin
              user:
                \(credentials)

            """
        try write(text, to: path, mode: 0o600)
    }
}
