import CloudEdgeProtocol
import Logging
import Metrics
import MQTT
import ServiceLifecycle
import Synchronization

/// The router's side of KubeEdge's eventbus on a node: subscribes to the MQTT topics the cloud's
/// Rules name (`subscribe`/`unsubscribe` from the cloud), sends what apps publish there to the
/// cloud (`bus/node/<node>/<topic>`), and publishes what the cloud's REST ingress sends
/// (`publish`). Its own broker connection, so device traffic and rule traffic do not share one.
public final class RouterEventBus: Service {
    let nodeName: String
    let mqtt: MQTTClient
    let logger: Logger
    let forwarded = Counter(label: "swiftedge_router_eventbus_forwarded_total")
    let published = Counter(label: "swiftedge_router_eventbus_published_total")

    /// - Parameter upstream: queues a message for the cloud.
    public init(nodeName: String, mqtt configuration: MQTTClientConfiguration, upstream: @escaping @Sendable (Message) -> Void, logger: Logger) {
        self.nodeName = nodeName; self.logger = logger
        let topics = self.topics, forwarded = self.forwarded
        mqtt = MQTTClient(configuration: configuration, logger: logger) { publish in
            // Only topics a rule still subscribes (a late message after an unsubscribe is dropped).
            guard topics.matches(publish.topic) else { return }
            forwarded.increment()
            upstream(RouterMessage.event(node: nodeName, topic: publish.topic, payload: String(decoding: publish.payload, as: UTF8.self)).message())
        }
    }

    let topics = TopicSet()

    /// A router message from the cloud for this node.
    public func handle(_ m: RouterMessage) async {
        switch m {
        case .subscribe(_, let topic):
            topics.insert(topic)
            do { try await mqtt.subscribe(topic) } catch {
                logger.warning("cannot subscribe a rule's topic", metadata: ["topic": "\(topic)", "error": "\(error)"])
            }
        case .unsubscribe(_, let topic):
            topics.remove(topic)
            await mqtt.unsubscribe(topic)
        case .publish(_, let topic, let payload):
            do {
                try await mqtt.publish(topic, Array(payload.utf8))
                published.increment()
            } catch {
                logger.warning("cannot publish a rule's message", metadata: ["topic": "\(topic)", "error": "\(error)"])
            }
        case .serviceCall, .allowTarget, .disallowTarget, .event, .serviceRequest, .serviceResponse:
            break
        }
    }

    public func run() async throws { try await mqtt.run() }
}

/// The topic filters rules subscribe.
final class TopicSet: Sendable {
    let filters = Mutex<Set<String>>([])
    func insert(_ f: String) { _ = filters.withLock { $0.insert(f) } }
    func remove(_ f: String) { _ = filters.withLock { $0.remove(f) } }
    func matches(_ topic: String) -> Bool { filters.withLock { $0.contains { MQTTTopic.matches(filter: $0, topic: topic) } } }
}
