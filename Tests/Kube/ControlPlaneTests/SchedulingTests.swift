import Testing
@testable import ControlPlane
@testable import KubeAPI

/// The scheduler's decisions, without I/O: filters, their reasons, assumption accounting, spreading.
@Suite struct SchedulingTests {
    static func node(_ name: String, cpu: String = "4", memory: String = "8Gi", pods: String = "110", labels: [String: String] = [:],
                     taints: [JSON] = [], unschedulable: Bool = false) -> NodeInfo
    {
        var l: [String: JSON] = [:]
        for (k, v) in labels { l[k] = .string(v) }
        var n: JSON = ["metadata": ["name": .string(name), "labels": .object(l)],
                       "status": ["allocatable": ["cpu": .string(cpu), "memory": .string(memory), "pods": .string(pods)]]]
        if !taints.isEmpty { n["spec"]["taints"] = .array(taints) }
        if unschedulable { n["spec"]["unschedulable"] = true }
        return NodeInfo(n)
    }

    static func spec(cpu: String? = nil, selector: [String: String] = [:], tolerations: [JSON] = [], affinity: JSON? = nil) -> JSON {
        var c: JSON = ["name": "c", "image": "x"]
        if let cpu { c["resources"] = ["requests": ["cpu": .string(cpu)]] }
        var s: JSON = ["containers": [c]]
        if !selector.isEmpty {
            var sel: [String: JSON] = [:]
            for (k, v) in selector { sel[k] = .string(v) }
            s["nodeSelector"] = .object(sel)
        }
        if !tolerations.isEmpty { s["tolerations"] = .array(tolerations) }
        if let affinity { s["affinity"] = affinity }
        return s
    }

    func state(_ nodes: [NodeInfo]) -> SchedulingState {
        var s = SchedulingState()
        for n in nodes { _ = s.upsertNode(n) }
        return s
    }

    @Test func resourcesAreAccountedAcrossDecisions() {
        var s = state([Self.node("a", cpu: "2"), Self.node("b", cpu: "1")])
        let spec = Self.spec(cpu: "900m")
        var placed: [String] = []
        for i in 0..<3 {
            guard case .success(let n) = s.choose(spec: spec, request: PodRequest(spec)) else { Issue.record("pod \(i) unschedulable"); return }
            s.place("ns/p\(i)", on: n, PodRequest(spec))
            placed.append(n)
        }
        #expect(placed.sorted() == ["a", "a", "b"])
        guard case .failure(let why) = s.choose(spec: spec, request: PodRequest(spec)) else { Issue.record("4th pod fit"); return }
        #expect(why.message == "0/2 nodes are available: 2 Insufficient cpu.")
        s.unplace("ns/p0")  // a pod on a goes away: room again
        #expect((try? s.choose(spec: spec, request: PodRequest(spec)).get()) == "a")
    }

