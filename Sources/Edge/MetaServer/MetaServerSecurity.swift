import AsyncSupport
import CloudEdgeProtocol
import Foundation
import KubeAPI
import KubeAuth
import Logging
import MetaStore
import PKI

/// How MetaServer authenticates and authorizes, from the node's store alone (so it works offline):
/// - the node's own client certificate (issued by the cloud's CA: `CN=system:node:<node>`) reads
///   everything the node holds;
/// - a pod's ServiceAccount token — one this node obtained for the pod through the cloud's
///   TokenRequest, for the API audience, not expired, the pod still on the node — makes the
///   request the ServiceAccount's, authorized by the RBAC objects the cloud synced to the node
///   (those that grant the node's ServiceAccounts anything), with kube's 403 messages;
/// - anything else is 401.
/// What the store cannot answer (writes, kinds the node does not hold) a pod's request is
/// forwarded to the cloud while connected, made there as the pod's ServiceAccount.
public struct MetaServerSecurity: Sendable {
    public var nodeName: String
    /// The CA node client certificates chain to (the cloud's).
    public var clientCAPEM: String
    public var tokens: PodTokenStore
    /// The serving certificate and key (PEM), obtained before MetaServer listens.
    public var servingCertificate: @Sendable () async throws -> (certificatePEM: String, privateKeyPEM: String)

    /// Carries a request of a pod that the node's store cannot answer to the cloud and returns
    /// the cluster's answer (nil: the cloud did not answer).
    public var forward: (@Sendable (ForwardedAPIRequest) async -> ForwardedAPIRequest.Answer?)?

    public init(nodeName: String, clientCAPEM: String, tokens: PodTokenStore,
                forward: (@Sendable (ForwardedAPIRequest) async -> ForwardedAPIRequest.Answer?)? = nil,
                servingCertificate: @escaping @Sendable () async throws -> (certificatePEM: String, privateKeyPEM: String))
    {
        self.nodeName = nodeName; self.clientCAPEM = clientCAPEM; self.tokens = tokens; self.forward = forward
        self.servingCertificate = servingCertificate
    }

    /// Who sent the request (nil: nobody MetaServer knows).
    func authenticate(authorization: String?, peerCertificateDER: [UInt8]?, store: any MetaStorage, now: Date = Date()) async throws -> UserInfo? {
        if let authorization {
            guard authorization.hasPrefix("Bearer "), case let presented = String(authorization.dropFirst(7)), !presented.isEmpty,
                  let t = try await tokens.find(presented, now: now), t.audiences.isEmpty
            else { return nil }
            // The pod it was issued for must still be on the node (a token outlives nothing it is bound to).
            let key = ResourceRef(namespace: t.namespace, kind: .pod, name: t.pod).description
            guard let pod = try await store.get(key), pod.uid == t.podUID else { return nil }
            return UserInfo(username: ServiceAccountName.username(namespace: t.namespace, name: t.serviceAccount),
                            groups: ServiceAccountName.groups(namespace: t.namespace),
                            extra: ["authentication.kubernetes.io/pod-name": [t.pod], "authentication.kubernetes.io/pod-uid": [t.podUID]])
        }
        guard let der = peerCertificateDER, let identity = CertificateIdentity(certificateDER: der) else { return nil }
        return UserInfo(username: identity.commonName, groups: identity.organizations + [UserInfo.authenticatedGroup])
    }

