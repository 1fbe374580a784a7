import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// One MQTT 3.1.1 session to a broker over TCP: CONNECT, subscriptions, QoS 0/1 publishes,
/// keepalive pings (a broker silent for 1.5 keepalive periods ends the session); publishes from
/// the broker arrive on ``messages``, which ends when the session does. Reconnecting is
/// ``MQTTClient``'s job.
public final class MQTTConnection: Sendable {
    /// The broker refused, or the session broke.
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
        public init(_ d: String) { description = d }
    }

    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    let pending: PendingAcks
    /// Publishes from the broker, in arrival order.
    public let messages: AsyncStream<MQTTPacket.Publish>

    init(outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, pending: PendingAcks, messages: AsyncStream<MQTTPacket.Publish>) {
        self.outbound = outbound; self.pending = pending; self.messages = messages
    }

    /// Connects, runs `body` with the session, and closes the session when `body` returns or the
    /// connection breaks (then `body`'s ``messages`` loop ends and the session's error is thrown).
    /// - Parameter tls: TLS to the broker (`serverHostname` is checked against its certificate).
    public static func run<T: Sendable>(host: String, port: Int, tls: NIOSSLContext? = nil, serverHostname: String? = nil,
                                        connect: MQTTPacket.Connect, inboundLimit: Int = 10_000,
                                        _ body: @escaping @Sendable (MQTTConnection) async throws -> T) async throws -> T
    {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(5))
            .connect(host: host, port: port) { ch in
                ch.eventLoop.makeCompletedFuture {
                    if let tls {
                        try ch.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverHostname))
                    }
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            let pending = PendingAcks()
            let (messages, sink) = AsyncStream<MQTTPacket.Publish>.makeStream(bufferingPolicy: .bufferingOldest(max(1, inboundLimit)))
            let connection = MQTTConnection(outbound: outbound, pending: pending, messages: messages)
            let keepAlive = Duration.seconds(Int64(max(1, connect.keepAliveSeconds)))
            let clock = KeepAliveClock()
            return try await withThrowingTaskGroup(of: SessionOutcome<T>.self) { group in
                defer { group.cancelAll() }
                group.addTask {
                    // The only reader of the connection: CONNACK (as id 0), acks, incoming publishes.
                    var reason = Failure("the broker closed the connection")
                    do {
                        var reader = MQTTPacketReader()
                        readLoop: for try await b in inbound {
                            clock.heard()
                            reader.append(b.readableBytesView)
                            while let p = try reader.next() {
                                switch p {
                                case .connack: pending.complete(0, p)
                                case .publish(let m):
                                    // Acknowledged only once it is queued for the consumer: a message that
                                    // does not fit is not acknowledged, and the session ends so that the
                                    // broker delivers it again to the next one.
                                    if case .dropped = sink.yield(m) {
                                        reason = Failure("more than \(inboundLimit) messages from the broker wait to be processed; "
                                                         + "reconnecting so that the broker redelivers what was not acknowledged")
                                        break readLoop
                                    }
                                    if m.qos == .atLeastOnce, let id = m.packetID {
                                        try await outbound.write(ByteBuffer(bytes: MQTTPacket.puback(packetID: id).encoded()))
                                    }
                                case .puback(let id), .suback(let id, _), .unsuback(let id):
                                    pending.complete(id, p)
                                case .disconnect: break readLoop
                                default: continue
                                }
                            }
                        }
                    } catch let e as MQTTPacket.Malformed {
                        reason = Failure("malformed packet from the broker: \(e.description)")
                    } catch {
                        reason = Failure("the connection to the broker failed: \(error)")
                    }
                    sink.finish()
                    pending.failAll(reason)
                    return .ended(reason)
                }
                try await outbound.write(ByteBuffer(bytes: MQTTPacket.connect(connect).encoded()))
                let ack = try await Self.deadline(.seconds(10), "no CONNACK from the broker within 10 s") { try await pending.wait(0) }
                guard case .connack(_, let code) = ack else { throw Failure("expected CONNACK, got \(ack)") }
                guard code == 0 else { throw Failure(Self.refusal(code)) }
                group.addTask {
                    while true {
                        try await Task.sleep(for: keepAlive / 2)
                        if clock.tick() >= 3 {
                            return .ended(Failure("the broker did not answer for \(keepAlive * 1.5)"))
                        }
                        try await outbound.write(ByteBuffer(bytes: MQTTPacket.pingreq.encoded()))
                    }
                }
                group.addTask { .value(try await body(connection)) }
                guard let first = try await group.next() else { throw Failure("the session ended") }
                switch first {
                case .value(let v):
                    try? await outbound.write(ByteBuffer(bytes: MQTTPacket.disconnect.encoded()))
                    return v
                case .ended(let failure):
                    sink.finish()
                    pending.failAll(failure)
                    throw failure
                }
            }
        }
    }

    static func refusal(_ code: UInt8) -> String {
        switch code {
        case 1: return "the broker refused the connection: unacceptable protocol version"
        case 2: return "the broker refused the connection: client identifier rejected"
        case 3: return "the broker refused the connection: server unavailable"
        case 4: return "the broker refused the connection: bad user name or password"
        case 5: return "the broker refused the connection: not authorized (check the user name and password)"
        default: return "the broker refused the connection (code \(code))"
        }
    }

    /// Subscribes and waits for the broker's SUBACK; returns the granted QoS per filter (0x80: refused).
    @discardableResult
    public func subscribe(_ filters: [(String, MQTTPacket.QoS)]) async throws -> [UInt8] {
        for (f, _) in filters where !MQTTTopic.isValidFilter(f) { throw Failure("invalid topic filter \"\(f)\"") }
        let id = pending.nextID()
        try await outbound.write(ByteBuffer(bytes: MQTTPacket.subscribe(packetID: id, topics: filters.map { ($0.0, $0.1) }).encoded()))
        let ack = try await pending.wait(id)
        guard case .suback(_, let codes) = ack else { throw Failure("expected SUBACK, got \(ack)") }
        return codes
    }

    /// Unsubscribes and waits for the broker's UNSUBACK.
    public func unsubscribe(_ filters: [String]) async throws {
        let id = pending.nextID()
        try await outbound.write(ByteBuffer(bytes: MQTTPacket.unsubscribe(packetID: id, filters: filters).encoded()))
        _ = try await pending.wait(id)
    }

    /// Publishes; at QoS 1 waits for the broker's PUBACK.
    public func publish(_ topic: String, _ payload: [UInt8], qos: MQTTPacket.QoS = .atMostOnce, retain: Bool = false) async throws {
        guard !topic.contains("+"), !topic.contains("#"), !topic.isEmpty else { throw Failure("invalid topic \"\(topic)\"") }
        guard qos != .exactlyOnce else { throw Failure("QoS 2 is not supported; use 0 or 1") }
        if qos == .atMostOnce {
            try await outbound.write(ByteBuffer(bytes: MQTTPacket.publish(.init(topic: topic, payload: payload, retain: retain)).encoded()))
            return
        }
        let id = pending.nextID()
        try await outbound.write(ByteBuffer(bytes: MQTTPacket.publish(.init(topic: topic, payload: payload, qos: qos, retain: retain,
                                                                            packetID: id)).encoded()))
        _ = try await pending.wait(id)
    }

    /// Runs `body`, failing with `message` if it takes longer than `limit`.
    static func deadline<V: Sendable>(_ limit: Duration, _ message: String, _ body: @escaping @Sendable () async throws -> V) async throws -> V {
        try await withThrowingTaskGroup(of: V?.self) { group in
            group.addTask { try await body() }
            group.addTask { try await Task.sleep(for: limit); return nil }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else { throw Failure(message) }
            return value
        }
    }
}

