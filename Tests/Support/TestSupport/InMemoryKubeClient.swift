import Foundation
import KubeAPI
import KubeClient
import Synchronization

/// An in-memory Kubernetes API for unit tests: a ``KubeClient`` that keeps objects in a
/// dictionary and behaves, where controllers and informers can tell, like kube-apiserver (and
/// like SwiftEdge's own `APIHandler`):
///
/// - one global, strictly increasing `resourceVersion` (a decimal string), assigned on every write;
///   objects keyed by resource (group + resource), namespace and name; `uid`, `creationTimestamp`
///   and `generateName` on create; 409 AlreadyExists, 404 NotFound, 409 Conflict on a stale
///   `metadata.resourceVersion` in an update or patch (422 for a different `metadata.uid`: immutable);
/// - `metadata.generation` bumped on spec changes of resources with `tracksGeneration`;
///   `status` updates change only `.status`, main-resource writes keep `.status` of resources
///   with a status subresource; on create, pods start `Pending` and workloads without status;
/// - merge, strategic-merge and JSON patches through KubeAPI's ``Patch`` engines (apply patches
///   are refused with 415);
/// - lists and watches with label and field selectors (any field path: `metadata.name`,
///   `metadata.namespace`, `spec.nodeName`, `status.phase` …); lists return everything at the
///   current version (`limit`/`continue` are ignored, no continue token);
/// - watches replay the retained history after their `resourceVersion` (no version, `""` or `"0"`:
///   synthetic ADDED events of the current objects), then stream live events converted per
///   selector (ADDED/DELETED when an object starts/stops matching); a version older than the
///   retained window (`historyLimit` events) is 410 Expired;
/// - deletion with finalizers (`deletionTimestamp` set while `metadata.finalizers` is non-empty,
///   removal once the last one goes), `propagationPolicy` Foreground/Orphan finalizers,
///   `preconditions.uid`/`resourceVersion` (409), and graceful pod deletion: a pod bound to a node
///   and not finished is only marked (`deletionTimestamp` = now + grace,
///   `deletionGracePeriodSeconds`) unless the grace period is 0, as for kubelet's final delete;
/// - `pods/binding` (sets `spec.nodeName` and `PodScheduled`) and `pods/eviction` (a delete).
///
/// Not modelled: admission defaults and validation, namespace existence and deletion, garbage
/// collection of dependents, server-side apply, managedFields, bookmarks, `timeoutSeconds`.
///
/// Test hooks: ``seed(_:_:)`` (store as given, no call recorded), ``object(_:namespace:name:)``,
/// ``calls``, ``closeWatches()`` (the server closed every watch: informers re-watch),
/// ``compact()`` (every version seen so far expires: re-watches get 410 and relist),
/// ``holdWatches()``/``releaseWatches()`` (new watches wait, so changes can happen between
/// watches), ``failNext(_:_:with:times:)`` (inject API errors).
public final class InMemoryKubeClient: KubeClient {
    /// One API call, as recorded for assertions.
    public struct Call: Sendable, Hashable, CustomStringConvertible {
        /// `get`, `list`, `create`, `post`, `update`, `patch`, `delete`, `watch`.
        public var verb: String
        public var group: String
        /// Plural resource name (`pods`).
        public var resource: String
        public var namespace: String?
        public var name: String?
        /// `status`, `binding`, `eviction`, or nil for the main resource.
        public var subresource: String?

        public init(verb: String, group: String = "", resource: String, namespace: String? = nil, name: String? = nil,
                    subresource: String? = nil)
        {
            self.verb = verb; self.group = group; self.resource = resource; self.namespace = namespace; self.name = name
            self.subresource = subresource
        }

        public var description: String {
            var s = "\(verb) \(group.isEmpty ? resource : "\(resource).\(group)")"
            if let subresource { s += "/\(subresource)" }
            if let namespace { s += " \(namespace)/" } else { s += " " }
            s += name ?? "*"
            return s
        }
    }

    struct ResourceKey: Hashable, Sendable {
        var group: String
        var resource: String
        init(_ t: ResourceType) { group = t.group; resource = t.resource }
    }

