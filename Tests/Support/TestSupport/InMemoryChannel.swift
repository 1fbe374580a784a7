import AsyncSupport
import CloudEdgeProtocol
import ReliableSync
import Synchronization

/// The cloud–edge channel in memory, for unit tests: the cloud side is an ``AcknowledgedSender``
/// (what ReliableSync sends through; CloudHub in production), each node's side a `deliver`
/// function (what EdgeHub calls; the node's store in production). A message goes through its
/// wire encoding both ways, as over the WebSocket, and counts as acknowledged only once the
/// node's `deliver` returned, as EdgeHub acks. No sockets, no TLS: tests run in parallel.
public final class InMemoryChannel: AcknowledgedSender {
    public typealias Deliver = @Sendable (Message) async throws -> Void

    struct Session {
        var id: Int
        var deliver: Deliver
    }
    struct State {
        var sessions: [String: Session] = [:]
        var nextSession = 0
        /// Messages sent to each node (decoded as the node received them).
        var sent: [String: [Message]] = [:]
        /// Messages to lose (no delivery, no ack) per node.
        var drop: [String: Int] = [:]
    }
    let state = Mutex(State())

    public init() {}

    /// A node connects (or reconnects: its earlier session ends) and receives through `deliver`.
    public func connect(_ node: String, deliver: @escaping Deliver) {
        state.withLock { s in
            s.nextSession += 1
            s.sessions[node] = Session(id: s.nextSession, deliver: deliver)
        }
    }

    /// The node's connection drops: messages in flight to it are not acknowledged.
    public func disconnect(_ node: String) { _ = state.withLock { $0.sessions.removeValue(forKey: node) } }

    public func isConnected(_ node: String) -> Bool { state.withLock { $0.sessions[node] != nil } }

    /// Loses the next `count` messages to `node` (as a connection that dies mid-write does).
    public func dropNext(_ count: Int, to node: String) { state.withLock { $0.drop[node, default: 0] += count } }

    /// What `node` was sent so far (only messages that reached its `deliver`).
    public func sent(to node: String) -> [Message] { state.withLock { $0.sent[node] ?? [] } }

    public func sendAwaitingAck(_ message: Message, to node: String, timeout: Duration) async -> Bool {
        let session: Session? = state.withLock { s in
            guard let session = s.sessions[node] else { return nil }
            if let d = s.drop[node], d > 0 {
                s.drop[node] = d - 1
                return nil
            }
            return session
        }
        guard let session else { return false }
        // Through the wire form, as over the socket: what the node gets is what the bytes say.
        guard let received = try? Message(bytes: message.encoded()) else { return false }
        state.withLock { $0.sent[node, default: []].append(received) }
        do {
            try await withTimeLimit(timeout, expired: ChannelTimeout()) { try await session.deliver(received) }
        } catch {
            return false
        }
        // An ack of a session that ended meanwhile never arrives.
        return state.withLock { $0.sessions[node]?.id == session.id }
    }

    struct ChannelTimeout: Error {}
}
