import Foundation
import KubeAPI
import StreamTunnel

extension APIHandler {
    /// Largest proxied response relayed (bigger ones are cut off with 502).
    static let proxyResponseLimit = 16 << 20
    static let proxyTimeout: Duration = .seconds(30)

    /// `pods/{name[:port]}/proxy/{path}` and `services/{name[:port]}/proxy/{path}` (`kubectl proxy`,
    /// `get --raw`): one plain-HTTP request to the pod's port, carried by a port-forward stream of
    /// the node's tunnel (edge pods are not reachable from the cloud otherwise), its response relayed.
    func proxy(_ req: APIRequest, _ t: RequestTarget, _ streams: any PodStreams) async throws -> APIResponse {
        let target = try ProxyTarget(parsing: t.name ?? "")
        let namespace = t.namespace ?? "default"
        let (pod, port) = try await t.type.resource == "services"
            ? serviceBackend(namespace: namespace, target)
            : podBackend(namespace: namespace, target)
        let podName = pod["metadata"]["name"].stringValue ?? ""
        guard let node = pod["spec"]["nodeName"].stringValue, !node.isEmpty else {
            throw StatusError.badRequest("pod \(podName) does not have a host assigned")
        }
        let host = "\(pod["status"]["podIP"].stringValue ?? podName):\(port)"
        let request = ProxiedHTTP.request(method: req.method, path: t.proxyPath, query: ProxiedHTTP.encodeQuery(req.query), host: host, headers: req.headers,
                                          body: req.body)
        let stream: TunnelStream
        do {
            stream = try await streams.open(node: node, StreamRequest(kind: .portforward, namespace: namespace, pod: podName, container: "", port: port))
        } catch {
            throw StatusError(.serviceUnavailable, "error trying to reach pod \(podName) on node \"\(node)\": \(error)")
        }
        let raw: [UInt8]
        do {
            raw = try await withDeadline(Self.proxyTimeout) {
                try await stream.send(channel: 0, request)
                var received: [UInt8] = []
                for try await chunk in stream.data {
                    guard let channel = chunk.first else { continue }
                    if channel == 1 {
                        received += chunk.dropFirst()
                        if received.count > Self.proxyResponseLimit { break }
                    } else if chunk.count > 1 {
                        throw StatusError(.serviceUnavailable, "error trying to reach service: \(String(decoding: chunk.dropFirst(), as: UTF8.self))")
                    }
                    // A complete response ends the exchange even if the pod keeps the connection.
                    if ProxiedHTTP.isComplete(received) { break }
                }
                return received
            }
        } catch {
            await stream.close()
            throw error
        }
        await stream.close()
        guard let response = ProxiedHTTP.Response(parsing: raw) else {
            throw StatusError(.serviceUnavailable, "error trying to reach service: the pod's answer on port \(port) is not an HTTP response")
        }
        return .raw(response.status, response.body, contentType: response.headers["content-type"] ?? "text/plain; charset=utf-8")
    }

    func podBackend(namespace: String, _ target: ProxyTarget) async throws -> (JSON, Int) {
        let type = ResourceType.pods
        guard let stored = await store.get(type.storageKey(namespace: namespace, name: target.name)) else {
            throw StatusError.notFound(type.resource, name: target.name)
        }
        let pod = try stored.decode()
        if let n = Int(target.port) { return (pod, n) }
        if target.port.isEmpty { return (pod, 80) }
        for c in pod["spec"]["containers"].arrayValue ?? [] {
            for p in c["ports"].arrayValue ?? [] where p["name"].stringValue == target.port {
                if let n = p["containerPort"].intValue { return (pod, Int(n)) }
            }
        }
        throw StatusError(.serviceUnavailable, "no port named \"\(target.port)\" in pod \(target.name)")
    }

    /// A ready endpoint of the service's port (name, number, or its only port) and its target port.
    func serviceBackend(namespace: String, _ target: ProxyTarget) async throws -> (JSON, Int) {
        let svcType = ResourceType.services, epType = ResourceType.endpoints
        guard let stored = await store.get(svcType.storageKey(namespace: namespace, name: target.name)) else {
            throw StatusError.notFound(svcType.resource, name: target.name)
        }
        let ports = try stored.decode()["spec"]["ports"].arrayValue ?? []
        let servicePort = ports.first { p in
            target.port.isEmpty ? ports.count == 1 : (p["name"].stringValue == target.port || p["port"].intValue.map(String.init) == target.port)
        }
        guard let servicePort else { throw StatusError(.serviceUnavailable, "no service port \"\(target.port)\" found for service \"\(target.name)\"") }
        let portName = servicePort["name"].stringValue ?? ""
        let endpoints = try await store.get(epType.storageKey(namespace: namespace, name: target.name))?.decode() ?? .null
        for subset in endpoints["subsets"].arrayValue ?? [] {
            let ports = subset["ports"].arrayValue ?? []
            guard let port = (ports.first { ($0["name"].stringValue ?? "") == portName } ?? (ports.count == 1 ? ports.first : nil))?["port"].intValue
            else { continue }
            for address in subset["addresses"].arrayValue ?? [] {
                guard address["targetRef"]["kind"].stringValue == "Pod", let podName = address["targetRef"]["name"].stringValue,
                    let pod = try await store.get(ResourceType.pods.storageKey(namespace: namespace, name: podName))?.decode()
                else { continue }
                return (pod, Int(port))
            }
        }
        throw StatusError(.serviceUnavailable, "no endpoints available for service \"\(target.name)\"")
    }
}

/// `name`, `name:port` or `scheme:name:port` of a proxy URL (only `http` is proxied).
struct ProxyTarget: Equatable {
    var name: String
    var port: String

