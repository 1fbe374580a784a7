import KubeAPI

/// Who a request comes from, as kube-apiserver's authenticators describe it
/// (`authentication.k8s.io/v1 UserInfo`).
public struct UserInfo: Sendable, Hashable {
    public var username: String
    public var uid: String
    public var groups: [String]
    public var extra: [String: [String]]

    public init(username: String, uid: String = "", groups: [String] = [], extra: [String: [String]] = [:]) {
        self.username = username; self.uid = uid; self.groups = groups; self.extra = extra
    }

    /// The groups every authenticated user is in.
    public static let authenticatedGroup = "system:authenticated"
    /// Members are allowed everything, without consulting RBAC (kube's superuser group).
    public static let mastersGroup = "system:masters"
    public static let anonymousUser = "system:anonymous"
    public static let unauthenticatedGroup = "system:unauthenticated"

    /// The built-in administrator (the admin token's and the admin client certificate's identity).
    public static let admin = UserInfo(username: "kubernetes-admin", groups: [mastersGroup, authenticatedGroup])

    public var isMaster: Bool { groups.contains(Self.mastersGroup) }

    /// `{username, uid, groups, extra}` as the review kinds carry it.
    public var json: JSON {
        var o: [String: JSON] = ["username": .string(username), "groups": .array(groups.map { .string($0) })]
        if !uid.isEmpty { o["uid"] = .string(uid) }
        if !extra.isEmpty { o["extra"] = .object(extra.mapValues { .array($0.map { .string($0) }) }) }
        return .object(o)
    }

    /// Adds `system:authenticated` when missing (every authenticated identity carries it).
    public func authenticated() -> UserInfo {
        var u = self
        if username != Self.anonymousUser && !u.groups.contains(Self.authenticatedGroup) { u.groups.append(Self.authenticatedGroup) }
        return u
    }
}

/// ServiceAccount user names: `system:serviceaccount:<namespace>:<name>`.
public enum ServiceAccountName {
    public static let prefix = "system:serviceaccount:"

    public static func username(namespace: String, name: String) -> String { prefix + namespace + ":" + name }

    /// The groups of a ServiceAccount identity.
    public static func groups(namespace: String) -> [String] {
        ["system:serviceaccounts", "system:serviceaccounts:" + namespace, UserInfo.authenticatedGroup]
    }

    /// Namespace and name from a ServiceAccount user name, nil for other users.
    public static func split(_ username: String) -> (namespace: String, name: String)? {
        guard username.hasPrefix(prefix) else { return nil }
        let parts = username.dropFirst(prefix.count).split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
        return (String(parts[0]), String(parts[1]))
    }
}

/// Node identities: `system:node:<name>` in group `system:nodes` (the edge nodes' client certificates).
public enum NodeIdentity {
    public static let group = "system:nodes"
    public static let prefix = "system:node:"

    /// The node a user is, nil for other users.
    public static func nodeName(of user: UserInfo) -> String? {
        guard user.groups.contains(group), user.username.hasPrefix(prefix), user.username.count > prefix.count else { return nil }
        return String(user.username.dropFirst(prefix.count))
    }
}
