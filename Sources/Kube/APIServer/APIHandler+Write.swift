import Foundation
import KubeAPI
import KubeProtobuf
import ObjectStore
import Synchronization

extension APIHandler {
    // MARK: Common write preparation

    func decodeBody(_ req: APIRequest) throws(StatusError) -> JSON {
        if req.body.count > options.maxBodyBytes {
            throw StatusError(.requestEntityTooLarge, "Request entity too large: limit is \(options.maxBodyBytes)")
        }
        if req.body.isEmpty { throw StatusError.badRequest("the body of the request was empty") }
        try BodyDecoding.checkMediaType(req.header("content-type"))
        let v = try BodyDecoding.decode(req.body, contentType: req.header("content-type"))
        guard v.isObject else { throw StatusError.badRequest("the body of the request must be a JSON object, not \(v.typeName)") }
        return v
    }

    func fieldManager(_ req: APIRequest) -> String {
        if let m = req.query["fieldManager"], !m.isEmpty { return m }
        let ua = req.header("user-agent") ?? "unknown"
        return String(ua.split(separator: "/").first ?? "unknown")
    }

    func isDryRun(_ req: APIRequest) -> Bool { req.query["dryRun"] == "All" }

    /// Checks apiVersion/kind of a body against the endpoint.
    func checkTypeMeta(_ obj: inout JSON, _ type: ResourceType, expectKind: String? = nil) throws(StatusError) {
        let kind = expectKind ?? type.kind
        if let av = obj["apiVersion"].stringValue, !av.isEmpty, av != type.apiVersion {
            if !(type.isCustom && av.hasPrefix(type.group + "/")) {
                throw StatusError.badRequest("the API version in the data (\(av)) does not match the expected API version (\(type.apiVersion))")
            }
        }
        if let k = obj["kind"].stringValue, !k.isEmpty, k != kind {
            throw StatusError.badRequest("the kind in the data (\(k)) does not match the expected kind (\(kind))")
        }
        obj["apiVersion"] = .string(type.apiVersion)
        obj["kind"] = .string(kind)
    }

    /// Unknown-field handling per `fieldValidation` (Strict → 400, Warn → Warning header).
    func checkFields(_ obj: inout JSON, _ type: ResourceType, _ req: APIRequest) throws(StatusError) -> [String] {
        let mode = req.query["fieldValidation"] ?? "Warn"
        var unknown: [String] = []
        if type.isCustom, let schema = registry.schema(for: type) {
            unknown = CRDSchema.prune(&obj, schema: schema)
        } else if let fromTable = BuiltinSchema.pruneUnknownFields(&obj, apiVersion: type.apiVersion, kind: type.kind) {
            unknown = fromTable
        } else {
            unknown = KnownFields.unknownFields(&obj, type: type)
        }
        unknown.sort()
        if unknown.isEmpty || mode == "Ignore" { return [] }
        if mode == "Strict" {
            let msg = unknown.map { "unknown field \"\($0)\"" }.joined(separator: ", ")
            throw StatusError.badRequest("strict decoding error: \(msg)")
        }
        return unknown.map { "unknown field \"\($0)\"" }
    }

    /// managedFields without their timestamps (a re-apply of the same fields is no change).
    static func withoutTimes(_ managed: JSON) -> JSON {
        .array((managed.arrayValue ?? []).map { var e = $0; e["time"] = .null; return e })
    }

    /// Everything but metadata and status: a change here bumps `metadata.generation`.
    static func specContent(_ v: JSON) -> JSON {
        var c = v
        c["metadata"] = .null
        c["status"] = .null
        return c
    }

    func validateName(_ name: String, type: ResourceType) throws(StatusError) {
        let ok: Bool
        switch type.resource {
        case "roles", "clusterroles", "rolebindings", "clusterrolebindings", "nodes":
            ok = !name.isEmpty && name != "." && name != ".." && !name.contains("/") && !name.contains("%")
        case "namespaces", "services":
            ok = isDNS1123Label(name)
        default:
            ok = isDNS1123Subdomain(name)
        }
        if !ok {
            let rule = (type.resource == "namespaces" || type.resource == "services")
                ? "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                : "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            throw StatusError.invalid(kind: type.kind, group: type.group, name: name,
                                      causes: [.init(reason: "FieldValueInvalid", message: "Invalid value: \"\(name)\": \(rule)", field: "metadata.name")])
        }
    }

