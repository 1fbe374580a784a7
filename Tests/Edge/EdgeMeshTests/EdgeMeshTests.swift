import KubeAPI
import Testing
@testable import EdgeMesh

/// A query as a stub resolver sends it (RD set, one question, optional EDNS0 OPT record).
func query(_ name: String, type: UInt16 = 1, id: UInt16 = 0x1234, edns: UInt16? = nil) -> [UInt8] {
    var b: [UInt8] = [UInt8(id >> 8), UInt8(id & 0xFF), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, edns == nil ? 0 : 1]
    for l in name.split(separator: ".") { b.append(UInt8(l.utf8.count)); b += Array(l.utf8) }
    b += [0, UInt8(type >> 8), UInt8(type & 0xFF), 0, 1]
    if let edns { b += [0, 0, 41, UInt8(edns >> 8), UInt8(edns & 0xFF), 0, 0, 0, 0, 0, 0] }
    return b
}

/// The answer section of a reply: (type, rdata) per record, plus the header's flags and counts.
struct ParsedReply {
    var id: UInt16
    var flags: UInt16
    var rcode: Int { Int(flags & 0xF) }
    var truncated: Bool { flags & 0x0200 != 0 }
    var answers: [(type: UInt16, data: [UInt8])] = []
    var additional = 0

    init(_ b: [UInt8]) throws {
        id = UInt16(b[0]) << 8 | UInt16(b[1])
        flags = UInt16(b[2]) << 8 | UInt16(b[3])
        let an = Int(b[6]) << 8 | Int(b[7])
        additional = Int(b[10]) << 8 | Int(b[11])
        var at = 12
        let (_, qend) = try DNSQuery.readName(b, at)
        at = qend + 4
        for _ in 0..<an {
            let (_, e) = try DNSQuery.readName(b, at)
            let type = UInt16(b[e]) << 8 | UInt16(b[e + 1])
            let len = Int(b[e + 8]) << 8 | Int(b[e + 9])
            answers.append((type, Array(b[(e + 10)..<(e + 10 + len)])))
            at = e + 10 + len
        }
    }
}

func service(_ name: String, ns: String = "default", clusterIP: String, ports: [(String, Int)] = [("http", 8080)], affinity: Bool = false,
             type: String = "ClusterIP", externalName: String? = nil) -> JSON {
    var spec: JSON = ["clusterIP": .string(clusterIP), "type": .string(type),
                      "ports": .array(ports.map { ["name": .string($0.0), "port": .int(Int64($0.1)), "protocol": "TCP"] })]
    if affinity { spec["sessionAffinity"] = "ClientIP" }
    if let externalName { spec["externalName"] = .string(externalName) }
    return ["metadata": ["name": .string(name), "namespace": .string(ns)], "spec": spec]
}

func endpoints(ready: [(String, String)], notReady: [(String, String)] = [], port: (String, Int) = ("http", 8080), hostnames: [String: String] = [:]) -> JSON {
    func addr(_ a: (String, String)) -> JSON {
        var o: JSON = ["ip": .string(a.0), "nodeName": .string(a.1), "targetRef": ["kind": "Pod", "name": .string("pod-\(a.0)"), "namespace": "default"]]
        if let h = hostnames[a.0] { o["hostname"] = .string(h) }
        return o
    }
    return ["subsets": [["addresses": .array(ready.map(addr)), "notReadyAddresses": .array(notReady.map(addr)),
                         "ports": [["name": .string(port.0), "port": .int(Int64(port.1)), "protocol": "TCP"]]]]]
}

@Suite struct DNSWireTests {
    @Test func parsesAQueryAndItsEDNSSize() throws {
        let q = try DNSQuery(query("Web.Default.svc.cluster.local", edns: 1232))
        #expect(q.name == "web.default.svc.cluster.local")
        #expect(q.type == 1 && q.id == 0x1234 && q.recursionDesired)
        #expect(q.udpPayloadSize == 1232)
    }

    @Test func refusesMalformedQueries() {
        #expect(throws: DNSFormatError.self) { try DNSQuery([0x12]) }  // short header
        var twoQuestions = query("a.b")
        twoQuestions[5] = 2
        #expect(throws: DNSFormatError.self) { try DNSQuery(twoQuestions) }
        var cut = query("web.default.svc.cluster.local")
        cut.removeLast(6)
        #expect(throws: DNSFormatError.self) { try DNSQuery(cut) }
        // A compression pointer to itself (a loop).
        let loop: [UInt8] = [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1]
        #expect(throws: DNSFormatError.self) { try DNSQuery(loop) }
        var response = query("a.b")
        response[2] |= 0x80
        #expect(throws: DNSFormatError.self) { try DNSQuery(response) }
        let long = (0..<40).map { _ in "abcdefgh" }.joined(separator: ".")  // over 255 bytes
        #expect(throws: DNSFormatError.self) { try DNSQuery(query(long)) }
    }

