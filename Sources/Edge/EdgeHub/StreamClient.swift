import AsyncSupport
import Logging
import ServiceLifecycle
import StreamTunnel

/// The node's second connection to the cloud (KubeEdge's EdgeStream, here on CloudHub's port at
/// `/<projectID>/<node>/stream`, same certificate): the cloud opens `kubectl logs` (and exec)
/// streams on it, served by `provider`. Redialled with the channel's back-off while the node runs,
/// and only when the cloud advertised it on the message channel (KubeEdge's cloudcore does not
/// serve it there: a second WebSocket would replace the node's session).
public struct EdgeStreamClient: Service {
    let hub: EdgeHub
    let provider: any StreamProvider
    /// Streams the node opens through the cloud (EdgeMesh's relay).
    let dialer: TunnelDialer?
    let logger: Logger

    public init(hub: EdgeHub, provider: any StreamProvider, dialer: TunnelDialer? = nil, logger: Logger) {
        self.hub = hub; self.provider = provider; self.dialer = dialer; self.logger = logger
    }

    public func run() async throws {
        let c = hub.configuration
        var backoff = Backoff(base: c.reconnectBase, max: c.reconnectMax)
        var toldUnsupported = false
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            // Only a cloud that said so on the message channel serves the tunnel on its port
            // (KubeEdge's cloudcore takes a second WebSocket there for a new session of the node).
            // nil: shutting down while waiting.
            guard let known = await cancelWhenGracefulShutdown({ await hub.cloudServesStreamTunnel.wait(until: { $0 != nil }) }),
                  !Task.isCancelled, !Task.isShuttingDownGracefully
            else { return }
            let serves = known ?? false
            if !serves {
                if !toldUnsupported {
                    logger.notice("the cloud serves no stream tunnel on its message port (KubeEdge's cloudcore?): kubectl logs/exec are not available",
                                  metadata: ["cloud": "\(c.cloudHost):\(c.cloudPort)"])
                    toldUnsupported = true
                }
                _ = await cancelWhenGracefulShutdown { await hub.cloudServesStreamTunnel.wait(until: { $0 == true }) }
                continue
            }
            toldUnsupported = false
            let started = ContinuousClock.now
            do {
                try await cancelWhenGracefulShutdown {
                    let ws = try await hub.dial(uri: "/\(c.projectID)/\(c.nodeName)/stream")
                    logger.info("stream tunnel connected", metadata: ["cloud": "\(c.cloudHost):\(c.cloudPort)"])
                    try await ws.executeThenClose { inbound, outbound in
                        try await serveTunnel(inbound: inbound, outbound: outbound, provider: provider, dialer: dialer, logger: logger)
                    }
                }
            } catch is CancellationError {
                return
            } catch {
                logger.debug("stream tunnel ended", metadata: ["error": "\(error)"])
            }
            if Task.isShuttingDownGracefully { return }
            backoff.attemptEnded(after: ContinuousClock.now - started, healthy: .seconds(60))
            let delay = backoff.next()
            do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) } } catch { return }
        }
    }
}
