import StreamTunnel
import KubeAPI
import ObjectStore

extension APIHandler {
    static let successStatus: JSON = ["kind": "Status", "apiVersion": "v1", "metadata": .emptyObject, "status": "Success", "code": 201]

    func subresourceRequest(_ req: APIRequest, _ t: RequestTarget, _ sub: Subresource) async throws -> APIResponse {
        switch (sub, req.method) {
        case (.status, "GET"):
            return try await get(req, t)
        case (.status, "PUT"):
            return try await update(req, t, subresource: .status)
        case (.status, "PATCH"):
            return try await patch(req, t, subresource: .status)
        case (.approval, "PUT"):
            return try await update(req, t, subresource: .approval)
        case (.scale, "GET"):
            guard let o = await store.get(key(t)) else { throw notFound(t) }
            return .json(200, try scaleObject(try o.decode(), t.type))
        case (.scale, "PUT"), (.scale, "PATCH"):
            return try await updateScale(req, t)
        case (.binding, "POST"):
            return try await bind(req, t)
        case (.eviction, "POST"):
            return try await evict(req, t)
        case (.token, "POST"):
            return try await tokenRequest(req, t)
        case (.finalize, "PUT"):
            return try await finalizeNamespace(req, t)
        case (.log, "GET") where options.podStreams != nil:
            return try await podLog(req, t, options.podStreams!)
        case (.exec, _) where options.podStreams != nil:
            return try await streamWithoutUpgrade(req, t, .exec)
        case (.attach, _) where options.podStreams != nil:
            return try await streamWithoutUpgrade(req, t, .attach)
        case (.proxy, _) where options.podStreams != nil:
            return try await proxy(req, t, options.podStreams!)
        case (.log, "GET"), (.exec, _), (.attach, _), (.portforward, _), (.proxy, _):
            guard let o = await store.get(key(t)) else { throw notFound(t) }
            let pod = try o.decode()
            guard let node = pod["spec"]["nodeName"].stringValue, !node.isEmpty else {
                throw StatusError.badRequest("pod \(t.name ?? "") does not have a host assigned")
            }
            throw StatusError(.serviceUnavailable, "no stream connection to node \"\(node)\" is available for \(sub.rawValue)")
        default:
            throw StatusError(.methodNotAllowed, "the server does not allow this method on the requested resource")
        }
    }

    func scaleObject(_ o: JSON, _ type: ResourceType) throws -> JSON {
        guard let paths = type.scale else { throw StatusError(.notFound, "the server could not find the requested resource") }
        var selector = ""
        if let lp = paths.labelSelector {
            if type.isCustom { selector = o[path: lp].stringValue ?? "" }
            else { selector = (try? LabelSelector.from(object: o["spec"]["selector"]))?.description ?? "" }
        }
        let md = o["metadata"]
        var meta: JSON = ["name": md["name"], "uid": md["uid"], "resourceVersion": md["resourceVersion"], "creationTimestamp": md["creationTimestamp"]]
        if type.namespaced { meta["namespace"] = md["namespace"] }
        return ["kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": meta,
                "spec": ["replicas": .int(o[path: paths.specReplicas].intValue ?? 0)],
                "status": ["replicas": .int(o[path: paths.statusReplicas].intValue ?? 0), "selector": .string(selector)]]
    }

    func updateScale(_ req: APIRequest, _ t: RequestTarget) async throws -> APIResponse {
        let type = t.type
        guard let paths = type.scale else { throw StatusError(.notFound, "the server could not find the requested resource") }
        let body = try BodyDecoding.decode(req.body, contentType: req.method == "PATCH" ? "application/json" : req.header("content-type"))
        let patchType = req.method == "PATCH" ? PatchType(contentType: req.header("content-type") ?? "") : nil
        if req.method == "PATCH" && patchType == nil {
            throw StatusError(.unsupportedMediaType, "the body of the request was in an unknown format")
        }
        let name = t.name ?? ""
        let result = try await store.write(key(t)) { [self] cur in
            guard let cur else { throw StatusError.notFound(type.resource, group: type.group, name: name) }
            let current = try cur.decode()
            let scale = try scaleObject(current, type)
            var newScale: JSON
            if let pt = patchType {
                newScale = pt == .json ? try Patch.jsonPatch(scale, body) : Patch.mergePatch(scale, body)
            } else {
                newScale = body
                if let rv = body["metadata"]["resourceVersion"].stringValue, !rv.isEmpty, rv != current["metadata"]["resourceVersion"].stringValue {
                    throw StatusError.conflict(type.resource, group: type.group, name: name)
                }
            }
            guard let replicas = newScale["spec"]["replicas"].intValue, replicas >= 0 else {
                throw StatusError.invalid(kind: "Scale", group: "autoscaling", name: name, causes: [
                    .init(reason: "FieldValueInvalid", message: "Invalid value: must be greater than or equal to 0", field: "spec.replicas")])
            }
            var updated = current
            updated[path: paths.specReplicas] = .int(replicas)
            if updated == current { return .unchanged }
            if type.tracksGeneration || type.isCustom {
                updated["metadata"]["generation"] = .int((current["metadata"]["generation"].intValue ?? 0) + 1)
            }
            // `kubectl scale` (or an autoscaler) owns the replicas it set: a later apply of another
            // value conflicts with it, as on kube-apiserver.
            updated["metadata"]["managedFields"] = FieldManager.encode(FieldManager.update(
                old: current, new: updated, manager: fieldManager(req), operation: "Update", apiVersion: type.apiVersion,
                subresource: "scale", keyed: !type.isCustom, now: KubeTime.now().rfc3339))
            return .put(updated)
        }
        guard let stored = result.object else { throw notFound(t) }
        return .json(200, try scaleObject(try stored.decode(), type))
    }

