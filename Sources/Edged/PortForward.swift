import Foundation
import KubeAPI
import NIOCore
import NIOPosix
import StreamTunnel

extension Edged {
    /// `kubectl port-forward`: one TCP connection to a port of a host-network pod, dialled from the
    /// node (the pod shares the node's network namespace); bytes relayed both ways, the client's
    /// end of sending passed on as a half-close.
    func portForward(_ request: StreamRequest, input: TunnelStreamData, write: @escaping @Sendable ([UInt8]) async throws -> Void) async throws {
        guard let record = try await store.get("\(request.namespace)/pod/\(request.pod)") else {
            throw TunnelError("pod \(request.pod) is not on node \(configuration.nodeName)")
        }
        guard let port = request.port, (1...65535).contains(port) else { throw TunnelError("port-forward needs a port between 1 and 65535") }
        guard record.value["spec"]["hostNetwork"].boolValue == true else {
            throw TunnelError("port-forward reaches host-network pods only on this node (pod \(request.pod) has its own network namespace)")
        }
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            channel = try await ClientBootstrap(group: .singletonMultiThreadedEventLoopGroup)
                .connectTimeout(.seconds(5))
                .connect(host: "127.0.0.1", port: port) { ch in
                    ch.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch,
                                                                    configuration: .init(isOutboundHalfClosureEnabled: true))
                    }
                }
        } catch {
            let why = "\(error)".contains("refused") ? "connection refused" : "\(error)"
            throw TunnelError("error forwarding port \(port) to pod \(request.pod): dial tcp4 127.0.0.1:\(port): \(why)")
        }
        try await channel.executeThenClose { inbound, outbound in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await chunk in input {
                        guard let channel = chunk.first else { continue }
                        if channel == 0 {
                            try await outbound.write(ByteBuffer(bytes: chunk.dropFirst()))
                        } else if channel == 255 {
                            outbound.finish()  // the client sends no more: half-close toward the pod
                            return
                        }
                    }
                }
                for try await buffer in inbound {
                    try await write([1] + Array(buffer.readableBytesView))
                }
                group.cancelAll()
            }
        }
    }
}
