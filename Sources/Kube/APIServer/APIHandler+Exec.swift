import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import KubeAPI
import PKI
import Logging
import NIOCore
import StreamTunnel

extension APIHandler {
    /// The WebSocket subprotocols of `pods/exec` and `pods/attach` this server speaks (kubectl
    /// 1.30+ offers v5 first; v4 has no stdin-close signal).
    static let execProtocols = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
    static let podType = BuiltinResources.all.first { $0.resource == "pods" }!

    /// The container a request names, or the pod's only one; kube-apiserver's errors otherwise.
    static func chooseContainer(pod name: String, names: [String], requested: String?) throws(StatusError) -> String {
        if let c = requested, !c.isEmpty {
            guard names.contains(c) else { throw StatusError.badRequest("container \(c) is not valid for pod \(name)") }
            return c
        }
        guard names.count == 1 else {
            throw StatusError.badRequest("a container name must be specified for pod \(name), choose one of: [\(names.joined(separator: " "))]")
        }
        return names[0]
    }

    /// What a `pods/exec` or `pods/attach` request asks for, checked as kube-apiserver checks it.
    /// `command` holds every `command=` value (the query repeats it).
    func streamTarget(kind: StreamRequest.Kind, namespace: String, name: String, query: [String: String],
                      command: [String]) async throws(StatusError) -> (node: String, request: StreamRequest)
    {
        guard let o = await store.get(Self.podType.storageKey(namespace: namespace, name: name)), let pod = try? o.decode() else {
            throw StatusError.notFound("pods", group: "", name: name)
        }
        guard let node = pod["spec"]["nodeName"].stringValue, !node.isEmpty else {
            throw StatusError.badRequest("pod \(name) does not have a host assigned")
        }
        let container = try Self.chooseContainer(pod: name, names: (pod["spec"]["containers"].arrayValue ?? []).compactMap { $0["name"].stringValue },
                                                 requested: query["container"])
        if pod["status"]["phase"].stringValue == "Succeeded" || pod["status"]["phase"].stringValue == "Failed" {
            throw StatusError.badRequest("cannot exec into a container in a completed pod; current phase is \(pod["status"]["phase"].stringValue ?? "")")
        }
        func flag(_ k: String) -> Bool { query[k] == "true" || query[k] == "1" }
        let options = ExecOptions(command: command, stdin: flag("stdin"), stdout: flag("stdout"), stderr: flag("stderr"), tty: flag("tty"))
        if kind == .exec, command.isEmpty { throw StatusError.badRequest("you must specify at least one command for the container") }
        if !options.stdin, !options.stdout, !options.stderr {
            throw StatusError.badRequest("you must specify at least 1 of stdin, stdout, stderr")
        }
        return (node, StreamRequest(kind: kind, namespace: namespace, pod: name, container: container, exec: options))
    }

    /// The plain-HTTP answer to `pods/exec|attach` (no WebSocket upgrade was made): the error
    /// the request deserves, else "upgrade required".
    func streamWithoutUpgrade(_ req: APIRequest, _ t: RequestTarget, _ kind: StreamRequest.Kind) async throws -> APIResponse {
        let command = req.query["command"].map { [$0] } ?? []
        _ = try await streamTarget(kind: kind, namespace: t.namespace ?? "default", name: t.name ?? "", query: req.query, command: command)
        throw StatusError.badRequest("Upgrade request required: pods/\(kind.rawValue) is served as a WebSocket (v5.channel.k8s.io or v4.channel.k8s.io)")
    }

