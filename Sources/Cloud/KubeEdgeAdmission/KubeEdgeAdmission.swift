import Foundation
import KubeAPI

/// What the rules need to read: RuleEndpoints and Rules of a namespace (the API, or a double).
public protocol KubeEdgeObjectReader: Sendable {
    /// The object, nil when it does not exist.
    func get(_ type: ResourceType, namespace: String, name: String) async throws -> JSON?
    func list(_ type: ResourceType, namespace: String) async throws -> [JSON]
}

/// KubeEdge's admission webhook (`cloud/pkg/admissioncontroller`), rule for rule and message for
/// message, so users see what cloudcore's admission tells them:
/// - `/devices`, `/devicemodels` (CREATE, UPDATE): property names unique;
/// - `/rules` (CREATE; UPDATE refused unless only the status changes): source and target RuleEndpoints exist in the namespace,
///   the resource keys their types need, no second rule on the same rest path or eventbus
///   topic+node, and only rest→eventbus, rest→servicebus, eventbus→rest;
/// - `/ruleendpoints` (CREATE; UPDATE refused): servicebus needs `service_port` 1–65535;
/// - `/nodeupgradejobs` (CREATE, UPDATE): version `vX.Y.Z[-…]`, image repository, exactly one of
///   nodeNames and labelSelector, spec immutable; `/mutating/nodeupgradejobs` defaults concurrency
///   1 and timeoutSeconds 300;
/// - `/offlinemigration` (pods labelled `app-offline.kubeedge.io=autonomy`): a toleration of
///   `node.kubernetes.io/unreachable` without a time limit, so the pods stay on an offline node.
public struct KubeEdgeAdmission: Sendable {
    public enum Path: String, Sendable, CaseIterable {
        case devices = "/devices", deviceModels = "/devicemodels", rules = "/rules", ruleEndpoints = "/ruleendpoints"
        case nodeUpgradeJobs = "/nodeupgradejobs", nodeUpgradeJobDefaults = "/mutating/nodeupgradejobs", offlineMigration = "/offlinemigration"
    }

    /// Whether an update changes nothing a user set: spec, labels, annotations and finalizers as before.
    static func onlyStatusChanged(_ new: JSON, _ old: JSON) -> Bool {
        guard old.isObject else { return false }
        return new["spec"] == old["spec"] && ["labels", "annotations", "finalizers", "ownerReferences"].allSatisfy { new["metadata"][$0] == old["metadata"][$0] }
    }

    public static let rules = ResourceType(group: "rules.kubeedge.io", version: "v1", resource: "rules", kind: "Rule", namespaced: true)
    public static let ruleEndpoints = ResourceType(group: "rules.kubeedge.io", version: "v1", resource: "ruleendpoints", singular: "ruleendpoint",
                                                   kind: "RuleEndpoint", namespaced: true)

    let reader: any KubeEdgeObjectReader
    public init(reader: any KubeEdgeObjectReader) { self.reader = reader }

