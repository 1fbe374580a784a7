import KubeAPI
import Testing

/// What a quota counts for one object, as admission and the quota controller share it.
@Suite struct ResourceQuotaUsageTests {
    @Test func podsCountTheirRequestsAndLimits() throws {
        let pod = try JSON.parse("""
        {"metadata":{"name":"p"},"spec":{
          "initContainers":[{"name":"i","resources":{"requests":{"cpu":"2"}}}],
          "containers":[{"name":"a","resources":{"requests":{"cpu":"500m","memory":"64Mi"},"limits":{"memory":"128Mi"}}},
                        {"name":"b","resources":{"limits":{"cpu":"700m","memory":"64Mi"}}}]},
         "status":{"phase":"Running"}}
        """)
        let names: Set<String> = ["pods", "count/pods", "requests.cpu", "requests.memory", "limits.memory", "limits.cpu", "secrets"]
        let u = ResourceQuotaUsage.usage(of: pod, type: .pods, names: names)
        // cpu: the init container's 2 beats 500m + 700m (b's limit stands in for its request).
        #expect(u == ["pods": 1000, "count/pods": 1000, "requests.cpu": 2000, "requests.memory": (128 << 20) * 1000,
                      "limits.memory": (192 << 20) * 1000, "limits.cpu": 700])
        #expect(ResourceQuotaUsage.containersMissing("limits.cpu", in: pod["spec"]) == ["i", "a"])
        var done = pod
        done["status"]["phase"] = "Succeeded"
        #expect(ResourceQuotaUsage.usage(of: done, type: .pods, names: names).isEmpty)
    }

    @Test func countsAndRendering() {
        #expect(ResourceQuotaUsage.isTracked(.configMaps, in: ["configmaps"]))
        #expect(!ResourceQuotaUsage.isTracked(.configMaps, in: ["secrets", "pods"]))
        #expect(ResourceQuotaUsage.isTracked(.deployments, in: ["count/deployments.apps"]))
        #expect(ResourceQuotaUsage.render("requests.cpu", 1500) == "1500m")
        #expect(ResourceQuotaUsage.render("pods", 2048 * 1000) == "2048")
        #expect(ResourceQuotaUsage.render("requests.memory", (128 << 20) * 1000) == "128Mi")
    }
}
