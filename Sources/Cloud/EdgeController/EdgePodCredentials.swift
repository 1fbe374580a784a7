import CloudEdgeProtocol
import Foundation
import KubeAPI
import KubeClient
import KubeAuth
import PKI

/// Credentials an edge node asks the cloud for on behalf of its pods and its MetaServer: bound
/// ServiceAccount tokens (kubelet's TokenRequest, as kube's Node authorizer allows it: only for a
/// pod bound to the node, only for that pod's ServiceAccount) and the MetaServer's serving
/// certificate (a `kubernetes.io/kubelet-serving` CertificateSigningRequest for the node's own
/// name, approved by the cloud and signed by the cluster's signer, so in-cluster clients verify
/// it with the `ca.crt` of their ServiceAccount volume).
extension NodeUpstream {
    /// `<ns>/serviceaccounttoken/<sa>` query with a TokenRequest: the TokenRequest answered by the
    /// API server, bound to the node's pod.
    func serviceAccountToken(node: String, _ ref: ResourceRef, _ request: JSON) async throws -> JSON {
        guard let ns = ref.namespace, let sa = ref.name, !sa.isEmpty else { throw StatusError.badRequest("token request without a ServiceAccount") }
        let bound = request["spec"]["boundObjectRef"]
        guard bound["kind"].stringValue == "Pod", let podName = bound["name"].stringValue, !podName.isEmpty else {
            throw StatusError(.forbidden, "node \(node) may only request tokens bound to one of its pods")
        }
        guard let pod = self.pod(ns, podName), pod["spec"]["nodeName"].stringValue == node else {
            throw StatusError(.forbidden, "node \(node) may not request a token for pod \(ns)/\(podName): no relationship found between node '\(node)' and this object")
        }
        let podSA = EdgeObjects.serviceAccountName(of: pod)
        guard podSA == sa else {
            throw StatusError(.forbidden, "node \(node) may not request a token for ServiceAccount \(ns)/\(sa): pod \(podName) runs as \(podSA)")
        }
        let uid = pod["metadata"]["uid"].stringValue ?? ""
        if let asked = bound["uid"].stringValue, !asked.isEmpty, asked != uid {
            throw StatusError(.conflict, "pod \(ns)/\(podName) has uid \(uid), not \(asked)")
        }
        var spec: JSON = ["boundObjectRef": ["kind": "Pod", "apiVersion": "v1", "name": .string(podName), "uid": .string(uid)]]
        if let audiences = request["spec"]["audiences"].arrayValue, !audiences.isEmpty { spec["audiences"] = .array(audiences) }
        if let seconds = request["spec"]["expirationSeconds"].intValue { spec["expirationSeconds"] = .int(Int64(seconds)) }
        let body: JSON = ["apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "metadata": ["name": .string(sa), "namespace": .string(ns)],
                          "spec": spec]
        var answer = try await client.post(ResourceType.serviceAccounts, namespace: ns, name: sa, subresource: "token", body)
        if answer["kind"].isNull { answer["kind"] = "TokenRequest"; answer["apiVersion"] = "authentication.k8s.io/v1" }
        return answer
    }

