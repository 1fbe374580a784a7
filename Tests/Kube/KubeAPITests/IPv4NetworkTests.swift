import KubeAPI
import Testing

@Suite struct IPv4NetworkTests {
    @Test func parsesStrictly() {
        #expect(IPv4Address("10.244.1.5")?.description == "10.244.1.5")
        for bad in ["10.244.1", "10.244.1.256", "010.1.1.1", "1.1.1.1 ", "a.b.c.d", "1..1.1", ""] { #expect(IPv4Address(bad) == nil, "\(bad)") }
        #expect(IPv4Network("10.244.7.9/16")?.description == "10.244.0.0/16")
        #expect(IPv4Network("10.244.0.0/33") == nil && IPv4Network("10.244.0.0") == nil)
    }

    @Test func subnetsAndContainment() throws {
        let n = try #require(IPv4Network("10.244.0.0/16"))
        #expect(n.subnet(3, prefix: 24)?.description == "10.244.3.0/24")
        #expect(n.subnet(256, prefix: 24) == nil)
        #expect(n.contains(IPv4Address("10.244.200.1")!) && !n.contains(IPv4Address("10.245.0.1")!))
        #expect(IPv4Network("10.244.3.0/24")!.overlaps(n) && !IPv4Network("10.0.0.0/16")!.overlaps(n))
        #expect(IPv4Network("10.244.3.0/24")!.address(1)?.description == "10.244.3.1")
    }
}
