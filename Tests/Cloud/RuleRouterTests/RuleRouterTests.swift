import CloudEdgeProtocol
import KubeAPI
import Testing
@testable import RuleRouter

func endpoint(_ name: String, _ type: String, _ props: [String: String] = [:]) -> JSON {
    ["metadata": ["name": .string(name), "namespace": "default"],
     "spec": ["ruleEndpointType": .string(type), "properties": .object(props.mapValues { .string($0) })]]
}

func rule(_ name: String, _ source: String, _ sr: [String: String], _ target: String, _ tr: [String: String]) -> JSON {
    ["metadata": ["name": .string(name), "namespace": "default"],
     "spec": ["source": .string(source), "sourceResource": .object(sr.mapValues { .string($0) }),
              "target": .string(target), "targetResource": .object(tr.mapValues { .string($0) })]]
}

@Suite struct RuleBookTests {
    func book(_ rules: [JSON], _ endpoints: [JSON]) -> RuleBook {
        var b = RuleBook()
        for r in rules { if let s = RuleSpec(r) { b.rules[s.key] = s } }
        for e in endpoints { if let s = RuleEndpointSpec(e) { b.endpoints["\(s.namespace)/\(s.name)"] = s } }
        return b
    }

    let endpoints = [endpoint("rest", "rest"), endpoint("bus", "eventbus"), endpoint("app", "servicebus", ["service_port": "8080"]),
                     endpoint("sb", "servicebus", ["service_port": "9060"])]

    @Test func resolvesTheFourPairs() {
        let b = book([rule("a", "rest", ["path": "/cmd/"], "bus", ["topic": "t"]),
                      rule("b", "bus", ["topic": "s", "node_name": "n1"], "rest", ["resource": "http://x/in"]),
                      rule("c", "rest", ["path": "svc"], "app", ["path": "app"]),
                      rule("d", "sb", ["target_url": "http://x/out", "node_name": "n1"], "rest", ["resource": "http://x/out"])], endpoints)
        let (routes, problems) = b.resolve()
        #expect(problems.isEmpty)
        let byKey = Dictionary(uniqueKeysWithValues: routes.map { ($0.key, $0) })
        #expect(byKey["default/a"]?.source == .rest(path: "cmd") && byKey["default/a"]?.target == .eventBus(topic: "t"))
        #expect(byKey["default/b"]?.source == .eventBus(node: "n1", topic: "default/s"))  // KubeEdge's <namespace>/<topic>
        #expect(byKey["default/c"]?.target == .serviceBus(port: 8080, path: "/app"))
        #expect(byKey["default/d"]?.source == .serviceBus(node: "n1", url: "http://x/out"))
        let state = RuleBook.nodeState(routes, node: "n1")
        #expect(state.topics == ["default/s"] && state.urls == ["http://x/out"])
        #expect(RuleBook.nodeState(routes, node: "n2").topics.isEmpty)
    }

    @Test func restPathsMatchByWholeSegmentsLongestFirst() throws {
        let b = book([rule("short", "rest", ["path": "/a"], "bus", ["topic": "t1"]), rule("long", "rest", ["path": "/a/b"], "bus", ["topic": "t2"])], endpoints)
        let routes = b.resolve().routes
        let (r1, p1) = try #require(RuleBook.restRoute(routes, namespace: "default", path: "a/b/c"))
        #expect(r1.key == "default/long" && p1 == "/c")
        let (r2, p2) = try #require(RuleBook.restRoute(routes, namespace: "default", path: "a/x"))
        #expect(r2.key == "default/short" && p2 == "/x")
        #expect(RuleBook.restRoute(routes, namespace: "default", path: "ab") == nil)  // not a segment prefix
        #expect(RuleBook.restRoute(routes, namespace: "other", path: "a") == nil)
    }

    @Test func brokenRulesSayWhy() {
        let b = book([rule("gone", "rest", ["path": "/p"], "missing", ["topic": "t"]),
                      rule("pair", "bus", ["topic": "s", "node_name": "n"], "app", ["path": "/p"]),
                      rule("keys", "bus", ["topic": "s"], "rest", ["resource": "http://x"])], endpoints)
        let (routes, problems) = b.resolve()
        #expect(routes.isEmpty)
        #expect(problems["default/gone"] == "target RuleEndpoint missing not found")
        #expect(problems["default/pair"]?.contains("not a supported pair") == true)
        #expect(problems["default/keys"]?.contains("node_name") == true)
    }
}

@Suite struct RouterMessageTests {
    @Test func roundTripsEveryKind() throws {
        let req = RouterHTTPRequest(method: "PUT", header: ["X-A": ["1"]], body: Array("close".utf8))
        let all: [RouterMessage] = [
            .subscribe(node: "n", topic: "default/s"), .unsubscribe(node: "n", topic: "default/s"), .publish(node: "n", topic: "edge/cmd", payload: "{}"),
            .serviceCall(node: "n", port: 8080, path: "/app/x", request: req), .allowTarget(node: "n", url: "http://x/out"),
            .disallowTarget(node: "n", url: "http://x/out"), .event(node: "n", topic: "default/s", payload: "21.5"),
            .serviceRequest(node: "n", url: "http://x/out", request: req), .serviceResponse(RouterHTTPResponse(statusCode: 201, body: [1, 2])),
        ]
        for m in all {
            let wire = try Message(bytes: m.message(parentID: "p").encoded())
            #expect(try RouterMessage(wire) == m)
        }
        // KubeEdge's shapes: a servicebus call carries its method as the operation, its target as <port>:<path>.
        let call = RouterMessage.serviceCall(node: "n", port: 8080, path: "/app/x", request: req).message()
        #expect(call.route.operation.rawValue == "PUT" && call.route.resource == "node/n/8080:/app/x" && call.route.source == "router_servicebus")
        #expect(call.content["body"] == "Y2xvc2U=")  // Go's []byte in base64
    }

    @Test func refusesMalformedRouterMessages() throws {
        func msg(_ op: CloudEdgeProtocol.Operation, _ resource: String, _ content: JSON = "") -> Message {
            Message(route: Route(source: "router_servicebus", group: "user", operation: op, resource: resource), content: content)
        }
        #expect(throws: ProtocolError.self) { try RouterMessage(msg(.httpGet, "node/n/notaport:/x", ["method": "GET"])) }
        #expect(throws: ProtocolError.self) { try RouterMessage(msg(.subscribe, "node/")) }
        #expect(throws: ProtocolError.self) { try RouterMessage(msg(.insert, "node/n/x")) }
        #expect(throws: ProtocolError.self) { try RouterMessage(msg(.response, "", "not an object")) }
        #expect(try RouterMessage(Message(route: Route(source: "x", group: "resource", operation: .insert, resource: "default/pod/p"), content: "")) == nil)
    }
}
