import ComponentConfig
import Foundation
import Operations
import PKI
import Testing

/// init/join/reset as procedures, in temporary directories: every refusal names its cause and
/// leaves nothing behind; reset removes what a set-up left and nothing else.
@Suite struct ProceduresTests {
    func withTemp(_ body: (String) async throws -> Void) async throws {
        let dir = NSTemporaryDirectory() + "ops-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await body(dir)
    }

    func failure(_ body: () async throws -> Void) async -> String? {
        do { try await body() } catch { return "\(error)" }
        return nil
    }

    func paths(_ dir: String) -> InstallPaths { InstallPaths(configDir: dir + "/etc", systemdDir: dir + "/units", noSystemd: true) }

    @Test func joinRefusesBadInputBeforeTouchingAnything() async throws {
        try await withTemp { dir in
            let ca = try CertificateAuthority.generate(commonName: "test-ca")
            let valid = try JoinToken.issue(ca: ca, expires: Date().addingTimeInterval(3600)).string
            let expired = try JoinToken.issue(ca: ca, expires: Date().addingTimeInterval(-60)).string
            func join(_ ipport: String = "127.0.0.1:1", token: String = valid, labels: [String] = []) -> EdgeJoin {
                var j = EdgeJoin(cloudcoreIpport: ipport, token: token, paths: paths(dir))
                j.edgenodeName = "n1"
                j.dataDir = dir + "/data"
                j.labels = labels
                return j
            }
            #expect(await failure { try await join("no-port").run() }?.contains("is not ip:port") == true)
            #expect(await failure { try await join(labels: ["site=shop,broken"]).run() }?.contains("label \"broken\" is not key=value") == true)
            #expect(await failure { try await join(token: "not-a-token").run() }?.contains("malformed token") == true)
            #expect(await failure { try await join(token: expired).run() }?.contains("run `swiftedge gettoken`") == true)
            // Nothing was written by any of them.
            #expect(!FileManager.default.fileExists(atPath: paths(dir).edgeConfig))
            #expect(!FileManager.default.fileExists(atPath: dir + "/data"))
            // A machine that joined before is refused unless forced.
            try FileManager.default.createDirectory(atPath: dir + "/data/certs", withIntermediateDirectories: true)
            #expect(await failure { try await join().run() }?.contains("has joined before") == true)
            // Forced, it goes on to the network check (port 1 is closed) and says what to check.
            var forced = join()
            forced.force = true
            #expect(await failure { try await forced.run() }?.contains("cannot reach 127.0.0.1:1") == true)
        }
    }

    @Test func initRefusesToOverwriteACloud() async throws {
        try await withTemp { dir in
            try ConfigFile.save(CloudCoreConfig.defaults, path: paths(dir).cloudConfig)
            var i = CloudInit(paths: paths(dir))
            i.dataDir = dir + "/cloud"
            i.timeout = 1
            #expect(await failure { try await i.run() }?.contains("already set up") == true)
            #expect(!FileManager.default.fileExists(atPath: dir + "/cloud"))
        }
    }

    @Test func resetRemovesTheCloudsFilesAndRefusesDirectoriesNearTheRoot() async throws {
        try await withTemp { dir in
            let p = paths(dir)
            // Nothing set up: nothing happens.
            try await NodeReset(role: nil, paths: p).run()

            var config = CloudCoreConfig.defaults
            config.swiftedge?.dataDir = dir + "/cloud"
            try ConfigFile.save(config, path: p.cloudConfig)
            try FileManager.default.createDirectory(atPath: dir + "/cloud/pki", withIntermediateDirectories: true)
            FileManager.default.createFile(atPath: dir + "/cloud/state.db", contents: Data("x".utf8))
            FileManager.default.createFile(atPath: dir + "/keep", contents: Data("y".utf8))
            try await NodeReset(role: .cloud, paths: p).run()
            #expect(!FileManager.default.fileExists(atPath: dir + "/cloud"))
            #expect(!FileManager.default.fileExists(atPath: p.cloudConfig))
            #expect(FileManager.default.fileExists(atPath: dir + "/keep"))

            // A data directory next to / is never removed.
            config.swiftedge?.dataDir = "/srv"
            try ConfigFile.save(config, path: p.cloudConfig)
            #expect(await failure { try await NodeReset(role: .cloud, paths: p).run() }?.contains("too close to /") == true)
        }
    }

    @Test func resetOfAnEdgeRemovesOnlyThatNodesFiles() async throws {
        try await withTemp { dir in
            let p = paths(dir)
            var config = EdgeCoreConfig.defaults
            config.swiftedge?.dataDir = dir + "/edge"
            config.swiftedge?.podLogsDir = dir + "/logs"
            config.database?.dataSource = dir + "/edge/edge.db"
            config.modules?.edged?.tailoredKubeletConfig?.containerRuntimeEndpoint = ""
            try ConfigFile.save(config, path: p.edgeConfig)
            for d in ["/edge/certs", "/edge/pods/uid-1", "/logs/default_web_uid-1", "/logs/unrelated"] {
                try FileManager.default.createDirectory(atPath: dir + d, withIntermediateDirectories: true)
            }
            FileManager.default.createFile(atPath: dir + "/edge/edge.db", contents: Data())
            FileManager.default.createFile(atPath: dir + "/edge/other-file", contents: Data())
            try await NodeReset(role: .edge, paths: p).run()
            #expect(!FileManager.default.fileExists(atPath: dir + "/edge/certs"))
            #expect(!FileManager.default.fileExists(atPath: dir + "/edge/edge.db"))
            #expect(!FileManager.default.fileExists(atPath: dir + "/edge/pods"))
            #expect(!FileManager.default.fileExists(atPath: dir + "/logs/default_web_uid-1"))
            #expect(FileManager.default.fileExists(atPath: dir + "/logs/unrelated"))  // not a pod's log directory
            #expect(FileManager.default.fileExists(atPath: dir + "/edge/other-file"))  // not the node's
            #expect(!FileManager.default.fileExists(atPath: p.edgeConfig))
        }
    }
}
