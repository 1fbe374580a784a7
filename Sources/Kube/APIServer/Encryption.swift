import Crypto
import Foundation
import KubeAPI
import ObjectStore
import _CryptoExtras

/// kube-apiserver's encryption at rest (`--encryption-provider-config`, an
/// `apiserver.config.k8s.io/v1` EncryptionConfiguration): for each group of resources an ordered
/// list of providers — the first encrypts what is written, every one of them can read. Values are
/// stored as kube stores them: `k8s:enc:aesgcm:v1:<key name>:` + nonce + sealed box (the storage
/// key authenticated with it), `k8s:enc:aescbc:v1:<key name>:` + IV + CBC ciphertext; `identity`
/// stores plaintext and reads anything without a prefix. A value read with anything but the first
/// provider's first key is rewritten with it when the server starts (key rotation: put the new key
/// first, restart; once restarted, the old key can go). `secretbox` and `kms` are refused with the reason.
public struct EncryptionConfiguration: StorageTransformer, Sendable {
    enum Provider: Sendable {
        case identity
        case aesgcm([(name: String, key: [UInt8])])
        case aescbc([(name: String, key: [UInt8])])

        var prefix: String {
            switch self {
            case .identity: ""
            case .aesgcm: "k8s:enc:aesgcm:v1:"
            case .aescbc: "k8s:enc:aescbc:v1:"
            }
        }
    }

    struct Rule: Sendable {
        /// `(group, resource)`; `*` for any.
        var resources: [(group: String, resource: String)]
        var providers: [Provider]
    }

    var rules: [Rule]

    /// Reads the configuration document (YAML or JSON); a clear error names what is wrong.
    public init(document: [UInt8]) throws(StatusError) {
        let doc = try BodyDecoding.decode(document, contentType: "application/yaml")
        func fail(_ why: String) -> StatusError { StatusError.badRequest("encryption configuration: \(why)") }
        guard doc["kind"].stringValue == "EncryptionConfiguration",
              ["apiserver.config.k8s.io/v1", "apiserver.config.k8s.io/v1beta1"].contains(doc["apiVersion"].stringValue ?? "")
        else { throw fail("expected kind EncryptionConfiguration of apiVersion apiserver.config.k8s.io/v1") }
        guard let list = doc["resources"].arrayValue, !list.isEmpty else { throw fail("resources: at least one entry is required") }
        var parsed: [Rule] = []
        for (i, entry) in list.enumerated() {
            var resources: [(String, String)] = []
            for r in entry["resources"].arrayValue ?? [] {
                guard let s = r.stringValue, !s.isEmpty else { throw fail("resources[\(i)].resources must be resource names") }
                // `secrets` (core), `deployments.apps`, `*.apps`, `*.` (every core resource), `*.*` (everything).
                let dot = s.firstIndex(of: ".")
                resources.append(dot.map { (String(s[s.index(after: $0)...]), String(s[..<$0])) } ?? ("", s))
            }
            guard !resources.isEmpty else { throw fail("resources[\(i)].resources: at least one resource is required") }
            var providers: [Provider] = []
            for (j, p) in (entry["providers"].arrayValue ?? []).enumerated() {
                let at = "resources[\(i)].providers[\(j)]"
                guard let kind = p.objectValue?.keys.first, p.objectValue?.count == 1 else { throw fail("\(at) must name exactly one provider") }
                func keys(_ sizes: Set<Int>) throws(StatusError) -> [(name: String, key: [UInt8])] {
                    var out: [(name: String, key: [UInt8])] = []
                    for (n, k) in (p[kind]["keys"].arrayValue ?? []).enumerated() {
                        guard let name = k["name"].stringValue, !name.isEmpty, !name.contains(":") else {
                            throw fail("\(at).\(kind).keys[\(n)].name is required (and may not contain ':')")
                        }
                        guard let secret = k["secret"].stringValue, let bytes = Data(base64Encoded: secret) else {
                            throw fail("\(at).\(kind).keys[\(n)].secret must be base64")
                        }
                        guard sizes.contains(bytes.count) else {
                            throw fail("\(at).\(kind).keys[\(n)]: a key of \(bytes.count) bytes; \(kind) takes \(sizes.sorted().map(String.init).joined(separator: ", ")) bytes")
                        }
                        if out.contains(where: { $0.name == name }) { throw fail("\(at).\(kind): key name \(name) used twice") }
                        out.append((name, Array(bytes)))
                    }
                    guard !out.isEmpty else { throw fail("\(at).\(kind).keys: at least one key is required") }
                    return out
                }
                switch kind {
                case "identity": providers.append(.identity)
                case "aesgcm": providers.append(.aesgcm(try keys([16, 24, 32])))
                case "aescbc": providers.append(.aescbc(try keys([16, 24, 32])))
                case "secretbox", "kms":
                    throw fail("\(at): the \(kind) provider is not supported by SwiftEdge; use aesgcm or aescbc")
                default: throw fail("\(at): unknown provider \(kind)")
                }
            }
            guard !providers.isEmpty else { throw fail("resources[\(i)].providers: at least one provider is required") }
            parsed.append(Rule(resources: resources, providers: providers))
        }
        rules = parsed
    }