    /// Nil when `user` may make the request, else kube's 403.
    func authorize(_ user: UserInfo, _ what: MetaRequest, watch: Bool, store: any MetaStorage) async throws -> StatusError? {
        if user.username == NodeIdentity.prefix + nodeName { return nil }  // the node reads its own store
        let attributes: RequestAttributes
        switch what {
        // Discovery: kube's system:discovery / system:public-info-viewer, granted to every authenticated user.
        case .version, .apiVersions, .groups, .resources: return nil
        case .list(let r, let ns):
            attributes = RequestAttributes(user: user, verb: watch ? "watch" : "list", apiGroup: "", apiVersion: "v1", resource: r.rawValue,
                                           namespace: ns ?? "")
        case .get(let r, let ns, let name):
            attributes = RequestAttributes(user: user, verb: "get", apiGroup: "", apiVersion: "v1", resource: r.rawValue, namespace: ns ?? "", name: name)
        }
        func objects(_ kind: EdgeResourceKind) async throws -> [JSON] { try await store.list(type: kind).map(\.value) }
        // Aggregated ClusterRoles keep the rules the cloud's aggregation controller wrote: the node
        // holds only the roles that grant its ServiceAccounts something.
        let policy = RBACPolicy(clusterRoles: try await objects(.clusterRole), roles: try await objects(.role),
                                clusterRoleBindings: try await objects(.clusterRoleBinding), roleBindings: try await objects(.roleBinding),
                                aggregate: false)
        return policy.allows(attributes) ? nil : attributes.forbidden
    }
}

/// The MetaServer's serving certificate: kept in `directory` (`metaserver.crt`, `metaserver.key`),
/// otherwise a fresh key and a `kubernetes.io/kubelet-serving` request sent to the cloud, asked
/// again with back-off until it is signed (the cloud may be unreachable for a while).
public struct MetaServerCertificates: Sendable {
    public var directory: String
    public var nodeName: String
    public var dnsNames: [String]
    public var ipAddresses: [String]
    /// Sends the request over the cloud channel and returns the answer (nil: no answer).
    public var request: @Sendable (Message) async -> Message?
    public var logger: Logger

    public init(directory: String, nodeName: String, dnsNames: [String], ipAddresses: [String],
                request: @escaping @Sendable (Message) async -> Message?, logger: Logger)
    {
        self.directory = directory; self.nodeName = nodeName; self.dnsNames = dnsNames; self.ipAddresses = ipAddresses
        self.request = request; self.logger = logger
    }

    var certPath: String { directory + "/metaserver.crt" }
    var keyPath: String { directory + "/metaserver.key" }

    /// The stored certificate while it is valid for another day and names every address; else a new one.
    public func obtain() async throws -> (certificatePEM: String, privateKeyPEM: String) {
        if let stored = CertificateAndKey.stored(certificatePath: certPath, keyPath: keyPath, validFor: 86400, dnsNames: dnsNames,
                                                 ipAddresses: ipAddresses) {
            return (stored.certificatePEM, stored.privateKeyPEM)
        }
        let (csrPEM, keyPEM) = try makeNodeServingCSR(nodeName: nodeName, dnsNames: dnsNames, ipAddresses: ipAddresses)
        let csr: JSON = ["apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
                         "spec": ["request": .string(Data(csrPEM.utf8).base64EncodedString()), "signerName": "kubernetes.io/kubelet-serving",
                                  "usages": ["digital signature", "key encipherment", "server auth"]]]
        let message = UpstreamReport.query(ResourceRef(namespace: nil, kind: .certificateSigningRequest, name: nodeName), content: csr)
            .message(source: MessageSource.metaManager)
        var backoff = Backoff(base: .seconds(1), max: .seconds(30))
        while true {
            try Task.checkCancellation()
            if let answer = await request(message) {
                if let encoded = answer.content["status"]["certificate"].stringValue, let der = Data(base64Encoded: encoded),
                   case let cert = String(decoding: der, as: UTF8.self), cert.contains("BEGIN CERTIFICATE")
                {
                    try CertificateAndKey(certificatePEM: cert, privateKeyPEM: keyPEM).save(certificatePath: certPath, keyPath: keyPath)
                    logger.info("MetaServer serving certificate signed by the cluster", metadata: ["path": "\(certPath)"])
                    return (cert, keyPEM)
                }
                let why = answer.content["ErrStatus"]["message"].stringValue ?? String(decoding: answer.content.serialized(), as: UTF8.self)
                logger.warning("MetaServer serving certificate refused; asking again", metadata: ["reason": "\(why)"])
            } else {
                logger.info("waiting for the cloud to sign the MetaServer serving certificate")
            }
            try await Task.sleep(for: backoff.next())
        }
    }
}