    /// `null/certificatesigningrequest/<name>` query carrying a CertificateSigningRequest for the
    /// node's serving certificate: created (signer `kubernetes.io/kubelet-serving`), approved when
    /// it names the node itself and only DNS names and IP addresses, and answered once signed.
    func servingCertificate(node: String, _ request: JSON) async throws -> JSON {
        guard let encoded = request["spec"]["request"].stringValue, let der = Data(base64Encoded: encoded) else {
            throw StatusError.badRequest("the CertificateSigningRequest has no spec.request")
        }
        let contents: CertificateRequestContents
        do { contents = try CertificateRequestContents(pem: String(decoding: der, as: UTF8.self)) } catch {
            throw StatusError.badRequest("\(error)")
        }
        guard contents.commonName == "system:node:\(node)", contents.organizations == ["system:nodes"] else {
            throw StatusError(.forbidden, "node \(node) may only request a serving certificate for CN=system:node:\(node), O=system:nodes (asked for CN=\(contents.commonName), O=\(contents.organizations.joined(separator: ",")))")
        }
        guard contents.otherNames == 0, !(contents.dnsNames.isEmpty && contents.ipAddresses.isEmpty) else {
            throw StatusError.badRequest("a serving certificate names DNS names or IP addresses, and nothing else")
        }
        let type = ResourceType.certificateSigningRequests
        let csr: JSON = ["apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
                         "metadata": ["generateName": .string("csr-metaserver-\(node)-")],
                         "spec": ["request": .string(encoded), "signerName": "kubernetes.io/kubelet-serving",
                                  "usages": ["digital signature", "key encipherment", "server auth"],
                                  "expirationSeconds": .int(Int64(request["spec"]["expirationSeconds"].intValue ?? 365 * 86400))]]
        var created = try await client.create(type, namespace: nil, csr, fieldManager: Self.manager)
        guard let name = created["metadata"]["name"].stringValue else { throw StatusError(.internalError, "the created CertificateSigningRequest has no name") }
        created["status"]["conditions"] = [["type": "Approved", "status": "True", "reason": "EdgeNodeServingCertificate",
                                            "message": .string("approved by SwiftEdge's edgecontroller for node \(node)'s MetaServer"),
                                            "lastUpdateTime": .string(KubeTime.now().rfc3339)]]
        let approved = try await client.update(type, namespace: nil, created, subresource: "approval", fieldManager: Self.manager)
        if approved["status"]["certificate"].stringValue?.isEmpty == false { return type.withTypeMeta(approved) }
        // Signed by the cluster's signer (the embedded controller manager, or kube-controller-manager).
        let deadline = ContinuousClock.now + signingTimeout
        let seconds = Int(signingTimeout.components.seconds)
        while ContinuousClock.now < deadline {
            let current = try await client.get(type, namespace: nil, name: name)
            if current["status"]["certificate"].stringValue?.isEmpty == false { return type.withTypeMeta(current) }
            if let failed = (current["status"]["conditions"].arrayValue ?? []).first(where: { $0["type"].stringValue == "Failed" || $0["type"].stringValue == "Denied" }) {
                throw StatusError(.forbidden, "the serving certificate was refused: \(failed["message"].stringValue ?? failed["reason"].stringValue ?? "")")
            }
            let events = try await client.watch(type, namespace: nil, resourceVersion: current["metadata"]["resourceVersion"].stringValue,
                                                labelSelector: nil, fieldSelector: "metadata.name=\(name)", timeoutSeconds: max(1, seconds))
            for try await e in events where e.type == .modified {
                if e.object["status"]["certificate"].stringValue?.isEmpty == false { return type.withTypeMeta(e.object) }
                break  // a condition changed: look again
            }
        }
        throw StatusError(.timeout, "CertificateSigningRequest \(name) was approved but not signed within \(seconds) s: is a signer for kubernetes.io/kubelet-serving running?")
    }

    /// A request an edge pod made to its node's MetaServer that only the cloud can answer: made on
    /// the API server as the pod's ServiceAccount (impersonated, so the cluster's RBAC decides),
    /// only for a ServiceAccount of a pod bound to the asking node.
    func forwardedRequest(node: String, _ content: JSON) async throws -> JSON {
        guard let forward else { throw StatusError(.serviceUnavailable, "this cloud does not forward edge pods' requests") }
        let request: ForwardedAPIRequest
        do { request = try JSONValueDecoder().decode(ForwardedAPIRequest.self, from: content) } catch {
            throw StatusError.badRequest("not a forwarded API request: \(error)")
        }
        guard request.uri.hasPrefix("/api/") || request.uri.hasPrefix("/apis/") else {
            throw StatusError(.forbidden, "only API requests are forwarded, not \(request.uri)")
        }
        guard let account = ServiceAccountName.split(request.username), let podName = request.extra["authentication.kubernetes.io/pod-name"]?.first,
              let podUID = request.extra["authentication.kubernetes.io/pod-uid"]?.first,
              let pod = self.pod(account.namespace, podName), pod["spec"]["nodeName"].stringValue == node,
              pod["metadata"]["uid"].stringValue == podUID,
              EdgeObjects.serviceAccountName(of: pod) == account.name
        else {
            throw StatusError(.forbidden, "node \(node) may only forward requests of the ServiceAccounts of its own pods (not \(request.username))")
        }
        let answer = try await forward(request)
        return try JSON.parse(Array(try JSONEncoder().encode(answer)))
    }
}
