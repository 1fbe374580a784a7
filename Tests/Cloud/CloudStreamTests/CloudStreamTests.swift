import StreamTunnel
import Testing
@testable import CloudStream
@testable import SPDYStreams

/// The kubelet API pieces of the cloud stream server, without I/O.
@Suite struct CloudStreamTests {
    @Test func resourceMetricsText() {
        let u = NodeUsage(timestamp: "2026-11-26T00:00:00Z", windowSeconds: 10, cpuNanoCores: 5_000_000, memoryBytes: 1_000_000,
                          pods: [.init(namespace: "default", name: "web", uid: "u1", containers: [
                              .init(name: "main", cpuNanoCores: 1, memoryBytes: 300, cpuTotalNanoSeconds: 1_500_000_000, startTimeSeconds: 1795650000),
                              .init(name: "side", cpuNanoCores: 1, memoryBytes: 200, cpuTotalNanoSeconds: 500_000_000),
                          ])], cpuTotalNanoSeconds: 42_000_000_000)
        let text = ResourceMetrics.text(u)
        let ms = " 1795651200000"
        #expect(text.contains("# TYPE node_cpu_usage_seconds_total counter\nnode_cpu_usage_seconds_total 42.0" + ms))
        #expect(text.contains("node_memory_working_set_bytes 1000000" + ms))
        #expect(text.contains(#"container_cpu_usage_seconds_total{container="main",namespace="default",pod="web"} 1.5"# + ms))
        #expect(text.contains(#"container_start_time_seconds{container="main",namespace="default",pod="web"} 1795650000.0"# + ms))
        #expect(!text.contains(#"container_start_time_seconds{container="side""#))
        #expect(text.contains(#"pod_cpu_usage_seconds_total{namespace="default",pod="web"} 2.0"# + ms))
        #expect(text.contains(#"pod_memory_working_set_bytes{namespace="default",pod="web"} 500"# + ms))
        #expect(text.hasSuffix("scrape_error 0\n"))
    }

    @Test func kubeletURLs() {
        let (path, query) = KubeletStreamServer.parse("/exec/default/shell/main?command=sh&command=-c&command=echo+hi%3B+exit+3&input=1&output=1&tty=1")
        #expect(path == ["exec", "default", "shell", "main"])
        let r = KubeletStreamServer.execRequest(.exec, path, query)
        #expect(r?.exec == ExecOptions(command: ["sh", "-c", "echo hi; exit 3"], stdin: true, stdout: true, stderr: false, tty: true))
        #expect(r?.container == "main" && r?.namespace == "default" && r?.pod == "shell")
        #expect(KubeletStreamServer.execRequest(.exec, ["exec", "default", "shell"], []) == nil)
    }

    @Test func expectedStreams() {
        var s = SPDYExec.Streams()
        let o = ExecOptions(command: ["true"], stdin: true, stdout: true, stderr: true, tty: false)
        s.error = 1; s.stdout = 3
        #expect(!s.complete(for: o))
        s.stdin = 5; s.stderr = 7
        #expect(s.complete(for: o))
        // With a terminal: no stderr, but a resize stream.
        let t = ExecOptions(command: ["sh"], stdin: true, stdout: true, stderr: true, tty: true)
        var u = SPDYExec.Streams(error: 1, stdin: 3, stdout: 5)
        #expect(!u.complete(for: t))
        u.resize = 7
        #expect(u.complete(for: t))
    }
}
