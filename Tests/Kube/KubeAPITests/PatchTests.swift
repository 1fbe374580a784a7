import Testing
@testable import KubeAPI

@Suite struct PatchTests {
    let deployment: JSON = [
        "metadata": ["name": "web", "labels": ["a": "1", "b": "2"], "finalizers": ["x"]],
        "spec": ["replicas": 3, "template": ["spec": ["containers": [
            ["name": "app", "image": "v1", "ports": [["containerPort": 80, "protocol": "TCP"]], "env": [["name": "A", "value": "1"]]],
            ["name": "side", "image": "s1"],
        ]]]],
    ]

    @Test func mergePatchDeletesWithNullAndReplacesLists() {
        let p: JSON = ["metadata": ["labels": ["a": nil, "c": "3"]], "spec": ["replicas": 5]]
        let r = Patch.mergePatch(deployment, p)
        #expect(r["metadata"]["labels"] == ["b": "2", "c": "3"])
        #expect(r["spec"]["replicas"] == 5)
        #expect(r["spec"]["template"]["spec"]["containers"].arrayValue?.count == 2)
    }

    @Test func strategicMergeMergesContainersByName() throws {
        let p: JSON = ["spec": ["template": ["spec": ["containers": [["name": "app", "image": "v2"]]]]]]
        let r = try Patch.strategicMerge(deployment, p)
        let cs = r["spec"]["template"]["spec"]["containers"].arrayValue ?? []
        #expect(cs.count == 2)
        #expect(cs[0]["image"] == "v2")
        #expect(cs[0]["ports"].arrayValue?.count == 1)
        #expect(cs[1]["name"] == "side")
    }

    @Test func strategicMergeDeleteDirectiveAndPrimitiveMerge() throws {
        let p: JSON = ["metadata": ["finalizers": ["y"]],
                       "spec": ["template": ["spec": ["containers": [["name": "side", "$patch": "delete"]]]]]]
        let r = try Patch.strategicMerge(deployment, p)
        #expect(r["spec"]["template"]["spec"]["containers"].arrayValue?.map { $0["name"] } == ["app"])
        #expect(r["metadata"]["finalizers"] == ["x", "y"])
    }

    @Test func strategicMergeServicePortsByPort() throws {
        let svc: JSON = ["spec": ["ports": [["port": 80, "name": "http"]]]]
        let r = try Patch.strategicMerge(svc, ["spec": ["ports": [["port": 443, "name": "https"]]]])
        #expect(r["spec"]["ports"].arrayValue?.count == 2)
    }

    @Test func jsonPatchOperations() throws {
        let ops: JSON = [
            ["op": "replace", "path": "/spec/replicas", "value": 1],
            ["op": "add", "path": "/metadata/labels/c", "value": "3"],
            ["op": "remove", "path": "/metadata/labels/a"],
            ["op": "test", "path": "/metadata/name", "value": "web"],
            ["op": "add", "path": "/metadata/finalizers/-", "value": "z"],
            ["op": "copy", "from": "/metadata/name", "path": "/metadata/generateName"],
        ]
        let r = try Patch.jsonPatch(deployment, ops)
        #expect(r["spec"]["replicas"] == 1)
        #expect(r["metadata"]["labels"] == ["b": "2", "c": "3"])
        #expect(r["metadata"]["finalizers"] == ["x", "z"])
        #expect(r["metadata"]["generateName"] == "web")
    }

    @Test func jsonPatchFailuresAreReported() {
        #expect(throws: StatusError.self) { try Patch.jsonPatch(deployment, [["op": "replace", "path": "/nope", "value": 1]]) }
        #expect(throws: StatusError.self) { try Patch.jsonPatch(deployment, [["op": "test", "path": "/spec/replicas", "value": 9]]) }
        #expect(throws: StatusError.self) { try Patch.jsonPatch(deployment, ["op": "add"]) }
    }

    @Test func patchTypesFromContentType() {
        #expect(PatchType(contentType: "application/merge-patch+json; charset=utf-8") == .merge)
        #expect(PatchType(contentType: "application/apply-patch+yaml") == .apply)
        #expect(PatchType(contentType: "text/plain") == nil)
    }
}
