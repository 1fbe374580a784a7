import KubeAPI
import Testing
@testable import APIServer

/// Server-side apply's field ownership without I/O: conflicts, forced take-over, removal of what
/// a manager stops applying, updates taking fields over, FieldsV1 round trips.
@Suite struct FieldManagerTests {
    typealias FM = FieldManager
    let now = "2026-12-02T00:00:00Z"

    func cm(_ data: [String: JSON], managed: JSON = .null) -> JSON {
        var o: JSON = ["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": "c"], "data": .object(data)]
        if !managed.isNull { o["metadata"]["managedFields"] = managed }
        return o
    }

    @Test func applyConflictsThenForceTakesOver() {
        let first = FM.apply(config: cm(["a": "1", "b": "2"]), current: cm([:]), manager: "alice", apiVersion: "v1", subresource: nil,
                             force: false, keyed: true, now: now)
        #expect(first.conflicts.isEmpty)
        let current = cm(["a": "1", "b": "2"], managed: FM.encode(first.entries))
        // The same value: co-owned, no conflict.
        #expect(FM.apply(config: cm(["a": "1"]), current: current, manager: "bob", apiVersion: "v1", subresource: nil,
                         force: false, keyed: true, now: now).conflicts.isEmpty)
        let clash = FM.apply(config: cm(["a": "9"]), current: current, manager: "bob", apiVersion: "v1", subresource: nil,
                             force: false, keyed: true, now: now)
        #expect(clash.conflicts == [FM.Conflict(manager: "alice", apiVersion: "v1", path: ["f:data", "f:a"])])
        #expect(FM.display(clash.conflicts[0].path) == ".data.a")
        let forced = FM.apply(config: cm(["a": "9"]), current: current, manager: "bob", apiVersion: "v1", subresource: nil,
                              force: true, keyed: true, now: now)
        #expect(forced.conflicts.isEmpty)
        #expect(forced.entries.first { $0.manager == "alice" }?.fields == [["f:data", "f:b"]])
        #expect(forced.entries.first { $0.manager == "bob" }?.fields == [["f:data", "f:a"]])
    }

    @Test func fieldsAManagerStopsApplyingAreRemovedUnlessOthersOwnThem() {
        let a = FM.apply(config: cm(["a": "1", "b": "2", "shared": "s"]), current: cm([:]), manager: "alice", apiVersion: "v1",
                         subresource: nil, force: false, keyed: true, now: now)
        let b = FM.apply(config: cm(["shared": "s"]), current: cm(["a": "1", "b": "2", "shared": "s"], managed: FM.encode(a.entries)),
                         manager: "bob", apiVersion: "v1", subresource: nil, force: false, keyed: true, now: now)
        let current = cm(["a": "1", "b": "2", "shared": "s"], managed: FM.encode(b.entries))
        let again = FM.apply(config: cm(["a": "1"]), current: current, manager: "alice", apiVersion: "v1", subresource: nil,
                             force: false, keyed: true, now: now)
        #expect(again.base["data"] == ["a": "1", "shared": "s"])
    }

    @Test func listItemsAreOwnedByTheirKeys() {
        let pod: JSON = ["spec": ["containers": [["name": "a", "image": "x"], ["name": "b", "image": "y"]]]]
        let leaves = FM.leaves(of: pod, keyed: true, includeStatus: false)
        #expect(leaves.contains(["f:spec", "f:containers", #"k:{"name":"b"}"#, "f:image"]))
        #expect(FM.value(at: ["f:spec", "f:containers", #"k:{"name":"b"}"#, "f:image"], in: pod) == "y")
        let removed = FM.removing(["f:spec", "f:containers", #"k:{"name":"a"}"#], from: pod)
        #expect(removed["spec"]["containers"].arrayValue?.count == 1)
        // Custom resources' lists are atomic.
        #expect(FM.leaves(of: pod, keyed: false, includeStatus: false) == [["f:spec", "f:containers"]])
        // FieldsV1 round trip.
        #expect(FM.decode(FM.encode(leaves)) == leaves)
    }

    @Test func anUpdateTakesTheFieldsItChanges() {
        let created = FM.update(old: nil, new: cm(["a": "1", "b": "2"]), manager: "kubectl-create", operation: "Update", apiVersion: "v1",
                                subresource: nil, keyed: true, now: now)
        let old = cm(["a": "1", "b": "2"], managed: FM.encode(created))
        let entries = FM.update(old: old, new: cm(["a": "1", "b": "3"]), manager: "kubectl-edit", operation: "Update", apiVersion: "v1",
                                subresource: nil, keyed: true, now: now)
        #expect(entries.first { $0.manager == "kubectl-create" }?.fields == [["f:data", "f:a"]])
        #expect(entries.first { $0.manager == "kubectl-edit" }?.fields == [["f:data", "f:b"]])
    }
}
