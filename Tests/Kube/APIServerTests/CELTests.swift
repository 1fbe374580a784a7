import KubeAPI
import Testing
@testable import APIServer

/// The CEL subset of matchConditions: the expressions kube's documentation and common webhooks use.
@Suite struct CELTests {
    static let request: JSON = [
        "operation": "CREATE", "namespace": "shop",
        "userInfo": ["username": "system:kube-scheduler", "groups": ["system:authenticated"]],
        "resource": ["group": "apps", "version": "v1", "resource": "deployments"],
    ]
    static let object: JSON = ["metadata": ["name": "web", "labels": ["app": "web", "tier": "edge"]],
                               "spec": ["replicas": 3, "template": ["spec": ["containers": [["name": "a", "image": "nginx:1"], ["name": "b", "image": "busybox"]]]]]]
    let vars: [String: JSON] = ["request": CELTests.request, "object": CELTests.object, "oldObject": .null]

    func eval(_ s: String) throws -> JSON { try CELExpression(s).evaluate(vars) }

    @Test func documentedExpressions() throws {
        #expect(try eval("!(request.userInfo.username == 'system:kube-scheduler')") == .bool(false))
        #expect(try eval("request.resource.group != 'rbac.authorization.k8s.io'") == .bool(true))
        #expect(try eval("!('system:serviceaccounts:kube-system' in request.userInfo.groups)") == .bool(true))
        #expect(try eval("has(object.metadata.labels) && 'app' in object.metadata.labels") == .bool(true))
        #expect(try eval("has(object.metadata.annotations)") == .bool(false))
        // Empty maps, lists and strings are absent, as in kube's objects (omitempty).
        #expect(try CELExpression("has(object.metadata.labels)").evaluate(["object": ["metadata": ["labels": [:], "name": ""]]]) == .bool(false))
        #expect(try eval("object.metadata.labels['tier'] == 'edge' && object.spec.replicas >= 2") == .bool(true))
        #expect(try eval("object.spec.template.spec.containers.all(c, c.image.contains(':'))") == .bool(false))
        #expect(try eval("object.spec.template.spec.containers.exists(c, c.image.startsWith('busy'))") == .bool(true))
        #expect(try eval("object.spec.template.spec.containers.map(c, c.name) == ['a', 'b']") == .bool(true))
        #expect(try eval("size(object.spec.template.spec.containers) + 1 == 3 ? 'two' : 'other'") == .string("two"))
        #expect(try eval("object.metadata.name.matches('^w.b$') && request.namespace.upperAscii() == 'SHOP'") == .bool(true))
        #expect(try eval("oldObject == null") == .bool(true))
    }

    @Test func errorsAsCELHasThem() throws {
        // A missing field is an error, unless the other side of && / || decides.
        #expect(throws: CELExpression.Failure.self) { _ = try eval("object.metadata.annotations['x'] == 'y'") }
        #expect(try eval("false && object.metadata.annotations['x'] == 'y'") == .bool(false))
        #expect(try eval("object.metadata.annotations['x'] == 'y' || true") == .bool(true))
        #expect(throws: CELExpression.Failure.self) { _ = try eval("authorizer.group('').resource('pods').allowed()") }
        #expect(throws: CELExpression.Failure.self) { _ = try CELExpression("object.metadata.name ==") }
        #expect(throws: CELExpression.Failure.self) { _ = try CELExpression("'unterminated") }
        #expect(throws: CELExpression.Failure.self) { _ = try eval("1 / 0") }
    }
}
