import APIServer
import Foundation
import GRDB
import KubeAPI
import Logging
import Testing
@testable import ObjectStore

/// kube's encryption at rest through the store: what reaches the database file is the provider's
/// format (`k8s:enc:aesgcm:v1:<key>:…`), reads come back as written, a restart with a new first key
/// re-encrypts, a missing key or provider stops the store with the reason.
@Suite struct EncryptionAtRestTests {
    static func config(_ providers: String) throws -> EncryptionConfiguration {
        try EncryptionConfiguration(document: Array("""
            apiVersion: apiserver.config.k8s.io/v1
            kind: EncryptionConfiguration
            resources:
            - resources: [secrets]
              providers:
            \(providers)
            """.utf8))
    }

    static let k1 = Data(repeating: 1, count: 32).base64EncodedString()
    static let k2 = Data(repeating: 2, count: 16).base64EncodedString()

    func open(_ path: String, _ c: EncryptionConfiguration?) throws -> SQLiteObjectStore {
        var configuration = SQLiteStoreConfiguration(path: path)
        configuration.transformer = c
        return try SQLiteObjectStore(configuration: configuration, indexer: { _, _ in IndexedAttributes() }, logger: Logger(label: "test"))
    }

    /// The raw column values of a key (the object row and every event row).
    func raw(_ path: String, _ key: String) throws -> [String] {
        let q = try DatabaseQueue(path: path)
        return try q.read { db in
            try [Data](Data.fetchAll(db, sql: "SELECT value FROM objects WHERE key = ?", arguments: [key]))
                + Data.fetchAll(db, sql: "SELECT value FROM events WHERE key = ?", arguments: [key])
        }.map { String(decoding: $0, as: UTF8.self) }
    }

    @Test func secretsAreEncryptedRotatedAndRefusedWithoutTheirKey() async throws {
        let path = tempPath()
        let secret: JSON = ["apiVersion": "v1", "kind": "Secret", "metadata": ["name": "db", "namespace": "ns"], "data": ["password": "czNjcjN0"]]
        let sk = "/core/secrets/ns/db", ck = "/core/configmaps/ns/plain"
        do {
            let store = try open(path, try Self.config("  - aesgcm: {keys: [{name: k1, secret: \(Self.k1)}]}\n  - identity: {}"))
            _ = try await store.write(sk) { _ in .put(secret) }
            _ = try await store.write(ck) { _ in .put(cm("plain", "visible")) }
        }
        #expect(try raw(path, sk).allSatisfy { $0.hasPrefix("k8s:enc:aesgcm:v1:k1:") && !$0.contains("czNjcjN0") })
        #expect(try raw(path, ck).allSatisfy { $0.contains("visible") })  // not listed: stored as it is

        // Rotation: k2 first, k1 still readable; the restart rewrites the value with k2.
        do {
            let store = try open(path, try Self.config("  - aescbc: {keys: [{name: k2, secret: \(Self.k2)}]}\n  - aesgcm: {keys: [{name: k1, secret: \(Self.k1)}]}"))
            #expect(try await store.get(sk)?.decode()["data"]["password"] == "czNjcjN0")
        }
        #expect(try raw(path, sk).allSatisfy { $0.hasPrefix("k8s:enc:aescbc:v1:k2:") })
        // k1 is gone now: the store still opens, and reads.
        do {
            let store = try open(path, try Self.config("  - aescbc: {keys: [{name: k2, secret: \(Self.k2)}]}"))
            #expect(try await store.get(sk)?.decode()["data"]["password"] == "czNjcjN0")
        }
        // Without the key (or with encryption switched off), nothing half-read: the store refuses to open, naming the key.
        #expect { _ = try open(path, try Self.config("  - aesgcm: {keys: [{name: k3, secret: \(Self.k1)}]}")) } throws: { e in
            "\(e)".contains("/core/secrets/ns/db") && "\(e)".contains("encrypted with key \"k2\"")
        }
        #expect { _ = try open(path, nil) } throws: { e in "\(e)".contains("/core/secrets/ns/db") && "\(e)".contains("no encryption configuration") }
        // A value moved to another key does not decrypt (the storage key is bound into AES-GCM).
        let c = try Self.config("  - aesgcm: {keys: [{name: k1, secret: \(Self.k1)}]}")
        let sealed = try c.toStorage(Array("x".utf8), key: sk)
        #expect(throws: (any Error).self) { _ = try c.fromStorage(sealed, key: "/core/secrets/ns/other") }
        #expect(try c.fromStorage(sealed, key: sk).data == Array("x".utf8))
    }

    @Test func badConfigurationsAreRefusedWithTheReason() throws {
        func refusal(_ providers: String) -> String {
            do { _ = try Self.config(providers); return "accepted" } catch { return "\(error)" }
        }
        #expect(refusal("  - aesgcm: {keys: [{name: k1, secret: \(Data(repeating: 1, count: 20).base64EncodedString())}]}").contains("a key of 20 bytes"))
        #expect(refusal("  - secretbox: {keys: [{name: k1, secret: \(Self.k1)}]}").contains("secretbox provider is not supported"))
        #expect(refusal("  - aesgcm: {keys: []}").contains("at least one key"))
        #expect(refusal("  - aesgcm: {keys: [{name: k1, secret: '!!'}]}").contains("must be base64"))
        #expect(refusal("  - rot13: {}").contains("unknown provider rot13"))
    }
}
