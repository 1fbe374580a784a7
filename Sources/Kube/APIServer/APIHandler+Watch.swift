import KubeAPI
import ObjectStore

extension APIHandler {
    static func eventLine(_ type: String, _ object: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(object.count + 32)
        out.append(contentsOf: Array("{\"type\":\"".utf8))
        out.append(contentsOf: Array(type.utf8))
        out.append(contentsOf: Array("\",\"object\":".utf8))
        out.append(contentsOf: object)
        out.append(contentsOf: Array("}\n".utf8))
        return out
    }

    func watch(_ req: APIRequest, _ t: RequestTarget) async throws -> APIResponse {
        let (ls, fs) = try parseSelectors(req, t.type)
        if req.bool("sendInitialEvents") {
            throw StatusError.invalid(kind: "ListOptions", group: "meta.k8s.io", name: "", causes: [
                .init(reason: "FieldValueForbidden", message: "Forbidden: sendInitialEvents is not supported by this server; use list then watch", field: "sendInitialEvents"),
            ])
        }
        let prefix = t.type.storagePrefix(namespace: t.namespace)
        let matches: @Sendable (StoredObject) -> Bool = { o in ls.matches(o.attributes.labels) && FieldIndex.matches(fs, o) }
        let filter: (@Sendable (StoredObject) -> Bool)? = ls.isEverything && fs.isEverything ? nil : matches
        var initial: [StoredObject] = []
        let subscription: WatchSubscription
        let rv = req.query["resourceVersion"] ?? ""
        let type = t.type
        do {
            if rv.isEmpty || rv == "0" {
                let page = try await store.list(prefix: prefix, startAfter: nil, limit: nil, revision: nil, filter: filter)
                initial = page.items
                subscription = try await store.watch(prefix: prefix, after: page.revision)
            } else {
                guard let n = Int64(rv) else { throw StatusError.badRequest("invalid resource version \"\(rv)\"") }
                subscription = try await store.watch(prefix: prefix, after: n)
            }
        } catch let e as StorageError {
            // kube-apiserver reports an expired resourceVersion as an ERROR event.
            let status = StatusError(.expired, e.message).status.serialized()
            return .stream(200, contentType: "application/json") { w in
                try await w.write(Self.eventLine("ERROR", status))
            }
        }
        var timeout = options.maxWatchSeconds
        if let ts = req.query["timeoutSeconds"].flatMap({ Int($0) }), ts > 0 { timeout = min(ts, timeout) }
        else if let ts = req.query["timeout"].flatMap(Self.parseGoDuration) { timeout = min(max(ts, 1), timeout) }
        let bookmarks = req.bool("allowWatchBookmarks")
        let watchSeconds = timeout
        let initialObjects = initial
        let interval = options.bookmarkInterval
        let store = self.store
        let table = req.wantsTable
        let registry = self.registry
        let id = subscription.id
        let gauge = watchGauge
        let handler = self
        return .stream(200, contentType: "application/json") { w in
            gauge.increment(by: 1)
            defer { gauge.decrement(by: 1) }
            var headersSent = false
            func encode(_ type: String, _ obj: StoredObject) throws -> [UInt8] {
                if table {
                    let v = try handler.present(obj, t.type)
                    let tab = Tables.table(for: [v], type: t.type, registry: registry, revision: String(obj.revision),
                                           continueToken: nil, includeHeaders: !headersSent, req: req)
                    headersSent = true
                    return Self.eventLine(type, tab.serialized())
                }
                if t.type.isCustom { return Self.eventLine(type, try handler.present(obj, t.type).serialized()) }
                return Self.eventLine(type, obj.data)
            }
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        try await Task.sleep(for: .seconds(watchSeconds))
                        await store.cancelWatch(id)
                    }
                    if bookmarks {
                        group.addTask {
                            while true {
                                try await Task.sleep(for: interval)
                                await store.requestProgress(id)
                            }
                        }
                    }
                    for o in initialObjects { try await w.write(try encode("ADDED", o)) }
                    for await item in subscription.stream {
                        switch item {
                        case .progress(let rev):
                            guard bookmarks else { continue }
                            let bm: JSON = ["kind": .string(type.kind), "apiVersion": .string(type.apiVersion),
                                            "metadata": ["resourceVersion": .string(String(rev))]]
                            try await w.write(Self.eventLine("BOOKMARK", bm.serialized()))
                        case .event(let ev):
                            let now = filter == nil || matches(ev.object)
                            switch ev.type {
                            case .added:
                                if now { try await w.write(try encode("ADDED", ev.object)) }
                            case .modified:
                                let before = filter == nil || (ev.previous.map(matches) ?? now)
                                if now && before { try await w.write(try encode("MODIFIED", ev.object)) }
                                else if now { try await w.write(try encode("ADDED", ev.object)) }
                                else if before { try await w.write(try encode("DELETED", ev.object)) }
                            case .deleted:
                                let was = filter == nil || matches(ev.previous ?? ev.object)
                                if was { try await w.write(try encode("DELETED", ev.object)) }
                            }
                        }
                    }
                    group.cancelAll()
                }
            } catch {
                await store.cancelWatch(id)
                throw error
            }
            await store.cancelWatch(id)
        }
    }

    /// Parses Go durations as `?timeout=32s` / `5m0s` carry them; whole seconds.
    static func parseGoDuration(_ s: String) -> Int? {
        var total = 0.0
        var num = ""
        var it = Array(s)[...]
        while let c = it.popFirst() {
            if c.isNumber || c == "." { num.append(c); continue }
            var unit = String(c)
            if c == "m", it.first == "s" { unit = "ms"; it = it.dropFirst() }
            guard let v = Double(num) else { return nil }
            switch unit {
            case "h": total += v * 3600
            case "m": total += v * 60
            case "s": total += v
            case "ms": total += v / 1000
            default: return nil
            }
            num = ""
        }
        if !num.isEmpty { return nil }
        return Int(total.rounded(.up))
    }
}