    func validateMetadata(_ obj: JSON, type: ResourceType, name: String) throws(StatusError) {
        var causes: [StatusError.Cause] = []
        for (k, v) in obj["metadata"]["labels"].objectValue ?? [:] {
            if !isValidLabelKey(k) {
                causes.append(.init(reason: "FieldValueInvalid", message: "Invalid value: \"\(k)\": name part must consist of alphanumeric characters, '-', '_' or '.'", field: "metadata.labels"))
            }
            guard let s = v.stringValue, isValidLabelValue(s) else {
                causes.append(.init(reason: "FieldValueInvalid", message: "Invalid value: \(v): a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character", field: "metadata.labels"))
                continue
            }
        }
        for (_, v) in obj["metadata"]["annotations"].objectValue ?? [:] where v.stringValue == nil {
            causes.append(.init(reason: "FieldValueInvalid", message: "annotation values must be strings", field: "metadata.annotations"))
        }
        if !causes.isEmpty { throw StatusError.invalid(kind: type.kind, group: type.group, name: name, causes: causes) }
    }

    // MARK: create

    func create(_ req: APIRequest, _ t: RequestTarget, operation: String = "Update", appliedConfig: JSON? = nil) async throws -> APIResponse {
        var obj = try decodeBody(req)
        try checkTypeMeta(&obj, t.type)
        var warnings = try checkFields(&obj, t.type, req)
        var md = obj["metadata"].objectValue ?? [:]
        if t.type.namespaced {
            let ns = t.namespace ?? ""
            if let bodyNS = md["namespace"]?.stringValue, !bodyNS.isEmpty, bodyNS != ns {
                throw StatusError.badRequest("the namespace of the provided object does not match the namespace sent on the request")
            }
            md["namespace"] = .string(ns)
        } else {
            md.removeValue(forKey: "namespace")
        }
        var name = md["name"]?.stringValue ?? ""
        var generatePrefix: String?
        if name.isEmpty, let gen = md["generateName"]?.stringValue, !gen.isEmpty {
            generatePrefix = gen
            name = generateName(gen)
            md["name"] = .string(name)
        }
        if name.isEmpty {
            throw StatusError.invalid(kind: t.type.kind, group: t.type.group, name: "",
                                      causes: [.init(reason: "FieldValueRequired", message: "name or generateName is required", field: "metadata.name")])
        }
        try validateName(name, type: t.type)
        if t.type.namespaced, let ns = t.namespace {
            guard let nsObj = await store.get(NamespaceKeys.key(ns)) else { throw StatusError.notFound("namespaces", name: ns) }
            if Maintenance.mentionsDeletion(nsObj.data), let v = try? nsObj.decode(), !v["metadata"]["deletionTimestamp"].isNull {
                throw StatusError(.forbidden, "\(t.type.resource) \"\(name)\" is forbidden: unable to create new content in namespace \(ns) because it is being terminated")
            }
        }
        let now = KubeTime.now()
        md["uid"] = .string(UUID().uuidString.lowercased())
        md["creationTimestamp"] = .string(now.rfc3339)
        md.removeValue(forKey: "resourceVersion")
        md.removeValue(forKey: "deletionTimestamp")
        md.removeValue(forKey: "deletionGracePeriodSeconds")
        md.removeValue(forKey: "selfLink")
        if t.type.tracksGeneration || t.type.isCustom { md["generation"] = 1 } else { md.removeValue(forKey: "generation") }
        md["managedFields"] = nil
        obj["metadata"] = .object(md)
        if t.type.isCustom {
            if t.type.subresources.contains(.status) { obj["status"] = .null }
            if let schema = registry.schema(for: t.type) {
                CRDSchema.applyDefaults(&obj, schema: schema)
                try CRDSchema.validate(obj, schema: schema, type: t.type, name: name)
            }
        }
        try validateMetadata(obj, type: t.type, name: name)
        let admission = AdmissionAttributes(operation: .create, type: t.type, subresource: "", namespace: t.namespace ?? "", name: name,
                                            user: req.user ?? .admin, dryRun: isDryRun(req))
        let hooked = try await hasWebhooks(admission)
        if hooked {
            let (mutated, w) = try await webhookMutate(admission, object: obj, old: nil)
            warnings += w
            obj = mutated
        }
        try await Admission.admitCreate(&obj, type: t.type, handler: self, user: req.user)
        if let noEscalation = try await escalationGuard(req, t) { try noEscalation(obj) }
        if hooked { warnings += try await webhookValidate(admission, object: obj, old: nil) }
        // An apply that creates owns what it applied; a create owns everything it set.
        let stamp = KubeTime.now().rfc3339
        let entries: [FieldManager.Entry]
        if operation == "Apply", let config = appliedConfig {
            entries = [FieldManager.Entry(manager: fieldManager(req), operation: "Apply", apiVersion: t.type.apiVersion, subresource: nil, time: stamp,
                                          fields: FieldManager.leaves(of: config, keyed: !t.type.isCustom, includeStatus: false))]
        } else {
            entries = FieldManager.update(old: nil, new: obj, manager: fieldManager(req), operation: operation, apiVersion: t.type.apiVersion,
                                          subresource: nil, keyed: !t.type.isCustom, now: stamp)
        }
        obj["metadata"]["managedFields"] = FieldManager.encode(entries)
        try await Admission.chargeQuotas(obj, type: t.type, handler: self, dryRun: isDryRun(req))
        if isDryRun(req) { return .json(201, obj, headers: warningHeaders(warnings)) }
        // A generated name that is taken is generated again, as kube-apiserver does (RetryGenerateName):
        // the client never sees a conflict it did not cause.
        var attempt = 0
        var result: WriteResult
        while true {
            let k = key(t, name: name)
            let value = obj
            let type = t.type
            let finalName = name
            do {
                result = try await store.write(k) { cur in
                    if cur != nil { throw StatusError.alreadyExists(type.resource, group: type.group, name: finalName) }
                    return .put(value)
                }
                break
            } catch let e as StatusError where e.code == 409 && generatePrefix != nil && attempt < Self.generateNameAttempts - 1 {
                attempt += 1
                name = generateName(generatePrefix ?? "")
                obj["metadata"]["name"] = .string(name)
            }
        }
        guard let stored = result.object else { throw StatusError(.internalError, "create did not store an object") }
        if Admission.hasAfterWrite(t.type) {
            try await Admission.afterWrite(type: t.type, object: try stored.decode(), old: nil, handler: self)
        }
        var resp = try objectResponse(201, stored, req, t.type)
        resp.addHeaders(warningHeaders(warnings))
        return resp
    }

