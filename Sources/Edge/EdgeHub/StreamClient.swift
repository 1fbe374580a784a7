import AsyncSupport
import Logging
import ServiceLifecycle
import StreamTunnel

/// The node's second connection to the cloud (KubeEdge's EdgeStream, here on CloudHub's port at
/// `/<projectID>/<node>/stream`, same certificate): the cloud opens `kubectl logs` (and exec)
/// streams on it, served by `provider`. Redialled with the channel's back-off while the node runs.
public struct EdgeStreamClient: Service {
    let hub: EdgeHub
    let provider: any StreamProvider
    let logger: Logger

    public init(hub: EdgeHub, provider: any StreamProvider, logger: Logger) {
        self.hub = hub; self.provider = provider; self.logger = logger
    }

    public func run() async throws {
        let c = hub.configuration
        var backoff = Backoff(base: c.reconnectBase, max: c.reconnectMax)
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let started = ContinuousClock.now
            do {
                try await cancelWhenGracefulShutdown {
                    let ws = try await hub.dial(uri: "/\(c.projectID)/\(c.nodeName)/stream")
                    logger.info("stream tunnel connected", metadata: ["cloud": "\(c.cloudHost):\(c.cloudPort)"])
                    try await ws.executeThenClose { inbound, outbound in
                        try await serveTunnel(inbound: inbound, outbound: outbound, provider: provider, logger: logger)
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
