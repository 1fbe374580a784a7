import CRI
import ContainerRuntime
import Foundation
import Synchronization

/// An in-memory CRI runtime for Edged's unit tests: sandboxes and containers with states,
/// exits injected by the test, and a count of what was created.
final class FakeRuntime: ContainerRuntime {
    struct State {
        var sandboxes: [String: Runtime_V1_PodSandbox] = [:]
        var containers: [String: (sandbox: String, status: Runtime_V1_ContainerStatus)] = [:]
        var configs: [String: Runtime_V1_ContainerConfig] = [:]
        var next = 0
        var created = 0
        var sandboxesCreated = 0
        var execExit: Int32 = 0
    }
    let state = Mutex(State())

    func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1e9) }

    func version() async throws -> Runtime_V1_VersionResponse {
        var v = Runtime_V1_VersionResponse(); v.runtimeName = "fake"; v.runtimeVersion = "1"; return v
    }
    func status() async throws -> Runtime_V1_RuntimeStatus { Runtime_V1_RuntimeStatus() }

    func runPodSandbox(_ config: Runtime_V1_PodSandboxConfig) async throws -> String {
        state.withLock { s in
            s.next += 1
            s.sandboxesCreated += 1
            var p = Runtime_V1_PodSandbox()
            p.id = "sandbox-\(s.next)"
            p.metadata = config.metadata
            p.state = .sandboxReady
            p.createdAt = now()
            p.labels = config.labels
            s.sandboxes[p.id] = p
            return p.id
        }
    }
    func stopPodSandbox(_ id: String) async throws {
        state.withLock { s in
            s.sandboxes[id]?.state = .sandboxNotready
            for (cid, c) in s.containers where c.sandbox == id && c.status.state == .containerRunning {
                s.containers[cid]!.status.state = .containerExited
                s.containers[cid]!.status.exitCode = 137
                s.containers[cid]!.status.finishedAt = now()
            }
        }
    }
    func removePodSandbox(_ id: String) async throws { state.withLock { _ = $0.sandboxes.removeValue(forKey: id) } }
    func listPodSandboxes(labels: [String: String]) async throws -> [Runtime_V1_PodSandbox] {
        state.withLock { s in s.sandboxes.values.filter { sb in labels.allSatisfy { sb.labels[$0.key] == $0.value } } }
    }
    func podSandboxStatus(_ id: String) async throws -> Runtime_V1_PodSandboxStatus {
        var st = Runtime_V1_PodSandboxStatus(); st.id = id; st.network.ip = "10.0.0.2"; return st
    }
    func createContainer(sandboxID: String, config: Runtime_V1_ContainerConfig, sandboxConfig: Runtime_V1_PodSandboxConfig) async throws -> String {
        state.withLock { s in
            s.next += 1
            s.created += 1
            var c = Runtime_V1_ContainerStatus()
            c.id = "container-\(s.next)"
            c.metadata = config.metadata
            c.state = .containerCreated
            c.createdAt = now()
            c.labels = config.labels
            c.imageRef = "sha256:fake"
            s.containers[c.id] = (sandboxID, c)
            s.configs[c.id] = config
            return c.id
        }
    }
    func startContainer(_ id: String) async throws {
        state.withLock { s in
            s.containers[id]?.status.state = .containerRunning
            s.containers[id]?.status.startedAt = now()
        }
    }
    func stopContainer(_ id: String, timeoutSeconds: Int64) async throws { exit(id, code: 143) }
    func removeContainer(_ id: String) async throws { state.withLock { _ = $0.containers.removeValue(forKey: id) } }
    func listContainers(labels: [String: String]) async throws -> [Runtime_V1_Container] {
        state.withLock { s in
            s.containers.values.filter { c in labels.allSatisfy { c.status.labels[$0.key] == $0.value } }.map { c in
                var x = Runtime_V1_Container()
                x.id = c.status.id; x.podSandboxID = c.sandbox; x.metadata = c.status.metadata; x.state = c.status.state; x.labels = c.status.labels
                return x
            }
        }
    }
    func containerStatus(_ id: String) async throws -> Runtime_V1_ContainerStatus {
        guard let c = state.withLock({ $0.containers[id] }) else { throw RuntimeError(operation: "ContainerStatus", kind: .notFound, message: "not found") }
        return c.status
    }
    func execSync(_ id: String, command: [String], timeoutSeconds: Int64) async throws -> ExecResult {
        ExecResult(exitCode: state.withLock { $0.execExit }, stdout: [], stderr: [])
    }
    func exec(_ id: String, command: [String], stdin: Bool, stdout: Bool, stderr: Bool, tty: Bool) async throws -> String {
        throw RuntimeError(operation: "Exec", kind: .other, message: "not supported by the fake runtime")
    }
    func attach(_ id: String, stdin: Bool, stdout: Bool, stderr: Bool, tty: Bool) async throws -> String {
        throw RuntimeError(operation: "Attach", kind: .other, message: "not supported by the fake runtime")
    }

    func portForward(sandbox: String, port: Int32) async throws -> String { throw RuntimeError(operation: "PortForward", kind: .other, message: "not supported by the fake runtime") }
    func listContainerStats(labels: [String: String]) async throws -> [Runtime_V1_ContainerStats] { [] }
    func imageID(_ image: String) async throws -> String? { "sha256:fake" }
    func pullImage(_ image: String, sandboxConfig: Runtime_V1_PodSandboxConfig) async throws -> String { "sha256:fake" }

    /// Test control: the container's process exits.
    func exit(_ id: String, code: Int32) {
        state.withLock { s in
            guard s.containers[id]?.status.state == .containerRunning else { return }
            s.containers[id]!.status.state = .containerExited
            s.containers[id]!.status.exitCode = code
            s.containers[id]!.status.finishedAt = now()
        }
    }

    var running: [Runtime_V1_ContainerStatus] {
        state.withLock { $0.containers.values.map(\.status).filter { $0.state == .containerRunning } }
    }
}
