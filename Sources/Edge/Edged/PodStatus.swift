import CRI
import Foundation
import KubeAPI

extension PodWorker {
    /// The pod's status as kubelet reports it: phase, conditions, IPs, and one status per
    /// container (state, last state, restart count, ready/started, image and container ids).
    func podStatus(_ pod: PodModel, sandbox: Runtime_V1_PodSandbox?, containers: [Runtime_V1_ContainerStatus], podIP: String) -> JSON {
        let now = KubeTime.now()
        var statuses: [JSON] = []
        var allReady = true
        var pending = false
        var allExited = true
        var anyFailed = false
        for spec in pod.containers {
            let mine = containers.filter { $0.metadata.name == spec.name }.sorted { $0.metadata.attempt > $1.metadata.attempt }
            let latest = mine.first
            var s: JSON = ["name": .string(spec.name), "image": .string(spec.image), "imageID": "", "restartCount": 0,
                           "ready": false, "started": false]
            if let latest {
                s["containerID"] = .string("\(runtimeName)://\(latest.id)")
                s["imageID"] = .string(latest.imageRef)
                s["restartCount"] = .int(Int64(latest.metadata.attempt))
                let (started, ready) = self.ready(spec, latest)
                s["started"] = .bool(started)
                s["ready"] = .bool(ready)
                if !ready { allReady = false }
                if latest.state != .containerExited { allExited = false } else if latest.exitCode != 0 { anyFailed = true }
            } else {
                allReady = false; allExited = false; pending = true
            }
            if let w = waiting[spec.name] {
                s["state"] = ["waiting": ["reason": .string(w.reason), "message": w.message.isEmpty ? .null : .string(w.message)]]
                if latest == nil || (latest!.metadata.attempt == 0 && latest!.state != .containerExited) { pending = true }
                if w.reason == "CrashLoopBackOff", let latest { s["lastState"] = terminated(latest) }
                else if let previous = mine.dropFirst().first { s["lastState"] = terminated(previous) }
            } else if let latest {
                switch latest.state {
                case .containerRunning:
                    s["state"] = ["running": ["startedAt": .string(time(latest.startedAt))]]
                case .containerExited:
                    s["state"] = terminated(latest)
                default:
                    s["state"] = ["waiting": ["reason": "ContainerCreating"]]
                    if latest.metadata.attempt == 0 { pending = true }
                }
                if let previous = mine.dropFirst().first { s["lastState"] = terminated(previous) }
            } else {
                s["state"] = ["waiting": ["reason": "ContainerCreating"]]
            }
            if s["lastState"].isNull { s["lastState"] = [:] }
            statuses.append(s)
        }
        let phase: String
        if pending || sandbox == nil {
            phase = "Pending"
        } else if allExited {
            switch pod.restartPolicy {
            case .always: phase = "Running"
            case .onFailure: phase = anyFailed ? "Running" : "Succeeded"
            case .never: phase = anyFailed ? "Failed" : "Succeeded"
            }
        } else {
            phase = "Running"
        }
        let sandboxReady = sandbox?.state == .sandboxReady
        let ready = allReady && phase == "Running"
        func condition(_ type: String, _ value: Bool, reason: String? = nil) -> JSON {
            let v = value ? "True" : "False"
            let previous = (lastStatus["conditions"].arrayValue ?? pod.object["status"]["conditions"].arrayValue ?? [])
                .first { $0["type"].stringValue == type }
            let since = previous.flatMap { $0["status"].stringValue == v ? $0["lastTransitionTime"] : nil } ?? .string(now.rfc3339)
            var c: JSON = ["type": .string(type), "status": .string(v), "lastProbeTime": .null, "lastTransitionTime": since]
            if let reason, !value { c["reason"] = .string(reason) }
            return c
        }
        var status: JSON = [
            "phase": .string(phase),
            "conditions": [
                condition("PodReadyToStartContainers", sandboxReady),
                condition("Initialized", true),
                condition("Ready", ready, reason: "ContainersNotReady"),
                condition("ContainersReady", allReady, reason: "ContainersNotReady"),
                condition("PodScheduled", true),
            ],
            "hostIP": .string(builder.nodeIP), "hostIPs": [["ip": .string(builder.nodeIP)]],
            "containerStatuses": .array(statuses),
            "startTime": pod.object["status"]["startTime"].isNull ? .string(firstSeen.rfc3339) : pod.object["status"]["startTime"],
            "qosClass": pod.object["status"]["qosClass"].isNull ? .string(qosClass(pod)) : pod.object["status"]["qosClass"],
        ]
        if sandbox != nil { status["podIP"] = .string(podIP); status["podIPs"] = [["ip": .string(podIP)]] }
        return status
    }

    func terminated(_ c: Runtime_V1_ContainerStatus) -> JSON {
        var t: JSON = ["exitCode": .int(Int64(c.exitCode)), "reason": .string(c.reason.isEmpty ? (c.exitCode == 0 ? "Completed" : "Error") : c.reason),
                       "startedAt": .string(time(c.startedAt)), "finishedAt": .string(time(c.finishedAt)),
                       "containerID": .string("\(runtimeName)://\(c.id)")]
        if !c.message.isEmpty { t["message"] = .string(c.message) }
        return ["terminated": t]
    }

    func time(_ nanos: Int64) -> String { KubeTime(micros: nanos / 1000).rfc3339 }

    func qosClass(_ pod: PodModel) -> String {
        var any = false, guaranteed = true
        for c in pod.containers {
            let l = c.resources.limits ?? [:], r = c.resources.requests ?? [:]
            if !l.isEmpty || !r.isEmpty { any = true }
            for k in ["cpu", "memory"] {
                if l[k] == nil || (r[k] != nil && r[k] != l[k]) { guaranteed = false }
            }
        }
        return !any ? "BestEffort" : (guaranteed ? "Guaranteed" : "Burstable")
    }
}
