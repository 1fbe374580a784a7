import AsyncSupport
import Foundation
import Logging
import PKI
import ServiceLifecycle
import X509

/// Renews the node certificate at a random point between 70 % and 90 % of its lifetime (as
/// KubeEdge's certificate manager does), with exponential back-off on failure, then hands the new
/// credentials to `apply` (EdgeHub reconnects with them).
public struct CertificateRotation: Service {
    let bootstrap: NodeBootstrap
    let initial: NodeCredentials
    let apply: @Sendable (NodeCredentials) async throws -> Void
    let logger: Logger
    let retryBase: Duration
    let retryMax: Duration

    public init(bootstrap: NodeBootstrap, credentials: NodeCredentials, logger: Logger,
                retryBase: Duration = .seconds(5), retryMax: Duration = .seconds(300),
                apply: @escaping @Sendable (NodeCredentials) async throws -> Void)
    {
        self.bootstrap = bootstrap; self.initial = credentials; self.logger = logger
        self.retryBase = retryBase; self.retryMax = retryMax; self.apply = apply
    }

    /// When to renew a certificate valid from `notBefore` to `notAfter`: 70–90 % of the way.
    public static func deadline(notBefore: Date, notAfter: Date, fraction: Double = Double.random(in: 0.7...0.9)) -> Date {
        notBefore.addingTimeInterval(notAfter.timeIntervalSince(notBefore) * fraction)
    }

    public func run() async throws {
        let initial = self.initial
        try? await cancelWhenGracefulShutdown {
            var current = initial
            while !Task.isCancelled {
                let cert = try Certificate(pemEncoded: current.certificatePEM)
                let due = Self.deadline(notBefore: cert.notValidBefore, notAfter: cert.notValidAfter)
                logger.info("node certificate renewal scheduled", metadata: [
                    "notAfter": "\(cert.notValidAfter)", "renewAt": "\(due)"])
                let wait = max(0, due.timeIntervalSinceNow)
                try await Task.sleep(for: .milliseconds(Int64(wait * 1000)))
                var backoff = Backoff(base: retryBase, max: retryMax, jitter: 1...1)
                while true {
                    do {
                        let renewed = try await bootstrap.renew(current)
                        try await apply(renewed)
                        current = renewed
                        break
                    } catch is CancellationError {
                        throw CancellationError()
                    } catch {
                        let delay = backoff.next()
                        logger.warning("node certificate renewal failed; retrying", metadata: [
                            "error": "\(error)", "retryIn": "\(delay)", "notAfter": "\(cert.notValidAfter)"])
                        try await Task.sleep(for: delay)
                    }
                }
            }
        }
    }
}
