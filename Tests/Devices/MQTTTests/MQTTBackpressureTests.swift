import NIOCore
import NIOPosix
import Synchronization
import Testing
@testable import MQTT

/// A QoS 1 message is acknowledged to the broker only once the client has queued it for its
/// consumer; one that does not fit is left unacknowledged (the broker redelivers it) and the
/// session ends with a clear error. A scripted broker on loopback counts the acknowledgements.
@Suite struct MQTTBackpressureTests {
    @Test func overflowingMessagesAreNotAcknowledged() async throws {
        let limit = 5, sent = limit + 3
        let acked = Mutex<[UInt16]>([])
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0) { ch in
                ch.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch) }
            }
        let port = try #require(server.channel.localAddress?.port)
        let broker = Task {
            try await server.executeThenClose { clients in
                for try await client in clients {
                    try await client.executeThenClose { inbound, outbound in
                        var reader = MQTTPacketReader()
                        for try await b in inbound {
                            reader.append(b.readableBytesView)
                            while let p = try reader.next() {
                                switch p {
                                case .connect:
                                    try await outbound.write(ByteBuffer(bytes: MQTTPacket.connack(sessionPresent: false, returnCode: 0).encoded()))
                                    for i in 1...sent {
                                        let m = MQTTPacket.Publish(topic: "t", payload: [UInt8(i)], qos: .atLeastOnce, packetID: UInt16(i))
                                        try await outbound.write(ByteBuffer(bytes: MQTTPacket.publish(m).encoded()))
                                    }
                                case .puback(let id): acked.withLock { $0.append(id) }
                                default: break
                                }
                            }
                        }
                    }
                    return
                }
            }
        }
        // The consumer does not read: the queue fills up.
        await #expect(throws: MQTTConnection.Failure.self) {
            try await MQTTConnection.run(host: "127.0.0.1", port: port, connect: .init(clientID: "slow", cleanSession: false),
                                         inboundLimit: limit) { _ in
                try await Task.sleep(for: .seconds(30))
            }
        }
        try await broker.value
        #expect(acked.withLock { $0 } == (1...limit).map { UInt16($0) })
    }
}