/// Half keepalive periods since the broker was last heard from.
final class KeepAliveClock: Sendable {
    let ticks = Atomic<Int64>(0)
    let lastHeard = Atomic<Int64>(0)
    func heard() { lastHeard.store(ticks.load(ordering: .relaxed), ordering: .relaxed) }
    /// Advances the clock; returns how many halves have passed in silence.
    func tick() -> Int64 { ticks.add(1, ordering: .relaxed).newValue - lastHeard.load(ordering: .relaxed) }
}

/// How a session's first finished task ended.
enum SessionOutcome<T: Sendable>: Sendable { case value(T), ended(MQTTConnection.Failure) }

/// Packet ids awaiting the broker's acknowledgement (CONNACK as id 0). An ack that arrives
/// before its waiter is kept until the waiter comes.
final class PendingAcks: Sendable {
    struct State {
        var next: UInt16 = 0
        var waiters: [UInt16: CheckedContinuation<MQTTPacket, any Error>] = [:]
        var arrived: [UInt16: MQTTPacket] = [:]
        var failed: MQTTConnection.Failure?
    }
    let state = Mutex(State())

    func nextID() -> UInt16 {
        state.withLock { s in
            repeat { s.next = s.next &+ 1 } while s.next == 0 || s.waiters[s.next] != nil
            return s.next
        }
    }

    func wait(_ id: UInt16) async throws -> MQTTPacket {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<MQTTPacket, any Error>) in
            let ready = state.withLock { s -> Result<MQTTPacket, any Error>? in
                if let p = s.arrived.removeValue(forKey: id) { return .success(p) }
                if let f = s.failed { return .failure(f) }
                s.waiters[id] = c
                return nil
            }
            if let ready { c.resume(with: ready) }
        }
    }

    func complete(_ id: UInt16, _ p: MQTTPacket) {
        let w = state.withLock { s -> CheckedContinuation<MQTTPacket, any Error>? in
            if let w = s.waiters.removeValue(forKey: id) { return w }
            if s.failed == nil { s.arrived[id] = p }
            return nil
        }
        w?.resume(returning: p)
    }

    func failAll(_ f: MQTTConnection.Failure) {
        for c in state.withLock({ s in
            if s.failed == nil { s.failed = f }
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }) { c.resume(throwing: f) }
    }
}
