import AsyncSupport
import KubeAPI
import KubeClient
import Logging
import Synchronization

/// What an informer tells its handler.
public enum InformerEvent: Sendable {
    case added(JSON)
    case updated(old: JSON, new: JSON)
    case deleted(JSON)
    /// The cache holds a complete list (after the first list and after every relist).
    case synced
}

/// The objects an informer has seen, keyed by `namespace/name` (or `name`).
public final class InformerCache: Sendable {
    let items = Mutex<[String: JSON]>([:])
    public init() {}
    public func get(_ key: String) -> JSON? { items.withLock { $0[key] } }
    public func list() -> [JSON] { items.withLock { Array($0.values) } }
    public var count: Int { items.withLock { $0.count } }

    public static func key(_ obj: JSON) -> String {
        let name = obj["metadata"]["name"].stringValue ?? ""
        if let ns = obj["metadata"]["namespace"].stringValue, !ns.isEmpty { return "\(ns)/\(name)" }
        return name
    }
}

/// client-go's reflector + informer: list, then watch from the list's resourceVersion, re-watch
/// from the last seen version when the server closes the stream, relist on 410 Expired, and keep
/// a local cache. Runs until cancelled.
public struct Informer: Sendable {
    public let client: KubeClient
    public let type: ResourceType
    public let namespace: String?
    public let labelSelector: String?
    public let fieldSelector: String?
    public let cache: InformerCache
    let logger: Logger

    public init(client: KubeClient, type: ResourceType, namespace: String? = nil, labelSelector: String? = nil,
                fieldSelector: String? = nil, cache: InformerCache = InformerCache(), logger: Logger)
    {
        self.client = client; self.type = type; self.namespace = namespace; self.labelSelector = labelSelector
        self.fieldSelector = fieldSelector; self.cache = cache; self.logger = logger
    }

    public func run(_ handler: @Sendable (InformerEvent) async -> Void) async throws {
        var resourceVersion: String?
        var backoff = Backoff(base: .milliseconds(200), max: .seconds(30), jitter: 1...1)
        while !Task.isCancelled {
            do {
                if resourceVersion == nil {
                    resourceVersion = try await relist(handler)
                    await handler(.synced)
                }
                let stream = try await client.watch(type, namespace: namespace, resourceVersion: resourceVersion,
                                                    labelSelector: labelSelector, fieldSelector: fieldSelector,
                                                    timeoutSeconds: Int.random(in: 300...600))
                for try await ev in stream {
                    if let rv = ev.object["metadata"]["resourceVersion"].stringValue { resourceVersion = rv }
                    await apply(ev, handler)
                }
                backoff.reset()
            } catch let e as StatusError where e.code == 410 {
                logger.debug("watch expired; relisting", metadata: ["resource": "\(type.resource)"])
                resourceVersion = nil
            } catch is CancellationError {
                return
            } catch {
                if Task.isCancelled { return }
                logger.warning("list/watch failed; retrying", metadata: ["resource": "\(type.resource)", "error": "\(error)"])
                try await Task.sleep(for: backoff.next())
            }
        }
    }

    /// Lists everything (page by page) and reconciles the cache with it; returns the list's version.
    func relist(_ handler: @Sendable (InformerEvent) async -> Void) async throws -> String {
        var fresh: [String: JSON] = [:]
        var token: String?
        var rv = ""
        repeat {
            let page = try await client.list(type, namespace: namespace, labelSelector: labelSelector,
                                             fieldSelector: fieldSelector, limit: 500, continueToken: token)
            for item in page["items"].arrayValue ?? [] {
                var obj = Self.trimmed(item)
                if obj["kind"].isNull { obj = type.withTypeMeta(obj) }
                fresh[InformerCache.key(obj)] = obj
            }
            rv = page["metadata"]["resourceVersion"].stringValue ?? rv
            token = page["metadata"]["continue"].stringValue.flatMap { $0.isEmpty ? nil : $0 }
        } while token != nil
        let old = cache.items.withLock { items in
            let o = items
            items = fresh
            return o
        }
        for (k, v) in fresh {
            if let prev = old[k] {
                if prev["metadata"]["resourceVersion"] != v["metadata"]["resourceVersion"] { await handler(.updated(old: prev, new: v)) }
            } else {
                await handler(.added(v))
            }
        }
        for (k, v) in old where fresh[k] == nil { await handler(.deleted(v)) }
        return rv
    }

    /// Drops `metadata.managedFields` (as client-go's informers do): controllers never read it
    /// and it is often the largest part of an object.
    static func trimmed(_ obj: JSON) -> JSON {
        guard !obj["metadata"]["managedFields"].isNull else { return obj }
        var o = obj
        o["metadata"]["managedFields"] = .null
        return o
    }

    func apply(_ ev: KubeWatchEvent, _ handler: @Sendable (InformerEvent) async -> Void) async {
        var ev = ev
        ev.object = Self.trimmed(ev.object)
        let key = InformerCache.key(ev.object)
        switch ev.type {
        case .bookmark:
            return
        case .added, .modified:
            let prev = cache.items.withLock { items in
                let p = items[key]
                items[key] = ev.object
                return p
            }
            if let prev { await handler(.updated(old: prev, new: ev.object)) } else { await handler(.added(ev.object)) }
        case .deleted:
            _ = cache.items.withLock { $0.removeValue(forKey: key) }
            await handler(.deleted(ev.object))
        }
    }
}
