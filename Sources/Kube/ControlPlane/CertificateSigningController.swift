import ControllerRuntime
import Foundation
import KubeAPI
import KubeClient
import Logging

/// Signs certificate requests with the cluster CA (kept outside the control plane: the
/// embedded server's CA, or the files of `--cluster-signing-cert-file`/`--cluster-signing-key-file`).
public protocol CertificateSigner: Sendable {
    /// A PEM certificate for the PEM PKCS#10 request, with client and/or server usages, valid for `validity` seconds.
    func sign(requestPEM: String, clientAuth: Bool, serverAuth: Bool, validity: TimeInterval) throws -> String
    /// The subject a PEM request asks for, and how many of its alternative names are neither DNS
    /// names nor IP addresses (kubelet-serving requests may carry only those).
    func subject(ofRequestPEM pem: String) throws -> (commonName: String, organizations: [String], otherNames: Int)
}

/// kube-controller-manager's csrsigning controller: an approved CertificateSigningRequest for one
/// of the built-in signers gets `status.certificate`; one the signer refuses gets a `Failed`
/// condition with the reason. Denied, failed and already issued requests are left alone.
final class CertificateSigningController: Reconciler {
    let name = "csrsigning"
    let client: KubeClient
    let requests: SharedInformer
    let signer: any CertificateSigner
    /// kube's `--cluster-signing-duration` (a request's `expirationSeconds` may shorten it).
    let maxValidity: TimeInterval
    let logger: Logger

    init(client: KubeClient, informers: InformerFactory, queue: WorkQueue, signer: any CertificateSigner,
         maxValidity: TimeInterval = 365 * 86400, logger: Logger) {
        self.client = client; self.signer = signer; self.maxValidity = maxValidity; self.logger = logger
        requests = informers.informer(R.certificateSigningRequests)
        requests.addHandler { ev in
            switch ev {
            case .added(let o), .updated(_, let o): queue.add(InformerCache.key(o))
            default: break
            }
        }
    }

    /// What a signer allows (kube's per-signer usage rules).
    enum Decision: Equatable {
        case sign(clientAuth: Bool, serverAuth: Bool)
        case refuse(String)
        /// Not one of the built-in signers: another controller's business.
        case notOurs
    }

    /// `subject` is the request's (kube's ValidateKubeletServingCSR checks it, not the requester:
    /// approving is where the requester counts).
    static func decide(signerName: String, usages: [String],
                       subject: (commonName: String, organizations: [String], otherNames: Int)?) -> Decision {
        let usages = Set(usages)
        switch signerName {
        case "kubernetes.io/kube-apiserver-client", "kubernetes.io/kube-apiserver-client-kubelet":
            let extra = usages.subtracting(["client auth", "digital signature", "key encipherment"])
            guard usages.contains("client auth") else { return .refuse("missing required usages: [client auth]") }
            guard extra.isEmpty else { return .refuse("invalid usage for client certificate: \(extra.sorted().joined(separator: ","))") }
            return .sign(clientAuth: true, serverAuth: false)
        case "kubernetes.io/kubelet-serving":
            let extra = usages.subtracting(["server auth", "digital signature", "key encipherment"])
            guard usages.contains("server auth") else { return .refuse("missing required usages: [server auth]") }
            guard extra.isEmpty else { return .refuse("invalid usage for serving certificate: \(extra.sorted().joined(separator: ","))") }
            guard let subject, subject.commonName.hasPrefix("system:node:"), subject.organizations == ["system:nodes"] else {
                return .refuse("subject must be CN=system:node:<name>, O=system:nodes")
            }
            guard subject.otherNames == 0 else { return .refuse("only DNS names and IP addresses are allowed as subject alternative names") }
            return .sign(clientAuth: false, serverAuth: true)
        default:
            return .notOurs
        }
    }

    func reconcile(_ key: String) async throws -> ReconcileResult {
        guard let csr = requests.cache.get(key), !csr.isDeleting else { return .done }
        let conditions = csr["status"]["conditions"].arrayValue ?? []
        func has(_ type: String) -> Bool { conditions.contains { $0["type"].stringValue == type && $0["status"].stringValue != "False" } }
        guard has("Approved"), !has("Denied"), !has("Failed"), (csr["status"]["certificate"].stringValue ?? "").isEmpty else { return .done }
        let spec = csr["spec"]
        let requestPEM = Data(base64Encoded: spec["request"].stringValue ?? "").flatMap { String(data: $0, encoding: .utf8) }
        let decision = Self.decide(signerName: spec["signerName"].stringValue ?? "", usages: (spec["usages"].arrayValue ?? []).compactMap(\.stringValue),
                                   subject: requestPEM.flatMap { try? signer.subject(ofRequestPEM: $0) })
        var updated = csr
        switch decision {
        case .notOurs:
            return .done
        case .refuse(let why):
            updated["status"]["conditions"] = .array(conditions + [Self.condition("Failed", "SignerValidationFailure", why)])
        case .sign(let clientAuth, let serverAuth):
            var validity = maxValidity
            if let asked = spec["expirationSeconds"].intValue, asked >= 600 { validity = min(validity, TimeInterval(asked)) }
            guard let der = Data(base64Encoded: spec["request"].stringValue ?? ""), let pem = String(data: der, encoding: .utf8) else {
                updated["status"]["conditions"] = .array(conditions + [Self.condition("Failed", "SignerValidationFailure", "spec.request is not base64 PEM")])
                break
            }
            do {
                let cert = try signer.sign(requestPEM: pem, clientAuth: clientAuth, serverAuth: serverAuth, validity: validity)
                updated["status"]["certificate"] = .string(Data(cert.utf8).base64EncodedString())
                logger.info("certificate issued", metadata: ["csr": "\(csr.name)", "signer": "\(spec["signerName"].stringValue ?? "")"])
            } catch {
                updated["status"]["conditions"] = .array(conditions + [Self.condition("Failed", "SignerValidationFailure", "\(error)")])
            }
        }
        _ = try await client.update(R.certificateSigningRequests, namespace: nil, updated, subresource: "status", fieldManager: "csrsigning-controller")
        return .done
    }

    static func condition(_ type: String, _ reason: String, _ message: String) -> JSON {
        let now = KubeTime.now().rfc3339
        return ["type": .string(type), "status": "True", "reason": .string(reason), "message": .string(message),
                "lastUpdateTime": .string(now), "lastTransitionTime": .string(now)]
    }
}
