import CRI
import ContainerRuntime
import Foundation
import KubeAPI
import Logging
import Metrics
import Mounts

/// An event about a pod, as kubelet records them.
struct PodEvent: Sendable {
    enum Kind: String, Sendable { case normal = "Normal", warning = "Warning" }
    var namespace: String
    var name: String
    var uid: String
    var container: String?
    var type: Kind
    var reason: String
    var message: String
    init(pod: PodModel, container: String?, type: Kind, reason: String, message: String) {
        namespace = pod.namespace; name = pod.name; uid = pod.uid; self.container = container
        self.type = type; self.reason = reason; self.message = message
    }
}

typealias PodEventSink = @Sendable (PodEvent) -> Void

/// Drives one pod towards its spec through the runtime, kubelet-style: each sync observes the
/// pod's sandboxes and containers in the runtime (so containers that outlived an edge restart
/// are adopted, never recreated), makes one round of changes, runs due probes and computes the
/// pod status. Owned by one task; not shared.
final class PodWorker {
    let uid: String
    let runtime: any ContainerRuntime
    let builder: RuntimeConfigBuilder
    let probes: ProbeRunner
    let runtimeName: String
    let logger: Logger
    let metrics: EdgedMetrics
    /// Reports a pod event (kubelet's Started, Killing, Unhealthy, BackOff, Failed, …).
    var events: PodEventSink = { _ in }

    /// Restart back-off per container name (kubelet: 10 s doubling to 5 min; the first restart is immediate).
    var backoff: [String: Duration] = [:]
    /// Why a container is not running (ContainerCreating, CrashLoopBackOff, CreateContainerConfigError, …).
    var waiting: [String: (reason: String, message: String)] = [:]
    /// Probe state per container id and probe kind.
    var probeStates: [String: ProbeState] = [:]
    /// The last status computed (conditions keep their transition times across syncs).
    var lastStatus: JSON = .null
    var firstSeen = KubeTime.now()
    /// The sandbox of each container seen (container statuses do not carry it).
    var sandboxOf: [String: String] = [:]
    /// The pod's wait for the node's pod network was reported (one event, not one per sync).
    var reportedNetworkWait = false

    struct ProbeState {
        var successes: Int64 = 0
        var failures: Int64 = 0
        var result: Bool?
        var nextRun: Date
    }

    init(uid: String, runtime: any ContainerRuntime, builder: RuntimeConfigBuilder, runtimeName: String, metrics: EdgedMetrics, logger: Logger) {
        self.uid = uid; self.runtime = runtime; self.builder = builder; self.runtimeName = runtimeName; self.metrics = metrics
        self.probes = ProbeRunner(runtime: runtime)
        var l = logger
        l[metadataKey: "podUID"] = "\(uid)"
        self.logger = l
    }

    var selector: [String: String] { [RuntimeLabels.podUID: uid, RuntimeLabels.node: builder.nodeName] }

