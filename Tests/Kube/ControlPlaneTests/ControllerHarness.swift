import KubeAPI
import KubeClient
import Logging
import TestSupport
@testable import ControllerRuntime
@testable import ControlPlane

/// Controllers wired as `ControllerManager` wires them, over an ``InMemoryKubeClient``: one
/// informer factory, the pods-by-owner index registered first, an event recorder, one work queue
/// and loop per controller. ``run(_:)`` starts informers, recorder and loops, waits (bounded) for
/// the caches to sync, runs the test body and cancels everything.
final class ControllerHarness: Sendable {
    let client: InMemoryKubeClient
    let informers: InformerFactory
    let podsByOwner = InformerIndex.byControllerUID()
    let events: EventRecorder
    let logger: Logger

    init(client: InMemoryKubeClient = InMemoryKubeClient()) {
        var l = Logger(label: "controlplane-test")
        l.logLevel = .error
        logger = l
        self.client = client
        informers = InformerFactory(client: client, logger: l)
        events = EventRecorder(client: client, component: "controller-manager", logger: l)
        let index = podsByOwner
        informers.informer(R.pods).addHandler { index.handle($0) }
    }

    func loop(_ workers: Int = 2, _ make: (WorkQueue) -> any Reconciler) -> ControllerLoop {
        let q = WorkQueue()
        return ControllerLoop(reconciler: make(q), queue: q, workers: workers, logger: logger)
    }

    func replicaSetLoop() -> ControllerLoop {
        loop { ReplicaSetController(client: client, informers: informers, podsByOwner: podsByOwner, events: events, queue: $0, logger: logger) }
    }

    func deploymentLoop() -> ControllerLoop {
        loop { DeploymentController(client: client, informers: informers, events: events, queue: $0, logger: logger) }
    }

    /// Runs `loops` (and `background` tasks such as a node monitor) around `body`.
    func run(_ loops: [ControllerLoop], background: [@Sendable () async -> Void] = [], _ body: () async throws -> Void) async throws {
        let informers = self.informers, events = self.events
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await informers.run() }
            group.addTask { await events.run() }
            try await eventually(timeout: .seconds(5), "informer caches synced") { informers.informers.all.allSatisfy(\.hasSynced) }
            for l in loops { group.addTask { await l.run() } }
            for b in background { group.addTask { await b() } }
            try await body()
            group.cancelAll()
        }
    }

    // MARK: Reading the fake

    func pods(ownedBy owner: JSON) -> [JSON] {
        client.objects(TestResources.pods, namespace: owner["metadata"]["namespace"].stringValue).filter { p in
            (p["metadata"]["ownerReferences"].arrayValue ?? []).contains { $0["uid"] == owner["metadata"]["uid"] && $0["controller"] == true }
        }
    }

    func replicaSets(ownedBy owner: JSON) -> [JSON] {
        client.objects(TestResources.replicaSets, namespace: owner["metadata"]["namespace"].stringValue).filter { rs in
            (rs["metadata"]["ownerReferences"].arrayValue ?? []).contains { $0["uid"] == owner["metadata"]["uid"] && $0["controller"] == true }
        }
    }

    func events(reason: String, about name: String) -> [JSON] {
        client.objects(TestResources.events).filter { $0["reason"].stringValue == reason && $0["involvedObject"]["name"].stringValue == name }
    }
}