    /// One committed change, kept for watch replay.
    struct Change: Sendable {
        var revision: Int64
        var resource: ResourceKey
        var type: KubeWatchEvent.EventType
        var object: JSON
        var previous: JSON?
    }

    struct Watch: Sendable {
        var resource: ResourceKey
        var namespace: String?
        var labels: LabelSelector
        var fields: FieldSelector
        var continuation: AsyncThrowingStream<KubeWatchEvent, any Error>.Continuation
    }

    struct Fault: Sendable {
        var verb: String
        var resource: ResourceKey?
        var error: StatusError
        var remaining: Int
    }

    struct State: Sendable {
        var revision: Int64 = 0
        var objects: [ResourceKey: [String: JSON]] = [:]
        var history: [Change] = []
        /// Changes at or below this revision may be missing from `history`.
        var compacted: Int64 = 0
        var watches: [Int: Watch] = [:]
        var nextID = 0
        var calls: [Call] = []
        var types: [ResourceKey: ResourceType] = [:]
        var faults: [Fault] = []
        var isShutDown = false
        var watchesHeld = false
        var heldWatchers: [Int: CheckedContinuation<Void, Never>] = [:]
    }

    let state = Mutex(State())
    /// How many changes are retained for watches resuming from an older version.
    public let historyLimit: Int

    /// - Parameters:
    ///   - historyLimit: changes retained for watch replay; older versions answer 410 Expired.
    ///   - types: resource types beyond the built-in ones (CRDs), or overrides of their traits
    ///     (status subresource, `tracksGeneration`). Built-in resources are recognised by group
    ///     and resource whatever ``ResourceType`` value a caller passes.
    public init(historyLimit: Int = 1000, types: [ResourceType] = []) {
        self.historyLimit = max(1, historyLimit)
        state.withLock { s in
            for t in BuiltinResources.all where s.types[ResourceKey(t)] == nil { s.types[ResourceKey(t)] = t }
            for t in types { s.types[ResourceKey(t)] = t }
        }
    }

    /// Declares (or overrides) a resource type's traits.
    public func register(_ type: ResourceType) { state.withLock { $0.types[ResourceKey(type)] = type } }

    // MARK: Test hooks

    /// Every call made so far, in order.
    public var calls: [Call] { state.withLock { $0.calls } }

    /// The calls with this verb (and resource, when given).
    public func calls(_ verb: String, _ type: ResourceType? = nil) -> [Call] {
        state.withLock { s in s.calls.filter { $0.verb == verb && (type == nil || ($0.resource == type!.resource && $0.group == type!.group)) } }
    }

    /// Forgets the recorded calls.
    public func resetCalls() { state.withLock { $0.calls = [] } }

    /// The current (latest) resourceVersion.
    public var resourceVersion: String { state.withLock { String($0.revision) } }

    /// Watches currently open.
    public var openWatches: Int { state.withLock { $0.watches.count } }

    /// A stored object (with `kind`/`apiVersion`), without recording a call.
    public func object(_ type: ResourceType, namespace: String? = nil, name: String) -> JSON? {
        state.withLock { s in
            let t = traits(type, s)
            return s.objects[ResourceKey(t)]?[storeKey(t, namespace: namespace, name: name)]
        }
    }

    /// Stored objects of a type (in one namespace, or all), sorted by namespace and name.
    public func objects(_ type: ResourceType, namespace: String? = nil) -> [JSON] {
        state.withLock { s in
            let t = traits(type, s)
            return (s.objects[ResourceKey(t)] ?? [:]).sorted { $0.key < $1.key }.map(\.value)
                .filter { !t.namespaced || namespace == nil || $0["metadata"]["namespace"].stringValue == namespace }
        }
    }

