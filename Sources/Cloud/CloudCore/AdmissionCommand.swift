import ArgumentParser
import CommandSupport
import DefaultSettings
import Foundation
import HTTPService
import KubeAPI
import KubeClient
import KubeEdgeAdmission
import Logging
import PKI
import ServiceLifecycle

/// `swiftedge admission`: KubeEdge's admission webhook as a server of its own, for a cluster that
/// is not SwiftEdge's embedded one (which runs the same rules in-process): serves the webhook
/// paths over HTTPS and, with `--register`, writes KubeEdge's webhook configurations into the
/// cluster (create or replace), pointing at `--url` or at a Service, trusting the serving CA.
public struct AdmissionCommand: AsyncParsableCommand {
    public init() {}

    public static let configuration = CommandConfiguration(
        commandName: "admission", abstract: "Run KubeEdge's admission webhook (Devices, Rules, RuleEndpoints, NodeUpgradeJobs, offline pods).")

    @Option(help: "Kubeconfig of the cluster (RuleEndpoints and Rules are read from it; --register writes the webhook configurations).")
    var kubeconfig: String

    @Option(help: "Address to listen on (default 0.0.0.0).")
    var host = "0.0.0.0"

    @Option(help: "Port to listen on (default 443).")
    var port = Defaults.admissionPort

    @Option(help: "Serving certificate (PEM); default: one issued by a CA of its own in --cert-dir.")
    var tlsCertFile: String?

    @Option(help: "Serving certificate's key (PEM).")
    var tlsPrivateKeyFile: String?

    @Option(help: "CA of --tls-cert-file (the webhook configurations' caBundle).")
    var caFile: String?

    @Option(help: "Where the generated CA and serving certificate are kept (default /etc/kubeedge/admission).")
    var certDir = Defaults.admissionCertDirectory

    @Option(help: "Extra DNS name or IP address of the generated serving certificate (repeatable).")
    var tlsSan: [String] = []

    @Flag(inversion: .prefixedNo, help: "Write KubeEdge's webhook configurations into the cluster.")
    var register = true

    @Option(help: "Base URL the API server calls the webhook at (e.g. https://192.0.2.10:443); default: the Service below.")
    var url: String?

    @Option(help: "Namespace of the webhook's Service (default kubeedge).")
    var serviceNamespace = "kubeedge"

    @Option(help: "Name of the webhook's Service (default kubeedge-admission-service).")
    var serviceName = "kubeedge-admission-service"

    @Option(help: "Port of the webhook's Service (default 443).")
    var servicePort = 443

    @OptionGroup var logging: LoggingOptions

    /// The serving certificate and the CA that signed it (PEM).
    func identity() throws -> (tls: ServerTLSIdentity, caPEM: String) {
        if let cert = tlsCertFile {
            guard let key = tlsPrivateKeyFile, let ca = caFile else { throw ValidationError("--tls-cert-file needs --tls-private-key-file and --ca-file") }
            func read(_ p: String) throws -> String {
                guard let s = try? String(contentsOfFile: p, encoding: .utf8) else { throw ValidationError("cannot read \(p)") }
                return s
            }
            return (ServerTLSIdentity(certificatePEM: try read(cert), privateKeyPEM: try read(key)), try read(ca))
        }
        return try AdmissionCertificates(directory: certDir, serviceName: serviceName, serviceNamespace: serviceNamespace, sans: tlsSan, url: url).identity()
    }