    @Test func formatErrorKeepsTheID() throws {
        let r = DNSReply.formatError(id: 0xBEEF)
        #expect(r.count == 12 && r[0] == 0xBE && r[1] == 0xEF)
        #expect(r[2] & 0x80 != 0 && r[3] & 0x0F == 1)  // a response, FORMERR
    }

    @Test func truncatesWhatDoesNotFit() throws {
        let q = try DNSQuery(query("many.default.svc.cluster.local"))
        let records = (0..<100).map { i in DNSRecord(name: q.name, ttl: 5, data: .a([10, 0, UInt8(i / 250), UInt8(i % 250)])) }
        let small = try ParsedReply(DNSReply.make(q, code: .noError, answers: records, limit: 512))
        #expect(small.truncated)
        #expect(small.answers.count < 100 && !small.answers.isEmpty)
        let whole = try ParsedReply(DNSReply.make(q, code: .noError, answers: records))
        #expect(!whole.truncated && whole.answers.count == 100)
    }
}

@Suite struct MeshResolverTests {
    let directory = ServiceDirectory()
    var resolver: MeshResolver { MeshResolver(directory: directory, domain: "cluster.local") }

    init() {
        directory.setService(namespace: "default", name: "web", service("web", clusterIP: "10.96.0.10"))
        directory.setEndpoints(namespace: "default", name: "web", endpoints(ready: [("10.244.1.5", "b"), ("10.244.1.6", "b")]))
        directory.setService(namespace: "default", name: "db", service("db", clusterIP: "None", ports: [("pg", 5432)]))
        directory.setEndpoints(namespace: "default", name: "db", endpoints(ready: [("10.244.2.7", "a")], notReady: [("10.244.2.8", "a")],
                                                                           port: ("pg", 5432), hostnames: ["10.244.2.7": "db-0"]))
        directory.setService(namespace: "default", name: "ext", service("ext", clusterIP: "", type: "ExternalName", externalName: "example.com"))
    }

    func answer(_ name: String, _ type: DNSType = .a) throws -> (DNSResponseCode, [DNSRecord], [DNSRecord])? {
        guard case .answer(let code, let answers, let extra) = resolver.decide(try DNSQuery(query(name, type: type.rawValue))) else { return nil }
        return (code, answers, extra)
    }

    @Test func serviceNameIsItsClusterIP() throws {
        let (code, answers, _) = try #require(try answer("web.default.svc.cluster.local"))
        #expect(code == .noError)
        #expect(answers.map(\.data) == [.a([10, 96, 0, 10])])
    }

    @Test func headlessServiceGivesReadyEndpointsOnly() throws {
        let (_, answers, _) = try #require(try answer("db.default.svc.cluster.local"))
        #expect(answers.map(\.data) == [.a([10, 244, 2, 7])])
        let (_, named, _) = try #require(try answer("db-0.db.default.svc.cluster.local"))
        #expect(named.map(\.data) == [.a([10, 244, 2, 7])])
    }

    @Test func srvForNamedPorts() throws {
        let (code, answers, extra) = try #require(try answer("_http._tcp.web.default.svc.cluster.local", .srv))
        #expect(code == .noError)
        #expect(answers.map(\.data) == [.srv(priority: 0, weight: 100, port: 8080, target: "web.default.svc.cluster.local")])
        #expect(extra.map(\.data) == [.a([10, 96, 0, 10])])
        let (_, headless, _) = try #require(try answer("_pg._tcp.db.default.svc.cluster.local", .srv))
        #expect(headless.map(\.data) == [.srv(priority: 0, weight: 100, port: 5432, target: "db-0.db.default.svc.cluster.local")])
    }

    @Test func unknownClusterNamesAreNXDomainAndOthersGoUpstream() throws {
        #expect(try answer("nope.default.svc.cluster.local")?.0 == .nameError)
        #expect(try answer("web.default.svc.cluster.local.default.svc.cluster.local")?.0 == .nameError)  // a search-path try
        #expect(resolver.decide(try DNSQuery(query("example.org"))) == .forward)
        // AAAA of a name with an A record: no error, no answer (the client then uses the A record).
        let (code, answers, _) = try #require(try answer("web.default.svc.cluster.local", .aaaa))
        #expect(code == .noError && answers.isEmpty)
    }

