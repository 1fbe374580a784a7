import ComponentConfig
import Foundation
import Testing
@testable import Operations

/// The config files: KubeEdge's layout read and written, partial files, clear errors.
@Suite struct ConfigTests {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ops-\(UUID().uuidString)").path

    @Test func defaultsRoundTrip() throws {
        let path = dir + "/config/edgecore.yaml"
        try ConfigFile.save(EdgeCoreConfig.defaults, path: path)
        #expect(try ConfigFile.load(EdgeCoreConfig.self, path: path) == EdgeCoreConfig.defaults)
        let cloud = dir + "/config/cloudcore.yaml"
        try ConfigFile.save(CloudCoreConfig.defaults, path: cloud)
        #expect(try ConfigFile.load(CloudCoreConfig.self, path: cloud) == CloudCoreConfig.defaults)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)  // may hold a token
    }

    @Test func kubeEdgeFileWithKeysSwiftEdgeDoesNotUse() throws {
        // An upstream edgecore.yaml excerpt: unknown keys are ignored, known ones read.
        let text = """
            apiVersion: edgecore.config.kubeedge.io/v1alpha2
            kind: EdgeCore
            database:
              aliasName: default
              dataSource: /var/lib/kubeedge/edgecore.db
              driverName: sqlite3
            modules:
              edgeHub:
                enable: true
                heartbeat: 15
                httpServer: https://192.0.2.1:10002
                messageBurst: 60
                websocket:
                  enable: true
                  server: 192.0.2.1:10000
              edged:
                tailoredKubeletConfig:
                  containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
                  cgroupDriver: cgroupfs
                tailoredKubeletFlag:
                  hostnameOverride: shop-7
                  nodeLabels: {site: shop}
              eventBus:
                mqttMode: 2
            """
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = dir + "/edgecore.yaml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let c = try ConfigFile.load(EdgeCoreConfig.self, path: path)
        #expect(c.modules?.edgeHub?.websocket?.server == "192.0.2.1:10000")
        #expect(c.modules?.edged?.tailoredKubeletFlag?.hostnameOverride == "shop-7")
        #expect(c.modules?.edged?.tailoredKubeletFlag?.nodeLabels == ["site": "shop"])
        #expect(c.database?.dataSource == "/var/lib/kubeedge/edgecore.db")
    }

    @Test func badFilesSayWhereAndWhy() throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = dir + "/bad.yaml"
        try "modules:\n  edgeHub:\n    heartbeat: often\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect { try ConfigFile.load(EdgeCoreConfig.self, path: path) } throws: { e in
            "\(e)".contains("modules.edgeHub.heartbeat") && "\(e)".contains(path)
        }
        try "modules: [unclosed\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect { try ConfigFile.load(EdgeCoreConfig.self, path: path) } throws: { e in "\(e)".contains(path) }
        #expect { try ConfigFile.load(EdgeCoreConfig.self, path: dir + "/missing.yaml") } throws: { e in "\(e)".contains("cannot read") }
    }

    @Test func hostPort() {
        #expect(splitHostPort("192.0.2.1:10000")! == ("192.0.2.1", 10000))
        #expect(splitHostPort("https://cloud.example:10002")! == ("cloud.example", 10002))
        #expect(splitHostPort("[2001:db8::1]:10000")! == ("2001:db8::1", 10000))
        #expect(splitHostPort("nohost") == nil && splitHostPort(":10") == nil && splitHostPort("h:99999") == nil)
    }

    @Test func unitFile() {
        let p = ManagedProcess(name: "edgecore", description: "SwiftEdge edge node", executable: "/usr/local/bin/swiftedge",
                               arguments: ["edge", "--config", "/etc/kube edge/config/edgecore.yaml"], logPath: "/tmp/x.log",
                               pidPath: "/tmp/x.pid", unitDirectory: "/etc/systemd/system")
        #expect(p.unitPath == "/etc/systemd/system/edgecore.service")
        #expect(p.unitText.contains("ExecStart=/usr/local/bin/swiftedge edge --config \"/etc/kube edge/config/edgecore.yaml\"\n"))
        #expect(p.unitText.contains("Restart=always") && p.unitText.contains("WantedBy=multi-user.target"))
    }
}
