import Foundation
import KubeAPI
import Synchronization
import Testing
@testable import KubeEdgeAdmission

/// KubeEdge's admission rules with KubeEdge's messages, against an in-memory reader.
@Suite struct KubeEdgeAdmissionTests {
    final class Objects: KubeEdgeObjectReader {
        let objects: [String: JSON]
        init(_ objects: [JSON]) {
            var m: [String: JSON] = [:]
            for o in objects { m["\(o["kind"].stringValue ?? "")/\(o["metadata"]["namespace"].stringValue ?? "")/\(o["metadata"]["name"].stringValue ?? "")"] = o }
            self.objects = m
        }
        func get(_ type: ResourceType, namespace: String, name: String) async throws -> JSON? { objects["\(type.kind)/\(namespace)/\(name)"] }
        func list(_ type: ResourceType, namespace: String) async throws -> [JSON] {
            objects.filter { $0.key.hasPrefix("\(type.kind)/\(namespace)/") }.map(\.value)
        }
    }

    static func endpoint(_ name: String, _ type: String, port: String? = nil) -> JSON {
        var e: JSON = ["kind": "RuleEndpoint", "metadata": ["name": .string(name), "namespace": "default"], "spec": ["ruleEndpointType": .string(type), "properties": [:]]]
        if let port { e["spec"]["properties"]["service_port"] = .string(port) }
        return e
    }

    static func rule(_ name: String, _ source: String, _ sourceResource: JSON, _ target: String, _ targetResource: JSON) -> JSON {
        ["kind": "Rule", "metadata": ["name": .string(name), "namespace": "default"],
         "spec": ["source": .string(source), "sourceResource": sourceResource, "target": .string(target), "targetResource": targetResource]]
    }

    let admission = KubeEdgeAdmission(reader: Objects([
        endpoint("my-rest", "rest"), endpoint("my-eventbus", "eventbus"), endpoint("my-servicebus", "servicebus", port: "6666"),
        rule("existing", "my-rest", ["path": "/taken"], "my-eventbus", ["topic": "t"]),
        rule("existing-bus", "my-eventbus", ["topic": "up", "node_name": "n1"], "my-rest", ["resource": "http://a"]),
    ]))

