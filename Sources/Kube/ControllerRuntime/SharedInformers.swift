import AsyncSupport
import KubeAPI
import KubeClient
import Logging
import Synchronization

/// One informer whose events fan out to many handlers (client-go's shared informer).
/// Register handlers before ``InformerFactory/run()`` starts it.
public final class SharedInformer: Sendable {
    public typealias Handler = @Sendable (InformerEvent) async -> Void
    public let informer: Informer
    let handlers = Mutex<[Handler]>([])
    let syncState = Mutex<(synced: Bool, waiters: [Int: CheckedContinuation<Void, Never>], next: Int)>((false, [:], 0))

    init(informer: Informer) { self.informer = informer }

    public var cache: InformerCache { informer.cache }
    public var type: ResourceType { informer.type }

    public func addHandler(_ handler: @escaping Handler) {
        handlers.withLock { $0.append(handler) }
    }

    /// Queues the key (`namespace/name`) of every added, updated or deleted object: the usual
    /// handler of a controller's primary resource.
    public func enqueueKeys(into queue: WorkQueue) {
        addHandler { ev in
            switch ev {
            case .added(let o), .updated(_, let o), .deleted(let o): queue.add(InformerCache.key(o))
            case .synced: break
            }
        }
    }

    /// Whether the first complete list has been delivered.
    public var hasSynced: Bool { syncState.withLock { $0.synced } }

    /// Returns once the first complete list has been delivered to every handler, or when the
    /// waiting task is cancelled (a shutdown before the first list must not hang).
    public func waitForSync() async {
        let id = syncState.withLock { s in defer { s.next += 1 }; return s.next }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let ready = syncState.withLock { s -> Bool in
                    if s.synced || Task.isCancelled { return true }
                    s.waiters[id] = c
                    return false
                }
                if ready { c.resume() }
            }
        } onCancel: {
            syncState.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }

    func run() async throws {
        let hs = handlers.withLock { $0 }
        try await informer.run { ev in
            for h in hs { await h(ev) }
            if case .synced = ev {
                let waiters = syncState.withLock { s -> [CheckedContinuation<Void, Never>] in
                    s.synced = true
                    let w = Array(s.waiters.values)
                    s.waiters = [:]
                    return w
                }
                for w in waiters { w.resume() }
            }
        }
    }
}

/// Creates at most one ``SharedInformer`` per resource (and namespace) and runs them together.
public final class InformerFactory: Sendable {
    public let client: KubeClient
    let logger: Logger
    let informers = LazyMap<String, SharedInformer>()

    public init(client: KubeClient, logger: Logger) { self.client = client; self.logger = logger }

    public func informer(_ type: ResourceType, namespace: String? = nil) -> SharedInformer {
        let key = "\(type.group)/\(type.resource)/\(namespace ?? "")"
        return informers.value(for: key) { SharedInformer(informer: Informer(client: client, type: type, namespace: namespace, logger: logger)) }
    }

    /// Runs every informer created so far until cancelled.
    public func run() async throws {
        let all = informers.all
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in all { group.addTask { try await i.run() } }
            try await group.waitForAll()
        }
    }

    /// Returns once every informer created so far has synced.
    public func waitForSync() async {
        for i in informers.all { await i.waitForSync() }
    }
}

/// Keys of objects grouped by an attribute (owner UID, node name), kept current from informer
/// events, so controllers find "pods of this ReplicaSet" without scanning every pod.
public final class InformerIndex: Sendable {
    let keysFor: @Sendable (JSON) -> [String]
    let index = Mutex<(byValue: [String: Set<String>], byKey: [String: [String]])>(([:], [:]))

    public init(_ keysFor: @escaping @Sendable (JSON) -> [String]) { self.keysFor = keysFor }

    /// Indexes pods/replicasets/… by the UID of their controlling owner.
    public static func byControllerUID() -> InformerIndex {
        InformerIndex { obj in
            (obj["metadata"]["ownerReferences"].arrayValue ?? [])
                .filter { $0["controller"].boolValue == true }.compactMap { $0["uid"].stringValue }
        }
    }

    public func handle(_ ev: InformerEvent) {
        switch ev {
        case .added(let o), .updated(_, let o): set(InformerCache.key(o), keysFor(o))
        case .deleted(let o): set(InformerCache.key(o), [])
        case .synced: break
        }
    }

    func set(_ objectKey: String, _ values: [String]) {
        index.withLock { idx in
            let old = idx.byKey[objectKey] ?? []
            if old == values { return }
            for v in old { idx.byValue[v]?.remove(objectKey); if idx.byValue[v]?.isEmpty == true { idx.byValue[v] = nil } }
            for v in values { idx.byValue[v, default: []].insert(objectKey) }
            idx.byKey[objectKey] = values.isEmpty ? nil : values
        }
    }

    public func keys(_ value: String) -> [String] { index.withLock { Array($0.byValue[value] ?? []) } }

    /// The cached objects indexed under `value`.
    public func objects(_ value: String, in cache: InformerCache) -> [JSON] { keys(value).compactMap { cache.get($0) } }
}
