import AsyncSupport
import Foundation
import Logging
import Metrics
import NIOCore
import NIOPosix
import Synchronization

/// The node's cluster DNS (EdgeMesh's EdgeDNS): UDP and TCP on one address (KubeEdge's
/// 169.254.96.16:53), answering cluster names from the node's ``ServiceDirectory`` — so it keeps
/// answering with the cloud gone — and sending every other name to the node's upstream servers.
/// A malformed query gets FORMERR; a UDP reply that does not fit the client's size is truncated
/// (the client retries on TCP).
struct MeshDNSServer: Sendable {
    let resolver: MeshResolver
    let host: String
    let port: Int
    /// Where names outside the cluster go (`host:port`; empty: REFUSED).
    let upstream: [String]
    let logger: Logger
    let queries = Counter(label: "swiftedge_edgemesh_dns_queries_total")
    let malformed = Counter(label: "swiftedge_edgemesh_dns_malformed_total")
    let forwarded = Counter(label: "swiftedge_edgemesh_dns_forwarded_total")
    /// Forwards at a time (more are answered SERVFAIL at once rather than queued without bound).
    static let maxForwards = 256

    /// The reply to one query (nil: forward it upstream).
    func reply(_ bytes: [UInt8], limit: Int?) -> (reply: [UInt8]?, query: DNSQuery?) {
        queries.increment()
        let q: DNSQuery
        do { q = try DNSQuery(bytes) } catch {
            malformed.increment()
            logger.debug("malformed DNS query", metadata: ["error": "\(error)"])
            return (DNSQuery.id(of: bytes).map(DNSReply.formatError(id:)), nil)
        }
        switch resolver.decide(q) {
        case .answer(let code, let answers, let additional):
            return (DNSReply.make(q, code: code, answers: answers, additional: additional, limit: limit ?? 65535), q)
        case .forward:
            if upstream.isEmpty { return (DNSReply.make(q, code: .refused, authoritative: false), q) }
            return (nil, q)
        }
    }

    /// Asks the upstream servers in turn (2 s each); SERVFAIL when none answers.
    func forward(_ bytes: [UInt8], _ q: DNSQuery) async -> [UInt8] {
        forwarded.increment()
        for server in upstream {
            let (h, p) = splitHostPort(server)
            do {
                let answer = try await withTimeLimit(.seconds(2), expired: MeshError("upstream \(server) did not answer")) {
                    let ch = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                        .connect(host: h, port: p) { c in
                            c.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: c) }
                        }
                    return try await ch.executeThenClose { inbound, outbound in
                        try await outbound.write(ByteBuffer(bytes: bytes))
                        for try await b in inbound where b.readableBytes >= 2 && Array(b.readableBytesView.prefix(2)) == Array(bytes.prefix(2)) {
                            return Array(b.readableBytesView)
                        }
                        throw MeshError("upstream \(server) closed")
                    }
                }
                return answer
            } catch {
                logger.debug("upstream DNS failed", metadata: ["server": "\(server)", "error": "\(error)"])
            }
        }
        return DNSReply.make(q, code: .serverFailure, authoritative: false)
    }

    func splitHostPort(_ s: String) -> (String, Int) {
        if let i = s.lastIndex(of: ":"), let p = Int(s[s.index(after: i)...]) { return (String(s[..<i]), p) }
        return (s, 53)
    }

    /// Serves UDP and TCP until cancelled; `bound` is told once both listen.
    func run(bound: @escaping @Sendable () -> Void = {}) async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let udp = try await DatagramBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { c in
                c.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: c)
                }
            }
        let tcp = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { c in
                c.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: c) }
            }
        logger.info("EdgeMesh DNS listening", metadata: ["address": "\(host):\(port)", "upstream": "\(upstream.joined(separator: ","))"])
        bound()
        let inFlight = InFlightCount()
        try await withThrowingDiscardingTaskGroup { tasks in
            tasks.addTask {
                try await udp.executeThenClose { inbound, outbound in
                    try await withThrowingDiscardingTaskGroup { forwards in
                        for try await envelope in inbound {
                            let bytes = Array(envelope.data.readableBytesView)
                            let (answer, q) = reply(bytes, limit: nil)
                            let limitFor = { (q: DNSQuery) in q.udpPayloadSize }
                            if let answer {
                                var out = answer
                                if let q, out.count > limitFor(q) {
                                    out = reply(bytes, limit: limitFor(q)).reply ?? answer
                                }
                                try? await outbound.write(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: ByteBuffer(bytes: out)))
                            } else if let q {
                                guard inFlight.value.add(1, ordering: .relaxed).newValue <= Self.maxForwards else {
                                    inFlight.value.subtract(1, ordering: .relaxed)
                                    let fail = DNSReply.make(q, code: .serverFailure, authoritative: false)
                                    try? await outbound.write(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: ByteBuffer(bytes: fail)))
                                    continue
                                }
                                forwards.addTask {
                                    defer { inFlight.value.subtract(1, ordering: .relaxed) }
                                    var out = await forward(bytes, q)
                                    if out.count > q.udpPayloadSize, out.count >= 4 {  // too big for the client over UDP: truncated
                                        out = Array(out.prefix(12)) + q.questionBytes
                                        out[2] |= 0x02
                                        out[6] = 0; out[7] = 0; out[8] = 0; out[9] = 0; out[10] = 0; out[11] = 0
                                    }
                                    try? await outbound.write(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: ByteBuffer(bytes: out)))
                                }
                            }
                        }
                    }
                }
            }
            tasks.addTask {
                try await tcp.executeThenClose { inbound in
                    try await withThrowingDiscardingTaskGroup { conns in
                        for try await conn in inbound {
                            conns.addTask { await serveTCP(conn) }
                        }
                    }
                }
            }
        }
    }

    /// One TCP client: length-prefixed queries until it closes (or 10 s idle).
    func serveTCP(_ conn: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async {
        try? await conn.executeThenClose { inbound, outbound in
            var buffer: [UInt8] = []
            for try await chunk in inbound {
                buffer += chunk.readableBytesView
                while buffer.count >= 2 {
                    let n = Int(buffer[0]) << 8 | Int(buffer[1])
                    guard buffer.count >= 2 + n else { break }
                    let msg = Array(buffer[2..<(2 + n)])
                    buffer.removeFirst(2 + n)
                    let (answer, q) = reply(msg, limit: nil)
                    var out: [UInt8]
                    if let answer { out = answer } else if let q { out = await forward(msg, q) } else { return }
                    out = [UInt8(out.count >> 8), UInt8(out.count & 0xFF)] + out
                    try await outbound.write(ByteBuffer(bytes: out))
                }
            }
        }
    }
}

/// A mesh failure with what happened.
public struct MeshError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Upstream forwards under way.
final class InFlightCount: Sendable {
    let value = Atomic(0)
}
