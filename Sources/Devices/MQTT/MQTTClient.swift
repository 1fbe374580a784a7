import AsyncSupport
import Logging
import NIOSSL
import Metrics
import ServiceLifecycle
import Synchronization

/// Where and how ``MQTTClient`` connects.
public struct MQTTClientConfiguration: Sendable {
    public var host: String
    public var port: Int
    public var clientID: String
    public var username: String?
    public var password: String?
    public var keepAliveSeconds: UInt16 = 30
    /// TLS to the broker (`ssl://`, `tls://`, `mqtts://` URLs); nil: plain TCP.
    public var tls: TLSConfiguration?
    /// Filters subscribed on every (re)connect.
    public var subscriptions: [(String, MQTTPacket.QoS)] = []
    /// Keep the broker session across connections (CONNECT with cleanSession=0), so QoS 1
    /// messages not acknowledged by one connection are delivered again on the next.
    public var persistentSession = true
    /// Messages received and not yet handled; beyond it the session ends unacknowledged.
    public var inboundLimit = 10_000
    public var reconnectBase: Duration = .milliseconds(200)
    public var reconnectMax: Duration = .seconds(5)
    public init(host: String, port: Int, clientID: String) { self.host = host; self.port = port; self.clientID = clientID }

    /// Parses KubeEdge's `mqttServerExternal` form: `tcp://host:port` (also `mqtt://`, or
    /// `host:port`), or `ssl://host:port` (also `tls://`, `mqtts://`; port 8883 if omitted) for TLS
    /// with the system's trust roots (``tls`` can be refined afterwards).
    public init(url: String, clientID: String) throws {
        var rest = Substring(url)
        var secure = false
        for scheme in ["tcp://", "mqtt://"] where rest.hasPrefix(scheme) { rest = rest.dropFirst(scheme.count) }
        for scheme in ["ssl://", "tls://", "mqtts://"] where rest.hasPrefix(scheme) { rest = rest.dropFirst(scheme.count); secure = true }
        // (Not `contains("://")`: that is _StringProcessing's substring search, ~0.3 MB of a small
        // edge process's memory for this one check.)
        guard !rest.indices.contains(where: { rest[$0...].hasPrefix("://") }) else { throw MQTTConnection.Failure("MQTT server \"\(url)\": use tcp://host:port or ssl://host:port") }
        let host: Substring, port: Int
        if let colon = rest.lastIndex(of: ":") {
            guard let p = Int(rest[rest.index(after: colon)...]), (1...65535).contains(p), colon > rest.startIndex else {
                throw MQTTConnection.Failure("MQTT server \"\(url)\" is not tcp://host:port")
            }
            host = rest[..<colon]; port = p
        } else {
            guard !rest.isEmpty else { throw MQTTConnection.Failure("MQTT server \"\(url)\" has no host") }
            host = rest; port = secure ? 8883 : 1883
        }
        self.init(host: String(host), port: port, clientID: clientID)
        if secure { tls = TLSConfiguration.makeClientConfiguration() }
    }
}

/// A long-lived MQTT client (the EventBus's link to the broker): connects, subscribes, hands every
/// incoming publish to `onMessage` in order, and reconnects with jittered exponential back-off
/// (subscribing again) whenever the session breaks. ``publish(_:_:qos:retain:)`` fails at once
/// while disconnected (``NotConnected``) instead of queueing: twin results and documents are
/// answers to requests, and a stale one delivered after a reconnect would mislead.
public final class MQTTClient: Service {
    /// Publishing while no session is up.
    public struct NotConnected: Error, CustomStringConvertible, Sendable {
        public var description: String { "not connected to the MQTT broker" }
    }

    let configuration: MQTTClientConfiguration
    let logger: Logger
    let onMessage: @Sendable (MQTTPacket.Publish) async -> Void
    let onConnect: @Sendable () async -> Void
    let current = Mutex<MQTTConnection?>(nil)
    let received = Counter(label: "swiftedge_eventbus_messages_received_total")
    let sent = Counter(label: "swiftedge_eventbus_messages_published_total")
    let reconnects = Counter(label: "swiftedge_eventbus_connects_total")