    /// One round for a pod that should run. Returns its status and when to look again.
    func sync(_ pod: PodModel) async throws -> (status: JSON, wake: Date) {
        var wake = Date().addingTimeInterval(10)
        var sandboxes = try await runtime.listPodSandboxes(labels: selector)
        var containers = try await statuses()
        var current = sandboxes.filter { $0.state == .sandboxReady }.max { $0.createdAt < $1.createdAt }

        let phase = lastStatus["phase"].stringValue
        let terminal = phase == "Succeeded" || phase == "Failed"
        if terminal {
            if let s = current { try await runtime.stopPodSandbox(s.id) }
            return (lastStatus, wake)
        }

        if current == nil {
            for c in containers where c.state == .containerRunning {
                try await runtime.stopContainer(c.id, timeoutSeconds: pod.terminationGracePeriodSeconds)
            }
            let attempt = sandboxes.map(\.metadata.attempt).max().map { $0 + 1 } ?? 0
            let config = builder.sandboxConfig(pod, attempt: attempt)
            for c in pod.containers where waiting[c.name] == nil { waiting[c.name] = ("ContainerCreating", "") }
            if let why = builder.networkNotReady(pod) {
                // Woken when the network is configured; looked at again in a while regardless.
                for c in pod.containers { waiting[c.name] = ("ContainerCreating", why) }
                if !reportedNetworkWait { events(PodEvent(pod: pod, container: nil, type: .warning, reason: "NetworkNotReady", message: why)) }
                reportedNetworkWait = true
                lastStatus = podStatus(pod, sandbox: nil, containers: [], podIP: "")
                return (lastStatus, Date().addingTimeInterval(30))
            }
            let id = try await runtime.runPodSandbox(config)
            logger.info("pod sandbox started", metadata: ["pod": "\(pod.namespace)/\(pod.name)", "sandbox": "\(id.prefix(12))", "attempt": "\(attempt)"])
            metrics.sandboxStarts.increment()
            sandboxes = try await runtime.listPodSandboxes(labels: selector)
            current = sandboxes.first { $0.id == id }
            containers = try await statuses()
        }
        guard let sandbox = current else { throw RuntimeError(operation: "RunPodSandbox", kind: .other, message: "sandbox vanished") }
        // Older sandboxes: stopped, and removed with their containers once the new one runs.
        for s in sandboxes where s.id != sandbox.id {
            if s.state == .sandboxReady { try await runtime.stopPodSandbox(s.id) }
            for c in containers where sandboxOf[c.id] == s.id { try? await runtime.removeContainer(c.id) }
            try? await runtime.removePodSandbox(s.id)
        }
        containers.removeAll { sandboxOf[$0.id] != sandbox.id }

        let sandboxConfig = builder.sandboxConfig(pod, attempt: sandbox.metadata.attempt)
        let podIP = try await podIP(pod, sandbox)
        var changed = false
        for spec in pod.containers {
            let mine = containers.filter { $0.metadata.name == spec.name }.sorted { $0.metadata.attempt > $1.metadata.attempt }
            let nextAttempt = mine.first.map { $0.metadata.attempt + 1 } ?? 0
            guard let latest = mine.first else {
                changed = true
                if let retry = await createAndStart(pod, spec, attempt: nextAttempt, sandbox: sandbox, sandboxConfig: sandboxConfig, podIP: podIP) {
                    wake = min(wake, retry)
                }
                continue
            }
            // Keep the latest container and the one before it (`kubectl logs --previous`).
            for old in mine.dropFirst(2) { try? await runtime.removeContainer(old.id) }
            switch latest.state {
            case .containerRunning:
                waiting[spec.name] = nil
                if let next = await probe(pod, spec, latest, podIP: podIP) { wake = min(wake, next) } else { changed = true }
            case .containerCreated:
                changed = true
                do { try await runtime.startContainer(latest.id) } catch {
                    waiting[spec.name] = ("RunContainerError", "\(error)")
                }
            case .containerExited, .containerUnknown, .UNRECOGNIZED:
                guard restartNeeded(pod.restartPolicy, exitCode: latest.exitCode) else { waiting[spec.name] = nil; continue }
                let finished = Date(timeIntervalSince1970: Double(latest.finishedAt) / 1e9)
                let ran = Double(latest.finishedAt - latest.startedAt) / 1e9
                if ran > 600 { backoff[spec.name] = nil }
                if let delay = backoff[spec.name] {
                    let until = finished.addingTimeInterval(Double(delay.components.seconds))
                    if until > Date() {
                        if waiting[spec.name]?.reason != "CrashLoopBackOff" {
                            events(PodEvent(pod: pod, container: spec.name, type: .warning, reason: "BackOff", message: "Back-off restarting failed container \(spec.name) in pod \(pod.name)_\(pod.namespace)(\(pod.uid))"))
                        }
                        waiting[spec.name] = ("CrashLoopBackOff", "back-off \(delay.components.seconds)s restarting failed container=\(spec.name) pod=\(pod.name)_\(pod.namespace)(\(pod.uid))")
                        wake = min(wake, until)
                        continue
                    }
                    backoff[spec.name] = min(delay * 2, .seconds(300))
                } else {
                    backoff[spec.name] = .seconds(10)
                }
                changed = true
                metrics.restarts.increment()
                logger.info("restarting container", metadata: ["pod": "\(pod.namespace)/\(pod.name)", "container": "\(spec.name)",
                                                               "exitCode": "\(latest.exitCode)", "restartCount": "\(nextAttempt)"])
                if let retry = await createAndStart(pod, spec, attempt: nextAttempt, sandbox: sandbox, sandboxConfig: sandboxConfig, podIP: podIP) {
                    wake = min(wake, retry)
                }
            }
        }
        if changed { containers = try await statuses().filter { sandboxOf[$0.id] == sandbox.id } }
        if containers.contains(where: { $0.state == .containerRunning }) {
            // ConfigMap, Secret and downward API files follow their objects; ServiceAccount
            // tokens are renewed before they expire.
            do { try await builder.refreshFileVolumes(pod) } catch {
                logger.warning("cannot refresh the pod's volume files", metadata: ["error": "\(error)"])
            }
        }
        let status = podStatus(pod, sandbox: sandbox, containers: containers, podIP: podIP)
        lastStatus = status
        for p in probeStates.values { wake = min(wake, p.nextRun) }
        return (status, changed ? Date() : wake)
    }

