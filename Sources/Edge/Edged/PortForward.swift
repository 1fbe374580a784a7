import CloudEdgeProtocol
import ContainerRuntime
import Foundation
import KubeAPI
import NIOCore
import NIOPosix
import StreamTunnel

extension Edged {
    /// `kubectl port-forward`: one TCP connection to a port of the pod, bytes relayed both ways,
    /// the client's end of sending passed on as a half-close. A host-network pod's port is dialled
    /// from the node (same network namespace); any other pod's goes through the runtime (CRI
    /// `PortForward` on its sandbox, SPDY to the runtime's streaming server), which enters the
    /// pod's network namespace.
    func portForward(_ request: StreamRequest, input: TunnelStreamData, write: @escaping @Sendable ([UInt8]) async throws -> Void) async throws {
        guard let record = try await store.get(ResourceRef(namespace: request.namespace, kind: .pod, name: request.pod).description) else {
            throw TunnelError("pod \(request.pod) is not on node \(configuration.nodeName)")
        }
        guard let port = request.port, (1...65535).contains(port) else { throw TunnelError("port-forward needs a port between 1 and 65535") }
        // On the node's own pod network the pod is dialled at its address (EdgeMesh relays land
        // here); otherwise through the runtime, which enters the pod's network namespace.
        let podIP = record.value["status"]["podIP"].stringValue.flatMap { IPv4Address($0) }
        let onBridge = podIP.map { ip in network.subnet.withLock { $0?.contains(ip) ?? false } } ?? false
        let host = record.value["spec"]["hostNetwork"].boolValue == true ? "127.0.0.1" : (onBridge ? podIP!.description : nil)
        guard let host else {
            let sandboxes = try await runtime.listPodSandboxes(labels: [RuntimeLabels.podUID: record.uid, RuntimeLabels.node: configuration.nodeName])
            guard let sandbox = sandboxes.first(where: { $0.state == .sandboxReady }) else {
                throw TunnelError("error forwarding port \(port) to pod \(request.pod): the pod has no ready sandbox")
            }
            let url = try await runtime.portForward(sandbox: sandbox.id, port: Int32(port))
            let target = try RuntimeSPDY.target(url)
            try await RuntimeSPDY.forward(host: target.host, port: target.port, path: target.path, podPort: port, input: input, write: write)
            return
        }
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            channel = try await ClientBootstrap(group: .singletonMultiThreadedEventLoopGroup)
                .connectTimeout(.seconds(5))
                .connect(host: host, port: port) { ch in
                    ch.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch,
                                                                    configuration: .init(isOutboundHalfClosureEnabled: true))
                    }
                }
        } catch {
            let why = "\(error)".contains("refused") ? "connection refused" : "\(error)"
            throw TunnelError("error forwarding port \(port) to pod \(request.pod): dial tcp4 \(host):\(port): \(why)")
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