    public init(configuration: MQTTClientConfiguration, logger: Logger, onConnect: @escaping @Sendable () async -> Void = {},
                onMessage: @escaping @Sendable (MQTTPacket.Publish) async -> Void)
    {
        self.configuration = configuration; self.logger = logger; self.onMessage = onMessage; self.onConnect = onConnect
    }

    static func isIPAddress(_ h: String) -> Bool { h.contains(":") || h.split(separator: ".").count == 4 && h.allSatisfy { $0.isNumber || $0 == "." } }

    public var isConnected: Bool { current.withLock { $0 != nil } }

    /// Filters subscribed at run time (subscribed again on every reconnect).
    let dynamic = Mutex<Set<String>>([])

    /// Adds a subscription (now, if connected, and on every reconnect).
    public func subscribe(_ filter: String) async throws {
        guard MQTTTopic.isValidFilter(filter) else { throw MQTTConnection.Failure("invalid topic filter \"\(filter)\"") }
        guard dynamic.withLock({ $0.insert(filter).inserted }) else { return }
        if let c = current.withLock({ $0 }) { try await c.subscribe([(filter, .atMostOnce)]) }
    }

    /// Drops a subscription added with ``subscribe(_:)``.
    public func unsubscribe(_ filter: String) async {
        guard dynamic.withLock({ $0.remove(filter) != nil }) else { return }
        if let c = current.withLock({ $0 }) { try? await c.unsubscribe([filter]) }
    }

    /// The filters added at run time.
    public var subscriptions: Set<String> { dynamic.withLock { $0 } }

    public func publish(_ topic: String, _ payload: [UInt8], qos: MQTTPacket.QoS = .atMostOnce, retain: Bool = false) async throws {
        guard let c = current.withLock({ $0 }) else { throw NotConnected() }
        try await c.publish(topic, payload, qos: qos, retain: retain)
        sent.increment()
    }

    public func run() async throws {
        let c = configuration
        let tls = try c.tls.map { try NIOSSLContext(configuration: $0) }
        var backoff = Backoff(base: c.reconnectBase, max: c.reconnectMax, jitter: 0.5...1.0)
        var failures = 0
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let connected = SessionFlag()
            do {
                try await cancelWhenGracefulShutdown {
                    try await MQTTConnection.run(host: c.host, port: c.port, tls: tls, serverHostname: tls == nil || Self.isIPAddress(c.host) ? nil : c.host,
                                                 connect: .init(clientID: c.clientID, keepAliveSeconds: c.keepAliveSeconds, cleanSession: !c.persistentSession,
                                                                username: c.username, password: c.password.map { Array($0.utf8) }),
                                                 inboundLimit: c.inboundLimit) { conn in
                        let filters = c.subscriptions + self.dynamic.withLock { $0.sorted() }.map { ($0, MQTTPacket.QoS.atMostOnce) }
                        if !filters.isEmpty {
                            let granted = try await conn.subscribe(filters)
                            for (i, g) in granted.enumerated() where g == 0x80 {
                                self.logger.error("the broker refused a subscription", metadata: ["filter": "\(filters[i].0)"])
                            }
                        }
                        self.current.withLock { $0 = conn }
                        defer { self.current.withLock { $0 = nil } }
                        self.reconnects.increment()
                        self.logger.info("connected to the MQTT broker", metadata: ["broker": "\(c.host):\(c.port)", "clientID": "\(c.clientID)"])
                        connected.set()
                        await self.onConnect()
                        for await m in conn.messages {
                            self.received.increment()
                            await self.onMessage(m)
                        }
                    }
                }
            } catch {
                if Task.isShuttingDownGracefully || Task.isCancelled { break }
                failures += 1
                // One line per outage, then quiet until it is back.
                if failures == 1 {
                    logger.warning("MQTT broker unreachable; retrying", metadata: ["broker": "\(c.host):\(c.port)", "error": "\(error)"])
                }
            }
            current.withLock { $0 = nil }
            if connected.isSet { failures = 0; backoff.reset() }
            if Task.isShuttingDownGracefully || Task.isCancelled { break }
            let delay = backoff.next()
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
        }
    }
}

/// Set once a session of one connection attempt got as far as its subscriptions.
final class SessionFlag: Sendable {
    let value = Atomic(false)
    func set() { value.store(true, ordering: .relaxed) }
    var isSet: Bool { value.load(ordering: .relaxed) }
}