    func restartNeeded(_ policy: PodModel.RestartPolicy, exitCode: Int32) -> Bool {
        switch policy {
        case .always: true
        case .onFailure: exitCode != 0
        case .never: false
        }
    }

    func statuses() async throws -> [Runtime_V1_ContainerStatus] {
        var out: [Runtime_V1_ContainerStatus] = []
        let listed = try await runtime.listContainers(labels: selector)
        sandboxOf = Dictionary(listed.map { ($0.id, $0.podSandboxID) }, uniquingKeysWith: { a, _ in a })
        for c in listed {
            do { out.append(try await runtime.containerStatus(c.id)) } catch let e as RuntimeError where e.kind == .notFound {}
        }
        return out
    }

    func podIP(_ pod: PodModel, _ sandbox: Runtime_V1_PodSandbox) async throws -> String {
        if pod.hostNetwork { return builder.nodeIP }
        let s = try await runtime.podSandboxStatus(sandbox.id)
        return s.network.ip.isEmpty ? builder.nodeIP : s.network.ip
    }

    /// Creates and starts one container; returns when to retry if it could not.
    func createAndStart(_ pod: PodModel, _ spec: ContainerSpec, attempt: UInt32, sandbox: Runtime_V1_PodSandbox,
                        sandboxConfig: Runtime_V1_PodSandboxConfig, podIP: String) async -> Date?
    {
        do {
            try await ensureImage(spec, sandboxConfig)
        } catch {
            if waiting[spec.name]?.reason.hasPrefix("ErrImage") != true {
                events(PodEvent(pod: pod, container: spec.name, type: .warning, reason: "Failed", message: "Failed to pull image \"\(spec.image)\": \(error)"))
            }
            waiting[spec.name] = (error is ConfigError ? "ErrImageNeverPull" : "ErrImagePull", "\(error)")
            return Date().addingTimeInterval(5)
        }
        let config: Runtime_V1_ContainerConfig
        do {
            config = try await builder.containerConfig(pod, spec, attempt: attempt, podIP: podIP)
        } catch let e as VolumeMountError {
            if waiting[spec.name]?.message != e.message {
                events(PodEvent(pod: pod, container: nil, type: .warning, reason: "FailedMount", message: e.message))
                logger.warning("volume not ready", metadata: ["pod": "\(pod.namespace)/\(pod.name)", "container": "\(spec.name)", "error": "\(e.message)"])
            }
            waiting[spec.name] = ("ContainerCreating", e.message)
            return Date().addingTimeInterval(2)
        } catch {
            if waiting[spec.name]?.reason != "CreateContainerConfigError" {
                events(PodEvent(pod: pod, container: spec.name, type: .warning, reason: "Failed", message: "Error: \(error)"))
                logger.warning("container config", metadata: ["pod": "\(pod.namespace)/\(pod.name)", "container": "\(spec.name)", "error": "\(error)"])
            }
            waiting[spec.name] = ("CreateContainerConfigError", "\(error)")
            return Date().addingTimeInterval(2)
        }
        let id: String
        do {
            id = try await runtime.createContainer(sandboxID: sandbox.id, config: config, sandboxConfig: sandboxConfig)
        } catch {
            logger.warning("create container failed", metadata: ["pod": "\(pod.namespace)/\(pod.name)", "container": "\(spec.name)", "error": "\(error)"])
            waiting[spec.name] = ("CreateContainerError", "\(error)")
            return Date().addingTimeInterval(2)
        }
        var started = false
        do {
            try await runtime.startContainer(id)
            started = true
        } catch let e as RuntimeError where e.kind == .unavailable || e.message.firstRange(of: "already in starting state") != nil {
            // The connection dropped under the call (the runtime restarted, say) or a start is
            // already under way: the runtime may well be starting it. Wait for
            // its state instead of starting it again.
            started = await startedAnyway(id)
            if !started { logger.warning("start container failed", metadata: ["pod": "\(pod.namespace)/\(pod.name)", "container": "\(spec.name)", "error": "\(e)"]) }
        } catch {
            // The runtime leaves it exited (e.g. the command does not exist): restarted with back-off.
            logger.warning("start container failed", metadata: ["pod": "\(pod.namespace)/\(pod.name)", "container": "\(spec.name)", "error": "\(error)"])
        }
        if started {
            waiting[spec.name] = nil
            metrics.containerStarts.increment()
            events(PodEvent(pod: pod, container: spec.name, type: .normal, reason: "Started", message: "Started container \(spec.name)"))
            logger.debug("container started", metadata: ["pod": "\(pod.namespace)/\(pod.name)", "container": "\(spec.name)", "id": "\(id.prefix(12))"])
        }
        return nil
    }

