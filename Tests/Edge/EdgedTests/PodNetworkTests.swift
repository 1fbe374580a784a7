import CRI
import Foundation
import KubeAPI
import Logging
import Testing
@testable import Edged

/// The pod network Edged configures: the CNI network list written from the node's pod CIDR,
/// pods waiting for it, and the resolver each DNS policy gives a sandbox.
@Suite struct PodNetworkTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("podnet-\(UUID().uuidString)").path

    func pod(dnsPolicy: String? = nil, hostNetwork: Bool = false, dnsConfig: JSON? = nil) throws -> PodModel {
        var spec: JSON = ["hostNetwork": .bool(hostNetwork), "containers": [["name": "main", "image": "docker.io/local/busybox:1"]]]
        if let dnsPolicy { spec["dnsPolicy"] = .string(dnsPolicy) }
        if let dnsConfig { spec["dnsConfig"] = dnsConfig }
        return try PodModel(["metadata": ["name": "p", "namespace": "shop", "uid": "uid-1", "resourceVersion": "1"], "spec": spec])
    }

    @Test func writesABridgeNetworkListForTheNodeSubnet() throws {
        let net = PodNetworkConfiguration(cniConfDirectory: directory + "/cni", cniDataDirectory: directory + "/leases")
        let subnet = try #require(IPv4Network("10.244.3.0/24"))
        #expect(try net.write(subnet: subnet))
        #expect(try !net.write(subnet: subnet))  // unchanged: not rewritten
        let text = try #require(FileManager.default.contents(atPath: directory + "/cni/" + PodNetworkConfiguration.fileName))
        let list = try JSON.parse(Array(text))
        let bridge = list["plugins"][0]
        #expect(bridge["type"] == "bridge" && bridge["isGateway"] == true)
        #expect(bridge["ipam"]["type"] == "host-local")
        #expect(bridge["ipam"]["ranges"][0][0]["subnet"] == "10.244.3.0/24")
        #expect(bridge["ipam"]["ranges"][0][0]["gateway"] == "10.244.3.1")
        #expect(bridge["ipam"]["dataDir"].stringValue == directory + "/leases")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory + "/cni") == [PodNetworkConfiguration.fileName])  // no temp file left
        #expect(try net.write(subnet: try #require(IPv4Network("10.244.4.0/24"))))
    }

    @Test func podsOffTheHostNetworkWaitForTheSubnet() async throws {
        let runtime = FakeRuntime()
        let state = PodNetworkState()
        var builder = RuntimeConfigBuilder(nodeName: "n1", nodeIP: "192.0.2.10", podsDirectory: directory + "/pods",
                                           logDirectory: directory + "/logs", lookup: { _ in nil })
        builder.network = state
        let w = PodWorker(uid: "uid-1", runtime: runtime, builder: builder, runtimeName: "fake", metrics: EdgedMetrics(), logger: Logger(label: "t"))
        let (waiting, _) = try await w.sync(try pod())
        #expect(runtime.state.withLock { $0.sandboxesCreated } == 0)
        #expect(waiting["containerStatuses"][0]["state"]["waiting"]["message"].stringValue?.contains("pod CIDR") == true)
        // A host-network pod does not wait.
        #expect(builder.networkNotReady(try pod(hostNetwork: true)) == nil)
        state.subnet.withLock { $0 = IPv4Network("10.244.3.0/24") }
        _ = try await w.sync(try pod())
        #expect(runtime.state.withLock { $0.sandboxesCreated } == 1)
    }

    @Test func dnsPolicies() throws {
        let dns = ClusterDNSConfiguration(servers: ["169.254.96.16"])
        let first = try #require(dns.dnsConfig(for: try pod()))
        #expect(first.servers == ["169.254.96.16"])
        #expect(first.searches == ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"])
        #expect(first.options == ["ndots:5"])
        #expect(dns.dnsConfig(for: try pod(hostNetwork: true)) == nil)  // ClusterFirst on the host network: the node's resolver
        #expect(dns.dnsConfig(for: try pod(dnsPolicy: "ClusterFirstWithHostNet", hostNetwork: true))?.servers == ["169.254.96.16"])
        #expect(dns.dnsConfig(for: try pod(dnsPolicy: "Default")) == nil)
        let none = try #require(dns.dnsConfig(for: try pod(dnsPolicy: "None", dnsConfig: ["nameservers": ["192.0.2.1"], "options": [["name": "ndots", "value": "2"]]])))
        #expect(none.servers == ["192.0.2.1"] && none.searches.isEmpty && none.options == ["ndots:2"])
        let merged = try #require(dns.dnsConfig(for: try pod(dnsConfig: ["searches": ["corp.example"], "options": [["name": "ndots", "value": "1"]]])))
        #expect(merged.searches.last == "corp.example" && merged.options == ["ndots:1"])
    }
}

extension JSON {
    fileprivate subscript(index: Int) -> JSON {
        guard let a = arrayValue, a.indices.contains(index) else { return .null }
        return a[index]
    }
}
