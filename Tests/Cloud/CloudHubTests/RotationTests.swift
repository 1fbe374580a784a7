import CloudEdgeProtocol
import CloudHub
import EdgeHub
import Foundation
import PKI
import Synchronization
import Testing
import X509

extension ChannelTests {
    /// Certificates of 3 s: the node renews at 70–90 % of the lifetime with its current
    /// certificate (no token), reconnects with the new one, and keeps working after the first
    /// certificate expired. Renewing for another node, or starting with an expired certificate
    /// and no token, is refused with a clear message.
    @Test func nodeCertificateIsRenewedBeforeItExpires() async throws {
        try await withCloud(certificateValidity: .seconds(3)) { cloud in
            let dir = Self.tempDir()
            let token = try JoinToken.issue(ca: cloud.ca, expires: Date().addingTimeInterval(3600))
            let bootstrap = NodeBootstrap(certServer: "127.0.0.1:\(cloud.certPort)", nodeName: "node-a", directory: dir, logger: Self.logger)
            let first = try await bootstrap.join(token: token)
            let firstCert = try Certificate(pemEncoded: first.certificatePEM)
            let oldDir = Self.tempDir()
            for f in ["ca.crt", "server.crt", "server.key"] { try FileManager.default.copyItem(atPath: "\(dir)/\(f)", toPath: "\(oldDir)/\(f)") }

            // Another node's name with node-a's certificate: refused.
            let impostor = NodeBootstrap(certServer: "127.0.0.1:\(cloud.certPort)", nodeName: "node-b", directory: Self.tempDir(), logger: Self.logger)
            do { _ = try await impostor.renew(first); Issue.record("renewed another node's certificate") } catch {
                #expect("\(error)".contains("may not renew the certificate of node node-b"), "\(error)")
            }

            var cfg = EdgeHubConfiguration(cloudHost: "127.0.0.1", nodeName: "node-a", credentials: first)
            cfg.cloudPort = cloud.hubPort
            cfg.reconnectBase = .milliseconds(20)
            cfg.reconnectMax = .milliseconds(100)
            let edge = try EdgeHub(configuration: cfg, logger: Self.logger) { _ in }
            let renewals = Mutex<[(at: Date, credentials: NodeCredentials)]>([])
            let rotation = CertificateRotation(bootstrap: bootstrap, credentials: first, logger: Self.logger,
                                               retryBase: .milliseconds(100)) { renewed in
                renewals.withLock { $0.append((Date(), renewed)) }
                try await edge.updateCredentials(renewed)
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await edge.run() }
                group.addTask { try await rotation.run() }
                _ = await nextEvent(cloud.events) { if case .connected("node-a") = $0 { return true }; return false }
                // The renewal makes the node reconnect.
                _ = await nextEvent(cloud.events) { if case .connected("node-a") = $0 { return true }; return false }
                // When the renewed certificate arrived (the reconnect that follows may take a moment
                // on a loaded machine; what matters is that the old certificate was still valid).
                let (renewedAt, second) = try #require(renewals.withLock { $0.first })
                let lifetime = firstCert.notValidAfter.timeIntervalSince(firstCert.notValidBefore)
                let elapsed = renewedAt.timeIntervalSince(firstCert.notValidBefore)
                #expect(elapsed >= 0.69 * lifetime && elapsed < firstCert.notValidAfter.timeIntervalSince(firstCert.notValidBefore),
                        "renewed after \(elapsed) s of a \(lifetime) s lifetime")
                let secondCert = try Certificate(pemEncoded: second.certificatePEM)
                #expect(secondCert.serialNumber != firstCert.serialNumber)
                #expect(secondCert.notValidAfter > firstCert.notValidAfter)
                #expect(try String(contentsOfFile: "\(dir)/server.crt", encoding: .utf8) == second.certificatePEM)
                #expect(bootstrap.existing()?.certificatePEM == second.certificatePEM)

                // Past the first certificate's expiry the node still connects (with the new one).
                let untilExpiry = firstCert.notValidAfter.timeIntervalSinceNow
                if untilExpiry > 0 { try await Task.sleep(for: .milliseconds(Int(untilExpiry * 1000) + 100)) }
                await cloud.hub.disconnect("node-a", reason: "after expiry of the first certificate")
                let back = await nextEvent(cloud.events) {
                    if case .connected("node-a") = $0 { return true }
                    if case .refused = $0 { return true }
                    return false
                }
                guard case .connected = back else { Issue.record("not reconnected: \(String(describing: back))"); return }
                group.cancelAll()
            }
            // A node holding only the expired certificate must join again.
            let stale = NodeBootstrap(certServer: "127.0.0.1:\(cloud.certPort)", nodeName: "node-a", directory: oldDir, logger: Self.logger)
            do { _ = try await stale.credentials(token: nil); Issue.record("an expired certificate was used") } catch {
                #expect("\(error)".contains("expired") && "\(error)".contains("swiftedge gettoken"), "\(error)")
            }
        }
    }
}
