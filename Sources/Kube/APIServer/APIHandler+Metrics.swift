import KubeAPI
import ObjectStore
import StreamTunnel

/// `metrics.k8s.io/v1beta1` (what metrics-server serves, so `kubectl top` works): NodeMetrics and
/// PodMetrics measured by the edge nodes themselves, asked for over their stream tunnels when a
/// client reads them (no metrics are stored). Nodes that cannot be reached are left out of lists,
/// as metrics-server leaves out nodes it could not scrape.
extension APIHandler {
    static let metricsGroup = "metrics.k8s.io"
    static let nodeType = BuiltinResources.all.first { $0.resource == "nodes" && $0.group.isEmpty }!
    /// How long a node may take to answer a stats request.
    static let statsTimeout: Duration = .seconds(5)

    func metricsRequest(_ req: APIRequest, _ t: RequestTarget) async throws -> APIResponse {
        guard req.method == "GET", !req.bool("watch") else {
            throw StatusError(.methodNotAllowed, "the server does not allow this method on the requested resource")
        }
        let selector = try LabelSelector.parse(req.query["labelSelector"] ?? "")
        let streams = options.podStreams
        let apiVersion = "\(Self.metricsGroup)/v1beta1"
        if t.type.resource == "nodes" {
            var nodes: [JSON] = []
            if let name = t.name {
                if let o = await store.get(Self.nodeType.storageKey(namespace: nil, name: name)), let n = try? o.decode() { nodes = [n] }
            } else {
                nodes = try await allObjects(Self.nodeType, namespace: nil).filter { selector.matches(labels(of: $0)) }
            }
            let usage = await nodeUsage(Set(nodes.compactMap { $0["metadata"]["name"].stringValue }), streams)
            let items: [JSON] = nodes.compactMap { n in
                guard let name = n["metadata"]["name"].stringValue, let u = usage[name] else { return nil }
                return ["kind": "NodeMetrics", "apiVersion": .string(apiVersion),
                        "metadata": Self.metricsMeta(n, timestamp: u.timestamp),
                        "timestamp": .string(u.timestamp), "window": .string(Self.window(u.windowSeconds)),
                        "usage": Self.usage(cpu: u.cpuNanoCores, memory: u.memoryBytes)]
            }
            if let name = t.name {
                guard let item = items.first else { throw StatusError.notFound("nodes", group: Self.metricsGroup, name: name) }
                return .json(200, item)
            }
            return .json(200, ["kind": "NodeMetricsList", "apiVersion": .string(apiVersion), "metadata": [:], "items": .array(items)])
        }
        var pods: [JSON] = []
        if let name = t.name {
            if let o = await store.get(Self.podType.storageKey(namespace: t.namespace, name: name)), let p = try? o.decode() { pods = [p] }
        } else {
            pods = try await allObjects(Self.podType, namespace: t.namespace).filter { selector.matches(labels(of: $0)) }
        }
        let usage = await nodeUsage(Set(pods.compactMap { $0["spec"]["nodeName"].stringValue }.filter { !$0.isEmpty }), streams)
        var byUID: [String: (NodeUsage.Pod, NodeUsage)] = [:]
        for u in usage.values { for p in u.pods { byUID[p.uid] = (p, u) } }
        let items: [JSON] = pods.compactMap { p in
            guard let uid = p["metadata"]["uid"].stringValue, let (measured, node) = byUID[uid] else { return nil }
            return ["kind": "PodMetrics", "apiVersion": .string(apiVersion),
                    "metadata": Self.metricsMeta(p, timestamp: node.timestamp),
                    "timestamp": .string(node.timestamp), "window": .string(Self.window(node.windowSeconds)),
                    "containers": .array(measured.containers.map { c in
                        ["name": .string(c.name), "usage": Self.usage(cpu: c.cpuNanoCores, memory: c.memoryBytes)]
                    })]
        }
        if let name = t.name {
            guard let item = items.first else { throw StatusError.notFound("pods", group: Self.metricsGroup, name: name) }
            return .json(200, item)
        }
        return .json(200, ["kind": "PodMetricsList", "apiVersion": .string(apiVersion), "metadata": [:], "items": .array(items)])
    }

    /// The measured object's name, namespace and labels (metrics-server copies them).
    static func metricsMeta(_ o: JSON, timestamp: String) -> JSON {
        var m: JSON = ["name": o["metadata"]["name"], "creationTimestamp": .string(timestamp)]
        if let ns = o["metadata"]["namespace"].stringValue { m["namespace"] = .string(ns) }
        if let l = o["metadata"]["labels"].objectValue, !l.isEmpty { m["labels"] = .object(l) }
        return m
    }

    func labels(of o: JSON) -> [String: String] {
        (o["metadata"]["labels"].objectValue ?? [:]).compactMapValues(\.stringValue)
    }

    func allObjects(_ type: ResourceType, namespace: String?) async throws -> [JSON] {
        try await store.list(prefix: type.storagePrefix(namespace: namespace), startAfter: nil, limit: nil, revision: nil, filter: nil)
            .items.compactMap { try? $0.decode() }
    }

    /// Asks each node for its usage, concurrently; nodes that fail or time out are left out.
    func nodeUsage(_ nodes: Set<String>, _ streams: (any PodStreams)?) async -> [String: NodeUsage] {
        guard let streams, !nodes.isEmpty else { return [:] }
        let logger = self.logger
        return await withTaskGroup(of: (String, NodeUsage?).self) { group in
            for node in nodes {
                group.addTask {
                    do {
                        return (node, try await withDeadline(Self.statsTimeout) {
                            let stream = try await streams.open(node: node, StreamRequest(kind: .stats, namespace: "", pod: "", container: ""))
                            var body: [UInt8] = []
                            for try await chunk in stream.data where chunk.first == 1 { body += chunk.dropFirst() }
                            return try NodeUsage(json: try JSON.parse(body))
                        })
                    } catch {
                        logger.debug("no usage from node", metadata: ["node": "\(node)", "error": "\(error)"])
                        return (node, nil)
                    }
                }
            }
            var out: [String: NodeUsage] = [:]
            for await (node, u) in group { if let u { out[node] = u } }
            return out
        }
    }

    static func usage(cpu: UInt64, memory: UInt64) -> JSON {
        ["cpu": .string("\(cpu)n"), "memory": .string("\(memory / 1024)Ki")]
    }

    static func window(_ seconds: Double) -> String {
        let ms = Int((seconds * 1000).rounded())
        return ms % 1000 == 0 ? "\(ms / 1000)s" : "\(Double(ms) / 1000)s"
    }
}

/// Runs `body`, failing with a timeout error if it takes longer than `limit`.
func withDeadline<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask { try await Task.sleep(for: limit); return nil }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else {
            throw StatusError(.timeout, "no answer within \(limit)")
        }
        return value
    }
}
