import Foundation
import Synchronization

/// A ServiceAccount token the node obtained from the cloud for one of its pods (the source of a
/// projected volume): kept so that pods keep theirs across restarts and while offline, and so
/// that MetaServer recognises the pod's requests by it.
public struct PodToken: Codable, Sendable, Equatable {
    public var token: String
    public var namespace: String
    public var pod: String
    public var podUID: String
    public var serviceAccount: String
    public var audiences: [String]
    /// When it is replaced (kubelet's rule: after 80 % of the lifetime the TokenRequest states).
    public var refreshAt: Date
    /// When it stops being valid (the token's own `exp`: kube extends kube-api-access tokens to a
    /// year, so an offline node's pods keep theirs).
    public var expires: Date

    public init(token: String, namespace: String, pod: String, podUID: String, serviceAccount: String, audiences: [String],
                refreshAt: Date, expires: Date)
    {
        self.token = token; self.namespace = namespace; self.pod = pod; self.podUID = podUID; self.serviceAccount = serviceAccount
        self.audiences = audiences; self.refreshAt = refreshAt; self.expires = expires
    }

    public func needsRefresh(now: Date = Date()) -> Bool { now >= refreshAt }
}

/// The tokens of the node's pods, persisted in the store's local state (never sent to the cloud
/// in the inventory) and cached in memory; shared by Edged (which obtains them) and MetaServer
/// (which authenticates with them). Keyed `<pod uid>/<volume>/<path>`.
public final class PodTokenStore: Sendable {
    static let kind = "serviceaccounttoken"
    let storage: any LocalStateStorage
    let cache = Mutex<[String: PodToken]?>(nil)

    public init(storage: any LocalStateStorage) { self.storage = storage }

    /// Every stored token (read from the store once).
    public func all() async throws -> [String: PodToken] {
        if let c = cache.withLock({ $0 }) { return c }
        var loaded: [String: PodToken] = [:]
        let decoder = JSONDecoder()
        for (k, v) in try await storage.localState(kind: Self.kind) {
            // A damaged entry is dropped: the pod is given a fresh token.
            if let t = try? decoder.decode(PodToken.self, from: Data(v)) { loaded[k] = t }
        }
        return cache.withLock { c in
            if let c { return c }
            c = loaded
            return loaded
        }
    }

    public func get(_ key: String) async throws -> PodToken? { try await all()[key] }

    /// Stores (or, with nil, removes) tokens; the cache follows only once the store committed.
    public func save(_ entries: [String: PodToken?]) async throws {
        _ = try await all()
        let encoder = JSONEncoder()
        var raw: [String: [UInt8]?] = [:]
        // updateValue: a nil value must stay in the map (it deletes the entry), not remove the key.
        for (k, t) in entries { raw.updateValue(try t.map { Array(try encoder.encode($0)) }, forKey: k) }
        try await storage.saveLocalState(kind: Self.kind, raw)
        cache.withLock { c in for (k, t) in entries { c?[k] = t } }
    }

    /// Forgets every token of a pod (it left the node).
    public func remove(podUID: String) async throws {
        let keys = try await all().keys.filter { $0.hasPrefix(podUID + "/") }
        guard !keys.isEmpty else { return }
        try await save(Dictionary(uniqueKeysWithValues: keys.map { ($0, PodToken?.none) }))
    }

    /// The stored token equal to `presented` that has not expired (compared in constant time).
    public func find(_ presented: String, now: Date = Date()) async throws -> PodToken? {
        let given = Array(presented.utf8)
        var found: PodToken?
        for t in try await all().values {
            let mine = Array(t.token.utf8)
            guard mine.count == given.count else { continue }
            var diff: UInt8 = 0
            for i in 0..<mine.count { diff |= mine[i] ^ given[i] }
            if diff == 0 { found = t }
        }
        guard let found, found.expires > now else { return nil }
        return found
    }
}