    /// Stores `object` as given (status included), filling in what the server would (`uid`,
    /// `creationTimestamp`, `generation`, the namespace `default`), with a new resourceVersion; an
    /// existing object of that name is replaced. Watchers see ADDED or MODIFIED. No call is recorded.
    @discardableResult
    public func seed(_ type: ResourceType, _ object: JSON) -> JSON {
        state.withLock { s in
            let t = traits(type, s)
            var obj = object
            let name = obj["metadata"]["name"].stringValue ?? ""
            precondition(!name.isEmpty, "seeded objects need metadata.name")
            if t.namespaced {
                if (obj["metadata"]["namespace"].stringValue ?? "").isEmpty { obj["metadata"]["namespace"] = "default" }
            } else {
                obj["metadata"]["namespace"] = .null
            }
            if obj["metadata"]["uid"].isNull { obj["metadata"]["uid"] = .string(Self.newUID()) }
            if obj["metadata"]["creationTimestamp"].isNull { obj["metadata"]["creationTimestamp"] = .string(KubeTime.now().rfc3339) }
            if t.tracksGeneration && obj["metadata"]["generation"].isNull { obj["metadata"]["generation"] = 1 }
            let key = storeKey(t, namespace: obj["metadata"]["namespace"].stringValue, name: name)
            let old = s.objects[ResourceKey(t)]?[key]
            return commit(&s, t, key: key, new: obj, old: old)
        }
    }

    /// Closes every open watch (as a server does on timeout or restart); informers re-watch from
    /// their last resourceVersion.
    public func closeWatches() {
        let open = state.withLock { s -> [Watch] in
            let w = Array(s.watches.values)
            s.watches = [:]
            return w
        }
        for w in open { w.continuation.finish() }
    }

    /// Drops the retained history and moves the revision on (nothing is written at it), so a
    /// watch resuming from any version seen so far gets 410 Expired. Open watches stay open.
    public func compact() {
        state.withLock { s in
            s.revision += 1
            s.history = []
            s.compacted = s.revision
        }
    }

    /// New watches wait (after being recorded) until ``releaseWatches()``; with
    /// ``closeWatches()`` it leaves a window in which changes reach no watcher.
    public func holdWatches() { state.withLock { $0.watchesHeld = true } }

