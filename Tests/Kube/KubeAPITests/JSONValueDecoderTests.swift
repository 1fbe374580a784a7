@testable import KubeAPI
import Testing

/// Typed views of stored JSON: what decodes, what is refused (with where), what is kept as JSON.
@Suite struct JSONValueDecoderTests {
    /// The pod with its first container's `key` replaced.
    func pod(container key: String, _ value: JSON) -> JSON {
        var p = pod
        var c = p["spec"]["containers"].arrayValue?.first ?? [:]
        c[key] = value
        p["spec"]["containers"] = [c]
        return p
    }

    let pod: JSON = [
        "apiVersion": "v1", "kind": "Pod",
        "metadata": ["name": "web", "namespace": "shop", "uid": "u1", "labels": ["app": "web"], "resourceVersion": "7"],
        "spec": [
            "hostNetwork": false, "terminationGracePeriodSeconds": 5.0,
            "containers": [[
                "name": "c", "image": "busybox", "command": ["sh", "-c"],
                "env": [["name": "A", "value": "1"], ["name": "B", "valueFrom": ["configMapKeyRef": ["name": "cfg", "key": "k", "optional": true]]]],
                "ports": [["containerPort": 8080, "protocol": "UDP"]],
                "resources": ["limits": ["cpu": "500m", "memory": 1048576]],
                "livenessProbe": ["tcpSocket": ["port": 8080]],
                "unknownField": ["kept": "in the stored JSON only"],
            ]],
            "volumes": [["name": "v", "configMap": ["name": "cfg", "items": [["key": "k", "path": "dir/file"]]]], ["name": "e", "emptyDir": [:]]],
            "nodeName": nil,
        ],
    ]

    @Test func aPodDecodesIntoItsTypedView() throws {
        let p = try JSONValueDecoder().decode(Core.Pod.self, from: pod)
        #expect(p.metadata?.name == "web" && p.metadata?.labels == ["app": "web"])
        #expect(p.spec?.terminationGracePeriodSeconds == 5)  // a whole double reads as an integer
        #expect(p.spec != nil && p.spec?.nodeName == nil)  // explicit null = absent
        let c = try #require(p.spec?.containers?.first)
        #expect(c.command == ["sh", "-c"])
        #expect(c.env?[1].valueFrom?.configMapKeyRef == Core.KeySelector(name: "cfg", key: "k", optional: true))
        #expect(c.ports?.first?.containerPort == 8080 && c.ports?.first?.protocol == "UDP")
        #expect(c.resources?.limits?["memory"] == .int(1_048_576) && c.resources?.limits?["cpu"] == "500m")
        #expect(c.livenessProbe?["tcpSocket"]["port"] == 8080)  // JSON fields take the subtree as is
        #expect(p.spec?.volumes?[0].configMap?.items?.first?.path == "dir/file")
        #expect(p.spec?.volumes?[1].emptyDir == .object([:]))
    }

    @Test func wrongShapesAreRefusedWithTheirPath() {
        var bad = pod(container: "ports", [["containerPort": "eighty"]])
        do {
            _ = try JSONValueDecoder().decode(Core.Pod.self, from: bad)
            Issue.record("a string port was accepted")
        } catch { #expect(error.path == "spec.containers[0].ports[0].containerPort" && error.message.contains("integer")) }
        bad = pod(container: "ports", [["containerPort": 80.5]])
        #expect(throws: JSONDecodingError.self) { try JSONValueDecoder().decode(Core.Pod.self, from: bad) }
        bad = pod(container: "env", [["value": "no name"]])
        do {
            _ = try JSONValueDecoder().decode(Core.Pod.self, from: bad)
            Issue.record("an env var without a name was accepted")
        } catch { #expect(error.description.contains("spec.containers[0].env[0].name") && error.description.contains("missing")) }
        #expect(throws: JSONDecodingError.self) { try JSONValueDecoder().decode(Core.Pod.self, from: "not an object") }
        bad = pod(container: "ports", [["containerPort": .int(Int64(Int32.max) + 1)]])
        #expect(throws: JSONDecodingError.self) { try JSONValueDecoder().decode(Core.Pod.self, from: bad) }
    }

    @Test func secretsAndConfigMaps() throws {
        let s = try JSONValueDecoder().decode(Core.Secret.self, from: ["data": ["a": "aGk="], "stringData": ["b": "x"], "type": "Opaque"])
        #expect(s.data == ["a": "aGk="] && s.stringData == ["b": "x"] && s.type == "Opaque")
        let cm = try JSONValueDecoder().decode(Core.ConfigMap.self, from: ["metadata": ["name": "c"], "data": ["k": "v"]])
        #expect(cm.data == ["k": "v"] && cm.binaryData == nil && cm.metadata?.name == "c")
        #expect(throws: JSONDecodingError.self) { try JSONValueDecoder().decode(Core.ConfigMap.self, from: ["data": ["k": 1]]) }
    }

    @Test func pathsFromTheWireStayInsideTheirDirectory() {
        #expect("a/b.txt".isSafeRelativePath && "..x/y".isSafeRelativePath && "a/./b".isSafeRelativePath)
        #expect(!"".isSafeRelativePath && !"/etc/passwd".isSafeRelativePath && !"../x".isSafeRelativePath && !"a/../../b".isSafeRelativePath)
        #expect(!"a/..".isSafeRelativePath)
    }
}
