import SPDYStreams
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import StreamTunnel

/// `kubectl port-forward` (≥ 1.31): a WebSocket with subprotocol `SPDY/3.1+portforward.k8s.io`
/// carrying a SPDY session (``SPDYPortForward``).
enum PortForwardSession {
    static let webSocketProtocol = SPDYPortForward.webSocketProtocol

    static func serve(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, node: String, namespace: String, pod: String,
                      streams: any PodStreams, logger: Logger) async throws
    {
        let input = inbound.messages(maxSize: 1 << 20).compactMap { m -> [UInt8]? in
            guard case .binary(let b) = m else { return nil }
            return Array(b.readableBytesView)
        }
        try await SPDYPortForward.serve(input: input, send: { try await outbound.writeBinaryMessage(ByteBuffer(bytes: $0.encoded())) },
                                        namespace: namespace, pod: pod, node: node, open: { try await streams.open(node: node, $0) },
                                        logger: logger)
    }
}