    init(parsing text: String) throws(StatusError) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        switch parts.count {
        case 1: (name, port) = (parts[0], "")
        case 2: (name, port) = (parts[0], parts[1])
        case 3:
            guard parts[0] == "http" || parts[0].isEmpty else { throw StatusError.badRequest("only http is proxied, not \(parts[0])") }
            (name, port) = (parts[1], parts[2])
        default: throw StatusError.badRequest("invalid proxy target \"\(text)\"")
        }
        if name.isEmpty { throw StatusError.badRequest("resource name may not be empty") }
    }
}

/// The HTTP/1.1 exchange of a proxied request: the request sent to the pod, its response read back.
enum ProxiedHTTP {
    /// Headers of the client's request that are not passed on (hop-by-hop, and its credentials for the API server).
    static let dropped: Set<String> = ["authorization", "connection", "host", "keep-alive", "proxy-connection", "te", "trailer",
                                       "transfer-encoding", "upgrade", "content-length", "x-remote-user", "impersonate-user"]

    /// `a=1&b=x%2Fy` from decoded pairs.
    static func encodeQuery(_ query: [String: String]) -> String {
        func enc(_ s: String) -> String {
            var out = ""
            for b in s.utf8 {
                let c = Character(Unicode.Scalar(b))
                if c.isASCII && (c.isLetter || c.isNumber || "-._~".contains(c)) { out.append(c) } else { out += String(format: "%%%02X", b) }
            }
            return out
        }
        return query.sorted { $0.key < $1.key }.map { "\(enc($0.key))=\(enc($0.value))" }.joined(separator: "&")
    }

    static func request(method: String, path: String, query: String, host: String, headers: [String: String], body: [UInt8]) -> [UInt8] {
        // Spaces, control and non-ASCII bytes of a decoded path are escaped again: they never split the request line.
        var safePath = ""
        for b in (path.isEmpty ? "/" : path).utf8 {
            if b <= 0x20 || b >= 0x7F { safePath += String(format: "%%%02X", b) } else { safePath.unicodeScalars.append(Unicode.Scalar(b)) }
        }
        var head = "\(method) \(safePath)\(query.isEmpty ? "" : "?" + query) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n"
        for (k, v) in headers.sorted(by: { $0.key < $1.key }) where !dropped.contains(k) && !k.hasPrefix("impersonate-") {
            // ("\r\n" is one Character: look at the bytes.)
            guard !k.utf8.contains(where: { $0 == 13 || $0 == 10 }), !v.utf8.contains(where: { $0 == 13 || $0 == 10 }) else { continue }
            head += "\(k): \(v)\r\n"
        }
        if !body.isEmpty || method == "POST" || method == "PUT" || method == "PATCH" { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        return Array(head.utf8) + body
    }

    struct Response: Equatable {
        var status: Int
        var headers: [String: String]
        var body: [UInt8]

        /// Parses a whole response (`Content-Length`, chunked, or until the connection closed).
        init?(parsing raw: [UInt8]) {
            guard let split = ProxiedHTTP.headerEnd(raw) else { return nil }
            let lines = String(decoding: raw[..<split], as: UTF8.self).components(separatedBy: "\r\n")
            let statusLine = lines[0].split(separator: " ", maxSplits: 2)
            guard statusLine.count >= 2, statusLine[0].hasPrefix("HTTP/1."), let code = Int(statusLine[1]) else { return nil }
            var headers: [String: String] = [:]
            for l in lines.dropFirst() {
                guard let colon = l.firstIndex(of: ":") else { continue }
                headers[l[..<colon].lowercased()] = l[l.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
            let rest = Array(raw[(split + 4)...])
            if headers["transfer-encoding"]?.lowercased().contains("chunked") == true {
                guard let decoded = ProxiedHTTP.dechunk(rest) else { return nil }
                body = decoded.body
            } else if let n = headers["content-length"].flatMap({ Int($0) }) {
                guard rest.count >= n else { return nil }
                body = Array(rest.prefix(n))
            } else {
                body = rest
            }
            status = code
            self.headers = headers
        }
    }

    static func headerEnd(_ raw: [UInt8]) -> Int? {
        guard raw.count >= 4 else { return nil }
        for i in 0...(raw.count - 4) where raw[i] == 13 && raw[i + 1] == 10 && raw[i + 2] == 13 && raw[i + 3] == 10 { return i }
        return nil
    }

    /// Whether `raw` holds a response whose length is known and fully received.
    static func isComplete(_ raw: [UInt8]) -> Bool {
        guard let split = headerEnd(raw) else { return false }
        let head = String(decoding: raw[..<split], as: UTF8.self).lowercased()
        let rest = Array(raw[(split + 4)...])
        if head.contains("transfer-encoding: chunked") { return dechunk(rest)?.complete ?? false }
        for l in head.components(separatedBy: "\r\n") where l.hasPrefix("content-length:") {
            if let n = Int(l.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) { return rest.count >= n }
        }
        return false
    }

    /// Decodes a chunked body; `complete` once the last (zero) chunk arrived.
    static func dechunk(_ data: [UInt8]) -> (body: [UInt8], complete: Bool)? {
        var body: [UInt8] = []
        var i = 0
        while true {
            guard let lineEnd = (i..<max(i, data.count - 1)).first(where: { data[$0] == 13 && data[$0 + 1] == 10 }) else { return (body, false) }
            let sizeText = String(decoding: data[i..<lineEnd], as: UTF8.self).split(separator: ";").first.map(String.init) ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16), size >= 0 else { return nil }
            if size == 0 { return (body, true) }
            let start = lineEnd + 2
            guard data.count >= start + size + 2 else { return (body, false) }
            body += data[start..<(start + size)]
            i = start + size + 2
        }
    }
}
