import Foundation
import KubeAuth
import Testing

/// ServiceAccount JWTs: what is signed verifies; anything altered, expired, early, for another
/// audience or from another key does not.
@Suite struct ServiceAccountTokenTests {
    let issuer: ServiceAccountTokenIssuer
    let claims: ServiceAccountClaims

    init() throws {
        issuer = try ServiceAccountTokenIssuer(privateKeyPEM: ServiceAccountTokenIssuer.generateKeyPEM())
        claims = ServiceAccountClaims(issuer: issuer.issuer, audiences: [issuer.issuer], issuedAt: 1_000_000, lifetime: 600, jti: "j1",
                                      kubernetes: .init(namespace: "team", serviceaccount: .init(name: "bot", uid: "u1"), pod: .init(name: "p", uid: "pu")))
    }

    @Test func signedTokenVerifiesWithItsClaims() throws {
        let token = try issuer.issue(claims)
        #expect(token.split(separator: ".").count == 3)
        let back = try issuer.verify(token, audiences: [issuer.issuer], now: 1_000_100)
        #expect(back == claims)
        #expect(back.sub == "system:serviceaccount:team:bot" && back.exp - back.iat == 600)
        // The payload is the JSON clients read (kubectl's and the test's decoders).
        let payload = try #require(Base64URL.decode(token.split(separator: ".")[1]))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any])
        #expect((object["kubernetes.io"] as? [String: Any])?["namespace"] as? String == "team")
        #expect(issuer.isCandidate(token))
    }

    @Test func refusals() throws {
        let token = try issuer.issue(claims)
        #expect(throws: TokenError.expired) { try issuer.verify(token, audiences: [issuer.issuer], now: 1_000_600) }
        #expect(throws: TokenError.notYetValid) { try issuer.verify(token, audiences: [issuer.issuer], now: 999_000) }
        #expect(throws: TokenError.wrongAudience) { try issuer.verify(token, audiences: ["https://other"], now: 1_000_100) }
        var parts = token.split(separator: ".").map(String.init)
        var forged = claims
        forged.kubernetes.serviceaccount.name = "admin"
        let encoder = JSONEncoder()
        parts[1] = Base64URL.encode(Array(try encoder.encode(forged)))
        #expect(throws: TokenError.badSignature) { try issuer.verify(parts.joined(separator: "."), audiences: [issuer.issuer], now: 1_000_100) }
        let other = try ServiceAccountTokenIssuer(privateKeyPEM: ServiceAccountTokenIssuer.generateKeyPEM())
        #expect(throws: TokenError.badSignature) { try other.verify(token, audiences: [issuer.issuer], now: 1_000_100) }
        #expect(!other.isCandidate(token))
        #expect(throws: TokenError.malformed) { try issuer.verify("not.a.jwt", audiences: [issuer.issuer], now: 0) }
        #expect(throws: TokenError.malformed) { try issuer.verify("abc", audiences: [issuer.issuer], now: 0) }
    }

    @Test func jwksPublishesTheKey() {
        let keys = issuer.jwks["keys"].arrayValue ?? []
        #expect(keys.count == 1 && keys[0]["kid"].stringValue == issuer.keyID && keys[0]["crv"].stringValue == "P-256")
        #expect((keys[0]["x"].stringValue.flatMap { Base64URL.decode($0) })?.count == 32)
    }
}
