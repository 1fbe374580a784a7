import ControllerRuntime
import KubeAPI
import KubeClient
import Logging

/// Jobs: keeps up to `parallelism` pods running until `completions` pods have succeeded, retries
/// failed pods with exponential back-off up to `backoffLimit`, honours `activeDeadlineSeconds`
/// and `suspend`, and sets the Complete/Failed conditions `kubectl wait` and `describe` read.
final class JobController: Reconciler {
    let name = "job"
    let client: KubeClient
    let jobs: SharedInformer
    let pods: SharedInformer
    let podsByOwner: InformerIndex
    let expectations = Expectations()
    let events: EventRecorder
    let logger: Logger
    let backoffBase: Duration
    static let manager = "job-controller"

    init(client: KubeClient, informers: InformerFactory, podsByOwner: InformerIndex, events: EventRecorder, queue: WorkQueue,
         backoffBase: Duration = .seconds(10), logger: Logger)
    {
        self.client = client; self.podsByOwner = podsByOwner; self.events = events; self.logger = logger; self.backoffBase = backoffBase
        jobs = informers.informer(R.jobs)
        pods = informers.informer(R.pods)
        jobs.enqueueKeys(into: queue)
        let routing = OwnedPodEvents(ownerKind: "Job", expectations: expectations, queue: queue)
        pods.addHandler { ev in routing.handle(ev) }
    }

    static func finished(_ job: JSON) -> Bool {
        (job["status"]["conditions"].arrayValue ?? []).contains {
            ["Complete", "Failed"].contains($0["type"].stringValue ?? "") && $0["status"].stringValue == "True"
        }
    }

    func reconcile(_ key: String) async throws -> ReconcileResult {
        guard let job = jobs.cache.get(key), !job.isDeleting else { expectations.forget(key); return .done }
        let owned = podsByOwner.objects(job.uid, in: pods.cache)
        let active = owned.filter(PodUtil.isActive)
        let succeededNow = Int64(owned.filter { PodUtil.phase($0) == "Succeeded" }.count)
        let failedNow = Int64(owned.filter { PodUtil.phase($0) == "Failed" }.count)
        var status = job["status"]
        // Counts never go down, even if finished pods are removed.
        let succeeded = max(status["succeeded"].intValue ?? 0, succeededNow)
        let failed = max(status["failed"].intValue ?? 0, failedNow)
        let nowTime = KubeTime.now()
        let now = nowTime.rfc3339
        if status["startTime"].isNull && job["spec"]["suspend"].boolValue != true { status["startTime"] = .string(now) }
        var conditions = status["conditions"].arrayValue ?? []
        var requeue: ReconcileResult = .done

        if Self.finished(job) {
            if !active.isEmpty { try await deletePods(active) }
        } else {
            let completions = job["spec"]["completions"].intValue
            let parallelism = job["spec"]["parallelism"].intValue ?? 1
            let backoffLimit = job["spec"]["backoffLimit"].intValue ?? 6
            var failure: (reason: String, message: String)? = nil
            if failed > backoffLimit { failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit") }
            if let deadline = job["spec"]["activeDeadlineSeconds"].intValue, let start = KubeTime.parse(status["startTime"].stringValue ?? ""),
               start.adding(seconds: deadline) <= nowTime
            {
                failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
            } else if let deadline = job["spec"]["activeDeadlineSeconds"].intValue, let start = KubeTime.parse(status["startTime"].stringValue ?? "") {
                requeue = .requeue(after: .seconds(max(1, start.adding(seconds: deadline).seconds - nowTime.seconds)))
            }
            let done = completions.map { succeeded >= $0 } ?? (succeeded > 0 && active.isEmpty)
            if let failure {
                conditions.append(["type": "FailureTarget", "status": "True", "reason": .string(failure.reason), "message": .string(failure.message),
                                   "lastProbeTime": .string(now), "lastTransitionTime": .string(now)])
                conditions.append(["type": "Failed", "status": "True", "reason": .string(failure.reason), "message": .string(failure.message),
                                   "lastProbeTime": .string(now), "lastTransitionTime": .string(now)])
                events.record(job, .warning, reason: failure.reason, message: failure.message)
                try await deletePods(active)
                requeue = .done
            } else if done {
                conditions.append(["type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods",
                                   "lastProbeTime": .string(now), "lastTransitionTime": .string(now)])
                conditions.append(["type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods",
                                   "lastProbeTime": .string(now), "lastTransitionTime": .string(now)])
                status["completionTime"] = .string(now)
                events.record(job, .normal, reason: "Completed", message: "Job completed")
                requeue = .done
            } else if job["spec"]["suspend"].boolValue == true {
                if !active.isEmpty { try await deletePods(active) }
            } else if expectations.satisfied(key) {
                let remaining = completions.map { $0 - succeeded } ?? parallelism
                let want = Int(max(0, min(parallelism, remaining)))
                if active.count < want {
                    // Back off after failures: base × 2^(failures-1), from the last failure.
                    let lastFailure = owned.filter { PodUtil.phase($0) == "Failed" }.compactMap { p -> KubeTime? in
                        let finished = p["status"]["containerStatuses"].arrayValue?.first?["state"]["terminated"]["finishedAt"].stringValue
                        return KubeTime.parse(finished ?? p["status"]["startTime"].stringValue ?? "")
                    }.max()
                    let delaySeconds = failed == 0 ? 0 : min(360, Int64(backoffBase.components.seconds) << min(failed - 1, 10))
                    if let last = lastFailure, last.adding(seconds: delaySeconds) > nowTime {
                        requeue = .requeue(after: .seconds(last.adding(seconds: delaySeconds).seconds - nowTime.seconds + 1))
                    } else {
                        try await createPods(job, key: key, count: want - active.count)
                    }
                } else if active.count > want {
                    let extra = active.sorted { $0.creation > $1.creation }.prefix(active.count - want)
                    expectations.expect(key, deletes: extra.count)
                    try await deletePods(Array(extra))
                }
            }
        }
        status["active"] = .int(Int64(active.count))
        status["ready"] = .int(Int64(active.filter(PodUtil.isReady).count))
        status["succeeded"] = .int(succeeded)
        status["failed"] = .int(failed)
        status["terminating"] = .int(Int64(owned.filter(\.isDeleting).count))
        status["uncountedTerminatedPods"] = .emptyObject
        if !conditions.isEmpty { status["conditions"] = .array(conditions) }
        if status != job["status"] {
            var u = job
            u["status"] = status
            _ = try await client.update(R.jobs, namespace: job.namespace, u, subresource: "status", fieldManager: Self.manager)
        }
        return requeue
    }

    func createPods(_ job: JSON, key: String, count: Int) async throws {
        expectations.expect(key, adds: count)
        let pod = PodUtil.fromTemplate(job["spec"]["template"], owner: job, generateName: job.name + "-")
        for i in 0..<count {
            do {
                let created = try await client.create(R.pods, namespace: job.namespace, pod, fieldManager: Self.manager)
                events.record(job, .normal, reason: "SuccessfulCreate", message: "Created pod: \(created.name)")
            } catch {
                expectations.lowered(key, adds: count - i)
                events.record(job, .warning, reason: "FailedCreate", message: "Error creating: \(error)")
                throw error
            }
        }
    }

    func deletePods(_ pods: [JSON]) async throws {
        for p in pods where !p.isDeleting {
            do { try await client.delete(R.pods, namespace: p.namespace, name: p.name) } catch let e as StatusError where e.code == 404 {}
        }
    }
}
