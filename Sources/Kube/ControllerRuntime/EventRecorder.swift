import AsyncSupport
import KubeAPI
import KubeClient
import Logging
import Metrics
import Synchronization

/// Records core/v1 Events about objects (what `kubectl describe` shows). Repeats of the same
/// event are folded into one Event with a growing `count`, as Kubernetes' correlator does.
/// Recording never blocks a controller: events go to a bounded buffer that ``run()`` drains;
/// when the API server cannot keep up, excess events are dropped and counted.
public final class EventRecorder: Sendable {
    public enum EventType: String, Sendable { case normal = "Normal", warning = "Warning" }

    struct Pending: Sendable {
        var involved: JSON
        var type: EventType
        var reason: String
        var message: String
        var at: KubeTime
    }

    let client: KubeClient
    let component: String
    let logger: Logger
    let capacity: Int
    let buffer = Mutex<[Pending]>([])
    let ready = WakeSignal()
    /// Correlation key → name, namespace and count of the Event already written.
    let seen = Mutex<[String: (name: String, namespace: String, count: Int64)]>([:])
    let dropped: Counter
    let events = ResourceType.events

    public init(client: KubeClient, component: String, capacity: Int = 1000, logger: Logger) {
        self.client = client; self.component = component; self.capacity = capacity; self.logger = logger
        dropped = Counter(label: "swiftedge_events_dropped_total", dimensions: [("component", component)])
    }

    /// Queues an event about `object` (a full object or at least its kind/apiVersion/metadata).
    public func record(_ object: JSON, _ type: EventType, reason: String, message: String) {
        let p = Pending(involved: Self.reference(object), type: type, reason: reason, message: message, at: .now())
        let queued = buffer.withLock { b -> Bool in
            if b.count >= capacity { return false }
            b.append(p)
            return true
        }
        if queued { ready.signal() } else { dropped.increment() }
    }

    static func reference(_ o: JSON) -> JSON {
        let m = o["metadata"]
        var r: JSON = ["kind": o["kind"], "apiVersion": o["apiVersion"], "name": m["name"], "uid": m["uid"]]
        if let ns = m["namespace"].stringValue, !ns.isEmpty { r["namespace"] = .string(ns) }
        if let rv = m["resourceVersion"].stringValue { r["resourceVersion"] = .string(rv) }
        return r
    }

    /// Writes queued events until cancelled.
    public func run() async {
        while !Task.isCancelled {
            var batch = buffer.withLock { b -> [Pending] in let items = b; b = []; return items }
            if batch.isEmpty {
                await ready.wait()
                batch = buffer.withLock { b -> [Pending] in let items = b; b = []; return items }
            }
            await withTaskGroup(of: Void.self) { group in
                var inFlight = 0
                for p in batch {
                    if inFlight >= 8 { await group.next(); inFlight -= 1 }
                    group.addTask { await self.write(p) }
                    inFlight += 1
                }
            }
        }
    }

    func write(_ p: Pending) async {
        let ns = p.involved["namespace"].stringValue ?? "default"
        let key = "\(p.involved["uid"].stringValue ?? "")|\(p.involved["kind"].stringValue ?? "")|\(p.involved["name"].stringValue ?? "")|\(p.type.rawValue)|\(p.reason)|\(p.message)"
        let ts = JSON.string(p.at.rfc3339)
        if let prior = seen.withLock({ $0[key] }) {
            let count = prior.count + 1
            let patch: JSON = ["count": .int(count), "lastTimestamp": ts]
            if (try? await client.patch(events, namespace: prior.namespace, name: prior.name, patch)) != nil {
                seen.withLock { $0[key] = (prior.name, prior.namespace, count) }
                return
            }
        }
        let name = "\(p.involved["name"].stringValue ?? "object").\(String(UInt64(p.at.micros) &* 1000 &+ UInt64.random(in: 0..<1000), radix: 16))"
        let event: JSON = [
            "apiVersion": "v1", "kind": "Event",
            "metadata": ["name": .string(name), "namespace": .string(ns)],
            "involvedObject": p.involved, "reason": .string(p.reason), "message": .string(p.message),
            "type": .string(p.type.rawValue), "source": ["component": .string(component)],
            "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
            "reportingComponent": .string(component), "reportingInstance": "",
        ]
        do {
            _ = try await client.create(events, namespace: ns, event)
            seen.withLock { s in
                if s.count > 4096 { s.removeAll() }
                s[key] = (name, ns, 1)
            }
        } catch {
            logger.debug("event not recorded", metadata: ["reason": "\(p.reason)", "error": "\(error)"])
        }
    }
}
