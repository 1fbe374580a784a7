import AsyncSupport
import KubeAPI
import Logging
import ServiceLifecycle
import Synchronization

/// Many simulated nodes in one process, with optional chaos (every `disconnectEvery` one random
/// node drops its connection and redials) and an offline switch: ``setOnline(_:)`` takes every
/// node off the network (stores kept) and back, as a site losing its uplink would.
public final class Fleet: Service {
    public let nodes: [SimulatedNode]
    let chaos: Mutex<Duration?>
    let logger: Logger
    let online = Mutex(true)
    let switched = WakeSignal()

    public init(nodes: [SimulatedNode], disconnectEvery: Duration?, logger: Logger) {
        self.nodes = nodes; self.chaos = Mutex(disconnectEvery); self.logger = logger
    }

    public var connectedCount: Int { nodes.reduce(0) { $0 + ($1.isConnected ? 1 : 0) } }
    public var appliedCount: Int { nodes.reduce(0) { $0 + $1.store.applied } }
    public var isOnline: Bool { online.withLock { $0 } }

    public func setOnline(_ value: Bool) {
        online.withLock { $0 = value }
        switched.signal()
    }

    /// Changes the random-disconnect period (nil: none).
    public func setChaos(_ every: Duration?) { chaos.withLock { $0 = every } }

    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                if self.isOnline {
                    await self.runOnline()
                } else {
                    await self.switched.wait()
                }
            }
        }
    }

    /// Runs every node until the fleet is switched offline (or cancelled).
    func runOnline() async {
        await withTaskGroup(of: Void.self) { group in
            for n in nodes { group.addTask { try? await n.run() } }
            if !nodes.isEmpty {
                group.addTask {
                    var drops = 0
                    while !Task.isCancelled {
                        let every = self.chaos.withLock { $0 }
                        do { try await Task.sleep(for: every ?? .milliseconds(200)) } catch { return }
                        guard every != nil, self.chaos.withLock({ $0 }) != nil else { continue }
                        await self.nodes.randomElement()!.disconnect(reason: "fleet chaos")
                        drops += 1
                        if drops % 100 == 0 { self.logger.info("chaos disconnects", metadata: ["count": "\(drops)"]) }
                    }
                }
            }
            while isOnline && !Task.isCancelled { await switched.wait() }
            logger.info("fleet offline", metadata: ["nodes": "\(nodes.count)"])
            group.cancelAll()
        }
    }
}
