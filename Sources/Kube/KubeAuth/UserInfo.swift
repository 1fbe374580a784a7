import Foundation
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

/// kube-apiserver's `--token-auth-file`: CSV lines `token,user,uid[,"group1,group2"]`; blank
/// lines and `#` comments skipped. A malformed line is an error naming it.
public enum StaticTokenFile {
    public struct Malformed: Error, CustomStringConvertible {
        public var description: String
    }

    public static func parse(_ text: String) throws(Malformed) -> [String: UserInfo] {
        var out: [String: UserInfo] = [:]
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let fields = csvFields(line)
            guard fields.count >= 3, !fields[0].isEmpty, !fields[1].isEmpty else {
                throw Malformed(description: "line \(n + 1): expected token,user,uid[,\"group1,group2\"]")
            }
            guard out[fields[0]] == nil else { throw Malformed(description: "line \(n + 1): duplicate token") }
            let groups = fields.count > 3 ? fields[3].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } : []
            out[fields[0]] = UserInfo(username: fields[1], uid: fields[2], groups: groups).authenticated()
        }
        return out
    }

    /// Comma-separated fields, a field in double quotes may hold commas (`""` is a quote).
    static func csvFields(_ line: String) -> [String] {
        var fields: [String] = [], current = "", quoted = false
        var chars = Array(line)[...]
        while let c = chars.popFirst() {
            switch c {
            case "\"" where quoted && chars.first == "\"": current.append("\""); chars = chars.dropFirst()
            case "\"": quoted.toggle()
            case "," where !quoted: fields.append(current.trimmingCharacters(in: .whitespaces)); current = ""
            default: current.append(c)
            }
        }
        fields.append(current.trimmingCharacters(in: .whitespaces))
        return fields
    }
}

/// kube's bootstrap tokens (`<id>.<secret>`, 6 and 16 of `[a-z0-9]`), kept in Secrets
/// `kube-system/bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token`.
public enum BootstrapToken {
    public static let secretType = "bootstrap.kubernetes.io/token"
    public static let group = "system:bootstrappers"

    /// The id and secret of a token shaped like one, nil otherwise.
    public static func split(_ token: String) -> (id: String, secret: String)? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        func ok(_ s: Substring, _ n: Int) -> Bool { s.count == n && s.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) } }
        guard parts.count == 2, ok(parts[0], 6), ok(parts[1], 16) else { return nil }
        return (String(parts[0]), String(parts[1]))
    }

    /// The user a bootstrap token Secret's decoded `data` makes of `token` at `now`, or why not
    /// (kube's bootstrap authenticator: usage allowed, secret equal, not expired, extra groups
    /// `system:bootstrappers:*` only).
    public static func user(id: String, secret: String, data: [String: String], now: Date) -> Result<UserInfo, BootstrapRefusal> {
        guard data["token-id"] == id, let stored = data["token-secret"] else { return .failure(.init("the secret does not hold this token id")) }
        guard constantTimeEqual(stored, secret) else { return .failure(.init("the token secret does not match")) }
        guard data["usage-bootstrap-authentication"] == "true" else { return .failure(.init("the token may not be used for authentication")) }
        if let exp = data["expiration"] {
            let f = ISO8601DateFormatter()
            guard let date = f.date(from: exp) else { return .failure(.init("the expiration \(exp) is not RFC 3339")) }
            guard date > now else { return .failure(.init("the token expired at \(exp)")) }
        }
        var groups = [group]
        for g in (data["auth-extra-groups"] ?? "").split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !g.isEmpty {
            guard g.hasPrefix(group + ":") else { return .failure(.init("extra group \(g) is not a system:bootstrappers group")) }
            groups.append(g)
        }
        return .success(UserInfo(username: "system:bootstrap:" + id, groups: groups).authenticated())
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var d: UInt8 = 0
        for i in 0..<x.count { d |= x[i] ^ y[i] }
        return d == 0
    }
}

/// Why a bootstrap token was not accepted (logged; the client sees 401).
public struct BootstrapRefusal: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ d: String) { description = d }
}
