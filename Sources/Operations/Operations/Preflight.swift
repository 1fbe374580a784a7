import ComponentConfig
import NIOCore
import NIOPosix

/// Checks made before joining or starting, so a failure names the problem instead of timing out
/// somewhere later.
public enum Preflight {
    /// Opens (and closes) a TCP connection; throws a message that says what to check.
    public static func reach(host: String, port: Int, what: String, timeout: TimeAmount = .seconds(5)) async throws {
        do {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(timeout)
                .connect(host: host, port: port).get()
            try? await channel.close()
        } catch {
            let text = "\(error)"
            let why = text.contains("Connection refused") ? "connection refused"
                : text.lowercased().contains("timeout") || text.contains("timedOut") ? "no answer within \(timeout.nanoseconds / 1_000_000_000) s" : text
            throw ConfigError("""
                cannot reach \(host):\(port) (\(what)): \(why)
                check that the cloud runs (`swiftedge init` or `systemctl status cloudcore`), that \(host) is its advertised address, \
                and that port \(port) is open between this node and the cloud (firewall, security group)
                """)
        }
    }
}