    func warningHeaders(_ warnings: [String]) -> [String: String] {
        warnings.isEmpty ? [:] : ["Warning": warnings.map { "299 - \"\($0.replacingOccurrences(of: "\"", with: "\\\""))\"" }.joined(separator: ", ")]
    }

    /// How many names a create with `generateName` tries before it reports the conflict (kube-apiserver: 8).
    static let generateNameAttempts = 8

    func generateName(_ prefix: String) -> String {
        var p = prefix
        if p.count > 58 { p = String(p.prefix(58)) }
        return p + options.generatedNameSuffix()
    }

    /// Five characters from kube's alphabet (no vowels, no look-alikes), as kube-apiserver's SimpleNameGenerator.
    @Sendable public static func randomNameSuffix() -> String {
        let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
        return String((0..<5).map { _ in alphabet.randomElement() ?? "x" })
    }

    // MARK: update / patch

    /// Applies an updated object (from PUT or PATCH) to the current one, enforcing kube's rules.
    /// Returns `nil` when the result equals the current object.
    func mergeUpdate(new input: JSON, current: JSON, type: ResourceType, subresource: Subresource?, req: APIRequest,
                     checkRV: Bool, operation: String, managedFields applied: JSON? = nil) throws -> Mutation
    {
        var obj = input
        let name = current["metadata"]["name"].stringValue ?? ""
        if let rv = obj["metadata"]["resourceVersion"].stringValue, !rv.isEmpty, checkRV,
            rv != current["metadata"]["resourceVersion"].stringValue
        {
            throw StatusError.conflict(type.resource, group: type.group, name: name)
        }
        if let n = obj["metadata"]["name"].stringValue, n != name {
            throw StatusError.badRequest("the name of the object (\(n)) does not match the name on the URL (\(name))")
        }
        if type.namespaced, let ns = obj["metadata"]["namespace"].stringValue, !ns.isEmpty,
            ns != current["metadata"]["namespace"].stringValue
        {
            throw StatusError.badRequest("the namespace of the provided object does not match the namespace sent on the request")
        }
        switch subresource {
        case .status:
            // Only status (and metadata labels/annotations) may change through /status.
            var merged = current
            merged["status"] = obj["status"]
            obj = merged
        case .approval:
            // Only the approval conditions change (Approved/Denied), as kube's CSR approval does.
            var merged = current
            merged["status"]["conditions"] = obj["status"]["conditions"]
            obj = merged
        case .none:
            if type.subresources.contains(.status) { obj["status"] = current["status"] }
        default: break
        }
        // Immutable and server-owned metadata.
        var md = obj["metadata"].objectValue ?? [:]
        let cmd = current["metadata"]
        for k in ["uid", "creationTimestamp", "namespace", "name", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "selfLink"] {
            md[k] = cmd[k].isNull ? nil : cmd[k]
        }
        md["resourceVersion"] = cmd["resourceVersion"]
        if md["managedFields"] == nil || md["managedFields"] == .null { md["managedFields"] = cmd["managedFields"].isNull ? nil : cmd["managedFields"] }
        obj["metadata"] = .object(md)
        obj["apiVersion"] = current["apiVersion"].isNull ? .string(type.apiVersion) : current["apiVersion"]
        obj["kind"] = .string(type.kind)
        if !cmd["deletionTimestamp"].isNull {
            let old = Set((cmd["finalizers"].arrayValue ?? []).compactMap(\.stringValue))
            let new = Set((obj["metadata"]["finalizers"].arrayValue ?? []).compactMap(\.stringValue))
            if !new.isSubset(of: old) {
                throw StatusError.invalid(kind: type.kind, group: type.group, name: name,
                                          causes: [.init(reason: "FieldValueForbidden", message: "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers \(new.subtracting(old).sorted())", field: "metadata.finalizers")])
            }
        }
        if type.isCustom, let schema = registry.schema(for: type) {
            if subresource == nil { _ = CRDSchema.prune(&obj, schema: schema) }
            CRDSchema.applyDefaults(&obj, schema: schema)
            try CRDSchema.validate(obj, schema: schema, type: type, name: name)
        }
        try validateMetadata(obj, type: type, name: name)
        try Admission.admitUpdate(&obj, old: current, type: type, subresource: subresource)
        if (type.tracksGeneration || type.isCustom) && subresource == nil && Self.specContent(obj) != Self.specContent(current) {
            obj["metadata"]["generation"] = .int((current["metadata"]["generation"].intValue ?? 0) + 1)
        }
        // A no-op write does not bump the resourceVersion.
        var cmpNew = obj, cmpOld = current
        cmpNew["metadata"]["managedFields"] = .null
        cmpOld["metadata"]["managedFields"] = .null
        // An apply that changes only who owns what (a manager dropping a field another still
        // applies) is a write: ownership decides what a later apply removes.
        let ownershipChanged = applied.map { Self.withoutTimes($0) != Self.withoutTimes(current["metadata"]["managedFields"]) } ?? false
        if cmpNew == cmpOld && !ownershipChanged { return .unchanged }
        // Field ownership: an apply's was worked out with its merge; an update owns what it changed.
        obj["metadata"]["managedFields"] = applied ?? FieldManager.encode(FieldManager.update(
            old: current, new: obj, manager: fieldManager(req), operation: operation, apiVersion: type.apiVersion,
            subresource: subresource?.rawValue, keyed: !type.isCustom, now: KubeTime.now().rfc3339))
        if obj["metadata"]["managedFields"].arrayValue?.isEmpty == true { obj["metadata"]["managedFields"] = .null }
        // An object being deleted goes away once its last finalizer is removed.
        if !cmd["deletionTimestamp"].isNull, (obj["metadata"]["finalizers"].arrayValue ?? []).isEmpty {
            return .delete
        }
        return .put(obj)
    }

    func update(_ req: APIRequest, _ t: RequestTarget, subresource: Subresource? = nil) async throws -> APIResponse {
        var obj = try decodeBody(req)
        try checkTypeMeta(&obj, t.type)
        var warnings = subresource == nil ? try checkFields(&obj, t.type, req) : []
        let input = obj
        let type = t.type
        let k = key(t)
        let name = t.name ?? ""
        let noEscalation = try await escalationGuard(req, t)
        if isDryRun(req) {
            guard let cur = await store.get(k) else { throw notFound(t) }
            let m = try mergeUpdate(new: input, current: try cur.decode(), type: type, subresource: subresource, req: req, checkRV: true, operation: "Update")
            if case .put(let v) = m { try noEscalation?(v); return .json(200, v) }
            return try objectResponse(200, cur, req, type)
        }
        let compute: @Sendable (JSON) throws -> Mutation = { [self] current in
            let m = try mergeUpdate(new: input, current: current, type: type, subresource: subresource, req: req, checkRV: true, operation: "Update")
            if case .put(let v) = m { try noEscalation?(v) }
            return m
        }
        let result: WriteResult
        let admission = AdmissionAttributes(operation: .update, type: type, subresource: subresource?.rawValue ?? "", namespace: t.namespace ?? "",
                                            name: name, user: req.user ?? .admin, dryRun: false)
        if try await hasWebhooks(admission) {
            let (r, w) = try await writeThroughWebhooks(k, admission, notFound: notFound(t), compute: compute)
            result = r
            warnings += w
        } else {
            result = try await store.write(k) { cur in
                guard let cur else { throw StatusError.notFound(type.resource, group: type.group, name: name) }
                return try compute(try cur.decode())
            }
        }
        guard let stored = result.object else { throw notFound(t) }
        if result.eventType != nil && Admission.hasAfterWrite(type) {
            try await Admission.afterWrite(type: type, object: try stored.decode(), old: nil, handler: self)
        }
        var resp = try objectResponse(200, stored, req, type)
        resp.addHeaders(warningHeaders(warnings))
        return resp
    }

    /// kube-apiserver's answer to a conflicting apply (kubectl prints it with its --force-conflicts advice).
    static func applyConflict(_ conflicts: [FieldManager.Conflict], type: ResourceType, name: String) -> StatusError {
        let lines = conflicts.map { "conflict with \"\($0.manager)\" using \($0.apiVersion): \(FieldManager.display($0.path))" }
        let message = conflicts.count == 1 ? "Apply failed with 1 conflict: \(lines[0])"
            : "Apply failed with \(conflicts.count) conflicts: " + lines.joined(separator: "\n")
        return StatusError(.conflict, message, name: name, group: type.group, kind: type.resource,
                           causes: conflicts.map { .init(reason: "FieldManagerConflict", message: "conflict with \"\($0.manager)\" using \($0.apiVersion)",
                                                         field: FieldManager.display($0.path)) })
    }

    func applyPatch(_ current: JSON, patchType: PatchType, patch: JSON, type: ResourceType) throws(StatusError) -> JSON {
        switch patchType {
        case .json: return try Patch.jsonPatch(current, patch)
        case .merge: return Patch.mergePatch(current, patch)
        case .strategicMerge:
            if type.isCustom {
                throw StatusError(.unsupportedMediaType, "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")
            }
            return try Patch.strategicMerge(current, patch)
        case .apply:
            // Server-side apply: merge the applied configuration (list items by their merge keys).
            var p = patch
            p["metadata"]["managedFields"] = .null
            return type.isCustom ? Patch.mergePatch(current, p) : try Patch.strategicMerge(current, p)
        }
    }

    func patch(_ req: APIRequest, _ t: RequestTarget, subresource: Subresource? = nil) async throws -> APIResponse {
        guard let patchType = PatchType(contentType: req.header("content-type") ?? "") else {
            throw StatusError(.unsupportedMediaType, "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json")
        }
        if req.body.count > options.maxBodyBytes {
            throw StatusError(.requestEntityTooLarge, "Request entity too large: limit is \(options.maxBodyBytes)")
        }
        let patchBody = try BodyDecoding.decode(req.body, contentType: patchType == .apply ? "application/yaml" : "application/json")
        let type = t.type
        let k = key(t)
        let name = t.name ?? ""
        if patchType == .apply {
            guard req.query["fieldManager"].map({ !$0.isEmpty }) == true else {
                throw StatusError.badRequest("PATCH, application/apply-patch+yaml requests require fieldManager to be set")
            }
            var applied = patchBody
            try checkTypeMeta(&applied, type)
            // Strict validation rejects unknown fields of the applied configuration.
            var probe = applied
            _ = try checkFields(&probe, type, req)
            if await store.get(k) == nil && subresource == nil {
                // Apply creates the object.
                var createReq = req
                applied["metadata"]["name"] = .string(name)
                createReq.body = applied.serialized()
                createReq.headers["content-type"] = "application/json"
                return try await create(createReq, RequestTarget(type: type, namespace: t.namespace, name: nil, subresource: nil),
                                        operation: "Apply", appliedConfig: applied)
            }
        }
        let noEscalation = try await escalationGuard(req, t)
        if isDryRun(req) {
            guard let cur = await store.get(k) else { throw notFound(t) }
            let current = try cur.decode()
            let patched = try applyPatch(current, patchType: patchType, patch: patchBody, type: type)
            let m = try mergeUpdate(new: patched, current: current, type: type, subresource: subresource, req: req, checkRV: true, operation: patchType == .apply ? "Apply" : "Update")
            if case .put(let v) = m { try noEscalation?(v); return .json(200, v) }
            return try objectResponse(200, cur, req, type)
        }
        let op = patchType == .apply ? "Apply" : "Update"
        let manager = fieldManager(req), force = req.query["force"] == "true"
        let patchWarnings = Mutex<[String]>([])
        let compute: @Sendable (JSON) throws -> Mutation = { [self] current in
            var base = current
            var ownership: JSON?
            if patchType == .apply {
                var config = patchBody
                config["metadata"]["managedFields"] = .null
                let r = FieldManager.apply(config: config, current: current, manager: manager, apiVersion: type.apiVersion,
                                           subresource: subresource?.rawValue, force: force, keyed: !type.isCustom, now: KubeTime.now().rfc3339)
                if !r.conflicts.isEmpty { throw Self.applyConflict(r.conflicts, type: type, name: name) }
                base = r.base
                ownership = FieldManager.encode(r.entries)
            }
            var patched = try applyPatch(base, patchType: patchType, patch: patchBody, type: type)
            if patchType != .apply && subresource == nil {
                // Unknown fields the patch brought in: refused (Strict), or dropped with a warning
                // (Warn, the default), as kube-apiserver decodes a patched object.
                let w = try checkFields(&patched, type, req)
                if !w.isEmpty { patchWarnings.withLock { $0 = w } }
            }
            if subresource == .status {
                // Patches through /status only change status.
                var merged = current
                merged["status"] = patched["status"]
                merged["metadata"] = patched["metadata"]
                patched = merged
            }
            guard patched.isObject else { throw StatusError.badRequest("patch result is not an object") }
            let m = try mergeUpdate(new: patched, current: current, type: type, subresource: subresource, req: req, checkRV: true, operation: op,
                                    managedFields: ownership)
            if case .put(let v) = m { try noEscalation?(v) }
            return m
        }
        let result: WriteResult
        var hookWarnings: [String] = []
        let admission = AdmissionAttributes(operation: .update, type: type, subresource: subresource?.rawValue ?? "", namespace: t.namespace ?? "",
                                            name: name, user: req.user ?? .admin, dryRun: false)
        if try await hasWebhooks(admission) {
            (result, hookWarnings) = try await writeThroughWebhooks(k, admission, notFound: notFound(t), compute: compute)
        } else {
            result = try await store.write(k) { cur in
                guard let cur else { throw StatusError.notFound(type.resource, group: type.group, name: name) }
                return try compute(try cur.decode())
            }
        }
        guard let stored = result.object else { throw notFound(t) }
        if result.eventType != nil && Admission.hasAfterWrite(type) {
            try await Admission.afterWrite(type: type, object: try stored.decode(), old: nil, handler: self)
        }
        var resp = try objectResponse(200, stored, req, type)
        resp.addHeaders(warningHeaders(patchWarnings.withLock { $0 } + hookWarnings))
        return resp
    }

    // MARK: delete

    struct DeleteOptions {
        var gracePeriod: Int64?
        var propagation: String?
        var preconditionUID: String?
        var preconditionRV: String?
        var dryRun = false
    }

    func deleteOptions(_ req: APIRequest) throws(StatusError) -> DeleteOptions {
        var o = DeleteOptions()
        if !req.body.isEmpty, let body = try? BodyDecoding.decode(req.body, contentType: req.header("content-type")), body.isObject {
            o.gracePeriod = body["gracePeriodSeconds"].intValue
            o.propagation = body["propagationPolicy"].stringValue
            if body["orphanDependents"].boolValue == true { o.propagation = "Orphan" }
            o.preconditionUID = body["preconditions"]["uid"].stringValue
            o.preconditionRV = body["preconditions"]["resourceVersion"].stringValue
            if let dr = body["dryRun"].arrayValue, dr.contains("All") { o.dryRun = true }
        }
        if let g = req.query["gracePeriodSeconds"].flatMap({ Int64($0) }) { o.gracePeriod = g }
        if let p = req.query["propagationPolicy"] { o.propagation = p }
        if req.query["dryRun"] == "All" { o.dryRun = true }
        if let p = o.propagation, !["Background", "Foreground", "Orphan"].contains(p) {
            throw StatusError.invalid(kind: "DeleteOptions", name: "", causes: [.init(reason: "FieldValueNotSupported", message: "Unsupported value: \"\(p)\": supported values: \"Foreground\", \"Background\", \"Orphan\"", field: "propagationPolicy")])
        }
        return o
    }

    /// Decides what deleting `current` means: removal, graceful marking, or waiting for finalizers.
    static func deleteMutation(_ current: JSON, type: ResourceType, options o: DeleteOptions) throws(StatusError) -> Mutation {
        let name = current["metadata"]["name"].stringValue ?? ""
        if let uid = o.preconditionUID, uid != current["metadata"]["uid"].stringValue {
            throw StatusError.conflict(type.resource, group: type.group, name: name,
                                       "Precondition failed: UID in precondition: \(uid), UID in object meta: \(current["metadata"]["uid"].stringValue ?? "")")
        }
        if let rv = o.preconditionRV, rv != current["metadata"]["resourceVersion"].stringValue {
            throw StatusError.conflict(type.resource, group: type.group, name: name,
                                       "Precondition failed: ResourceVersion in precondition: \(rv), ResourceVersion in object meta: \(current["metadata"]["resourceVersion"].stringValue ?? "")")
        }
        var obj = current
        var finalizers = (obj["metadata"]["finalizers"].arrayValue ?? []).compactMap(\.stringValue)
        let alreadyDeleting = !obj["metadata"]["deletionTimestamp"].isNull
        let now = KubeTime.now()
        // Graceful pod deletion: a pod on a node is marked and the node agent finishes it.
        if type.resource == "pods", type.group.isEmpty {
            let onNode = !(obj["spec"]["nodeName"].stringValue ?? "").isEmpty
            let phase = obj["status"]["phase"].stringValue ?? ""
            let terminal = phase == "Succeeded" || phase == "Failed"
            var grace = o.gracePeriod ?? obj["spec"]["terminationGracePeriodSeconds"].intValue ?? 30
            if !onNode || terminal { grace = 0 }
            if grace > 0 {
                let existing = obj["metadata"]["deletionGracePeriodSeconds"].intValue
                if alreadyDeleting, let e = existing, e <= grace { return .unchanged }
                obj["metadata"]["deletionTimestamp"] = .string(now.adding(seconds: grace).rfc3339)
                obj["metadata"]["deletionGracePeriodSeconds"] = .int(grace)
                return .put(obj)
            }
        }
        switch o.propagation {
        case "Foreground":
            if !finalizers.contains("foregroundDeletion") && !alreadyDeleting { finalizers.append("foregroundDeletion") }
        case "Orphan":
            if !finalizers.contains("orphan") && !alreadyDeleting { finalizers.append("orphan") }
        default: break
        }
        if finalizers.isEmpty { return .delete }
        if alreadyDeleting && finalizers == (current["metadata"]["finalizers"].arrayValue ?? []).compactMap(\.stringValue) {
            return .unchanged
        }
        obj["metadata"]["finalizers"] = .array(finalizers.map { .string($0) })
        if !alreadyDeleting {
            obj["metadata"]["deletionTimestamp"] = .string(now.rfc3339)
            obj["metadata"]["deletionGracePeriodSeconds"] = 0
        }
        return .put(obj)
    }

    func delete(_ req: APIRequest, _ t: RequestTarget) async throws -> APIResponse {
        let opts = try deleteOptions(req)
        let type = t.type
        let name = t.name ?? ""
        let k = key(t)
        if type.resource == "customresourcedefinitions" && type.group == "apiextensions.k8s.io" {
            return try await deleteCRD(name: name, req: req)
        }
        if type.resource == "namespaces" && type.group.isEmpty, ["default", "kube-system", "kube-public"].contains(name) {
            throw StatusError(.forbidden, "namespaces \"\(name)\" is forbidden: this namespace may not be deleted")
        }
        let admission = AdmissionAttributes(operation: .delete, type: type, subresource: "", namespace: t.namespace ?? "", name: name,
                                            user: req.user ?? .admin, dryRun: opts.dryRun)
        if try await hasWebhooks(admission), let cur = await store.get(k) {
            _ = try await webhookValidate(admission, object: nil, old: try cur.decode())
        }
        if opts.dryRun {
            guard let cur = await store.get(k) else { throw notFound(t) }
            return try objectResponse(200, cur, req, type)
        }
        let result = try await store.write(k) { cur in
            guard let cur else { throw StatusError.notFound(type.resource, group: type.group, name: name) }
            let current = try cur.decode()
            if type.resource == "namespaces" && type.group.isEmpty { return Admission.namespaceDeleteMutation(current) }
            return try Self.deleteMutation(current, type: type, options: opts)
        }
        guard let stored = result.object else { throw notFound(t) }
        return try objectResponse(200, stored, req, type)
    }


    func deleteCollection(_ req: APIRequest, _ t: RequestTarget) async throws -> APIResponse {
        let (ls, fs) = try parseSelectors(req, t.type)
        let opts = try deleteOptions(req)
        let prefix = t.type.storagePrefix(namespace: t.namespace)
        let page = try await store.list(prefix: prefix, startAfter: nil, limit: nil, revision: nil) { o in
            ls.matches(o.attributes.labels) && FieldIndex.matches(fs, o)
        }
        let type = t.type
        var deleted: [JSON] = []
        for item in page.items {
            if opts.dryRun { deleted.append(try item.decode()); continue }
            let r = try await store.write(item.key) { cur in
                guard let cur else { return .unchanged }
                return try Self.deleteMutation(try cur.decode(), type: type, options: opts)
            }
            if let o = r.object { deleted.append(try o.decode()) }
        }
        return .json(200, ["kind": .string(t.type.listKind), "apiVersion": .string(t.type.apiVersion),
                           "metadata": ["resourceVersion": .string(String(await store.currentRevision()))],
                           "items": .array(deleted)])
    }
}

extension APIResponse {
    mutating func addHeaders(_ h: [String: String]) {
        guard !h.isEmpty else { return }
        switch self {
        case .json(let c, let v, let old): self = .json(c, v, headers: old.merging(h) { $1 })
        case .raw(let c, let b, let ct, let old): self = .raw(c, b, contentType: ct, headers: old.merging(h) { $1 })
        case .stream: break
        }
    }

}
