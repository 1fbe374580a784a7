import Testing
@testable import ControllerRuntime
import KubeAPI
import KubeClient
import Logging

/// The work queue's guarantees, which every controller relies on.
@Suite struct WorkQueueTests {
    @Test func deduplicatesQueuedKeys() async {
        let q = WorkQueue()
        q.add("a"); q.add("b"); q.add("a")
        #expect(q.depth == 2)
        #expect(await q.get() == "a")
        #expect(await q.get() == "b")
    }

    @Test func keyBeingProcessedIsRequeuedOnlyWhenDone() async {
        let q = WorkQueue()
        q.add("a")
        let k = await q.get()
        #expect(k == "a")
        q.add("a")  // changed while a worker holds it
        #expect(q.depth == 0)  // not handed to a second worker
        q.done("a")
        #expect(q.depth == 1)
        #expect(await q.get() == "a")
        q.done("a")
        #expect(q.depth == 0)
    }

    @Test func waitingWorkerIsWokenByAdd() async {
        let q = WorkQueue()
        async let got = q.get()
        q.add("x")
        #expect(await got == "x")
    }

    @Test func shutdownReleasesWaiters() async {
        let q = WorkQueue()
        async let got = q.get()
        q.shutDown()
        #expect(await got == nil)
        q.add("late")
        #expect(q.depth == 0)
    }

    @Test func rateLimitedKeysBackOffAndForgetResets() async throws {
        let q = WorkQueue(baseDelay: .milliseconds(10), maxDelay: .seconds(1))
        q.addRateLimited("k")
        q.addRateLimited("k")
        #expect(q.failureCount("k") == 2)
        #expect(q.depth == 0)  // delayed, not queued
        try await withThrowingTaskGroup(of: Void.self) { g in
            g.addTask { await q.runTimers() }
            #expect(await q.get() == "k")
            g.cancelAll()
        }
        q.forget("k")
        #expect(q.failureCount("k") == 0)
    }

    @Test func cancellationEndsGet() async {
        let q = WorkQueue()
        let t = Task { await q.get() }
        t.cancel()
        #expect(await t.value == nil)
    }
}

/// A shutdown before the first list must not leave a task waiting for a sync that never comes
/// (seen as a cloud that ignored SIGTERM when it arrived just as it became leader).
@Suite struct SharedInformerTests {
    @Test func waitForSyncReturnsWhenCancelled() async throws {
        let client = try HTTPKubeClient(config: KubeConfig(server: "https://127.0.0.1:1", token: "t"), logger: Logger(label: "test"))
        let shared = SharedInformer(informer: Informer(client: client, type: BuiltinResources.all.first { $0.resource == "pods" }!,
                                                       logger: Logger(label: "test")))
        let waiter = Task { await shared.waitForSync(); return Task.isCancelled }
        try await Task.sleep(for: .milliseconds(50))  // let it park (the test asserts it returns, not when)
        waiter.cancel()
        #expect(await waiter.value == true)
        #expect(!shared.hasSynced)
        try await client.shutdown()
    }
}
