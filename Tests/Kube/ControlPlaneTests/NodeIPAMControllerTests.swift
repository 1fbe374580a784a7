import KubeAPI
import Testing
import TestSupport
@testable import ControlPlane

/// Node pod subnets: each node gets its own, none twice (even before the cache shows the last
/// one handed out), a full range is reported, a deleted node's subnet is free again.
@Suite struct NodeIPAMControllerTests {
    typealias T = TestResources

    @Test func allocatorNeverHandsOutASubnetTwice() throws {
        var a = NodeCIDRAllocator(options: NodeIPAMOptions(clusterCIDR: try #require(IPv4Network("10.244.0.0/22")), nodeMaskSize: 24))
        let used = ["old": IPv4Network("10.244.0.0/24")!]
        let n1 = a.allocate(for: "n1", used: used, existing: ["old", "n1", "n2"])
        let n2 = a.allocate(for: "n2", used: used, existing: ["old", "n1", "n2"])  // n1 still pending: not handed out again
        #expect(n1?.description == "10.244.1.0/24" && n2?.description == "10.244.2.0/24")
        #expect(a.allocate(for: "n1", used: used, existing: ["old", "n1", "n2"]) == n1)  // a retry gets the same one
        #expect(a.allocate(for: "n3", used: used, existing: ["old", "n1", "n2", "n3"])?.description == "10.244.3.0/24")
        #expect(a.allocate(for: "n4", used: used, existing: ["old", "n1", "n2", "n3", "n4"]) == nil)  // the /22 is full
        // "old" deleted: its subnet is free again.
        #expect(a.allocate(for: "n4", used: [:], existing: ["n1", "n2", "n3", "n4"])?.description == "10.244.0.0/24")
    }

    @Test func nodesGetDistinctPodCIDRs() async throws {
        let h = ControllerHarness()
        for n in ["a", "b", "c"] { h.client.seed(T.nodes, Fixtures.edgeNode(n)) }
        let options = NodeIPAMOptions(clusterCIDR: try #require(IPv4Network("10.244.0.0/16")))
        let loop = h.loop(1) { NodeIPAMController(client: h.client, informers: h.informers, events: h.events, queue: $0, options: options, logger: h.logger) }
        try await h.run([loop]) {
            try await eventually(timeout: .seconds(5), "every node has a pod CIDR") {
                ["a", "b", "c"].allSatisfy { h.client.object(T.nodes, name: $0)?["spec"]["podCIDR"].stringValue != nil }
            }
            let cidrs = ["a", "b", "c"].compactMap { h.client.object(T.nodes, name: $0)?["spec"]["podCIDR"].stringValue }
            #expect(Set(cidrs).count == 3)
            #expect(cidrs.allSatisfy { $0.hasPrefix("10.244.") && $0.hasSuffix(".0/24") })
            let node = try #require(h.client.object(T.nodes, name: "a"))
            #expect(node["spec"]["podCIDRs"] == [node["spec"]["podCIDR"]])
        }
    }
}
