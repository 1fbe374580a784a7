import AsyncSupport
import ContainerRuntime
import KubeAPI
import NIOCore
import NIOPosix
import NIOSSL

/// The outcome of one probe run.
enum ProbeOutcome: Equatable { case success, failure(String) }

/// Runs probes: exec through the CRI (`ExecSync`), HTTP GET and TCP connect from the node.
struct ProbeRunner: Sendable {
    let runtime: any ContainerRuntime
    /// HTTPS probes verify no certificate, as kubelet's (the container's certificate is its own business).
    let tls: NIOSSLContext?

    init(runtime: any ContainerRuntime) {
        self.runtime = runtime
        var c = TLSConfiguration.makeClientConfiguration()
        c.certificateVerification = .none
        tls = try? NIOSSLContext(configuration: c)
    }

    func run(_ probe: ProbeSpec, containerID: String, host: String, ports: [Core.ContainerPort]) async -> ProbeOutcome {
        do {
            switch probe.action {
            case .exec(let command):
                let r = try await runtime.execSync(containerID, command: command, timeoutSeconds: probe.timeoutSeconds)
                if r.exitCode == 0 { return .success }
                let out = String(decoding: (r.stdout + r.stderr).prefix(256), as: UTF8.self)
                return .failure("command \(command) exited with \(r.exitCode): \(out)")
            case .tcp(let h, let port):
                let p = try resolve(port, ports)
                try await withTimeout(probe.timeoutSeconds) { try await Self.connect(host: h ?? host, port: p) { _, _ in } }
                return .success
            case .http(let scheme, let h, let port, let path, let headers):
                guard scheme == "HTTP" || scheme == "HTTPS" else { return .failure("unknown probe scheme \(scheme)") }
                let p = try resolve(port, ports)
                let target = h ?? host
                if scheme == "HTTPS" && tls == nil { return .failure("TLS is unavailable for HTTPS probes") }
                let tlsContext = scheme == "HTTPS" ? tls : nil
                let status = try await withTimeout(probe.timeoutSeconds) {
                    try await Self.connect(host: target, port: p, tls: tlsContext) { i, o in try await Self.get(i, o, host: target, port: p, path: path, headers: headers) }
                }
                return (200..<400).contains(status) ? .success : .failure("HTTP probe failed with statuscode: \(status)")
            }
        } catch {
            return .failure("\(error)")
        }
    }

    func resolve(_ port: ProbeSpec.PortRef, _ ports: [Core.ContainerPort]) throws -> Int {
        switch port {
        case .number(let n): return n
        case .name(let name):
            guard let p = ports.first(where: { $0.name == name })?.containerPort else {
                throw ProbeError(message: "no container port named \(name)")
            }
            return Int(p)
        }
    }

    struct ProbeError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    func withTimeout<T: Sendable>(_ seconds: Int64, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withTimeLimit(.seconds(seconds), expired: ProbeError(message: "timed out after \(seconds)s"), body)
    }

    static func connect<T: Sendable>(host: String, port: Int, tls: NIOSSLContext? = nil,
                                     _ body: (NIOAsyncChannelInboundStream<ByteBuffer>, NIOAsyncChannelOutboundWriter<ByteBuffer>) async throws -> T) async throws -> T
    {
        let sni = host.contains(":") || host.allSatisfy({ $0.isNumber || $0 == "." }) ? nil : host
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(5))
            .connect(host: host, port: port) { ch in
                ch.eventLoop.makeCompletedFuture {
                    if let tls {
                        try ch.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: sni))
                    }
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch)
                }
            }
        return try await channel.executeThenClose { i, o in try await body(i, o) }
    }

    /// Sends one GET and returns the response's status code.
    static func get(_ inbound: NIOAsyncChannelInboundStream<ByteBuffer>, _ outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>,
                    host: String, port: Int, path: String, headers: [(String, String)]) async throws -> Int
    {
        var request = "GET \(path.isEmpty ? "/" : path) HTTP/1.1\r\nHost: \(host):\(port)\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n"
        for (k, v) in headers { request += "\(k): \(v)\r\n" }
        request += "\r\n"
        do {
            try await outbound.write(ByteBuffer(string: request))
            var head: [UInt8] = []
            for try await var chunk in inbound {
                head += chunk.readBytes(length: chunk.readableBytes) ?? []
                if let nl = head.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: head[..<nl], as: UTF8.self).split(separator: " ")
                    guard line.count >= 2, line[0].hasPrefix("HTTP/"), let code = Int(line[1]) else {
                        throw ProbeError(message: "malformed HTTP response")
                    }
                    return code
                }
                if head.count > 8192 { break }
            }
            throw ProbeError(message: "connection closed before an HTTP status line")
        }
    }
}