    func bind(_ req: APIRequest, _ t: RequestTarget) async throws -> APIResponse {
        let binding = try decodeBody(req)
        guard let node = binding["target"]["name"].stringValue, !node.isEmpty else {
            throw StatusError.invalid(kind: "Binding", name: t.name ?? "", causes: [Admission.required("target.name")])
        }
        let uid = binding["metadata"]["uid"].stringValue
        let name = t.name ?? ""
        let type = t.type
        _ = try await store.write(key(t)) { cur in
            guard let cur else { throw StatusError.notFound(type.resource, name: name) }
            var pod = try cur.decode()
            if let uid, !uid.isEmpty, uid != pod["metadata"]["uid"].stringValue {
                throw StatusError.conflict("pods", name: name, "Precondition failed: UID in precondition: \(uid), UID in object meta: \(pod["metadata"]["uid"].stringValue ?? "")")
            }
            if let existing = pod["spec"]["nodeName"].stringValue, !existing.isEmpty {
                throw StatusError.conflict("pods", name: name, "pod \(name) is already assigned to node \"\(existing)\"")
            }
            if !pod["metadata"]["deletionTimestamp"].isNull {
                throw StatusError.conflict("pods", name: name, "pod \(name) is being deleted, cannot be assigned to a host")
            }
            pod["spec"]["nodeName"] = .string(node)
            var conds = pod["status"]["conditions"].arrayValue ?? []
            conds.removeAll { $0["type"].stringValue == "PodScheduled" }
            conds.append(["type": "PodScheduled", "status": "True", "lastProbeTime": .null, "lastTransitionTime": .string(KubeTime.now().rfc3339)])
            pod["status"]["conditions"] = .array(conds)
            return .put(pod)
        }
        return .json(201, Self.successStatus)
    }

    func evict(_ req: APIRequest, _ t: RequestTarget) async throws -> APIResponse {
        let eviction = try decodeBody(req)
        var opts = DeleteOptions()
        let d = eviction["deleteOptions"]
        opts.gracePeriod = d["gracePeriodSeconds"].intValue
        opts.preconditionUID = d["preconditions"]["uid"].stringValue
        opts.preconditionRV = d["preconditions"]["resourceVersion"].stringValue
        let type = t.type
        let name = t.name ?? ""
        let options = opts
        let dryRun = req.query["dryRun"] == "All" || (d["dryRun"].arrayValue ?? []).contains("All")
        guard let current = await store.get(key(t)) else { throw StatusError.notFound(type.resource, name: name) }
        let pod = try current.decode()
        // A pod already going, or not running (Pending, Succeeded, Failed), costs no budget.
        if !pod["metadata"]["deletionTimestamp"].isNull || ["Pending", "Succeeded", "Failed"].contains(pod["status"]["phase"].stringValue ?? "Pending") {
            // evicted as a delete
        } else {
            try await takeDisruption(for: pod, dryRun: dryRun)
        }
        if dryRun { return .json(201, Self.successStatus) }
        _ = try await store.write(key(t)) { cur in
            guard let cur else { throw StatusError.notFound(type.resource, name: name) }
            return try Self.deleteMutation(try cur.decode(), type: type, options: options)
        }
        return .json(201, Self.successStatus)
    }

