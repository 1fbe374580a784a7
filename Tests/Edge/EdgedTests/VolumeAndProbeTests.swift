import CRI
import Foundation
import KubeAPI
import NIOCore
import NIOPosix
import NIOSSL
import PKI
import Testing
@testable import Edged

/// Volumes kube-apiserver puts in every pod (the projected `kube-api-access-*` one) and the
/// downward API, written on the node; HTTPS probes against a TLS server.
@Suite struct VolumeAndProbeTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("edged-vol-\(UUID().uuidString)").path

    func builder(_ objects: [String: JSON]) -> RuntimeConfigBuilder {
        RuntimeConfigBuilder(nodeName: "n1", nodeIP: "192.0.2.10", podsDirectory: directory + "/pods",
                             logDirectory: directory + "/logs", lookup: { objects[$0] })
    }

    /// The volume kube-apiserver's ServiceAccount admission adds, as it adds it.
    static let kubeAPIAccess: JSON = [
        "name": "kube-api-access-f7nwm",
        "projected": ["defaultMode": 420, "sources": [
            ["serviceAccountToken": ["expirationSeconds": 3607, "path": "token"]],
            ["configMap": ["name": "kube-root-ca.crt", "items": [["key": "ca.crt", "path": "ca.crt"]]]],
            ["downwardAPI": ["items": [["fieldRef": ["apiVersion": "v1", "fieldPath": "metadata.namespace"], "path": "namespace"]]]],
        ]],
    ]

    func pod(volumes: [JSON], mounts: [JSON]) throws -> PodModel {
        try PodModel([
            "metadata": ["name": "p", "namespace": "shop", "uid": "uid-v", "labels": ["app": "web", "tier": "a\"b"]],
            "spec": ["volumes": .array(volumes),
                     "containers": [["name": "main", "image": "busybox", "volumeMounts": .array(mounts),
                                     "resources": ["limits": ["cpu": "500m", "memory": "64Mi"]]]]],
        ])
    }

    func read(_ path: String) -> String? { FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) } }

    @Test func kubeAPIAccessVolumeIsWrittenAndMounted() async throws {
        let b = builder(["shop/configmap/kube-root-ca.crt": ["data": ["ca.crt": "-----BEGIN CERTIFICATE-----\nX\n"]]])
        let p = try pod(volumes: [Self.kubeAPIAccess],
                        mounts: [["name": "kube-api-access-f7nwm", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true]])
        let mounts = try await b.mounts(p, p.containers[0])
        let m = try #require(mounts.first)
        #expect(m.containerPath == "/var/run/secrets/kubernetes.io/serviceaccount" && m.readonly)
        #expect(read(m.hostPath + "/ca.crt") == "-----BEGIN CERTIFICATE-----\nX\n")
        #expect(read(m.hostPath + "/namespace") == "shop")
        #expect(read(m.hostPath + "/token") == "")
        try? FileManager.default.removeItem(atPath: directory)
    }

    @Test func missingRootCAIsAConfigErrorNamingIt() async throws {
        let p = try pod(volumes: [Self.kubeAPIAccess], mounts: [["name": "kube-api-access-f7nwm", "mountPath": "/sa"]])
        await #expect(throws: ConfigError.self) { _ = try await builder([:]).mounts(p, p.containers[0]) }
        do { _ = try await builder([:]).mounts(p, p.containers[0]) } catch {
            #expect("\(error)".contains("kube-root-ca.crt"))
        }
    }

    @Test func downwardAPIFilesAndPathsThatLeaveTheVolumeAreRefused() async throws {
        let d: JSON = ["name": "info", "downwardAPI": ["items": [
            ["path": "labels", "fieldRef": ["fieldPath": "metadata.labels"]],
            ["path": "name", "fieldRef": ["fieldPath": "metadata.name"]],
            ["path": "cpu", "resourceFieldRef": ["containerName": "main", "resource": "limits.cpu", "divisor": "1m"]],
            ["path": "mem", "resourceFieldRef": ["containerName": "main", "resource": "limits.memory", "divisor": "1Mi"]],
        ]]]
        let p = try pod(volumes: [d], mounts: [["name": "info", "mountPath": "/info"]])
        let host = try #require(try await builder([:]).mounts(p, p.containers[0]).first?.hostPath)
        #expect(read(host + "/labels") == "app=\"web\"\ntier=\"a\\\"b\"")
        #expect(read(host + "/name") == "p")
        #expect(read(host + "/cpu") == "500")
        #expect(read(host + "/mem") == "64")
        let escape: JSON = ["name": "bad", "projected": ["sources": [["downwardAPI": ["items": [["path": "../../x", "fieldRef": ["fieldPath": "metadata.name"]]]]]]]]
        let bad = try pod(volumes: [escape], mounts: [["name": "bad", "mountPath": "/bad"]])
        await #expect(throws: ConfigError.self) { _ = try await builder([:]).mounts(bad, bad.containers[0]) }
        #expect(!FileManager.default.fileExists(atPath: directory + "/pods/uid-v/volumes/x"))
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// As kubelet: each container its own PID namespace (it shared the pod's: `ps` showed the pause
    /// process as PID 1), unless the pod asks to share one.
    @Test func containersGetTheirOwnPIDNamespace() async throws {
        let p = try pod(volumes: [], mounts: [])
        let c = try await builder([:]).containerConfig(p, p.containers[0], attempt: 0, podIP: "")
        #expect(c.linux.securityContext.namespaceOptions.pid == .container)
        #expect(c.linux.securityContext.namespaceOptions.network == .pod && c.linux.securityContext.namespaceOptions.ipc == .pod)
        var shared = p
        shared.shareProcessNamespace = true
        let s = try await builder([:]).containerConfig(shared, shared.containers[0], attempt: 0, podIP: "")
        #expect(s.linux.securityContext.namespaceOptions.pid == .pod)
    }

    @Test func httpsProbesReachATLSServer() async throws {
        let ca = try CertificateAuthority.generate(commonName: "probe-test-ca")
        let leaf = try ca.issue(commonName: "probe-test", ipAddresses: ["127.0.0.1"], server: true, client: false, days: 1)
        let chain = try NIOSSLCertificate.fromPEMBytes(Array(leaf.certificatePEM.utf8)).map { NIOSSLCertificateSource.certificate($0) }
        let key = try NIOSSLPrivateKey(bytes: Array(leaf.privateKeyPEM.utf8), format: .pem)
        let context = try NIOSSLContext(configuration: .makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key)))
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try ch.pipeline.syncOperations.addHandler(StatusResponder())
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { server.close(promise: nil) }
        let port = try #require(server.localAddress?.port)
        let runner = ProbeRunner(runtime: FakeRuntime())
        let https = try #require(try ProbeSpec(["httpGet": ["scheme": "HTTPS", "port": .int(Int64(port)), "path": "/healthz"]], container: "main"))
        #expect(await runner.run(https, containerID: "c", host: "127.0.0.1", ports: []) == .success)
        // The same server spoken to in plain HTTP fails (so the success above is TLS's).
        let plain = try #require(try ProbeSpec(["httpGet": ["port": .int(Int64(port)), "path": "/healthz"], "timeoutSeconds": 2], container: "main"))
        #expect(await runner.run(plain, containerID: "c", host: "127.0.0.1", ports: []) != .success)
    }
}

/// Answers every request with 200 and closes.
final class StatusResponder: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let body = "ok"
        let response = "HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: response))).whenComplete { _ in context.close(promise: nil) }
    }
}