    /// Decides whether an HTTP request is a `pods/exec` or `pods/attach` WebSocket upgrade this
    /// server serves (through the node's stream tunnel). Anything it does not accept goes the
    /// normal way and gets the usual error (401, 404, 400 with the reason, …).
    public func execUpgrade(_ request: HTTPRequest, clientIdentity: CertificateIdentity? = nil) async -> ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>> {
        guard let streams = options.podStreams, let target = request.path else { return .dontUpgrade }
        let pathAndQuery = target.split(separator: "?", maxSplits: 1)
        let parts = pathAndQuery[0].split(separator: "/").map(String.init)
        guard parts.count == 7, parts[0] == "api", parts[1] == "v1", parts[2] == "namespaces", parts[4] == "pods",
              let kind = StreamRequest.Kind(rawValue: parts[6]), kind == .exec || kind == .attach || kind == .portforward
        else { return .dontUpgrade }
        var headers: [String: String] = [:]
        for f in request.headerFields { headers[f.name.canonicalName] = f.value }
        let offered = (headers["sec-websocket-protocol"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        do {
            // A WebSocket upgrade for exec/attach/port-forward needs `create` (kube since 1.31).
            _ = try await admit(APIRequest(method: "GET", path: String(pathAndQuery[0]), headers: headers, clientIdentity: clientIdentity), upgrade: true)
        } catch {
            // Refused: upgraded anyway so the client reads the Status on the error channel (see below).
            let status = (error as? StatusError) ?? StatusError(.internalError, "\(error)")
            guard let first = offered.first, let protocolName = HTTPField.Name("Sec-WebSocket-Protocol") else { return .dontUpgrade }
            var refusal = HTTPFields()
            refusal[protocolName] = first
            return .upgrade(refusal) { _, outbound, _ in
                try await outbound.writeBinaryMessage(ByteBuffer(bytes: [3] + status.status.serialized()))
                try await outbound.close(.normalClosure, reason: nil)
            }
        }
        if kind == .portforward {
            return await portForwardUpgrade(namespace: parts[3], name: parts[5], offered: offered, streams: streams)
        }
        guard let chosen = Self.execProtocols.first(where: offered.contains) else { return .dontUpgrade }
        let pairs = pathAndQuery.count > 1 ? URLQuery.pairs(pathAndQuery[1]) : []
        let command = pairs.filter { $0.key == "command" }.map(\.value)  // repeated, in order
        var query: [String: String] = [:]
        for (k, v) in pairs { query[k] = v }
        let namespace = parts[3], name = parts[5]
        let logger = self.logger
        var fields = HTTPFields()
        fields[HTTPField.Name("Sec-WebSocket-Protocol")!] = chosen
        let node: String, streamRequest: StreamRequest
        do {
            (node, streamRequest) = try await streamTarget(kind: kind, namespace: namespace, name: name, query: query, command: command)
        } catch {
            // Upgraded anyway, so the client shows the reason: a request with an `Upgrade` header
            // that is not upgraded gets no HTTP answer from the server library (NIO's upgrade
            // handler), and kubectl's SPDY fallback would then report only "unexpected EOF".
            return .upgrade(fields) { _, outbound, _ in
                try await outbound.writeBinaryMessage(ByteBuffer(bytes: [3] + error.status.serialized()))
                try await outbound.close(.normalClosure, reason: nil)
            }
        }
        return .upgrade(fields) { inbound, outbound, _ in
            logger.info("pod stream", metadata: ["kind": "\(kind.rawValue)", "pod": "\(namespace)/\(name)",
                                                 "container": "\(streamRequest.container)", "node": "\(node)", "protocol": "\(chosen)"])
            let stream: TunnelStream
            do { stream = try await streams.open(node: node, streamRequest) } catch {
                try await Self.sendStatus(outbound, failure: "cannot reach node \"\(node)\": \(error)")
                try await outbound.close(.normalClosure, reason: nil)
                return
            }
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        // The client's data (stdin, resize, v5's close signal) goes to the node frame
                        // by frame, so a large stdin write (kubectl sends it as one fragmented
                        // message) is streamed, never assembled. The channel byte starts a message;
                        // its continuation frames belong to the same channel. kubectl sends binary
                        // frames, the Python client text frames for str data.
                        var channel: UInt8?
                        for try await frame in inbound {
                            var bytes = Array(frame.data.readableBytesView)
                            if frame.opcode != .continuation {
                                channel = bytes.isEmpty ? nil : bytes.removeFirst()
                            }
                            if let channel, !bytes.isEmpty || frame.opcode != .continuation {
                                try await stream.send(channel: channel, bytes)
                            }
                        }
                        await stream.close()
                    }
                    for try await chunk in stream.data {
                        try await outbound.writeBinaryMessage(ByteBuffer(bytes: chunk))
                    }
                    group.cancelAll()
                }
            } catch {
                try? await Self.sendStatus(outbound, failure: "\(error)")
            }
            try? await outbound.close(.normalClosure, reason: nil)
        }
    }

    /// `pods/portforward` as kubectl ≥ 1.31 asks for it (SPDY tunnelled in a WebSocket).
    func portForwardUpgrade(namespace: String, name: String, offered: [String], streams: any PodStreams) async
        -> ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>>
    {
        guard offered.contains(PortForwardSession.webSocketProtocol) else { return .dontUpgrade }
        guard let o = await store.get(Self.podType.storageKey(namespace: namespace, name: name)), let pod = try? o.decode(),
              let node = pod["spec"]["nodeName"].stringValue, !node.isEmpty
        else { return .dontUpgrade }
        let logger = self.logger
        var fields = HTTPFields()
        fields[HTTPField.Name("Sec-WebSocket-Protocol")!] = PortForwardSession.webSocketProtocol
        return .upgrade(fields) { inbound, outbound, _ in
            logger.info("pod stream", metadata: ["kind": "portforward", "pod": "\(namespace)/\(name)", "node": "\(node)"])
            do {
                try await PortForwardSession.serve(inbound: inbound, outbound: outbound, node: node, namespace: namespace, pod: name,
                                                   streams: streams, logger: logger)
            } catch {
                logger.info("port-forward session ended", metadata: ["pod": "\(namespace)/\(name)", "error": "\(error)"])
            }
            try? await outbound.close(.normalClosure, reason: nil)
        }
    }

    /// A failure Status on the error channel (3), as kubelet reports one.
    static func sendStatus(_ outbound: WebSocketOutboundWriter, failure message: String) async throws {
        let status: JSON = ["metadata": [:], "status": "Failure", "message": .string(message), "reason": "InternalError"]
        try await outbound.writeBinaryMessage(ByteBuffer(bytes: [3] + status.serialized()))
    }
}