    @Test func selectorsTaintsAndUnschedulableNodesFilter() {
        let gpuTaint: JSON = ["key": "dedicated", "value": "gpu", "effect": "NoSchedule"]
        var s = state([Self.node("wrong-zone", labels: ["zone": "b"]), Self.node("tainted", labels: ["zone": "a"], taints: [gpuTaint]),
                       Self.node("cordoned", labels: ["zone": "a"], unschedulable: true), Self.node("ok", labels: ["zone": "a"])])
        let plain = Self.spec(selector: ["zone": "a"])
        #expect((try? s.choose(spec: plain, request: PodRequest(plain)).get()) == "ok")
        s.removeNode("ok")
        guard case .failure(let why) = s.choose(spec: plain, request: PodRequest(plain)) else { Issue.record("fit without ok"); return }
        #expect(why.message == "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
            + "1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were unschedulable.")
        let tolerant = Self.spec(selector: ["zone": "a"], tolerations: [["key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"]])
        #expect((try? s.choose(spec: tolerant, request: PodRequest(tolerant)).get()) == "tainted")
    }

    @Test func requiredNodeAffinity() {
        let s0 = state([Self.node("n1", labels: ["disk": "ssd", "gen": "3"]), Self.node("n2", labels: ["disk": "hdd", "gen": "5"])])
        func pick(_ exprs: [JSON], fields: [JSON] = []) -> String? {
            var s = s0
            var term: JSON = ["matchExpressions": .array(exprs)]
            if !fields.isEmpty { term["matchFields"] = .array(fields) }
            let spec = Self.spec(affinity: ["nodeAffinity": ["requiredDuringSchedulingIgnoredDuringExecution": ["nodeSelectorTerms": [term]]]])
            return try? s.choose(spec: spec, request: PodRequest(spec)).get()
        }
        #expect(pick([["key": "disk", "operator": "In", "values": ["ssd"]]]) == "n1")
        #expect(pick([["key": "disk", "operator": "NotIn", "values": ["ssd"]]]) == "n2")
        #expect(pick([["key": "gen", "operator": "Gt", "values": ["4"]]]) == "n2")
        #expect(pick([["key": "gpu", "operator": "Exists"]]) == nil)
        #expect(pick([], fields: [["key": "metadata.name", "operator": "In", "values": ["n2"]]]) == "n2")
    }

    @Test func maxPodsAndSpreading() {
        var s = state([Self.node("a", pods: "2"), Self.node("b", pods: "2")])
        let spec = Self.spec()
        var counts: [String: Int] = [:]
        for i in 0..<4 {
            guard case .success(let n) = s.choose(spec: spec, request: PodRequest(spec)) else { Issue.record("pod \(i)"); return }
            s.place("ns/p\(i)", on: n, PodRequest(spec))
            counts[n, default: 0] += 1
        }
        #expect(counts == ["a": 2, "b": 2])
        guard case .failure(let why) = s.choose(spec: spec, request: PodRequest(spec)) else { Issue.record("5th pod fit"); return }
        #expect(why.message == "0/2 nodes are available: 2 Too many pods.")
    }

    @Test func heartbeatsDoNotCountAsNodeChanges() {
        var s = state([Self.node("a")])
        let same = s.upsertNode(Self.node("a"))
        let relabelled = s.upsertNode(Self.node("a", labels: ["x": "y"]))
        #expect(!same)
        #expect(relabelled)
    }

    @Test func tolerationRules() {
        let taint: JSON = ["key": "k", "value": "v", "effect": "NoExecute"]
        #expect(NodeUtil.tolerates(["operator": "Exists"], taint))
        #expect(NodeUtil.tolerates(["key": "k", "operator": "Exists"], taint))
        #expect(NodeUtil.tolerates(["key": "k", "value": "v"], taint))
        #expect(!NodeUtil.tolerates(["key": "k", "value": "w"], taint))
        #expect(!NodeUtil.tolerates(["key": "k", "operator": "Exists", "effect": "NoSchedule"], taint))
        #expect(!NodeUtil.tolerates(["key": "", "operator": "Equal"], taint))
    }

    @Test func quantitiesAndScaledValues() {
        #expect(Quantity.milliValue("100m") == 100)
        #expect(Quantity.milliValue("1.5") == 1500)
        #expect(Quantity.milliValue(.int(2)) == 2000)
        #expect(Quantity.value("128Mi") == 134_217_728)
        #expect(Quantity.value("1G") == 1_000_000_000)
        #expect(Quantity.value("1e3") == 1000)
        #expect(Quantity.value("-1") == nil)
        #expect(Quantity.value("lots") == nil)
        #expect(scaledValue("25%", total: 10, roundUp: true, default: 0) == 3)
        #expect(scaledValue("25%", total: 10, roundUp: false, default: 0) == 2)
        #expect(scaledValue(.int(2), total: 10, roundUp: false, default: 0) == 2)
    }

    @Test func templateHashIsStableAndDiscriminating() {
        let a: JSON = ["spec": ["containers": [["name": "c", "image": "nginx:1.25"]]]]
        let b: JSON = ["spec": ["containers": [["name": "c", "image": "nginx:1.26"]]]]
        #expect(templateHash(a) == templateHash(a))
        #expect(templateHash(a) != templateHash(b))
        #expect(templateHash(a).allSatisfy { "bcdfghjklmnpqrstvwxz2456789".contains($0) })
    }
}
