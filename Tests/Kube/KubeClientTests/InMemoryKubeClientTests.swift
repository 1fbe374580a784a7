import KubeAPI
import KubeClient
import Testing
import TestSupport

/// The in-memory API the controller tests run against: it must answer as kube-apiserver does
/// where controllers and informers can tell.
@Suite struct InMemoryKubeClientTests {
    typealias T = TestResources

    func status(_ body: () async throws -> Void) async -> Int? {
        do { try await body(); return nil } catch let e as StatusError { return e.code } catch { return -1 }
    }

    @Test func createAssignsIdentityAndVersionsIncrease() async throws {
        let c = InMemoryKubeClient()
        let a = try await c.create(T.configMaps, namespace: "default", Fixtures.configMap("a"))
        let b = try await c.create(T.configMaps, namespace: "default", ["metadata": ["generateName": "gen-"], "data": [:]])
        #expect(a["metadata"]["uid"].stringValue?.count == 36)
        #expect(a["metadata"]["creationTimestamp"].stringValue != nil)
        #expect(a["kind"] == "ConfigMap" && a["apiVersion"] == "v1")
        let rvA = Int(a["metadata"]["resourceVersion"].stringValue ?? "") ?? 0, rvB = Int(b["metadata"]["resourceVersion"].stringValue ?? "") ?? 0
        #expect(rvA > 0 && rvB > rvA)
        #expect(b["metadata"]["name"].stringValue?.hasPrefix("gen-") == true && b["metadata"]["name"].stringValue?.count == 9)
        #expect(await status { _ = try await c.create(T.configMaps, namespace: "default", Fixtures.configMap("a")) } == 409)
        #expect(await status { _ = try await c.get(T.configMaps, namespace: "default", name: "missing") } == 404)
        #expect(await status { _ = try await c.get(T.configMaps, namespace: "other", name: "a") } == 404)
        // The server resets what it owns: pods start Pending, workloads without status.
        let p = try await c.create(T.pods, namespace: "default", Fixtures.pod("p", phase: "Running", ready: true))
        #expect(p["status"] == ["phase": "Pending"])
        let d = try await c.create(T.deployments, namespace: "default", Fixtures.deployment("d"))
        #expect(d["metadata"]["generation"] == 1)
        #expect(c.calls("create").map(\.resource) == ["configmaps", "configmaps", "configmaps", "pods", "deployments"])
    }

    @Test func updateRulesConcurrencyGenerationAndStatus() async throws {
        let c = InMemoryKubeClient()
        var d = try await c.create(T.deployments, namespace: "default", Fixtures.deployment("d"))
        let stale = d
        d["spec"]["replicas"] = 3
        d["status"] = ["replicas": 99]  // ignored on the main resource
        let u1 = try await c.update(T.deployments, namespace: "default", d)
        #expect(u1["metadata"]["generation"] == 2)
        #expect(u1["status"].isNull)
        #expect(await status { _ = try await c.update(T.deployments, namespace: "default", stale) } == 409)
        var s = u1
        s["status"] = ["replicas": 3]
        s["spec"]["replicas"] = 7  // ignored on /status
        let u2 = try await c.update(T.deployments, namespace: "default", s, subresource: "status")
        #expect(u2["status"]["replicas"] == 3 && u2["spec"]["replicas"] == 3 && u2["metadata"]["generation"] == 2)
        // A no-op write keeps the version; metadata.uid is immutable.
        let u3 = try await c.update(T.deployments, namespace: "default", u2)
        #expect(u3["metadata"]["resourceVersion"] == u2["metadata"]["resourceVersion"])
        var wrongUID = u2
        wrongUID["metadata"]["uid"] = "not-it"
        #expect(await status { _ = try await c.update(T.deployments, namespace: "default", wrongUID) } == 422)
        // ConfigMaps have no status subresource.
        _ = try await c.create(T.configMaps, namespace: "default", Fixtures.configMap("cm"))
        #expect(await status { _ = try await c.patch(T.configMaps, namespace: "default", name: "cm", ["status": [:]], subresource: "status") } == 404)
    }

    @Test func patchesGoThroughKubeAPIEngines() async throws {
        let c = InMemoryKubeClient()
        var pod = Fixtures.pod("p", containers: [Fixtures.container("a", image: "a:1"), Fixtures.container("b", image: "b:1")])
        pod["metadata"]["labels"] = ["x": "1", "y": "2"]
        _ = try await c.create(T.pods, namespace: "default", pod)
        let merged = try await c.patch(T.pods, namespace: "default", name: "p", ["metadata": ["labels": ["x": nil, "z": "3"]]])
        #expect(merged["metadata"]["labels"] == ["y": "2", "z": "3"])
        let smp = try await c.patch(T.pods, namespace: "default", name: "p", ["spec": ["containers": [["name": "b", "image": "b:2"]]]],
                                    patchType: .strategicMerge)
        #expect(smp["spec"]["containers"].arrayValue?.compactMap { $0["image"].stringValue } == ["a:1", "b:2"])
        let jp = try await c.patch(T.pods, namespace: "default", name: "p",
                                   [["op": "replace", "path": "/spec/containers/0/image", "value": "a:9"]], patchType: .json)
        #expect(jp["spec"]["containers"].arrayValue?.first?["image"] == "a:9")
        #expect(await status { _ = try await c.patch(T.pods, namespace: "default", name: "p", [["op": "test", "path": "/spec/x", "value": 1]], patchType: .json) } == 422)
        let st = try await c.patch(T.pods, namespace: "default", name: "p", ["status": ["phase": "Running"], "spec": ["nodeName": "n"]],
                                   subresource: "status")
        #expect(st["status"]["phase"] == "Running" && st["spec"]["nodeName"].isNull)
        #expect(await status { _ = try await c.patch(T.pods, namespace: "default", name: "gone", ["a": 1]) } == 404)
    }

