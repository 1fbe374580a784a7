import KubeAPI

/// What the mesh's DNS does with a query: answer it from the Services the node holds, or send it
/// upstream (a name outside the cluster domain).
enum DNSDecision: Sendable, Equatable {
    case answer(DNSResponseCode, answers: [DNSRecord], additional: [DNSRecord])
    case forward
}

/// kube-dns's naming (the DNS specification for Kubernetes) over a ``ServiceDirectory``:
/// `<svc>.<ns>.svc.<domain>` (ClusterIP, or each ready endpoint of a headless Service),
/// `<host>.<svc>.<ns>.svc.<domain>` for named endpoints of headless Services,
/// `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV, ExternalName as CNAME,
/// `<a-b-c-d>.<ns>.pod.<domain>` and reverse lookups of ClusterIPs.
struct MeshResolver: Sendable {
    let directory: ServiceDirectory
    let domain: String
    let ttl: UInt32 = 5

    func decide(_ q: DNSQuery) -> DNSDecision {
        guard q.qclass == 1 || q.qclass == 255 else { return .answer(.notImplemented, answers: [], additional: []) }
        let name = q.name
        if name.hasSuffix(".in-addr.arpa") { return reverse(q) }
        guard name == domain || name.hasSuffix("." + domain) else { return .forward }
        let labels = name == domain ? [] : name.dropLast(domain.count + 1).split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        let nx = DNSDecision.answer(.nameError, answers: [], additional: [])
        guard let kind = labels.last else { return .answer(.noError, answers: [], additional: []) }
        switch kind {
        case "svc":
            let l = labels.dropLast()
            switch l.count {
            case 0, 1: return .answer(.noError, answers: [], additional: [])  // svc.<domain>, <ns>.svc.<domain>: names without records
            case 2: return service(q, namespace: l[l.startIndex + 1], name: l[l.startIndex])
            case 3: return endpoint(q, namespace: l[l.startIndex + 2], service: l[l.startIndex + 1], host: l[l.startIndex])
            case 4: return srv(q, namespace: l[l.startIndex + 3], service: l[l.startIndex + 2], port: l[l.startIndex], proto: l[l.startIndex + 1])
            default: return nx
            }
        case "pod":
            let l = labels.dropLast()
            guard l.count == 2, let ip = IPv4Address(l[l.startIndex].replacingOccurrences(of: "-", with: ".")) else { return nx }
            return records(q, [DNSRecord(name: name, ttl: ttl, data: .a(ip.octets))], type: .a)
        default:
            return nx
        }
    }

    /// Records of `type` among `all`, NODATA (no error, no answers) when the name exists with
    /// other types only.
    func records(_ q: DNSQuery, _ all: [DNSRecord], type: DNSType, additional: [DNSRecord] = []) -> DNSDecision {
        if q.type == DNSType.any.rawValue || q.type == type.rawValue { return .answer(.noError, answers: all, additional: additional) }
        // A CNAME answers every type.
        if let c = all.first, case .cname = c.data { return .answer(.noError, answers: [c], additional: []) }
        return .answer(.noError, answers: [], additional: [])
    }

    func fqdn(_ parts: String...) -> String { (parts + [domain]).joined(separator: ".") }

    func service(_ q: DNSQuery, namespace: String, name: String) -> DNSDecision {
        guard let svc = directory.service(namespace: namespace, name: name) else { return .answer(.nameError, answers: [], additional: []) }
        if let ext = svc.externalName { return records(q, [DNSRecord(name: q.name, ttl: ttl, data: .cname(ext))], type: .cname) }
        if let ip = svc.clusterIP { return records(q, [DNSRecord(name: q.name, ttl: ttl, data: .a(ip.octets))], type: .a) }
        guard svc.headless else { return .answer(.noError, answers: [], additional: []) }
        let ips = Set(directory.endpoints(namespace: namespace, name: name).filter(\.ready).map(\.ip)).sorted()
        return records(q, ips.map { DNSRecord(name: q.name, ttl: ttl, data: .a($0.octets)) }, type: .a)
    }

    func endpoint(_ q: DNSQuery, namespace: String, service: String, host: String) -> DNSDecision {
        guard directory.service(namespace: namespace, name: service)?.headless == true else { return .answer(.nameError, answers: [], additional: []) }
        let match = directory.endpoints(namespace: namespace, name: service).filter { e in
            e.ready && (e.hostname == host || e.ip.description.replacingOccurrences(of: ".", with: "-") == host)
        }
        guard !match.isEmpty else { return .answer(.nameError, answers: [], additional: []) }
        return records(q, Set(match.map(\.ip)).sorted().map { DNSRecord(name: q.name, ttl: ttl, data: .a($0.octets)) }, type: .a)
    }

    func srv(_ q: DNSQuery, namespace: String, service: String, port: String, proto: String) -> DNSDecision {
        guard port.hasPrefix("_"), proto.hasPrefix("_"), let svc = directory.service(namespace: namespace, name: service),
              let p = svc.ports.first(where: { "_" + $0.name == port && "_" + $0.proto.rawValue.lowercased() == proto.lowercased() && !$0.name.isEmpty })
        else { return .answer(.nameError, answers: [], additional: []) }
        let host = fqdn(service, namespace, "svc")
        if svc.headless {
            var answers: [DNSRecord] = [], extra: [DNSRecord] = []
            for e in directory.endpoints(namespace: namespace, name: service) where e.ready {
                guard let n = e.ports[p.name] else { continue }
                let target = fqdn(e.hostname ?? e.ip.description.replacingOccurrences(of: ".", with: "-"), service, namespace, "svc")
                answers.append(DNSRecord(name: q.name, ttl: ttl, data: .srv(priority: 0, weight: 100, port: UInt16(n), target: target)))
                extra.append(DNSRecord(name: target, ttl: ttl, data: .a(e.ip.octets)))
            }
            return records(q, answers, type: .srv, additional: extra)
        }
        guard let ip = svc.clusterIP else { return .answer(.noError, answers: [], additional: []) }
        return records(q, [DNSRecord(name: q.name, ttl: ttl, data: .srv(priority: 0, weight: 100, port: UInt16(p.port), target: host))],
                       type: .srv, additional: [DNSRecord(name: host, ttl: ttl, data: .a(ip.octets))])
    }

    /// `d.c.b.a.in-addr.arpa` of a ClusterIP: the Service's name; other addresses go upstream.
    func reverse(_ q: DNSQuery) -> DNSDecision {
        let parts = q.name.dropLast(".in-addr.arpa".count).split(separator: ".")
        guard parts.count == 4, let ip = IPv4Address(parts.reversed().joined(separator: ".")) else { return .forward }
        guard let svc = directory.services.first(where: { $0.clusterIP == ip }) else { return .forward }
        return records(q, [DNSRecord(name: q.name, ttl: ttl, data: .ptr(fqdn(svc.name, svc.namespace, "svc")))], type: .ptr)
    }
}
