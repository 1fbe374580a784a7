import CloudEdgeProtocol
import CRI
import ContainerRuntime
import Foundation
import KubeAPI
import StreamTunnel

/// One line of a CRI log file: `<RFC 3339 nano time> <stdout|stderr> <F|P> <content>`.
struct CRILogLine: Equatable {
    var time: String
    var stream: String
    /// False for a partial line (`P`): the content continues in the next line.
    var full: Bool
    var content: ArraySlice<UInt8>

    init?(_ line: ArraySlice<UInt8>) {
        let parts = line.split(separator: UInt8(ascii: " "), maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count >= 3 else { return nil }
        time = String(decoding: parts[0], as: UTF8.self)
        stream = String(decoding: parts[1], as: UTF8.self)
        full = parts[2].first != UInt8(ascii: "P")
        content = parts.count == 4 ? parts[3] : []
    }

    /// Seconds since the epoch of the line's time (to the second).
    var seconds: Int64? { KubeTime.parse(time)?.seconds }
}

extension Edged: StreamProvider {
    /// Serves a stream the cloud opened on this node (`kubectl logs`).
    public func serve(_ request: StreamRequest, input: TunnelStreamData, write: @escaping @Sendable ([UInt8]) async throws -> Void) async throws {
        switch request.kind {
        case .log: try await streamLog(request, write: write)
        case .exec, .attach: try await execOrAttach(request, input: input, write: write)
        case .stats: try await streamStats(write: write)
        case .portforward: try await portForward(request, input: input, write: write)
        case .relay: throw TunnelError("relay streams are opened by nodes, not served by them")
        }
    }

    /// Reads the container's log file where the CRI wrote it and sends it as `kubectl logs`
    /// shows it: content only (or with timestamps), last `tailLines` lines, lines since
    /// `sinceSeconds`, at most `limitBytes`; with `follow`, new lines as they are written until
    /// the container stops or the cloud closes the stream.
    func streamLog(_ request: StreamRequest, write: @escaping @Sendable ([UInt8]) async throws -> Void) async throws {
        guard let record = try await store.get(ResourceRef(namespace: request.namespace, kind: .pod, name: request.pod).description) else {
            throw TunnelError("pod \(request.pod) is not on node \(configuration.nodeName)")
        }
        let uid = record.uid
        let containers = try await runtime.listContainers(labels: [RuntimeLabels.podUID: uid, RuntimeLabels.containerName: request.container,
                                                                   RuntimeLabels.node: configuration.nodeName])
            .sorted { $0.metadata.attempt > $1.metadata.attempt }
        let index = request.log.previous ? 1 : 0
        guard containers.count > index else {
            if request.log.previous { throw TunnelError("previous terminated container \"\(request.container)\" in pod \"\(request.pod)\" not found") }
            throw TunnelError("container \"\(request.container)\" in pod \"\(request.pod)\" is waiting to start: ContainerCreating")
        }
        let id = containers[index].id
        let status = try await runtime.containerStatus(id)
        guard !status.logPath.isEmpty, let file = FileHandle(forReadingAtPath: status.logPath) else {
            throw TunnelError("no log file for container \"\(request.container)\" in pod \"\(request.pod)\"")
        }
        defer { try? file.close() }
        let o = request.log
        let since = o.sinceSeconds.map { KubeTime.now().seconds - $0 }
        var budget = o.limitBytes ?? Int64.max
        var pending: [UInt8] = []
        /// Formats complete lines; returns the output and leaves an unfinished line in `pending`.
        func format(_ bytes: [UInt8]) -> [[UInt8]] {
            pending += bytes
            var lines: [[UInt8]] = []
            var start = pending.startIndex
            while let nl = pending[start...].firstIndex(of: UInt8(ascii: "\n")) {
                if let line = CRILogLine(pending[start..<nl]) {
                    if let since, let s = line.seconds, s < since {} else {
                        var out: [UInt8] = []
                        if o.timestamps { out += Array(line.time.utf8) + [UInt8(ascii: " ")] }
                        out += line.content
                        if line.full { out.append(UInt8(ascii: "\n")) }
                        lines.append(out)
                    }
                }
                start = nl + 1
            }
            pending.removeSubrange(..<start)
            return lines
        }
        func send(_ lines: some Collection<[UInt8]>) async throws -> Bool {
            var chunk: [UInt8] = [1]
            for l in lines {
                let take = Int(min(Int64(l.count), budget))
                chunk += l.prefix(take)
                budget -= Int64(take)
                if chunk.count > 32 * 1024 { try await write(chunk); chunk = [1] }
                if budget == 0 { break }
            }
            if chunk.count > 1 { try await write(chunk) }
            return budget > 0
        }
        var lines = format(Array(file.readDataToEndOfFile()))
        if let tail = o.tailLines { lines = Array(lines.suffix(Int(tail))) }
        guard try await send(lines) else { return }
        guard o.follow else { return }
        var idle = 0
        while !Task.isCancelled {
            let more = file.readDataToEndOfFile()
            if !more.isEmpty {
                idle = 0
                guard try await send(format(Array(more))) else { return }
                continue
            }
            idle += 1
            // Check every second whether the container still runs; stop once it does not.
            if idle % 5 == 0 {
                let state = try? await runtime.containerStatus(id).state
                if state != .containerRunning {
                    _ = try await send(format(Array(file.readDataToEndOfFile())))
                    return
                }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }
}