    /// Lets waiting and future watches proceed.
    public func releaseWatches() {
        let waiting = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.watchesHeld = false
            let w = Array(s.heldWatchers.values)
            s.heldWatchers = [:]
            return w
        }
        for c in waiting { c.resume() }
    }

    /// Makes the next `times` calls with `verb` (on `type`, if given) fail with `error`
    /// (after being recorded).
    public func failNext(_ verb: String, _ type: ResourceType? = nil, with error: StatusError, times: Int = 1) {
        state.withLock { $0.faults.append(Fault(verb: verb, resource: type.map(ResourceKey.init), error: error, remaining: times)) }
    }

    // MARK: KubeClient

    public func get(_ type: ResourceType, namespace: String?, name: String) async throws -> JSON {
        try state.withLock { s in
            let t = traits(type, s)
            try begin(&s, "get", t, namespace: namespace, name: name)
            guard let o = s.objects[ResourceKey(t)]?[storeKey(t, namespace: namespace, name: name)] else {
                throw StatusError.notFound(t.resource, group: t.group, name: name)
            }
            return o
        }
    }

    public func list(_ type: ResourceType, namespace: String?, labelSelector: String?, fieldSelector: String?,
                     limit: Int?, continueToken: String?, resourceVersion: String?) async throws -> JSON
    {
        let ls = try LabelSelector.parse(labelSelector ?? "")
        let fs = try FieldSelector.parse(fieldSelector ?? "")
        return try state.withLock { s in
            let t = traits(type, s)
            try begin(&s, "list", t, namespace: namespace, name: nil)
            let items = (s.objects[ResourceKey(t)] ?? [:]).sorted { $0.key < $1.key }.map(\.value)
                .filter { Self.matches($0, t, namespace: namespace, ls, fs) }
            return ["kind": .string(t.listKind), "apiVersion": .string(t.apiVersion),
                    "metadata": ["resourceVersion": .string(String(s.revision))], "items": .array(items)]
        }
    }

    public func create(_ type: ResourceType, namespace: String?, _ object: JSON, fieldManager: String) async throws -> JSON {
        try state.withLock { s in
            let t = traits(type, s)
            try begin(&s, "create", t, namespace: namespace, name: object["metadata"]["name"].stringValue)
            var obj = object
            guard obj.isObject else { throw StatusError.badRequest("the body of a create must be an object") }
            var md = obj["metadata"].objectValue ?? [:]
            if t.namespaced {
                let bodyNS = md["namespace"]?.stringValue ?? ""
                if let ns = namespace, !bodyNS.isEmpty, bodyNS != ns {
                    throw StatusError.badRequest("the namespace of the provided object does not match the namespace sent on the request")
                }
                md["namespace"] = .string(namespace ?? (bodyNS.isEmpty ? "default" : bodyNS))
            } else {
                md.removeValue(forKey: "namespace")
            }
            var name = md["name"]?.stringValue ?? ""
            let byKey = s.objects[ResourceKey(t)] ?? [:]
            if name.isEmpty, let prefix = md["generateName"]?.stringValue, !prefix.isEmpty {
                repeat { name = Self.generateName(prefix) } while byKey[storeKey(t, namespace: md["namespace"]?.stringValue, name: name)] != nil
                md["name"] = .string(name)
            }
            if name.isEmpty {
                throw StatusError.invalid(kind: t.kind, group: t.group, name: "",
                                          causes: [.init(reason: "FieldValueRequired", message: "name or generateName is required", field: "metadata.name")])
            }
            let key = storeKey(t, namespace: md["namespace"]?.stringValue, name: name)
            if byKey[key] != nil { throw StatusError.alreadyExists(t.resource, group: t.group, name: name) }
            md["uid"] = .string(Self.newUID())
            md["creationTimestamp"] = .string(KubeTime.now().rfc3339)
            for k in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "managedFields"] { md.removeValue(forKey: k) }
            if t.tracksGeneration { md["generation"] = 1 } else { md.removeValue(forKey: "generation") }
            obj["metadata"] = .object(md)
            switch (t.group, t.resource) {
            case ("", "pods"): obj["status"] = ["phase": "Pending"]
            case ("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"), ("apps", "daemonsets"), ("batch", "jobs"):
                obj["status"] = .null
            default: break
            }
            return commit(&s, t, key: key, new: obj, old: nil)
        }
    }

    public func post(_ type: ResourceType, namespace: String?, name: String, subresource: String, _ body: JSON) async throws -> JSON {
        try state.withLock { s in
            let t = traits(type, s)
            try begin(&s, "post", t, namespace: namespace, name: name, subresource: subresource)
            let key = storeKey(t, namespace: namespace, name: name)
            guard t.group.isEmpty && t.resource == "pods", ["binding", "eviction"].contains(subresource) else {
                throw StatusError(.notFound, "the server could not find the requested resource (post \(t.resource) \(name)/\(subresource))")
            }
            guard let current = s.objects[ResourceKey(t)]?[key] else { throw StatusError.notFound(t.resource, group: t.group, name: name) }
            if subresource == "binding" {
                guard let node = body["target"]["name"].stringValue, !node.isEmpty else {
                    throw StatusError.invalid(kind: "Binding", name: name,
                                              causes: [.init(reason: "FieldValueRequired", message: "Required value", field: "target.name")])
                }
                if let uid = body["metadata"]["uid"].stringValue, !uid.isEmpty, uid != current["metadata"]["uid"].stringValue {
                    throw StatusError.conflict("pods", name: name, "Precondition failed: UID in precondition: \(uid), UID in object meta: \(current["metadata"]["uid"].stringValue ?? "")")
                }
                if let existing = current["spec"]["nodeName"].stringValue, !existing.isEmpty {
                    throw StatusError.conflict("pods", name: name, "pod \(name) is already assigned to node \"\(existing)\"")
                }
                if !current["metadata"]["deletionTimestamp"].isNull {
                    throw StatusError.conflict("pods", name: name, "pod \(name) is being deleted, cannot be assigned to a host")
                }
                var pod = current
                pod["spec"]["nodeName"] = .string(node)
                var conds = pod["status"]["conditions"].arrayValue ?? []
                conds.removeAll { $0["type"].stringValue == "PodScheduled" }
                conds.append(["type": "PodScheduled", "status": "True", "lastProbeTime": .null, "lastTransitionTime": .string(KubeTime.now().rfc3339)])
                pod["status"]["conditions"] = .array(conds)
                _ = commit(&s, t, key: key, new: pod, old: current)
            } else {
                let options = body["deleteOptions"]
                switch try Self.deleteOutcome(current, t, options: options) {
                case .unchanged: break
                case .put(let o): _ = commit(&s, t, key: key, new: o, old: current)
                case .delete: _ = commit(&s, t, key: key, new: nil, old: current)
                }
            }
            return ["kind": "Status", "apiVersion": "v1", "metadata": [:], "status": "Success", "code": 201]
        }
    }

    public func update(_ type: ResourceType, namespace: String?, _ object: JSON, subresource: String?, fieldManager: String) async throws -> JSON {
        try state.withLock { s in
            let t = traits(type, s)
            let name = object["metadata"]["name"].stringValue ?? ""
            try begin(&s, "update", t, namespace: namespace, name: name, subresource: subresource)
            try Self.checkSubresource(t, subresource, name: name)
            let ns = t.namespaced ? (namespace ?? object["metadata"]["namespace"].stringValue) : nil
            let key = storeKey(t, namespace: ns, name: name)
            guard let current = s.objects[ResourceKey(t)]?[key] else { throw StatusError.notFound(t.resource, group: t.group, name: name) }
            return try write(&s, t, key: key, Self.updateOutcome(new: object, current: current, t, subresource: subresource), current: current)
        }
    }

    public func patch(_ type: ResourceType, namespace: String?, name: String, body patch: JSON, patchType: PatchType,
                      subresource: String?, fieldManager: String) async throws -> JSON
    {
        try state.withLock { s in
            let t = traits(type, s)
            try begin(&s, "patch", t, namespace: namespace, name: name, subresource: subresource)
            try Self.checkSubresource(t, subresource, name: name)
            let key = storeKey(t, namespace: namespace, name: name)
            guard let current = s.objects[ResourceKey(t)]?[key] else { throw StatusError.notFound(t.resource, group: t.group, name: name) }
            let patched: JSON
            switch patchType {
            case .merge: patched = Patch.mergePatch(current, patch)
            case .json: patched = try Patch.jsonPatch(current, patch)
            case .strategicMerge:
                if t.isCustom {
                    throw StatusError(.unsupportedMediaType, "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")
                }
                patched = try Patch.strategicMerge(current, patch)
            case .apply:
                throw StatusError(.unsupportedMediaType, "InMemoryKubeClient does not implement server-side apply")
            }
            return try write(&s, t, key: key, Self.updateOutcome(new: patched, current: current, t, subresource: subresource), current: current)
        }
    }

    public func delete(_ type: ResourceType, namespace: String?, name: String, options: JSON?) async throws -> JSON {
        try state.withLock { s in
            let t = traits(type, s)
            try begin(&s, "delete", t, namespace: namespace, name: name)
            let key = storeKey(t, namespace: namespace, name: name)
            guard let current = s.objects[ResourceKey(t)]?[key] else { throw StatusError.notFound(t.resource, group: t.group, name: name) }
            return try write(&s, t, key: key, Self.deleteOutcome(current, t, options: options ?? .null), current: current)
        }
    }

    public func watch(_ type: ResourceType, namespace: String?, resourceVersion: String?, labelSelector: String?,
                      fieldSelector: String?, timeoutSeconds: Int) async throws -> KubeWatchStream
    {
        let ls = try LabelSelector.parse(labelSelector ?? "")
        let fs = try FieldSelector.parse(fieldSelector ?? "")
        let from: Int64?
        switch resourceVersion {
        case nil, "", "0": from = nil
        case let rv?:
            guard let v = Int64(rv), v >= 0 else { throw StatusError.badRequest("invalid resource version \"\(rv)\"") }
            from = v
        }
        try state.withLock { s in try begin(&s, "watch", traits(type, s), namespace: namespace, name: nil) }
        await passWatchGate()
        try Task.checkCancellation()
        let (stream, continuation) = AsyncThrowingStream<KubeWatchEvent, any Error>.makeStream()
        let id = try state.withLock { s -> Int in
            if s.isShutDown { throw KubeClientError("InMemoryKubeClient is shut down") }
            let t = traits(type, s)
            let rk = ResourceKey(t)
            if let from, from < s.compacted {
                throw StatusError(.expired, "too old resource version: \(from) (\(s.compacted))")
            }
            let w = Watch(resource: rk, namespace: t.namespaced ? namespace : nil, labels: ls, fields: fs, continuation: continuation)
            if let from {
                for c in s.history where c.revision > from {
                    if let ev = Self.event(c, for: w, t) { continuation.yield(ev) }
                }
            } else {
                for o in (s.objects[rk] ?? [:]).sorted(by: { $0.key < $1.key }).map(\.value)
                where Self.matches(o, t, namespace: w.namespace, ls, fs) {
                    continuation.yield(KubeWatchEvent(type: .added, object: o))
                }
            }
            let id = s.nextID
            s.nextID += 1
            s.watches[id] = w
            return id
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.watches.removeValue(forKey: id) }
        }
        return KubeWatchStream(stream)
    }

    /// Ends every watch; later calls fail.
    public func shutdown() async throws {
        let (open, held) = state.withLock { s -> ([Watch], [CheckedContinuation<Void, Never>]) in
            s.isShutDown = true
            s.watchesHeld = false
            let w = Array(s.watches.values), h = Array(s.heldWatchers.values)
            s.watches = [:]
            s.heldWatchers = [:]
            return (w, h)
        }
        for w in open { w.continuation.finish() }
        for h in held { h.resume() }
    }

    // MARK: Internals

    /// The traits of a resource: the registered type with the caller's group and resource.
    func traits(_ type: ResourceType, _ s: State) -> ResourceType { s.types[ResourceKey(type)] ?? type }

    func storeKey(_ t: ResourceType, namespace: String?, name: String) -> String {
        t.namespaced ? "\(namespace ?? "default")/\(name)" : name
    }

    /// Records the call, then fails if shut down or if a fault was injected for it.
    func begin(_ s: inout State, _ verb: String, _ t: ResourceType, namespace: String?, name: String?, subresource: String? = nil) throws {
        s.calls.append(Call(verb: verb, group: t.group, resource: t.resource, namespace: t.namespaced ? namespace : nil, name: name,
                            subresource: subresource))
        if s.isShutDown { throw KubeClientError("InMemoryKubeClient is shut down") }
        let rk = ResourceKey(t)
        if let i = s.faults.firstIndex(where: { $0.verb == verb && ($0.resource == nil || $0.resource == rk) }) {
            let e = s.faults[i].error
            s.faults[i].remaining -= 1
            if s.faults[i].remaining <= 0 { s.faults.remove(at: i) }
            throw e
        }
    }

    func passWatchGate() async {
        let id = state.withLock { s in defer { s.nextID += 1 }; return s.nextID }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let pass = state.withLock { s -> Bool in
                    if !s.watchesHeld || s.isShutDown || Task.isCancelled { return true }
                    s.heldWatchers[id] = c
                    return false
                }
                if pass { c.resume() }
            }
        } onCancel: {
            state.withLock { $0.heldWatchers.removeValue(forKey: id) }?.resume()
        }
    }

    enum Outcome { case unchanged, put(JSON), delete }

    func write(_ s: inout State, _ t: ResourceType, key: String, _ outcome: Outcome, current: JSON) throws -> JSON {
        switch outcome {
        case .unchanged: return current
        case .put(let o): return commit(&s, t, key: key, new: o, old: current)
        case .delete: return commit(&s, t, key: key, new: nil, old: current)
        }
    }

    /// Stores (or removes, `new == nil`) an object at a new revision, records the change and
    /// delivers it to the open watches. Returns the stored (or last) state.
    func commit(_ s: inout State, _ t: ResourceType, key: String, new: JSON?, old: JSON?) -> JSON {
        s.revision += 1
        let rk = ResourceKey(t)
        var obj = new ?? old ?? .emptyObject
        obj["kind"] = .string(t.kind)
        obj["apiVersion"] = .string(t.apiVersion)
        obj["metadata"]["resourceVersion"] = .string(String(s.revision))
        let type: KubeWatchEvent.EventType
        if new == nil {
            s.objects[rk]?[key] = nil
            type = .deleted
        } else {
            s.objects[rk, default: [:]][key] = obj
            type = old == nil ? .added : .modified
        }
        let change = Change(revision: s.revision, resource: rk, type: type, object: obj, previous: old)
        s.history.append(change)
        if s.history.count > historyLimit {
            let drop = s.history.count - historyLimit
            s.compacted = s.history[drop - 1].revision
            s.history.removeFirst(drop)
        }
        for (id, w) in s.watches {
            guard let ev = Self.event(change, for: w, t) else { continue }
            if case .terminated = w.continuation.yield(ev) { s.watches[id] = nil }
        }
        return obj
    }

    /// What a watch sees of a change: ADDED/DELETED as an object starts/stops matching.
    static func event(_ c: Change, for w: Watch, _ t: ResourceType) -> KubeWatchEvent? {
        guard c.resource == w.resource else { return nil }
        let now = matches(c.object, t, namespace: w.namespace, w.labels, w.fields)
        switch c.type {
        case .added: return now ? KubeWatchEvent(type: .added, object: c.object) : nil
        case .deleted: return now ? KubeWatchEvent(type: .deleted, object: c.object) : nil
        case .modified, .bookmark:
            let before = c.previous.map { matches($0, t, namespace: w.namespace, w.labels, w.fields) } ?? false
            switch (before, now) {
            case (true, true): return KubeWatchEvent(type: .modified, object: c.object)
            case (false, true): return KubeWatchEvent(type: .added, object: c.object)
            case (true, false): return KubeWatchEvent(type: .deleted, object: c.object)
            case (false, false): return nil
            }
        }
    }

    static func matches(_ o: JSON, _ t: ResourceType, namespace: String?, _ ls: LabelSelector, _ fs: FieldSelector) -> Bool {
        if t.namespaced, let namespace, o["metadata"]["namespace"].stringValue != namespace { return false }
        if !ls.isEverything {
            var labels: [String: String] = [:]
            for (k, v) in o["metadata"]["labels"].objectValue ?? [:] { labels[k] = v.stringValue ?? "" }
            if !ls.matches(labels) { return false }
        }
        return fs.isEverything || fs.matches { fieldValue(o, $0) }
    }

    /// A selectable field's value, as kube-apiserver renders it (`false` for unset booleans).
    static func fieldValue(_ o: JSON, _ path: String) -> String {
        switch o[path: path.split(separator: ".").map(String.init)] {
        case .string(let s): return s
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .null: return ["spec.hostNetwork", "spec.unschedulable"].contains(path) ? "false" : ""
        default: return ""
        }
    }

    static func checkSubresource(_ t: ResourceType, _ subresource: String?, name: String) throws {
        guard let sub = subresource else { return }
        guard sub == "status", t.subresources.contains(.status) else {
            throw StatusError(.notFound, "the server could not find the requested resource (\(t.resource) \(name)/\(sub))")
        }
    }

    /// kube-apiserver's update rules (as `APIHandler.mergeUpdate`).
    static func updateOutcome(new input: JSON, current: JSON, _ t: ResourceType, subresource: String?) throws -> Outcome {
        var obj = input
        let name = current["metadata"]["name"].stringValue ?? ""
        guard obj.isObject else { throw StatusError.badRequest("the body of an update must be an object") }
        if let rv = obj["metadata"]["resourceVersion"].stringValue, !rv.isEmpty, rv != current["metadata"]["resourceVersion"].stringValue {
            throw StatusError.conflict(t.resource, group: t.group, name: name)
        }
        if let uid = obj["metadata"]["uid"].stringValue, !uid.isEmpty, uid != current["metadata"]["uid"].stringValue {
            throw StatusError.invalid(kind: t.kind, group: t.group, name: name,
                                      causes: [.init(reason: "FieldValueInvalid", message: "Invalid value: \"\(uid)\": field is immutable", field: "metadata.uid")])
        }
        if let n = obj["metadata"]["name"].stringValue, n != name {
            throw StatusError.badRequest("the name of the object (\(n)) does not match the name on the URL (\(name))")
        }
        if subresource == "status" {
            var merged = current
            merged["status"] = obj["status"]
            obj = merged
        } else if t.subresources.contains(.status) {
            obj["status"] = current["status"]
        }
        let cmd = current["metadata"]
        for k in ["uid", "creationTimestamp", "namespace", "name", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "resourceVersion"] {
            obj["metadata"][k] = cmd[k]
        }
        obj["kind"] = current["kind"]
        obj["apiVersion"] = current["apiVersion"]
        let deleting = !cmd["deletionTimestamp"].isNull
        if deleting {
            let old = Set((cmd["finalizers"].arrayValue ?? []).compactMap(\.stringValue))
            let new = Set((obj["metadata"]["finalizers"].arrayValue ?? []).compactMap(\.stringValue))
            if !new.isSubset(of: old) {
                throw StatusError.invalid(kind: t.kind, group: t.group, name: name, causes: [
                    .init(reason: "FieldValueForbidden",
                          message: "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers \(new.subtracting(old).sorted())",
                          field: "metadata.finalizers"),
                ])
            }
        }
        if t.tracksGeneration && subresource == nil && specContent(obj) != specContent(current) {
            obj["metadata"]["generation"] = .int((cmd["generation"].intValue ?? 0) + 1)
        }
        if obj == current { return .unchanged }
        if deleting && (obj["metadata"]["finalizers"].arrayValue ?? []).isEmpty { return .delete }
        return .put(obj)
    }

    static func specContent(_ v: JSON) -> JSON {
        var c = v
        c["metadata"] = .null
        c["status"] = .null
        return c
    }

    /// kube-apiserver's delete rules (as `APIHandler.deleteMutation`): preconditions, graceful
    /// deletion of pods on nodes, propagation finalizers, finalizers.
    static func deleteOutcome(_ current: JSON, _ t: ResourceType, options o: JSON) throws -> Outcome {
        let name = current["metadata"]["name"].stringValue ?? ""
        if let uid = o["preconditions"]["uid"].stringValue, uid != current["metadata"]["uid"].stringValue {
            throw StatusError.conflict(t.resource, group: t.group, name: name,
                                       "Precondition failed: UID in precondition: \(uid), UID in object meta: \(current["metadata"]["uid"].stringValue ?? "")")
        }
        if let rv = o["preconditions"]["resourceVersion"].stringValue, rv != current["metadata"]["resourceVersion"].stringValue {
            throw StatusError.conflict(t.resource, group: t.group, name: name,
                                       "Precondition failed: ResourceVersion in precondition: \(rv), ResourceVersion in object meta: \(current["metadata"]["resourceVersion"].stringValue ?? "")")
        }
        var obj = current
        var finalizers = (obj["metadata"]["finalizers"].arrayValue ?? []).compactMap(\.stringValue)
        let alreadyDeleting = !obj["metadata"]["deletionTimestamp"].isNull
        let now = KubeTime.now()
        if t.group.isEmpty && t.resource == "pods" {
            let onNode = !(obj["spec"]["nodeName"].stringValue ?? "").isEmpty
            let phase = obj["status"]["phase"].stringValue ?? ""
            var grace = o["gracePeriodSeconds"].intValue ?? obj["spec"]["terminationGracePeriodSeconds"].intValue ?? 30
            if !onNode || phase == "Succeeded" || phase == "Failed" { grace = 0 }
            if grace > 0 {
                if alreadyDeleting, let e = obj["metadata"]["deletionGracePeriodSeconds"].intValue, e <= grace { return .unchanged }
                obj["metadata"]["deletionTimestamp"] = .string(now.adding(seconds: grace).rfc3339)
                obj["metadata"]["deletionGracePeriodSeconds"] = .int(grace)
                return .put(obj)
            }
        }
        let propagation = o["orphanDependents"].boolValue == true ? "Orphan" : o["propagationPolicy"].stringValue
        switch propagation {
        case "Foreground": if !finalizers.contains("foregroundDeletion") && !alreadyDeleting { finalizers.append("foregroundDeletion") }
        case "Orphan": if !finalizers.contains("orphan") && !alreadyDeleting { finalizers.append("orphan") }
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

    static func newUID() -> String { UUID().uuidString.lowercased() }

    static func generateName(_ prefix: String) -> String {
        let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
        return String(prefix.prefix(58)) + String((0..<5).map { _ in alphabet.randomElement()! })
    }
}