    /// Answers an AdmissionReview (v1) sent to `path`: the review with its `response`.
    public func review(_ path: Path, _ review: JSON) async -> JSON {
        let request = review["request"]
        var response: JSON = ["uid": request["uid"], "allowed": true]
        do {
            if let patch = try await admit(path, request) {
                response["patchType"] = "JSONPatch"
                response["patch"] = .string(Data(patch.serialized()).base64EncodedString())
            }
        } catch let refusal as Refusal {
            response["allowed"] = false
            response["status"] = ["message": .string(refusal.message)]
        } catch {
            response["allowed"] = false
            response["status"] = ["message": .string("\(error)")]
        }
        return ["apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response]
    }

    struct Refusal: Error { var message: String; init(_ m: String) { message = m } }

    /// Nil: allowed as it is; a JSONPatch: allowed with it; throws the refusal.
    func admit(_ path: Path, _ request: JSON) async throws -> JSON? {
        let op = request["operation"].stringValue ?? ""
        let object = request["object"], old = request["oldObject"]
        switch path {
        case .devices, .deviceModels:
            switch op {
            case "CREATE", "UPDATE":
                let names = (object["spec"]["properties"].arrayValue ?? []).map { $0["name"].stringValue ?? "" }
                if Set(names).count != names.count { throw Refusal("property names must be unique.") }
                return nil
            case "DELETE", "CONNECT": return nil
            default: throw Refusal("Unsupported webhook operation!")
            }
        case .rules:
            switch op {
            case "CREATE": try await validateRule(object, namespace: request["namespace"].stringValue ?? object["metadata"]["namespace"].stringValue ?? "default")
                return nil
            case "DELETE", "CONNECT": return nil
            // The router's status counts (the CRD has no status subresource): an update that
            // leaves the spec alone is let through; any other update is refused, as KubeEdge does.
            case "UPDATE" where Self.onlyStatusChanged(object, request["oldObject"]): return nil
            default: throw Refusal("unsupported webhook operation \(op)")
            }
        case .ruleEndpoints:
            switch op {
            case "CREATE": try Self.validateRuleEndpoint(object); return nil
            case "DELETE", "CONNECT": return nil
            default: throw Refusal("unsupported webhook operation \(op)")
            }
        case .nodeUpgradeJobs:
            switch op {
            case "CREATE": try Self.validateNodeUpgradeJob(object); return nil
            case "UPDATE":
                if object["spec"] != old["spec"] { throw Refusal("spec fields are not allowed to update once it's created") }
                try Self.validateNodeUpgradeJob(object)
                return nil
            case "DELETE": return nil
            default: throw Refusal("unsupported webhook operation \(op)")
            }
        case .nodeUpgradeJobDefaults:
            var patch: [JSON] = []
            if (object["spec"]["concurrency"].intValue ?? 0) == 0 { patch.append(["op": "add", "path": "/spec/concurrency", "value": .int(1)]) }
            if object["spec"]["timeoutSeconds"].isNull { patch.append(["op": "add", "path": "/spec/timeoutSeconds", "value": .int(300)]) }
            return patch.isEmpty ? nil : .array(patch)
        case .offlineMigration:
            var tolerations = (object["spec"]["tolerations"].arrayValue ?? []).filter { $0["key"].stringValue != Self.unreachable }
            tolerations.append(["key": .string(Self.unreachable), "operator": "Exists"])
            // KubeEdge replaces the list; `add` does the same for a present member and also works when there is none.
            return [["op": "add", "path": "/spec/tolerations", "value": .array(tolerations)]]
        }
    }

    static let unreachable = "node.kubernetes.io/unreachable"

    func validateRule(_ rule: JSON, namespace ns: String) async throws {
        let spec = rule["spec"]
        let source = spec["source"].stringValue ?? "", target = spec["target"].stringValue ?? ""
        let sourceResource = spec["sourceResource"].objectValue?.compactMapValues(\.stringValue) ?? [:]
        let targetResource = spec["targetResource"].objectValue?.compactMapValues(\.stringValue) ?? [:]
        func endpointType(_ name: String, _ role: String) async throws -> String {
            let found: JSON?
            do { found = try await reader.get(Self.ruleEndpoints, namespace: ns, name: name) } catch {
                throw Refusal("can't get \(role) ruleEndpoint \(ns)/\(name). Reason: \(error)")
            }
            guard let found else {
                throw Refusal("can't get \(role) ruleEndpoint \(ns)/\(name). Reason: ruleendpoints.rules.kubeedge.io \"\(name)\" not found")
            }
            return found["spec"]["ruleEndpointType"].stringValue ?? ""
        }
        let sourceType = try await endpointType(source, "source")
        switch sourceType {
        case "rest":
            guard let path = sourceResource["path"] else { throw Refusal("\"path\" property missed in sourceResource when ruleEndpoint is \"rest\"") }
            for other in try await reader.list(Self.rules, namespace: ns)
            where (other["spec"]["sourceResource"]["path"].stringValue ?? "") == path {
                throw Refusal("source properties exist in Rule \(ns)/\(other["metadata"]["name"].stringValue ?? ""). Path: \(path)")
            }
        case "eventbus":
            guard let topic = sourceResource["topic"] else { throw Refusal("\"topic\" property missed in sourceResource when ruleEndpoint is \"eventbus\"") }
            guard let node = sourceResource["node_name"] else {
                throw Refusal("\"node_name\" property missed in sourceResource when ruleEndpoint is \"eventbus\"")
            }
            for other in try await reader.list(Self.rules, namespace: ns)
            where (other["spec"]["sourceResource"]["topic"].stringValue ?? "") == topic && (other["spec"]["sourceResource"]["node_name"].stringValue ?? "") == node {
                throw Refusal("source properties exist in Rule \(ns)/\(other["metadata"]["name"].stringValue ?? ""). Node_name: \(node), topic: \(topic)")
            }
        case "servicebus":
            // KubeEdge's router serves servicebus→rest (its servicebus source provider); the
            // admission of the version this follows refused the pair. SwiftEdge admits it with
            // the router's required source keys.
            guard sourceResource["target_url"] != nil else {
                throw Refusal("\"target_url\" property missed in sourceResource when ruleEndpoint is \"servicebus\"")
            }
            guard sourceResource["node_name"] != nil else {
                throw Refusal("\"node_name\" property missed in sourceResource when ruleEndpoint is \"servicebus\"")
            }
        default: break
        }
        let targetType = try await endpointType(target, "target")
        let required: [String: String] = ["rest": "resource", "eventbus": "topic", "servicebus": "path"]
        if let key = required[targetType], targetResource[key] == nil {
            throw Refusal("\"\(key)\" property missed in targetResource when ruleEndpoint is \"\(targetType)\"")
        }
        let allowed: Set<String> = ["rest>eventbus", "rest>servicebus", "eventbus>rest", "servicebus>rest"]
        guard allowed.contains(sourceType + ">" + targetType) else {
            throw Refusal("the rule which is from source ruleEndpoint type \(sourceType) to target ruleEndpoint type \(targetType) is not validate ")
        }
    }

    static func validateRuleEndpoint(_ endpoint: JSON) throws {
        guard endpoint["spec"]["ruleEndpointType"].stringValue == "servicebus" else { return }
        guard let port = endpoint["spec"]["properties"]["service_port"].stringValue else {
            throw Refusal("\"service_port\" property missed in property when ruleEndpoint is \"servicebus\"")
        }
        guard let n = Int(port) else { throw Refusal("port should be integer") }
        guard (1...65535).contains(n) else { throw Refusal("port must be in range 1-65535") }
    }

    static func validateNodeUpgradeJob(_ job: JSON) throws {
        let spec = job["spec"]
        let version = spec["version"].stringValue ?? ""
        guard isVersion(version) else { throw Refusal("invalid version \(version)") }
        if let image = spec["image"].stringValue, !image.isEmpty, !isImageRepository(image) { throw Refusal("invalid image repo \(image)") }
        let names = spec["nodeNames"].arrayValue ?? []
        let selector = spec["labelSelector"]
        if names.isEmpty && selector.isNull { throw Refusal("both NodeNames and LabelSelector are NOT specified") }
        if !names.isEmpty && !selector.isNull { throw Refusal("both NodeNames and LabelSelector are specified") }
    }

    /// `v<major>.<minor>.<patch>` with an optional `-<pre-release>` of `[A-Za-z0-9_.]` parts joined by `-`.
    static func isVersion(_ v: String) -> Bool {
        guard v.hasPrefix("v") else { return false }
        let body = v.dropFirst()
        let (core, pre) = body.firstIndex(of: "-").map { (body[..<$0], Optional(body[body.index(after: $0)...])) } ?? (body, nil)
        let numbers = core.split(separator: ".", omittingEmptySubsequences: false)
        guard numbers.count == 3, numbers.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isASCIIDigit) }) else { return false }
        guard let pre else { return true }
        let allowed = { (c: Character) in c.isASCIILetterOrDigit || c == "_" || c == "." }
        return pre.split(separator: "-", omittingEmptySubsequences: false).allSatisfy { !$0.isEmpty && $0.allSatisfy(allowed) }
    }

    /// `<registry-or-namespace>/<name>[/<name>…][:tag | @sha256:<64 hex>]`, as KubeEdge's pattern.
    static func isImageRepository(_ s: String) -> Bool {
        var repo = Substring(s), ok = true
        if let at = repo.range(of: "@sha256:") {
            let digest = repo[at.upperBound...]
            ok = digest.count == 64 && digest.allSatisfy(\.isHexDigit)
            repo = repo[..<at.lowerBound]
        } else if let slash = repo.lastIndex(of: "/"), let colon = repo[slash...].lastIndex(of: ":") {
            let tag = repo[repo.index(after: colon)...]
            ok = (1...128).contains(tag.count) && (tag.first.map { $0.isASCIILetterOrDigit || $0 == "_" } ?? false)
                && tag.allSatisfy { $0.isASCIILetterOrDigit || "._-".contains($0) }
            repo = repo[..<colon]
        }
        let parts = repo.split(separator: "/", omittingEmptySubsequences: false)
        guard ok, parts.count >= 2 else { return false }
        for (i, p) in parts.enumerated() {
            guard let first = p.first, first.isASCIILetterOrDigit else { return false }
            let extra: String = i == 0 ? "._:-" : "._-"
            guard p.allSatisfy({ $0.isASCIILetterOrDigit || extra.contains($0) }) else { return false }
        }
        return true
    }

    /// The webhook configurations KubeEdge's admission registers, pointing at `clientConfig`
    /// (`url` base or `service`) and trusting `caBundle` (base64 PEM).
    public static func webhookConfigurations(clientConfig: (Path) -> JSON) -> (validating: [JSON], mutating: [JSON]) {
        func hook(_ name: String, _ path: Path, group: String, version: String, resource: String, operations: [String], failure: String,
                  objectSelector: JSON? = nil) -> JSON {
            // NodeUpgradeJobs are served as v1alpha1 and v1alpha2 (the CRD KubeEdge ships): both are checked.
            let versions: [JSON] = group == "operations.kubeedge.io" ? ["v1alpha1", "v1alpha2"] : [.string(version)]
            var w: JSON = ["name": .string(name), "clientConfig": clientConfig(path), "failurePolicy": .string(failure), "sideEffects": "None",
                           "admissionReviewVersions": ["v1"],
                           "rules": [["apiGroups": [.string(group)], "apiVersions": .array(versions), "resources": [.string(resource)],
                                      "operations": .array(operations.map { .string($0) })]]]
            if let objectSelector { w["objectSelector"] = objectSelector }
            return w
        }
        let validating: JSON = [
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": ["name": "kubeedge-crds-validate-webhook-configuration"],
            "webhooks": [
                hook("validatedevice.kubeedge.io", .devices, group: "devices.kubeedge.io", version: "v1beta1", resource: "devices",
                     operations: ["CREATE", "UPDATE"], failure: "Ignore"),
                hook("validatedevicemodel.kubeedge.io", .deviceModels, group: "devices.kubeedge.io", version: "v1beta1", resource: "devicemodels",
                     operations: ["CREATE", "UPDATE"], failure: "Ignore"),
                hook("validatedrule.kubeedge.io", .rules, group: "rules.kubeedge.io", version: "v1", resource: "rules",
                     operations: ["CREATE", "UPDATE", "DELETE"], failure: "Fail"),
                hook("validatedruleendpoint.kubeedge.io", .ruleEndpoints, group: "rules.kubeedge.io", version: "v1", resource: "ruleendpoints",
                     operations: ["CREATE", "UPDATE", "DELETE"], failure: "Fail"),
                hook("validatenodeupgradejob.kubeedge.io", .nodeUpgradeJobs, group: "operations.kubeedge.io", version: "v1alpha1",
                     resource: "nodeupgradejobs", operations: ["CREATE", "UPDATE", "DELETE"], failure: "Fail"),
            ],
        ]
        let offline: JSON = [
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "metadata": ["name": "mutate-offlinemigration"],
            "webhooks": [hook("mutateofflinemigration.kubeedge.io", .offlineMigration, group: "", version: "v1", resource: "pods",
                              operations: ["CREATE", "UPDATE"], failure: "Ignore",
                              objectSelector: ["matchLabels": ["app-offline.kubeedge.io": "autonomy"]])],
        ]
        let defaults: JSON = [
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "metadata": ["name": "kubeedge-mutating-webhook"],
            "webhooks": [hook("mutatingnodeupgradejob.kubeedge.io", .nodeUpgradeJobDefaults, group: "operations.kubeedge.io", version: "v1alpha1",
                              resource: "nodeupgradejobs", operations: ["CREATE", "UPDATE"], failure: "Ignore")],
        ]
        return ([validating], [offline, defaults])
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
    var isASCIILetterOrDigit: Bool { isASCII && (isLetter || isNumber) }
}