    /// Whether a container whose start call failed in transit left the `created` state (polled
    /// for up to 5 s): running or exited means the runtime did start it.
    func startedAnyway(_ id: String) async -> Bool {
        for _ in 0..<50 {
            if let s = try? await runtime.containerStatus(id), s.state != .containerCreated { return true }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    func ensureImage(_ spec: ContainerSpec, _ sandboxConfig: Runtime_V1_PodSandboxConfig) async throws {
        let present = try await runtime.imageID(spec.image) != nil
        switch spec.imagePullPolicy {
        case "Never":
            if !present { throw ConfigError(message: "container image \"\(spec.image)\" is not present with pull policy of Never") }
        case "IfNotPresent":
            if !present { _ = try await runtime.pullImage(spec.image, sandboxConfig: sandboxConfig) }
        default:
            do { _ = try await runtime.pullImage(spec.image, sandboxConfig: sandboxConfig) } catch where present {
                // Offline edge nodes keep running what they have.
                logger.info("image pull failed; using the local copy", metadata: ["image": "\(spec.image)", "error": "\(error)"])
            }
        }
    }

    // MARK: probes

    func probeKey(_ id: String, _ kind: String) -> String { "\(id)/\(kind)" }

    /// Runs the due probes of a running container. Returns the next time one is due, or nil if
    /// the container was killed (failed liveness or startup probe).
    func probe(_ pod: PodModel, _ spec: ContainerSpec, _ c: Runtime_V1_ContainerStatus, podIP: String) async -> Date? {
        let started = Date(timeIntervalSince1970: Double(c.startedAt) / 1e9)
        var next = Date.distantFuture
        let now = Date()
        func due(_ kind: String, _ p: ProbeSpec) -> Bool {
            let key = probeKey(c.id, kind)
            if probeStates[key] == nil { probeStates[key] = ProbeState(nextRun: started.addingTimeInterval(Double(p.initialDelaySeconds))) }
            return probeStates[key]!.nextRun <= now
        }
        func record(_ kind: String, _ p: ProbeSpec, _ outcome: ProbeOutcome) -> Bool? {
            let key = probeKey(c.id, kind)
            var s = probeStates[key]!
            s.nextRun = Date().addingTimeInterval(Double(p.periodSeconds))
            switch outcome {
            case .success:
                s.successes += 1; s.failures = 0
                if s.successes >= p.successThreshold || kind != "readiness" { s.result = true }
            case .failure(let why):
                s.failures += 1; s.successes = 0
                metrics.probeFailures(kind).increment()
                events(PodEvent(pod: pod, container: spec.name, type: .warning, reason: "Unhealthy", message: "\(kind.prefix(1).uppercased() + kind.dropFirst()) probe failed: \(why)"))
                logger.info("probe failed", metadata: ["pod": "\(pod.namespace)/\(pod.name)", "container": "\(spec.name)", "probe": "\(kind)",
                                                       "failures": "\(s.failures)", "reason": "\(why)"])
                if s.failures >= p.failureThreshold { s.result = false }
            }
            probeStates[key] = s
            return s.result
        }
        if let p = spec.startup, probeStates[probeKey(c.id, "startup")]?.result != true {
            if due("startup", p), record("startup", p, await probes.run(p, containerID: c.id, host: podIP, ports: spec.ports)) == false {
                await kill(pod, spec, c, reason: "startup probe failed")
                return nil
            }
            next = min(next, probeStates[probeKey(c.id, "startup")]!.nextRun)
            if probeStates[probeKey(c.id, "startup")]?.result != true { return next }
        }
        if let p = spec.liveness {
            if due("liveness", p), record("liveness", p, await probes.run(p, containerID: c.id, host: podIP, ports: spec.ports)) == false {
                await kill(pod, spec, c, reason: "liveness probe failed")
                return nil
            }
            next = min(next, probeStates[probeKey(c.id, "liveness")]!.nextRun)
        }
        if let p = spec.readiness {
            if due("readiness", p) { _ = record("readiness", p, await probes.run(p, containerID: c.id, host: podIP, ports: spec.ports)) }
            next = min(next, probeStates[probeKey(c.id, "readiness")]!.nextRun)
        }
        return next
    }

    func kill(_ pod: PodModel, _ spec: ContainerSpec, _ c: Runtime_V1_ContainerStatus, reason: String) async {
        logger.info("killing container", metadata: ["pod": "\(pod.namespace)/\(pod.name)", "container": "\(spec.name)", "reason": "\(reason)"])
        events(PodEvent(pod: pod, container: spec.name, type: .normal, reason: "Killing", message: "Container \(spec.name) failed \(reason.replacingOccurrences(of: " failed", with: "")), will be restarted"))
        do { try await runtime.stopContainer(c.id, timeoutSeconds: pod.terminationGracePeriodSeconds) } catch {
            logger.warning("stop container failed", metadata: ["container": "\(spec.name)", "error": "\(error)"])
        }
        for kind in ["startup", "liveness", "readiness"] { probeStates[probeKey(c.id, kind)] = nil }
    }

    func ready(_ spec: ContainerSpec, _ c: Runtime_V1_ContainerStatus) -> (started: Bool, ready: Bool) {
        guard c.state == .containerRunning else { return (false, false) }
        let started = spec.startup == nil || probeStates[probeKey(c.id, "startup")]?.result == true
        let ready = started && (spec.readiness == nil || probeStates[probeKey(c.id, "readiness")]?.result == true)
        return (started, ready)
    }

    // MARK: teardown

    /// Stops and removes everything the runtime has for the pod (gracefully: each container gets
    /// the pod's termination grace period), then the pod's volume directory.
    func teardown(grace: Int64) async throws {
        let containers = try await runtime.listContainers(labels: selector)
        let runtime = self.runtime
        try await withThrowingTaskGroup(of: Void.self) { group in
            for c in containers where c.state == .containerRunning || c.state == .containerCreated {
                group.addTask { try await runtime.stopContainer(c.id, timeoutSeconds: grace) }
            }
            try await group.waitForAll()
        }
        let sandboxes = try await runtime.listPodSandboxes(labels: selector)
        for s in sandboxes { try await runtime.stopPodSandbox(s.id) }
        for c in containers { do { try await runtime.removeContainer(c.id) } catch let e as RuntimeError where e.kind == .notFound {} }
        for s in sandboxes { do { try await runtime.removePodSandbox(s.id) } catch let e as RuntimeError where e.kind == .notFound {} }
        // CSI volumes are unpublished first; the pod's directory is removed only with no mount
        // left under it (removing through a bind mount would delete the volume's data).
        try await builder.csiVolumes?.unpublishAll(podUID: uid)
        let podDirectory = "\(builder.podsDirectory)/\(uid)"
        let mounted = Mounts.mounts(under: podDirectory)
        guard mounted.isEmpty else { throw ConfigError(message: "pod directory still has mounts: \(mounted.joined(separator: ", "))") }
        try? FileManager.default.removeItem(atPath: podDirectory)
        try await builder.tokens?.store.remove(podUID: uid)
        if !sandboxes.isEmpty { logger.info("pod removed from the runtime", metadata: ["sandboxes": "\(sandboxes.count)", "containers": "\(containers.count)"]) }
    }
}