    func answer(_ path: KubeEdgeAdmission.Path, _ op: String, _ object: JSON, old: JSON = .null) async -> JSON {
        let review: JSON = ["apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                            "request": ["uid": "u-1", "operation": .string(op), "namespace": "default", "object": object, "oldObject": old]]
        let r = await admission.review(path, review)["response"]
        #expect(r["uid"] == "u-1")
        return r
    }

    func refusal(_ path: KubeEdgeAdmission.Path, _ op: String, _ object: JSON, old: JSON = .null) async -> String? {
        let r = await answer(path, op, object, old: old)
        return r["allowed"].boolValue == true ? nil : r["status"]["message"].stringValue ?? "(no message)"
    }

    @Test func rules() async {
        #expect(await refusal(.rules, "CREATE", Self.rule("r", "my-rest", ["path": "/new"], "my-eventbus", ["topic": "t"])) == nil)
        #expect(await refusal(.rules, "CREATE", Self.rule("r", "my-rest", ["path": "/s"], "my-servicebus", ["path": "/t"])) == nil)
        #expect(await refusal(.rules, "CREATE", Self.rule("r", "my-eventbus", ["topic": "x", "node_name": "n2"], "my-rest", ["resource": "http://b"])) == nil)
        #expect(await refusal(.rules, "CREATE", Self.rule("r", "nope", ["path": "/p"], "my-eventbus", ["topic": "t"]))
            == "can't get source ruleEndpoint default/nope. Reason: ruleendpoints.rules.kubeedge.io \"nope\" not found")
        #expect(await refusal(.rules, "CREATE", Self.rule("r", "my-rest", [:], "my-eventbus", ["topic": "t"]))
            == "\"path\" property missed in sourceResource when ruleEndpoint is \"rest\"")
        #expect(await refusal(.rules, "CREATE", Self.rule("r", "my-rest", ["path": "/taken"], "my-eventbus", ["topic": "t"]))
            == "source properties exist in Rule default/existing. Path: /taken")
        #expect(await refusal(.rules, "CREATE", Self.rule("r", "my-eventbus", ["topic": "up"], "my-rest", ["resource": "x"]))
            == "\"node_name\" property missed in sourceResource when ruleEndpoint is \"eventbus\"")
        #expect(await refusal(.rules, "CREATE", Self.rule("r", "my-eventbus", ["topic": "up", "node_name": "n1"], "my-rest", ["resource": "x"]))
            == "source properties exist in Rule default/existing-bus. Node_name: n1, topic: up")
        #expect(await refusal(.rules, "CREATE", Self.rule("r", "my-rest", ["path": "/q"], "my-servicebus", [:]))
            == "\"path\" property missed in targetResource when ruleEndpoint is \"servicebus\"")
        #expect(await refusal(.rules, "CREATE", Self.rule("r", "my-eventbus", ["topic": "z", "node_name": "n"], "my-servicebus", ["path": "/t"]))
            == "the rule which is from source ruleEndpoint type eventbus to target ruleEndpoint type servicebus is not validate ")
        #expect(await refusal(.rules, "UPDATE", Self.rule("r", "my-rest", ["path": "/new"], "my-eventbus", ["topic": "t"])) == "unsupported webhook operation UPDATE")
        // The router's status counts: an update of the status alone passes.
        let stored = Self.rule("r", "my-rest", ["path": "/new"], "my-eventbus", ["topic": "t"])
        var counted = stored
        counted["status"] = ["successMessages": .int(3)]
        #expect(await refusal(.rules, "UPDATE", counted, old: stored) == nil)
        var respec = counted
        respec["spec"]["target"] = "my-servicebus"
        #expect(await refusal(.rules, "UPDATE", respec, old: stored) == "unsupported webhook operation UPDATE")
        // servicebus→rest (KubeEdge's router serves it) with the source keys it needs.
        #expect(await refusal(.rules, "CREATE", Self.rule("sb", "my-servicebus", ["node_name": "n"], "my-rest", ["resource": "http://x"]))
            == "\"target_url\" property missed in sourceResource when ruleEndpoint is \"servicebus\"")
        #expect(await refusal(.rules, "CREATE", Self.rule("sb", "my-servicebus", ["target_url": "http://x", "node_name": "n"], "my-rest", ["resource": "http://x"])) == nil)
        #expect(await refusal(.rules, "DELETE", .null) == nil)
    }

    @Test func ruleEndpointsDevicesAndJobs() async {
        #expect(await refusal(.ruleEndpoints, "CREATE", Self.endpoint("s", "servicebus", port: "6666")) == nil)
        #expect(await refusal(.ruleEndpoints, "CREATE", Self.endpoint("s", "servicebus")) == "\"service_port\" property missed in property when ruleEndpoint is \"servicebus\"")
        #expect(await refusal(.ruleEndpoints, "CREATE", Self.endpoint("s", "servicebus", port: "http")) == "port should be integer")
        #expect(await refusal(.ruleEndpoints, "CREATE", Self.endpoint("s", "servicebus", port: "70000")) == "port must be in range 1-65535")
        #expect(await refusal(.ruleEndpoints, "UPDATE", Self.endpoint("s", "rest")) == "unsupported webhook operation UPDATE")

        let model: JSON = ["spec": ["properties": [["name": "temp"], ["name": "temp"]]]]
        #expect(await refusal(.deviceModels, "CREATE", model) == "property names must be unique.")
        #expect(await refusal(.devices, "UPDATE", ["spec": ["properties": [["name": "a"], ["name": "b"]]]]) == nil)

        let job: JSON = ["spec": ["version": "v1.16.0", "labelSelector": ["matchLabels": ["a": "b"]]]]
        #expect(await refusal(.nodeUpgradeJobs, "CREATE", job) == nil)
        for (version, ok) in [("v1.16.0-beta.1", true), ("1.16.0", false), ("v1.16", false), ("v1.16.x", false), ("v1.2.3-a-b_c", true), ("v1.2.3-", false)] {
            var j = job
            j["spec"]["version"] = .string(version)
            #expect(await refusal(.nodeUpgradeJobs, "CREATE", j) == (ok ? nil : "invalid version \(version)"), "\(version)")
        }
        for (image, ok) in [("kubeedge/installation-package", true), ("registry.local:5000/kubeedge/pkg:v1.16.0", true), ("noslash", false),
                            ("kubeedge/pkg@sha256:" + String(repeating: "a", count: 64), true), ("kubeedge/pkg:-bad", false)] {
            var j = job
            j["spec"]["image"] = .string(image)
            #expect(await refusal(.nodeUpgradeJobs, "CREATE", j) == (ok ? nil : "invalid image repo \(image)"), "\(image)")
        }
        #expect(await refusal(.nodeUpgradeJobs, "CREATE", ["spec": ["version": "v1.16.0"]]) == "both NodeNames and LabelSelector are NOT specified")
        #expect(await refusal(.nodeUpgradeJobs, "CREATE", ["spec": ["version": "v1.16.0", "nodeNames": ["n"], "labelSelector": [:]]])
            == "both NodeNames and LabelSelector are specified")
        var changed = job
        changed["spec"]["version"] = "v1.17.0"
        #expect(await refusal(.nodeUpgradeJobs, "UPDATE", changed, old: job) == "spec fields are not allowed to update once it's created")
        #expect(await refusal(.nodeUpgradeJobs, "UPDATE", job, old: job) == nil)
    }

    @Test func mutations() async throws {
        func patch(_ r: JSON) throws -> JSON { try JSON.parse(Array(Data(base64Encoded: r["patch"].stringValue ?? "") ?? Data())) }
        let defaults = await answer(.nodeUpgradeJobDefaults, "CREATE", ["spec": ["version": "v1.16.0"]])
        #expect(defaults["patchType"] == "JSONPatch")
        #expect(try patch(defaults) == [["op": "add", "path": "/spec/concurrency", "value": .int(1)], ["op": "add", "path": "/spec/timeoutSeconds", "value": .int(300)]])
        #expect(await answer(.nodeUpgradeJobDefaults, "CREATE", ["spec": ["concurrency": 2, "timeoutSeconds": 5]])["patch"].isNull)
        let pod: JSON = ["spec": ["tolerations": [["key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300], ["key": "x", "operator": "Exists"]]]]
        let offline = await answer(.offlineMigration, "CREATE", pod)
        #expect(try patch(offline) == [["op": "add", "path": "/spec/tolerations",
                                       "value": [["key": "x", "operator": "Exists"], ["key": "node.kubernetes.io/unreachable", "operator": "Exists"]]]])
    }
}
