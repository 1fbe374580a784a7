import KubeAPI
import Testing
@testable import Edged

/// `kubectl top` figures from successive samples: rates over the window, parsing of /proc.
@Suite struct UsageSamplerTests {
    func sample(at seconds: Int64, node: UInt64, containers: [String: UInt64]) -> UsageSample {
        let base = ContinuousClock.Instant.now
        return UsageSample(time: base.advanced(by: .seconds(seconds)), wallTime: .now(), nodeCPUNanoSeconds: node, nodeMemoryBytes: 1 << 30,
                           containers: containers.mapValues { cpu in
                               UsageSample.Container(namespace: "default", pod: "p", podUID: "u1", name: "c", cpuNanoSeconds: cpu, memoryBytes: 4096)
                           })
    }

    @Test func ratesOverTheWindow() {
        var s = UsageSampler()
        let t0 = sample(at: 0, node: 10_000_000_000, containers: ["a": 1_000_000_000])
        s.record(t0)
        #expect(s.latest == nil)  // one sample is no rate
        var t1 = t0
        t1.time = t0.time.advanced(by: .seconds(2))
        t1.nodeCPUNanoSeconds += 1_000_000_000  // half a core over 2 s
        t1.containers["a"]!.cpuNanoSeconds += 200_000_000  // 0.1 core
        s.record(t1)
        let u = try! #require(s.latest)
        #expect(u.cpuNanoCores == 500_000_000)
        #expect(u.memoryBytes == 1 << 30)
        // Rates for kubectl top; the cumulative counters too (kubelet's /metrics/resource).
        #expect(u.pods.count == 1 && u.pods[0].containers == [.init(name: "c", cpuNanoCores: 100_000_000, memoryBytes: 4096,
                                                                    cpuTotalNanoSeconds: 1_200_000_000)])
        #expect(u.cpuTotalNanoSeconds == 11_000_000_000)
        #expect(abs(u.windowSeconds - 2) < 0.001)
    }

    @Test func samplesCloserThanASecondAreNotARate() {
        var s = UsageSampler()
        let t0 = sample(at: 0, node: 0, containers: [:])
        s.record(t0)
        var t1 = t0
        t1.time = t0.time.advanced(by: .milliseconds(300))
        t1.nodeCPUNanoSeconds = 5_000_000_000
        s.record(t1)
        #expect(s.latest == nil)
    }

    @Test func restartedContainerCounterDoesNotUnderflow() {
        var s = UsageSampler()
        let t0 = sample(at: 0, node: 100, containers: ["a": 9_000_000_000])
        s.record(t0)
        var t1 = t0
        t1.time = t0.time.advanced(by: .seconds(1))
        t1.containers["a"]!.cpuNanoSeconds = 10  // counter went backwards
        s.record(t1)
        #expect(s.latest?.pods.first?.containers.first?.cpuNanoCores == 0)
    }

    @Test func procParsing() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n"
        #expect(ProcStats.cpuNanoSeconds(procStat: stat) == (100 + 5 + 50 + 3 + 2 + 1) * 10_000_000)
        #expect(ProcStats.cpuNanoSeconds(procStat: "garbage") == nil)
        let meminfo = "MemTotal:       16000000 kB\nMemFree:         1000 kB\nMemAvailable:   12000000 kB\n"
        #expect(ProcStats.memoryInUse(meminfo: meminfo) == 4_000_000 * 1024)
        #expect(ProcStats.memoryInUse(meminfo: "MemTotal: 5 kB\n") == nil)
    }
}
