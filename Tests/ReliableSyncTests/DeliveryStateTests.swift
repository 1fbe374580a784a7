import Testing
@testable import ReliableSync

/// The per-node delivery decisions, without I/O.
@Suite struct DeliveryStateTests {
    func obj(_ uid: String, _ rv: UInt64) -> SyncedObject {
        SyncedObject(uid: uid, apiVersion: "v1", kind: "Pod", namespace: "ns", name: uid, edgeType: "pod", resourceVersion: rv, object: ["x": 1])
    }

    @Test func sendsOnlyNewerVersionsAndDeletesVanished() {
        var s = NodeDeliveryState()
        #expect(s.action(for: "a", current: obj("a", 5)) == .send(obj("a", 5), firstTime: true))
        s.acknowledged(.send(obj("a", 5), firstTime: true))
        #expect(s.action(for: "a", current: obj("a", 5)) == .none)
        #expect(s.action(for: "a", current: obj("a", 4)) == .none)  // stale cache never goes back
        #expect(s.action(for: "a", current: obj("a", 6)) == .send(obj("a", 6), firstTime: false))
        guard case .delete(let r) = s.action(for: "a", current: nil) else { Issue.record("no delete"); return }
        s.acknowledged(.delete(r))
        #expect(s.delivered.isEmpty)
        #expect(s.action(for: "a", current: nil) == .none)
    }

    @Test func dirtyKeysAreDeduplicatedAndNotTakenTwiceWhileInFlight() {
        var s = NodeDeliveryState()
        s.markDirty("a"); s.markDirty("a"); s.markDirty("b")
        #expect(s.pendingCount == 2)
        let first = s.take(10)
        #expect(first == ["a", "b"])
        s.markDirty("a")  // changed again while in flight
        #expect(s.take(10).isEmpty)
        s.settled("a")
        #expect(s.take(10) == ["a"])
    }

    @Test func reconnectLooksAtDesiredAndDeliveredObjects() {
        var s = NodeDeliveryState()
        s.restore(DeliveredRecord(uid: "old", apiVersion: "v1", kind: "Pod", namespace: "ns", name: "old", edgeType: "pod", resourceVersion: 3))
        s.markAll(desired: ["new"])
        #expect(Set(s.take(10)) == ["old", "new"])
        s.disconnected()
        #expect(s.pendingCount == 0)
        #expect(s.failed("x") == 1 && s.failed("x") == 2)
    }
}