    @Test func externalNameIsACNAMEAndReverseLookupNamesTheService() throws {
        let (_, answers, _) = try #require(try answer("ext.default.svc.cluster.local"))
        #expect(answers.map(\.data) == [.cname("example.com")])
        let (_, ptr, _) = try #require(try answer("10.0.96.10.in-addr.arpa", .ptr))
        #expect(ptr.map(\.data) == [.ptr("web.default.svc.cluster.local")])
    }

    @Test func deletedServiceStopsResolving() throws {
        directory.setService(namespace: "default", name: "web", nil)
        #expect(try answer("web.default.svc.cluster.local")?.0 == .nameError)
    }
}

@Suite struct ServiceDirectoryTests {
    @Test func roundRobinOverReadyEndpointsOnly() {
        let d = ServiceDirectory()
        d.setService(namespace: "default", name: "web", service("web", clusterIP: "10.96.0.10"))
        d.setEndpoints(namespace: "default", name: "web", endpoints(ready: [("10.244.1.5", "b"), ("10.244.1.6", "b")], notReady: [("10.244.1.7", "b")]))
        let port = MeshService.Port(name: "http", proto: .tcp, port: 8080)
        let picks = (0..<4).compactMap { _ in d.pick(namespace: "default", name: "web", port: port, client: nil)?.endpoint.ip.description }
        #expect(picks == ["10.244.1.5", "10.244.1.6", "10.244.1.5", "10.244.1.6"])
        // An endpoint gone from the Endpoints is never picked again.
        d.setEndpoints(namespace: "default", name: "web", endpoints(ready: [("10.244.1.6", "b")]))
        #expect(Set((0..<3).compactMap { _ in d.pick(namespace: "default", name: "web", port: port, client: nil)?.endpoint.ip.description }) == ["10.244.1.6"])
        d.setEndpoints(namespace: "default", name: "web", nil)
        #expect(d.pick(namespace: "default", name: "web", port: port, client: nil) == nil)
    }

    @Test func clientIPAffinityKeepsAClientOnItsEndpoint() {
        let d = ServiceDirectory()
        d.setService(namespace: "default", name: "web", service("web", clusterIP: "10.96.0.10", affinity: true))
        d.setEndpoints(namespace: "default", name: "web", endpoints(ready: [("10.244.1.5", "b"), ("10.244.1.6", "b")]))
        let port = MeshService.Port(name: "http", proto: .tcp, port: 8080)
        let c1 = IPv4Address("10.244.0.9")!, c2 = IPv4Address("10.244.0.10")!
        let first = d.pick(namespace: "default", name: "web", port: port, client: c1)?.endpoint.ip
        for _ in 0..<5 { #expect(d.pick(namespace: "default", name: "web", port: port, client: c1)?.endpoint.ip == first) }
        #expect(d.pick(namespace: "default", name: "web", port: port, client: c2)?.endpoint.ip != first)
        // Affinity lapses after its timeout (10800 s by default).
        let later = ContinuousClock.now + .seconds(10801)
        _ = d.pick(namespace: "default", name: "web", port: port, client: c2, now: later)
        #expect(d.pick(namespace: "default", name: "web", port: port, client: c1, now: later) != nil)
    }

    @Test func proxyListensOnlyWhereAReadyEndpointExists() {
        let d = ServiceDirectory()
        let proxy = MeshProxy(directory: d, nodeName: "a", relay: nil, logger: .init(label: "t"))
        d.setService(namespace: "default", name: "web", service("web", clusterIP: "10.96.0.10"))
        #expect(proxy.desired().isEmpty)
        d.setEndpoints(namespace: "default", name: "web", endpoints(ready: [], notReady: [("10.244.1.7", "b")]))
        #expect(proxy.desired().isEmpty)
        d.setEndpoints(namespace: "default", name: "web", endpoints(ready: [("10.244.1.5", "b")]))
        #expect(proxy.desired().keys.map(\.description) == ["10.96.0.10:8080"])
    }

    @Test func resolvConfNameservers() {
        let text = "search example.org\nnameserver 192.0.2.53\nnameserver 169.254.96.16\nnameserver ::1\n"
        #expect(EdgeMeshConfiguration.nameservers(resolvConf: text, excluding: IPv4Address("169.254.96.16")!) == ["192.0.2.53:53"])
    }
}
