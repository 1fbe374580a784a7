import CloudEdgeProtocol
import CRI
import ContainerRuntime
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import StreamTunnel

extension Edged {
    /// Runs a command in a container (`kubectl exec`) or attaches to its main process (`kubectl
    /// attach`): the CRI `Exec`/`Attach` call gives the runtime's streaming URL, which is dialled
    /// with SPDY (``RuntimeSPDY``), or as a WebSocket (`v4.channel.k8s.io`) if the runtime refuses
    /// SPDY; stdin, stdout, stderr, the exit Status (channel 3) and resize are relayed both ways
    /// until the runtime ends the session.
    func execOrAttach(_ request: StreamRequest, input: TunnelStreamData, write: @escaping @Sendable ([UInt8]) async throws -> Void) async throws {
        guard let record = try await store.get(ResourceRef(namespace: request.namespace, kind: .pod, name: request.pod).description) else {
            throw TunnelError("pod \(request.pod) is not on node \(configuration.nodeName)")
        }
        let latest = try await runtime.listContainers(labels: [RuntimeLabels.podUID: record.uid, RuntimeLabels.containerName: request.container,
                                                               RuntimeLabels.node: configuration.nodeName])
            .max { $0.metadata.attempt < $1.metadata.attempt }
        guard let c = latest, c.state == .containerRunning else {
            throw TunnelError("unable to upgrade connection: container not found (\"\(request.container)\")")
        }
        let o = request.exec
        if request.kind == .exec, o.command.isEmpty { throw TunnelError("you must specify at least one command for the container") }
        // A streaming URL is good for one request, so each attempt asks the runtime for its own.
        func streamingURL() async throws -> (host: String, port: Int, path: String) {
            let url = request.kind == .attach
                ? try await runtime.attach(c.id, stdin: o.stdin, stdout: o.stdout, stderr: o.stderr, tty: o.tty)
                : try await runtime.exec(c.id, command: o.command, stdin: o.stdin, stdout: o.stdout, stderr: o.stderr, tty: o.tty)
            return try RuntimeSPDY.target(url)
        }
        // SPDY first (it can end stdin); a runtime that refuses it gets the WebSocket protocol.
        let first = try await streamingURL()
        do {
            try await RuntimeSPDY.relay(host: first.host, port: first.port, path: first.path, options: o, input: input, write: write)
            return
        } catch let refused as RuntimeSPDY.Refused {
            logger.debug("falling back to the WebSocket streaming protocol", metadata: ["reason": "\(refused)"])
        }
        let target = try await streamingURL()
        let ws = try await Self.dialStream(host: target.host, port: target.port, path: target.path)
        try await ws.executeThenClose { inbound, outbound in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await chunk in input where chunk.first != 255 {  // v5's close signal has no v4 equivalent
                        try await outbound.write(WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: ByteBuffer(bytes: chunk)))
                    }
                }
                for try await frame in inbound {
                    switch frame.opcode {
                    case .binary: try await write(Array(frame.unmaskedData.readableBytesView))
                    case .ping:
                        try await outbound.write(WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData))
                    case .connectionClose: break
                    default: continue
                    }
                    if frame.opcode == .connectionClose { break }
                }
                group.cancelAll()
            }
        }
    }

    enum StreamUpgrade: Sendable {
        case websocket(NIOAsyncChannel<WebSocketFrame, WebSocketFrame>)
        case refused
    }

    /// Dials the runtime's streaming server (plain HTTP on loopback) as a WebSocket.
    static func dialStream(host: String, port: Int, path: String) async throws -> NIOAsyncChannel<WebSocketFrame, WebSocketFrame> {
        let upgrade: EventLoopFuture<StreamUpgrade> = try await ClientBootstrap(group: .singletonMultiThreadedEventLoopGroup)
            .connectTimeout(.seconds(10))
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let upgrader = NIOTypedWebSocketClientUpgrader<StreamUpgrade>(maxFrameSize: 1 << 20) { channel, _ in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(NIOWebSocketFrameAggregator(
                                minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 64, maxAccumulatedFrameSize: 1 << 20))
                            return StreamUpgrade.websocket(try NIOAsyncChannel(wrappingChannelSynchronously: channel))
                        }
                    }
                    var headers = HTTPHeaders()
                    headers.add(name: "Host", value: "\(host):\(port)")
                    headers.add(name: "Sec-WebSocket-Protocol", value: "v4.channel.k8s.io")
                    headers.add(name: "Content-Length", value: "0")
                    let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)
                    var pipeline = NIOUpgradableHTTPClientPipelineConfiguration<StreamUpgrade>(
                        upgradeConfiguration: .init(upgradeRequestHead: head, upgraders: [upgrader], notUpgradingCompletionHandler: { channel in
                            channel.eventLoop.makeSucceededFuture(StreamUpgrade.refused)
                        }))
                    pipeline.leftOverBytesStrategy = .forwardBytes
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(configuration: pipeline)
                }
            }
        guard case .websocket(let ws) = try await upgrade.get() else {
            throw TunnelError("the container runtime refused the streaming WebSocket at \(host):\(port)")
        }
        return ws
    }
}
