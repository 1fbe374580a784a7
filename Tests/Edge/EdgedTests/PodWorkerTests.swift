import CRI
import Foundation
import KubeAPI
import Logging
import Testing
@testable import Edged

/// Pod lifecycle decisions against an in-memory runtime: creation, adoption after a restart,
/// restart policies with back-off, config errors, status and teardown.
@Suite struct PodWorkerTests {
    let runtime = FakeRuntime()
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("edged-\(UUID().uuidString)").path

    func worker(objects: [String: JSON] = [:]) -> PodWorker {
        let builder = RuntimeConfigBuilder(nodeName: "n1", nodeIP: "192.0.2.10", podsDirectory: directory + "/pods",
                                           logDirectory: directory + "/logs", lookup: { objects[$0] })
        return PodWorker(uid: "uid-1", runtime: runtime, builder: builder, runtimeName: "fake", metrics: EdgedMetrics(),
                         logger: Logger(label: "test"))
    }

    func pod(restartPolicy: String = "Always", env: JSON = [], hostNetwork: Bool = true) throws -> PodModel {
        try PodModel([
            "metadata": ["name": "p", "namespace": "default", "uid": "uid-1", "resourceVersion": "5"],
            "spec": ["restartPolicy": .string(restartPolicy), "hostNetwork": .bool(hostNetwork),
                     "containers": [["name": "main", "image": "docker.io/local/busybox:1", "command": ["sh", "-c", "echo $(GREETING)"], "env": env]]],
        ])
    }

    @Test func createsThenAdoptsWithoutRecreating() async throws {
        let p = try pod()
        let (status, _) = try await worker().sync(p)
        #expect(runtime.state.withLock { ($0.sandboxesCreated, $0.created) } == (1, 1))
        #expect(status["phase"] == "Running")
        #expect(status["containerStatuses"][0]["ready"] == true)
        #expect(status["containerStatuses"][0]["containerID"].stringValue?.hasPrefix("fake://") == true)
        #expect(status["podIP"] == "192.0.2.10")
        // A new worker (the edge restarted) finds the running containers and creates nothing.
        let (again, _) = try await worker().sync(p)
        #expect(runtime.state.withLock { ($0.sandboxesCreated, $0.created) } == (1, 1))
        #expect(again["containerStatuses"] == status["containerStatuses"])
    }

    @Test func crashesRestartWithBackOff() async throws {
        let p = try pod()
        let w = worker()
        _ = try await w.sync(p)
        runtime.exit(runtime.running[0].id, code: 1)
        // First crash: restarted at once.
        let (first, _) = try await w.sync(p)
        #expect(first["containerStatuses"][0]["restartCount"] == 1)
        #expect(first["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 1)
        runtime.exit(runtime.running[0].id, code: 2)
        // Second crash: back-off (10 s) before the next start.
        let (second, wake) = try await w.sync(p)
        #expect(runtime.running.isEmpty)
        #expect(second["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff")
        #expect(second["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 2)
        #expect(second["containerStatuses"][0]["ready"] == false)
        #expect(second["phase"] == "Running")
        #expect(wake.timeIntervalSinceNow > 5 && wake.timeIntervalSinceNow <= 10.5)
    }

    @Test func restartPolicyNeverEndsThePod() async throws {
        let p = try pod(restartPolicy: "Never")
        let w = worker()
        _ = try await w.sync(p)
        runtime.exit(runtime.running[0].id, code: 0)
        let (status, _) = try await w.sync(p)
        #expect(status["phase"] == "Succeeded")
        #expect(status["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed")
        #expect(runtime.state.withLock { $0.created } == 1)
        // Terminal: the sandbox is stopped and nothing restarts.
        _ = try await w.sync(p)
        #expect(runtime.state.withLock { ($0.created, $0.sandboxes.values.first?.state) } == (1, .sandboxNotready))
    }

    @Test func missingConfigMapIsAConfigErrorUntilItArrives() async throws {
        let env: JSON = [["name": "GREETING", "valueFrom": ["configMapKeyRef": ["name": "cm", "key": "greeting"]]]]
        let p = try pod(env: env)
        let (status, wake) = try await worker().sync(p)
        #expect(status["phase"] == "Pending")
        #expect(status["containerStatuses"][0]["state"]["waiting"]["reason"] == "CreateContainerConfigError")
        #expect(wake.timeIntervalSinceNow < 3)
        #expect(runtime.state.withLock { $0.created } == 0)
        let w = worker(objects: ["default/configmap/cm": ["data": ["greeting": "hi"]]])
        let (ok, _) = try await w.sync(p)
        #expect(ok["phase"] == "Running")
        let config = try #require(runtime.state.withLock { $0.configs.values.first })
        #expect(config.envs.map { $0.key + "=" + String(decoding: $0.value, as: UTF8.self) } == ["GREETING=hi"])
        #expect(config.command == ["sh", "-c", "echo hi"])
        #expect(config.labels["io.kubernetes.pod.uid"] == "uid-1" && config.logPath == "main/0.log")
    }

    @Test func failingLivenessProbeKillsTheContainer() async throws {
        var p = try pod()
        p.containers[0].liveness = try #require(try ProbeSpec(["exec": ["command": ["true"]], "periodSeconds": 1, "failureThreshold": 1], container: "main"))
        let w = worker()
        _ = try await w.sync(p)
        runtime.state.withLock { $0.execExit = 1 }
        _ = try await w.sync(p)  // probe fails: killed
        #expect(runtime.running.isEmpty)
        let (status, _) = try await w.sync(p)  // restarted
        #expect(status["containerStatuses"][0]["restartCount"] == 1)
        #expect(runtime.running.count == 1)
    }

    @Test func teardownRemovesEverything() async throws {
        let w = worker()
        _ = try await w.sync(try pod())
        try await w.teardown(grace: 1)
        #expect(runtime.state.withLock { ($0.sandboxes.count, $0.containers.count) } == (0, 0))
    }

    @Test func variableExpansion() {
        let b = RuntimeConfigBuilder(nodeName: "n", nodeIP: "ip", podsDirectory: "/x", logDirectory: "/y", lookup: { _ in nil })
        #expect(b.expand("a $(X) $(UNSET) $$(X) $", ["X": "1"]) == "a 1 $(UNSET) $(X) $")
    }
}

extension JSON {
    fileprivate subscript(index: Int) -> JSON {
        guard let a = arrayValue, a.indices.contains(index) else { return .null }
        return a[index]
    }
}