    @Test func listsFilterBySelectors() async throws {
        let c = InMemoryKubeClient()
        c.seed(T.pods, Fixtures.pod("a", labels: ["app": "web"], nodeName: "n1"))
        c.seed(T.pods, Fixtures.pod("b", labels: ["app": "web"], nodeName: "n2"))
        c.seed(T.pods, Fixtures.pod("c", namespace: "other", labels: ["app": "db"], nodeName: "n1"))
        func names(_ ns: String?, _ ls: String?, _ fs: String?) async throws -> [String] {
            let l = try await c.list(T.pods, namespace: ns, labelSelector: ls, fieldSelector: fs)
            return (l["items"].arrayValue ?? []).compactMap { $0["metadata"]["name"].stringValue }
        }
        #expect(try await names(nil, nil, nil) == ["a", "b", "c"])
        #expect(try await names("default", nil, nil) == ["a", "b"])
        #expect(try await names(nil, "app=web", "spec.nodeName=n1") == ["a"])
        #expect(try await names(nil, "app!=web", nil) == ["c"])
        #expect(try await names(nil, nil, "metadata.namespace=other") == ["c"])
        #expect(try await names(nil, nil, "metadata.name=b") == ["b"])
        let list = try await c.list(T.pods, namespace: nil)
        #expect(list["kind"] == "PodList" && list["apiVersion"] == "v1" && list["metadata"]["resourceVersion"] == .string(c.resourceVersion))
        #expect(list["items"].arrayValue?.allSatisfy { $0["kind"] == "Pod" && $0["apiVersion"] == "v1" } == true)
        #expect(list["metadata"]["continue"].isNull)
    }

    @Test func watchReplaysThenStreamsAndConvertsPerSelector() async throws {
        let c = InMemoryKubeClient()
        let first = try await c.create(T.pods, namespace: "default", Fixtures.pod("a", labels: ["app": "web"]))
        _ = try await c.patch(T.pods, namespace: "default", name: "a", ["metadata": ["annotations": ["k": "v"]]])
        let stream = try await c.watch(T.pods, namespace: "default", resourceVersion: first["metadata"]["resourceVersion"].stringValue,
                                       labelSelector: "app=web")
        var it = stream.makeAsyncIterator()
        let replayed = try await it.next()
        #expect(replayed?.type == .modified && replayed?.object["metadata"]["annotations"]["k"] == "v")
        _ = try await c.patch(T.pods, namespace: "default", name: "a", ["metadata": ["labels": ["app": "db"]]])
        #expect(try await it.next()?.type == .deleted)  // stopped matching
        _ = try await c.create(T.pods, namespace: "default", Fixtures.pod("skip", labels: ["app": "db"]))
        _ = try await c.create(T.pods, namespace: "other", Fixtures.pod("skip2", namespace: "other", labels: ["app": "web"]))
        _ = try await c.patch(T.pods, namespace: "default", name: "a", ["metadata": ["labels": ["app": "web"]]])
        let back = try await it.next()
        #expect(back?.type == .added && back?.object["metadata"]["name"] == "a")  // started matching again
        try await c.delete(T.pods, namespace: "default", name: "a")
        let gone = try await it.next()
        #expect(gone?.type == .deleted && gone?.object["metadata"]["resourceVersion"] == .string(c.resourceVersion))
        // Without a version: the current objects as ADDED.
        var all = try await c.watch(T.pods, namespace: nil, resourceVersion: nil).makeAsyncIterator()
        #expect(try await [all.next(), all.next()].compactMap { $0?.object["metadata"]["name"].stringValue }.sorted() == ["skip", "skip2"])
        c.closeWatches()
        #expect(try await it.next() == nil)
        #expect(try await all.next() == nil)
        #expect(c.openWatches == 0)
    }

    @Test func oldVersionsExpire() async throws {
        let c = InMemoryKubeClient(historyLimit: 2)
        let a = try await c.create(T.configMaps, namespace: "default", Fixtures.configMap("a"))
        let rv = a["metadata"]["resourceVersion"].stringValue
        #expect(await status { _ = try await c.watch(T.configMaps, namespace: nil, resourceVersion: rv) } == nil)
        for n in ["b", "c", "d"] { _ = try await c.create(T.configMaps, namespace: "default", Fixtures.configMap(n)) }
        #expect(await status { _ = try await c.watch(T.configMaps, namespace: nil, resourceVersion: rv) } == 410)
        let current = c.resourceVersion
        #expect(await status { _ = try await c.watch(T.configMaps, namespace: nil, resourceVersion: current) } == nil)
        c.compact()
        #expect(await status { _ = try await c.watch(T.configMaps, namespace: nil, resourceVersion: current) } == 410)
        #expect(await status { _ = try await c.watch(T.configMaps, namespace: nil, resourceVersion: c.resourceVersion) } == nil)
    }

