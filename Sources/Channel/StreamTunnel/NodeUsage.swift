import KubeAPI

/// A node's CPU and memory usage and its pods' (what `kubectl top` shows), measured by the node
/// over `window` seconds ending at `timestamp`; the payload of a ``StreamRequest/Kind/stats`` stream.
public struct NodeUsage: Sendable, Equatable {
    /// One container's usage: CPU in nanocores, memory working set in bytes.
    public struct Container: Sendable, Equatable {
        public var name: String
        public var cpuNanoCores: UInt64
        public var memoryBytes: UInt64
        /// CPU time used since the container started (kubelet's cumulative counter), if known.
        public var cpuTotalNanoSeconds: UInt64?
        /// When the container was created, seconds since the epoch, if known.
        public var startTimeSeconds: Double?
        public init(name: String, cpuNanoCores: UInt64, memoryBytes: UInt64, cpuTotalNanoSeconds: UInt64? = nil, startTimeSeconds: Double? = nil) {
            self.name = name; self.cpuNanoCores = cpuNanoCores; self.memoryBytes = memoryBytes
            self.cpuTotalNanoSeconds = cpuTotalNanoSeconds; self.startTimeSeconds = startTimeSeconds
        }
    }

    public struct Pod: Sendable, Equatable {
        public var namespace: String
        public var name: String
        public var uid: String
        public var containers: [Container]
        public init(namespace: String, name: String, uid: String, containers: [Container]) {
            self.namespace = namespace; self.name = name; self.uid = uid; self.containers = containers
        }
    }

    public var timestamp: String
    public var windowSeconds: Double
    public var cpuNanoCores: UInt64
    public var memoryBytes: UInt64
    public var pods: [Pod]
    /// The node's busy CPU time since boot, if known.
    public var cpuTotalNanoSeconds: UInt64?

    public init(timestamp: String, windowSeconds: Double, cpuNanoCores: UInt64, memoryBytes: UInt64, pods: [Pod], cpuTotalNanoSeconds: UInt64? = nil) {
        self.timestamp = timestamp; self.windowSeconds = windowSeconds; self.cpuNanoCores = cpuNanoCores
        self.memoryBytes = memoryBytes; self.pods = pods; self.cpuTotalNanoSeconds = cpuTotalNanoSeconds
    }

    public var json: JSON {
        ["timestamp": .string(timestamp), "window": .double(windowSeconds),
         "node": ["cpu": .int(Int64(clamping: cpuNanoCores)), "memory": .int(Int64(clamping: memoryBytes)),
                  "cpuTotal": cpuTotalNanoSeconds.map { .int(Int64(clamping: $0)) } ?? .null],
         "pods": .array(pods.map { p in
             ["namespace": .string(p.namespace), "name": .string(p.name), "uid": .string(p.uid),
              "containers": .array(p.containers.map { c in
                  ["name": .string(c.name), "cpu": .int(Int64(clamping: c.cpuNanoCores)), "memory": .int(Int64(clamping: c.memoryBytes)),
                   "cpuTotal": c.cpuTotalNanoSeconds.map { .int(Int64(clamping: $0)) } ?? .null,
                   "start": c.startTimeSeconds.map { .double($0) } ?? .null]
              })]
         })]
    }

    public init(json j: JSON) throws(TunnelError) {
        guard let ts = j["timestamp"].stringValue, let cpu = j["node"]["cpu"].intValue, let mem = j["node"]["memory"].intValue else {
            throw TunnelError("node usage without timestamp or node cpu/memory")
        }
        func count(_ v: JSON) -> UInt64 { UInt64(max(0, v.intValue ?? 0)) }
        self.init(timestamp: ts, windowSeconds: j["window"].doubleValue ?? 0, cpuNanoCores: UInt64(max(0, cpu)), memoryBytes: UInt64(max(0, mem)),
                  pods: (j["pods"].arrayValue ?? []).map { p in
                      Pod(namespace: p["namespace"].stringValue ?? "", name: p["name"].stringValue ?? "", uid: p["uid"].stringValue ?? "",
                          containers: (p["containers"].arrayValue ?? []).map { c in
                              Container(name: c["name"].stringValue ?? "", cpuNanoCores: count(c["cpu"]), memoryBytes: count(c["memory"]),
                                        cpuTotalNanoSeconds: c["cpuTotal"].isNull ? nil : count(c["cpuTotal"]), startTimeSeconds: c["start"].doubleValue)
                          })
                  }, cpuTotalNanoSeconds: j["node"]["cpuTotal"].isNull ? nil : count(j["node"]["cpuTotal"]))
    }
}
