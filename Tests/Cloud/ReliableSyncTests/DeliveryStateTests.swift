import CloudEdgeProtocol
import Testing
@testable import ReliableSync

/// The per-node delivery decisions, without I/O.
@Suite struct DeliveryStateTests {
    func obj(_ uid: String, _ rv: UInt64) -> SyncedObject {
        SyncedObject(uid: uid, apiVersion: "v1", kind: "Pod", namespace: "ns", name: uid, edgeKind: .pod, resourceVersion: rv, object: ["x": 1])
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
        s.restore(DeliveredRecord(uid: "old", apiVersion: "v1", kind: "Pod", namespace: "ns", name: "old", edgeKind: .pod, resourceVersion: 3))
        s.markAll(desired: ["new"])
        #expect(Set(s.take(10)) == ["old", "new"])
        s.disconnected()
        #expect(s.pendingCount == 0)
        #expect(s.failed("x") == 1 && s.failed("x") == 2)
    }

    @Test func theNodesInventoryCorrectsLaggingRecordsButNotThisSessionsAcks() {
        var s = NodeDeliveryState()
        // Restored records (a cloud restart): a@5, b@3. The node really holds b@4, c@2 (whose
        // record never got written before the crash), and lost a.
        s.restore(obj("a", 5).record)
        s.restore(obj("b", 3).record)
        s.connected = true
        s.beginSession()
        s.acknowledged(.send(obj("d", 1), firstTime: true))  // acknowledged on this connection
        s.reconcile(inventory: [obj("b", 4).record, obj("c", 2).record])
        #expect(s.delivered["a"] == nil)               // lost: will be sent again
        #expect(s.delivered["b"]?.resourceVersion == 4)
        #expect(s.delivered["c"]?.resourceVersion == 2) // known now: deleted if no longer wanted
        #expect(s.delivered["d"]?.resourceVersion == 1) // newer than the node's snapshot: kept
        #expect(Set(s.take(10)) == ["a", "b", "c"])     // only what changed is looked at again
        #expect(s.action(for: "a", current: obj("a", 5)) == .send(obj("a", 5), firstTime: true))
        #expect(s.action(for: "b", current: obj("b", 4)) == .none)
        guard case .delete(let r) = s.action(for: "c", current: nil) else { Issue.record("no delete for c"); return }
        #expect(r.uid == "c")
    }
}