    /// Charges an eviction to the pod's PodDisruptionBudget (policy/v1 eviction rules): refused
    /// with 429 while the budget allows no disruption (kubectl drain retries), 500 when more than
    /// one budget selects the pod; the pod is recorded in `status.disruptedPods` until the
    /// disruption controller sees it gone.
    func takeDisruption(for pod: JSON, dryRun: Bool) async throws {
        let pdbType = ResourceType.podDisruptionBudgets
        let namespace = pod["metadata"]["namespace"].stringValue ?? ""
        let podName = pod["metadata"]["name"].stringValue ?? ""
        var labels: [String: String] = [:]
        for (k, v) in pod["metadata"]["labels"].objectValue ?? [:] { labels[k] = v.stringValue ?? "" }
        let page = try await store.list(prefix: pdbType.storagePrefix(namespace: namespace), startAfter: nil, limit: nil, revision: nil, filter: nil)
        let budgets = try page.items.map { try $0.decode() }.filter { b in
            guard !b["spec"]["selector"].isNull, let sel = try? LabelSelector.from(object: b["spec"]["selector"]) else { return false }
            return sel.matches(labels)
        }
        guard let budget = budgets.first else { return }
        if budgets.count > 1 {
            throw StatusError(.internalError, "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.")
        }
        let ready = (pod["status"]["conditions"].arrayValue ?? []).contains { $0["type"].stringValue == "Ready" && $0["status"].stringValue == "True" }
        if !ready {
            // An unhealthy pod may go when the budget is met without it (or always, if the budget says so).
            let status = budget["status"]
            if budget["spec"]["unhealthyPodEvictionPolicy"].stringValue == "AlwaysAllow" { return }
            let desired = status["desiredHealthy"].intValue ?? 0
            if desired > 0 && (status["currentHealthy"].intValue ?? 0) >= desired { return }
        }
        let budgetName = budget["metadata"]["name"].stringValue ?? ""
        _ = try await store.write(pdbType.storageKey(namespace: namespace, name: budgetName)) { cur in
            guard let cur else { return .unchanged }
            var b = try cur.decode()
            func refused(_ why: String) -> StatusError {
                StatusError(.tooManyRequests, "Cannot evict pod as it would violate the pod's disruption budget.",
                            causes: [.init(reason: "DisruptionBudget", message: why)])
            }
            if (b["status"]["observedGeneration"].intValue ?? 0) < (b["metadata"]["generation"].intValue ?? 0) {
                throw refused("The disruption budget \(budgetName) is still being processed by the server.")
            }
            let allowed = b["status"]["disruptionsAllowed"].intValue ?? 0
            if allowed < 0 { throw StatusError(.forbidden, "pdb disruptions allowed is negative") }
            if (b["status"]["disruptedPods"].objectValue?.count ?? 0) > 2000 {
                throw StatusError(.forbidden, "DisruptedPods map too big - too many evictions not confirmed by PDB controller")
            }
            if allowed == 0 {
                throw refused("The disruption budget \(budgetName) needs \(b["status"]["desiredHealthy"].intValue ?? 0) healthy pods and has \(b["status"]["currentHealthy"].intValue ?? 0) currently")
            }
            if dryRun { return .unchanged }
            b["status"]["disruptionsAllowed"] = .int(allowed - 1)
            b["status"]["disruptedPods"][podName] = .string(KubeTime.now().rfc3339)
            return .put(b)
        }
    }

    func finalizeNamespace(_ req: APIRequest, _ t: RequestTarget) async throws -> APIResponse {
        let body = try decodeBody(req)
        let name = t.name ?? ""
        let result = try await store.write(key(t)) { cur in
            guard let cur else { throw StatusError.notFound("namespaces", name: name) }
            var ns = try cur.decode()
            ns["spec"]["finalizers"] = body["spec"]["finalizers"].isNull ? .array([]) : body["spec"]["finalizers"]
            if !ns["metadata"]["deletionTimestamp"].isNull, (ns["spec"]["finalizers"].arrayValue ?? []).isEmpty,
                (ns["metadata"]["finalizers"].arrayValue ?? []).isEmpty
            {
                return .delete
            }
            return .put(ns)
        }
        guard let stored = result.object else { throw notFound(t) }
        return try objectResponse(200, stored, req, t.type)
    }

