import Foundation
import Testing
@testable import KubeAuth

/// kube's static token file and bootstrap tokens.
@Suite struct TokenFileTests {
    @Test func staticTokenFile() throws {
        let users = try StaticTokenFile.parse("""
            # token,user,uid,groups
            abc123,alice,u-1,"dev,ops"
            def456 , bob , u-2

            """)
        #expect(users["abc123"] == UserInfo(username: "alice", uid: "u-1", groups: ["dev", "ops", "system:authenticated"]))
        #expect(users["def456"] == UserInfo(username: "bob", uid: "u-2", groups: ["system:authenticated"]))
        #expect(throws: StaticTokenFile.Malformed.self) { _ = try StaticTokenFile.parse("tok,alice") }
        #expect(throws: StaticTokenFile.Malformed.self) { _ = try StaticTokenFile.parse("t,a,1\nt,b,2") }
    }

    @Test func bootstrapTokens() {
        #expect(BootstrapToken.split("abcdef.0123456789abcdef")! == ("abcdef", "0123456789abcdef"))
        for bad in ["abcdef", "ABCDEF.0123456789abcdef", "abcde.0123456789abcdef", "abcdef.0123456789abcdef.x"] { #expect(BootstrapToken.split(bad) == nil) }
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        var data = ["token-id": "abcdef", "token-secret": "0123456789abcdef", "usage-bootstrap-authentication": "true",
                    "expiration": "2027-02-01T00:00:00Z", "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token"]
        let user = try? BootstrapToken.user(id: "abcdef", secret: "0123456789abcdef", data: data, now: now).get()
        #expect(user == UserInfo(username: "system:bootstrap:abcdef",
                                 groups: ["system:bootstrappers", "system:bootstrappers:kubeadm:default-node-token", "system:authenticated"]))
        func refused(_ d: [String: String], secret: String = "0123456789abcdef") -> Bool {
            if case .failure = BootstrapToken.user(id: "abcdef", secret: secret, data: d, now: now) { return true } else { return false }
        }
        #expect(refused(data, secret: "0123456789abcdee"))
        data["expiration"] = "2026-01-01T00:00:00Z"
        #expect(refused(data))
        data["expiration"] = nil
        data["auth-extra-groups"] = "system:masters"
        #expect(refused(data))
        data["auth-extra-groups"] = nil
        data["usage-bootstrap-authentication"] = nil
        #expect(refused(data))
    }
}
