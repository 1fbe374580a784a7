import KubeAPI
import Testing
@testable import ControlPlane

/// The disruption controller's arithmetic, without I/O.
@Suite struct DisruptionBudgetTests {
    let now = KubeTime.parse("2026-12-02T10:00:00Z")!

    func pod(_ name: String, ready: Bool = true, deleting: Bool = false, owner: String? = "rs-1") -> JSON {
        var p: JSON = ["metadata": ["name": .string(name), "namespace": "ns", "labels": ["app": "web"]],
                       "status": ["phase": ready ? "Running" : "Pending",
                                  "conditions": [["type": "Ready", "status": ready ? "True" : "False"]]]]
        if let owner { p["metadata"]["ownerReferences"] = [["kind": "ReplicaSet", "name": .string(owner), "uid": .string(owner), "controller": true]] }
        if deleting { p["metadata"]["deletionTimestamp"] = "2026-12-02T09:59:00Z" }
        return p
    }

    func pdb(_ spec: JSON, disrupted: JSON = .null) -> JSON {
        ["metadata": ["name": "b", "namespace": "ns", "generation": .int(2)], "spec": spec, "status": ["disruptedPods": disrupted]]
    }

    func condition(_ status: JSON) -> JSON? { status["conditions"].arrayValue?.first }

    @Test func minAvailableCountsTheSelectedPods() {
        let b = DisruptionBudget.compute(pdb(["minAvailable": .int(1)]), pods: [pod("a"), pod("b"), pod("c", ready: false)], now: now) { _ in 5 }
        #expect(b == DisruptionBudget(expectedPods: 3, desiredHealthy: 1, currentHealthy: 2, disruptionsAllowed: 1,
                                      disruptedPods: [:], failure: nil, nextExpiry: nil))
        let s = b.status(of: pdb(["minAvailable": .int(1)]), now: now)
        #expect(s["observedGeneration"] == .int(2) && s["disruptionsAllowed"] == .int(1))
        #expect(condition(s)?["reason"] == "SufficientPods" && condition(s)?["status"] == "True")
    }

    @Test func percentagesUseTheControllersScale() {
        // maxUnavailable 50% of a scale of 3 rounds up to 2: one must stay healthy.
        let b = DisruptionBudget.compute(pdb(["maxUnavailable": "50%"]), pods: [pod("a"), pod("b")], now: now) { _ in 3 }
        #expect((b.expectedPods, b.desiredHealthy, b.disruptionsAllowed) == (3, 1, 1))
        let m = DisruptionBudget.compute(pdb(["minAvailable": "100%"]), pods: [pod("a"), pod("b")], now: now) { _ in 2 }
        #expect((m.desiredHealthy, m.disruptionsAllowed) == (2, 0))
        #expect(condition(m.status(of: pdb(["minAvailable": "100%"]), now: now))?["reason"] == "InsufficientPods")
    }

    @Test func aPodWithoutControllerFailsAPercentageBudget() {
        let b = DisruptionBudget.compute(pdb(["maxUnavailable": .int(1)]), pods: [pod("a"), pod("lonely", owner: nil)], now: now) { _ in 1 }
        #expect(b.disruptionsAllowed == 0 && b.failure == "found no controller ref for pod \"lonely\"")
        #expect(condition(b.status(of: pdb(["maxUnavailable": .int(1)]), now: now))?["reason"] == "SyncFailed")
    }

    @Test func grantedEvictionsCountAsUnhealthyUntilThePodGoesOrTheyExpire() {
        let disrupted: JSON = ["a": "2026-12-02T09:59:30Z", "gone": "2026-12-02T09:59:30Z", "old": "2026-12-02T09:50:00Z", "c": "2026-12-02T09:59:50Z"]
        let pods = [pod("a"), pod("b"), pod("old"), pod("c", deleting: true)]
        let b = DisruptionBudget.compute(pdb(["minAvailable": .int(1)], disrupted: disrupted), pods: pods, now: now) { _ in 3 }
        // "a" is still pending eviction; "gone" has no pod, "old" expired, "c" is being deleted.
        #expect(b.disruptedPods == ["a": "2026-12-02T09:59:30Z"])
        #expect((b.currentHealthy, b.disruptionsAllowed) == (2, 1))
        #expect(b.nextExpiry == KubeTime.parse("2026-12-02T10:01:30Z"))
    }
}