    /// Deleting a CRD removes every custom object of it, then its endpoints, then the CRD.
    func deleteCRD(name: String, req: APIRequest) async throws -> APIResponse {
        let crdType = CRDSchema.crdType
        let k = crdType.storageKey(namespace: nil, name: name)
        guard let cur = await store.get(k) else { throw StatusError.notFound(crdType.resource, group: crdType.group, name: name) }
        let crd = try cur.decode()
        if req.query["dryRun"] == "All" { return try objectResponse(200, cur, req, crdType) }
        let group = crd["spec"]["group"].stringValue ?? ""
        let plural = crd["spec"]["names"]["plural"].stringValue ?? ""
        let prefix = "/\(group)/\(plural)/"
        // Mark it terminating so that watchers see the transition.
        _ = try await store.write(k) { c in
            guard let c else { return .unchanged }
            var v = try c.decode()
            v["metadata"]["deletionTimestamp"] = .string(KubeTime.now().rfc3339)
            var conds = v["status"]["conditions"].arrayValue ?? []
            conds.append(["type": "Terminating", "status": "True", "reason": "InstanceDeletionInProgress",
                          "message": "CustomResource deletion is in progress", "lastTransitionTime": .string(KubeTime.now().rfc3339)])
            v["status"]["conditions"] = .array(conds)
            return .put(v)
        }
        let page = try await store.list(prefix: prefix, startAfter: nil, limit: nil, revision: nil, filter: nil)
        for item in page.items {
            _ = try await store.write(item.key) { c in c == nil ? .unchanged : .delete }
        }
        registry.unregister(crdName: name)
        let result = try await store.write(k) { c in c == nil ? .unchanged : .delete }
        logger.info("custom resource definition removed", metadata: ["crd": "\(name)", "objects": "\(page.items.count)"])
        guard let stored = result.object else { throw StatusError.notFound(crdType.resource, group: crdType.group, name: name) }
        return try objectResponse(200, stored, req, crdType)
    }
}

/// Opens streams to the node a pod runs on (the cloud's stream tunnels).
public protocol PodStreams: Sendable {
    func open(node: String, _ request: StreamRequest) async throws -> TunnelStream
}

extension TunnelServer: PodStreams {}

/// The iterator of a log stream, handed from the request to the response body writer (used by
/// one task at a time).
final class StreamCursor: @unchecked Sendable {
    var iterator: TunnelStreamData.AsyncIterator
    init(_ s: TunnelStreamData) { iterator = s.makeAsyncIterator() }
}

extension APIHandler {
    /// `GET pods/{name}/log` through the node's stream tunnel, with kubectl's options (container,
    /// follow, previous, timestamps, tailLines, sinceSeconds/sinceTime, limitBytes).
    func podLog(_ req: APIRequest, _ t: RequestTarget, _ streams: any PodStreams) async throws -> APIResponse {
        guard let o = await store.get(key(t)) else { throw notFound(t) }
        let pod = try o.decode()
        let name = t.name ?? ""
        guard let node = pod["spec"]["nodeName"].stringValue, !node.isEmpty else {
            throw StatusError.badRequest("pod \(name) does not have a host assigned")
        }
        let names = ((pod["spec"]["containers"].arrayValue ?? []) + (pod["spec"]["initContainers"].arrayValue ?? [])).compactMap { $0["name"].stringValue }
        let container = try Self.chooseContainer(pod: name, names: names, requested: req.query["container"])
        func bool(_ k: String) -> Bool { req.query[k] == "true" || req.query[k] == "1" }
        func int(_ k: String) throws -> Int64? {
            guard let v = req.query[k] else { return nil }
            guard let n = Int64(v), n >= 0 else { throw StatusError.badRequest("\(k) must be a non-negative integer, got \"\(v)\"") }
            return n
        }
        var options = LogOptions(follow: bool("follow"), previous: bool("previous"), timestamps: bool("timestamps"),
                                 tailLines: try int("tailLines"), sinceSeconds: try int("sinceSeconds"), limitBytes: try int("limitBytes"))
        if let since = req.query["sinceTime"] {
            guard let t = KubeTime.parse(since) else { throw StatusError.badRequest("sinceTime \"\(since)\" is not RFC 3339") }
            options.sinceSeconds = max(0, KubeTime.now().seconds - t.seconds)
        }
        let stream: TunnelStream
        do {
            stream = try await streams.open(node: node, StreamRequest(kind: .log, namespace: t.namespace ?? "default", pod: name,
                                                                      container: container, log: options))
        } catch {
            throw StatusError(.serviceUnavailable, "cannot reach node \"\(node)\" for the logs of pod \(name): \(error)")
        }
        // The first chunk (or the node's error) decides the status code.
        let cursor = StreamCursor(stream.data)
        let first: [UInt8]?
        do { first = try await cursor.iterator.next() } catch {
            await stream.close()
            throw StatusError.badRequest("\(error)")
        }
        return .stream(200, contentType: "text/plain", producer: { w in
            do {
                if let first { try await w.write(Array(first.dropFirst())) }
                while let chunk = try await cursor.iterator.next() { try await w.write(Array(chunk.dropFirst())) }
            } catch {
                await stream.close()
                if error is TunnelError { return }
                throw error
            }
        })
    }
}