    /// The rule for a storage key (`/core/secrets/ns/name`, `/apps/deployments/ns/name`): the first
    /// that names its resource.
    func rule(for key: String) -> Rule? {
        let parts = key.split(separator: "/", maxSplits: 2)
        guard parts.count >= 2 else { return nil }
        let group = parts[0] == "core" ? "" : String(parts[0]), resource = String(parts[1])
        return rules.first { r in
            r.resources.contains { ($0.group == "*" || $0.group == group) && ($0.resource == "*" || $0.resource == resource) }
        }
    }

    public func toStorage(_ data: [UInt8], key: String) throws -> [UInt8] {
        guard let rule = rule(for: key), let first = rule.providers.first else { return data }
        switch first {
        case .identity: return data
        case .aesgcm(let keys):
            let sealed = try AES.GCM.seal(data, using: SymmetricKey(data: keys[0].key), nonce: AES.GCM.Nonce(), authenticating: Array(key.utf8))
            guard let combined = sealed.combined else { throw EncryptionError("AES-GCM produced no combined box") }
            return Array((first.prefix + keys[0].name + ":").utf8) + Array(combined)
        case .aescbc(let keys):
            var rng = SystemRandomNumberGenerator()
            let ivBytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let ct = try AES._CBC.encrypt(data, using: SymmetricKey(data: keys[0].key), iv: try AES._CBC.IV(ivBytes: ivBytes))
            return Array((first.prefix + keys[0].name + ":").utf8) + ivBytes + Array(ct)
        }
    }

    public func fromStorage(_ data: [UInt8], key: String) throws -> (data: [UInt8], stale: Bool) {
        let encrypted = data.starts(with: Array("k8s:enc:".utf8))
        guard let rule = rule(for: key) else {
            if encrypted { throw EncryptionError("the value is encrypted, but the encryption configuration has no provider for this resource any more") }
            return (data, false)
        }
        for (i, provider) in rule.providers.enumerated() {
            switch provider {
            case .identity:
                if !encrypted { return (data, i != 0) }
            case .aesgcm(let keys), .aescbc(let keys):
                let prefix = Array(provider.prefix.utf8)
                guard data.starts(with: prefix) else { continue }
                let rest = data.dropFirst(prefix.count)
                guard let colon = rest.firstIndex(of: UInt8(ascii: ":")) else { throw EncryptionError("malformed encrypted value (no key name)") }
                let name = String(decoding: rest[..<colon], as: UTF8.self)
                guard let k = keys.firstIndex(where: { $0.name == name }) else { continue }
                let body = rest[rest.index(after: colon)...]
                let plain: [UInt8]
                if case .aesgcm = provider {
                    let box = try AES.GCM.SealedBox(combined: body)
                    plain = Array(try AES.GCM.open(box, using: SymmetricKey(data: keys[k].key), authenticating: Array(key.utf8)))
                } else {
                    guard body.count >= 32 else { throw EncryptionError("malformed AES-CBC value (shorter than IV and one block)") }
                    let iv = try AES._CBC.IV(ivBytes: body.prefix(16))
                    plain = Array(try AES._CBC.decrypt(body.dropFirst(16), using: SymmetricKey(data: keys[k].key), iv: iv))
                }
                return (plain, i != 0 || k != 0)
            }
        }
        if !encrypted {
            throw EncryptionError("the value is not encrypted and the identity provider is not configured for it (add `- identity: {}` last to read existing data; a restart then encrypts it)")
        }
        let name = data.split(separator: UInt8(ascii: ":"), maxSplits: 5).dropFirst(4).first.map { String(decoding: $0, as: UTF8.self) } ?? "?"
        throw EncryptionError("the value was encrypted with key \"\(name)\", which the encryption configuration no longer has")
    }
}

/// An encryption-at-rest failure, with its reason.
public struct EncryptionError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