    @Test func deletionHonoursFinalizersPreconditionsAndGrace() async throws {
        let c = InMemoryKubeClient()
        var cm = Fixtures.configMap("f")
        cm["metadata"]["finalizers"] = ["example.com/keep"]
        _ = try await c.create(T.configMaps, namespace: "default", cm)
        #expect(await status { _ = try await c.delete(T.configMaps, namespace: "default", name: "f", options: ["preconditions": ["uid": "other"]]) } == 409)
        let marked = try await c.delete(T.configMaps, namespace: "default", name: "f", options: nil)
        #expect(!marked["metadata"]["deletionTimestamp"].isNull)
        #expect(c.object(T.configMaps, namespace: "default", name: "f") != nil)
        var adding = marked
        adding["metadata"]["finalizers"] = ["example.com/keep", "example.com/new"]
        #expect(await status { _ = try await c.update(T.configMaps, namespace: "default", adding) } == 422)
        _ = try await c.patch(T.configMaps, namespace: "default", name: "f", ["metadata": ["finalizers": nil]])
        #expect(c.object(T.configMaps, namespace: "default", name: "f") == nil)

        // A pod bound to a node is only marked (its node finishes it with grace 0); an unbound one goes at once.
        c.seed(T.pods, Fixtures.pod("bound", nodeName: "n1", phase: "Running", ready: true))
        c.seed(T.pods, Fixtures.pod("unbound"))
        let graceful = try await c.delete(T.pods, namespace: "default", name: "bound")
        #expect(graceful["metadata"]["deletionGracePeriodSeconds"] == 30 && !graceful["metadata"]["deletionTimestamp"].isNull)
        #expect(c.object(T.pods, namespace: "default", name: "bound") != nil)
        try await c.delete(T.pods, namespace: "default", name: "unbound")
        #expect(c.object(T.pods, namespace: "default", name: "unbound") == nil)
        let uid = graceful["metadata"]["uid"].stringValue ?? ""
        #expect(await status { _ = try await c.delete(T.pods, namespace: "default", name: "bound", options: ["gracePeriodSeconds": 0, "preconditions": ["uid": "x"]]) } == 409)
        _ = try await c.delete(T.pods, namespace: "default", name: "bound", options: ["gracePeriodSeconds": 0, "preconditions": ["uid": .string(uid)]])
        #expect(c.object(T.pods, namespace: "default", name: "bound") == nil)
        #expect(await status { _ = try await c.delete(T.pods, namespace: "default", name: "bound") } == 404)
    }

    @Test func bindingAndEviction() async throws {
        let c = InMemoryKubeClient()
        _ = try await c.create(T.pods, namespace: "default", Fixtures.pod("p"))
        _ = try await c.post(T.pods, namespace: "default", name: "p", subresource: "binding", ["target": ["kind": "Node", "name": "n1"]])
        let bound = try await c.get(T.pods, namespace: "default", name: "p")
        #expect(bound["spec"]["nodeName"] == "n1")
        #expect(bound["status"]["conditions"].arrayValue?.contains { $0["type"] == "PodScheduled" && $0["status"] == "True" } == true)
        #expect(await status { _ = try await c.post(T.pods, namespace: "default", name: "p", subresource: "binding", ["target": ["name": "n2"]]) } == 409)
        _ = try await c.post(T.pods, namespace: "default", name: "p", subresource: "eviction", ["deleteOptions": ["gracePeriodSeconds": 0]])
        #expect(c.object(T.pods, namespace: "default", name: "p") == nil)
        #expect(c.calls("post").map(\.subresource) == ["binding", "binding", "eviction"])
    }

    @Test func injectedFaultsAndShutdown() async throws {
        let c = InMemoryKubeClient()
        c.failNext("create", T.pods, with: StatusError(.internalError, "boom"), times: 2)
        #expect(await status { _ = try await c.create(T.pods, namespace: "default", Fixtures.pod("a")) } == 500)
        #expect(await status { _ = try await c.create(T.configMaps, namespace: "default", Fixtures.configMap("a")) } == nil)
        #expect(await status { _ = try await c.create(T.pods, namespace: "default", Fixtures.pod("a")) } == 500)
        #expect(await status { _ = try await c.create(T.pods, namespace: "default", Fixtures.pod("a")) } == nil)
        var it = try await c.watch(T.pods, namespace: nil, resourceVersion: c.resourceVersion).makeAsyncIterator()
        try await c.shutdown()
        #expect(try await it.next() == nil)
        #expect(await status { _ = try await c.get(T.pods, namespace: "default", name: "a") } == -1)
    }
}