    public func run() async throws {
        let logger = logging.makeLogger("swiftedge.admission")
        let (tls, caPEM) = try identity()
        let client: any KubeClient
        do { client = try HTTPKubeClient(config: try KubeConfig.load(path: kubeconfig), logger: logger) } catch {
            throw ValidationError("--kubeconfig \(kubeconfig): \(error)")
        }
        let registration = register
            ? WebhookRegistration(url: url, serviceNamespace: serviceNamespace, serviceName: serviceName, servicePort: servicePort) : nil
        let host = self.host
        let server = KubeEdgeAdmissionServer(admission: KubeEdgeAdmission(reader: KubeClientObjectReader(client: client)), host: host, port: port,
                                             tls: tls, logger: logger) { bound in
            print("KubeEdge admission webhook listening on https://\(host):\(bound)")
            fflush(nil)
            guard let registration else { return }
            do { try await registration.register(client: client, caPEM: caPEM, logger: logger) } catch {
                logger.error("cannot register the webhook configurations", metadata: ["error": "\(error)"])
            }
        }
        let group = ServiceGroup(configuration: .init(services: [.init(service: server)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        try? await client.shutdown()
    }
}

/// Where the registered webhook configurations point: a URL base, or a Service.
struct WebhookRegistration: Sendable {
    var url: String?
    var serviceNamespace: String
    var serviceName: String
    var servicePort: Int

    /// Creates or replaces KubeEdge's webhook configurations.
    func register(client: any KubeClient, caPEM: String, logger: Logger) async throws {
        let bundle = JSON.string(Data(caPEM.utf8).base64EncodedString())
        let base = url.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
        let (validating, mutating) = KubeEdgeAdmission.webhookConfigurations { path in
            if let base { return ["url": .string(base + path.rawValue), "caBundle": bundle] }
            return ["service": ["namespace": .string(serviceNamespace), "name": .string(serviceName), "path": .string(path.rawValue),
                                "port": .int(Int64(servicePort))], "caBundle": bundle]
        }
        let types = [(ResourceType.validatingWebhookConfigurations, validating), (ResourceType.mutatingWebhookConfigurations, mutating)]
        for (type, objects) in types {
            for o in objects {
                let name = o["metadata"]["name"].stringValue ?? ""
                do {
                    _ = try await client.create(type, namespace: nil, o)
                } catch let e as StatusError where e.code == 409 {
                    var current = try await client.get(type, namespace: nil, name: name)
                    current["webhooks"] = o["webhooks"]
                    _ = try await client.update(type, namespace: nil, current)
                }
                logger.notice("registered the webhook configuration", metadata: ["kind": "\(type.kind)", "name": "\(name)"])
            }
        }
    }
}

/// The admission server's own CA and serving certificate, kept in `directory` (issued once, again
/// when it expires within 30 days or misses a name): for the Service's DNS names, localhost,
/// 127.0.0.1, the `url`'s host and the extra names.
struct AdmissionCertificates {
    var directory: String
    var serviceName: String
    var serviceNamespace: String
    var sans: [String]
    var url: String?

    func identity() throws -> (tls: ServerTLSIdentity, caPEM: String) {
        let caCert = directory + "/ca.crt", caKey = directory + "/ca.key", cert = directory + "/server.crt", key = directory + "/server.key"
        let ca: CertificateAuthority
        if let c = try? String(contentsOfFile: caCert, encoding: .utf8), let k = try? String(contentsOfFile: caKey, encoding: .utf8) {
            ca = try CertificateAuthority(certificatePEM: c, privateKeyPEM: k)
        } else {
            ca = try CertificateAuthority.generate(commonName: "kubeedge-admission-ca")
            try CertificateAndKey(certificatePEM: ca.certificatePEM, privateKeyPEM: ca.privateKeyPEM).save(certificatePath: caCert, keyPath: caKey)
        }
        let svc = "\(serviceName).\(serviceNamespace).svc"
        var dns = ["localhost", serviceName, "\(serviceName).\(serviceNamespace)", svc], ips = ["127.0.0.1"]
        for s in sans { if CertificateAuthority.isIPAddress(s) { ips.append(s) } else { dns.append(s) } }
        if let u = url, let h = URL(string: u)?.host { if CertificateAuthority.isIPAddress(h) { ips.append(h) } else { dns.append(h) } }
        let serving: CertificateAndKey
        if let stored = CertificateAndKey.stored(certificatePath: cert, keyPath: key, validFor: 30 * 86400, dnsNames: dns, ipAddresses: ips) {
            serving = stored
        } else {
            serving = try ca.issue(commonName: svc, organization: "KubeEdge", dnsNames: Array(Set(dns)).sorted(),
                                   ipAddresses: Array(Set(ips)).sorted(), server: true, client: false, days: 365)
            try serving.save(certificatePath: cert, keyPath: key)
        }
        return (ServerTLSIdentity(certificatePEM: serving.certificatePEM, privateKeyPEM: serving.privateKeyPEM), ca.certificatePEM)
    }
}
