import KubeAPI
import Testing
import TestSupport
@testable import ControlPlane

/// Claims and volumes: which volume a claim gets, what a node can host, and the controller
/// binding, waiting for the scheduler's node, handing claims to a provisioner and releasing.
@Suite struct PersistentVolumeControllerTests {
    static let decoder = JSONValueDecoder()

    static func pv(_ name: String, size: String, cls: String = "manual", modes: [String] = ["ReadWriteOnce"], node: String? = nil,
                   claim: (String, String)? = nil, labels: [String: String] = [:]) -> JSON {
        var spec: JSON = ["capacity": ["storage": .string(size)], "accessModes": .array(modes.map { .string($0) }),
                          "storageClassName": .string(cls), "local": ["path": .string("/disks/\(name)")]]
        if let node {
            spec["nodeAffinity"] = ["required": ["nodeSelectorTerms": [["matchExpressions": [
                ["key": "kubernetes.io/hostname", "operator": "In", "values": [.string(node)]]]]]]]
        }
        if let claim { spec["claimRef"] = ["namespace": .string(claim.0), "name": .string(claim.1)] }
        return ["apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": ["name": .string(name), "labels": .object(labels.mapValues { .string($0) })], "spec": spec]
    }

    static func pvc(_ name: String, size: String, cls: String? = "manual", modes: [String] = ["ReadWriteOnce"], selector: JSON = .null) -> JSON {
        var spec: JSON = ["accessModes": .array(modes.map { .string($0) }), "resources": ["requests": ["storage": .string(size)]]]
        if let cls { spec["storageClassName"] = .string(cls) }
        if !selector.isNull { spec["selector"] = selector }
        return ["apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": ["name": .string(name), "namespace": "default", "uid": .string("u-\(name)")],
                "spec": spec]
    }

    static func sc(_ name: String, provisioner: String = Storage.Keys.noProvisioner, wait: Bool = true, isDefault: Bool = false) -> JSON {
        ["apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
         "metadata": ["name": .string(name), "annotations": isDefault ? [Storage.Keys.defaultClass: "true"] : [:]],
         "provisioner": .string(provisioner), "volumeBindingMode": wait ? "WaitForFirstConsumer" : "Immediate"]
    }

    static func host(_ n: String) -> [String: String] { ["kubernetes.io/hostname": n] }

    func typed<T: Decodable>(_ j: JSON) throws -> T { try Self.decoder.decode(T.self, from: j) }

    @Test func theSmallestFittingVolumeIsChosenAndPreboundOnesFirst() throws {
        let claim: Storage.PersistentVolumeClaim = try typed(Self.pvc("c", size: "100Mi"))
        let vols: [Storage.PersistentVolume] = try [Self.pv("tiny", size: "64Mi"), Self.pv("big", size: "10Gi"), Self.pv("mid", size: "1Gi"),
                                                    Self.pv("rwx", size: "200Mi", modes: ["ReadWriteMany"]),
                                                    Self.pv("other-class", size: "200Mi", cls: "fast")].map(typed)
        #expect(VolumeBinding.bestVolume(for: claim, among: vols)?.metadata?.name == "mid")
        let reserved: [Storage.PersistentVolume] = try [Self.pv("mine", size: "5Gi", claim: ("default", "c"))].map(typed)
        #expect(VolumeBinding.bestVolume(for: claim, among: vols + reserved)?.metadata?.name == "mine")
        // Someone else's reservation is never taken.
        let theirs: [Storage.PersistentVolume] = try [Self.pv("theirs", size: "100Mi", claim: ("default", "other"))].map(typed)
        #expect(VolumeBinding.bestVolume(for: claim, among: theirs) == nil)
        // A selector narrows the choice; a node excludes volumes its affinity does not admit.
        let labelled: [Storage.PersistentVolume] = try [Self.pv("a", size: "1Gi", labels: ["tier": "gold"]), Self.pv("b", size: "200Mi")].map(typed)
        let picky: Storage.PersistentVolumeClaim = try typed(Self.pvc("c", size: "100Mi", selector: ["matchLabels": ["tier": "gold"]]))
        #expect(VolumeBinding.bestVolume(for: picky, among: labelled)?.metadata?.name == "a")
        let pinned: [Storage.PersistentVolume] = try [Self.pv("on-n1", size: "200Mi", node: "n1")].map(typed)
        #expect(VolumeBinding.bestVolume(for: claim, among: pinned, node: ("n2", Self.host("n2"))) == nil)
        #expect(VolumeBinding.bestVolume(for: claim, among: pinned, node: ("n1", Self.host("n1")))?.metadata?.name == "on-n1")
    }

    @Test func nodesAreCheckedAgainstTheClaimsOfAPod() throws {
        let classes: [String: Storage.StorageClass] = try ["manual": typed(Self.sc("manual")), "csi": typed(Self.sc("csi", provisioner: "drv"))]
        let lookupClass: (String) -> Storage.StorageClass? = { classes[$0] }
        let bound = try typed(Self.pv("pinned", size: "1Gi", node: "n1")) as Storage.PersistentVolume
        let claims = VolumeBinding.PodClaims(boundVolumes: [bound])
        #expect(VolumeBinding.reason(claims, node: "n1", labels: Self.host("n1"), freeVolumes: [], storageClass: lookupClass, driversOnNode: [], registeredAnywhere: []) == nil)
        #expect(VolumeBinding.reason(claims, node: "n2", labels: Self.host("n2"), freeVolumes: [], storageClass: lookupClass, driversOnNode: [], registeredAnywhere: [])
            == "node(s) had volume node affinity conflict")
        // A delayed claim of a class without provisioner needs a free volume the node can use.
        let delayed = VolumeBinding.PodClaims(delayed: [try typed(Self.pvc("d", size: "1Gi"))])
        let free: [Storage.PersistentVolume] = [try typed(Self.pv("v", size: "1Gi", node: "n1"))]
        #expect(VolumeBinding.reason(delayed, node: "n1", labels: Self.host("n1"), freeVolumes: free, storageClass: lookupClass, driversOnNode: [], registeredAnywhere: []) == nil)
        #expect(VolumeBinding.reason(delayed, node: "n2", labels: Self.host("n2"), freeVolumes: free, storageClass: lookupClass, driversOnNode: [], registeredAnywhere: [])
            == "node(s) didn't find available persistent volumes to bind")
        // A CSI class is provisioned only where its driver is registered (once it is registered somewhere).
        let csi = VolumeBinding.PodClaims(delayed: [try typed(Self.pvc("e", size: "1Gi", cls: "csi"))])
        #expect(VolumeBinding.reason(csi, node: "n2", labels: [:], freeVolumes: [], storageClass: lookupClass, driversOnNode: [], registeredAnywhere: ["drv"])
            == "node(s) did not have the CSI driver drv")
        #expect(VolumeBinding.reason(csi, node: "n1", labels: [:], freeVolumes: [], storageClass: lookupClass, driversOnNode: ["drv"], registeredAnywhere: ["drv"]) == nil)
        // Claims missing or unbound with immediate binding rule out every node.
        let none = VolumeBinding.podClaims(["gone"], namespace: "default", claim: { _ in nil }, volume: { _ in nil }, storageClass: lookupClass)
        #expect(none.unresolvable == "persistentvolumeclaim \"gone\" not found")
        let immediateClaim: Storage.PersistentVolumeClaim = try typed(Self.pvc("i", size: "1Gi", cls: "nowait"))
        let immediate = VolumeBinding.podClaims(["i"], namespace: "default", claim: { _ in immediateClaim }, volume: { _ in nil },
                                                storageClass: { _ in try? typed(Self.sc("nowait", wait: false)) })
        #expect(immediate.unresolvable == "pod has unbound immediate PersistentVolumeClaims")
    }

    @Test func claimsAreBoundProvisionedAndReleased() async throws {
        let h = ControllerHarness()
        let pvcs = ResourceType.persistentVolumeClaims, pvs = ResourceType.persistentVolumes
        h.client.seed(ResourceType.storageClasses, Self.sc("manual"))
        h.client.seed(ResourceType.storageClasses, Self.sc("dynamic", provisioner: "drv.example.com", wait: false, isDefault: true))
        h.client.seed(TestResources.nodes, Fixtures.edgeNode("n1", labels: Self.host("n1")))
        h.client.seed(pvs, Self.pv("v1", size: "1Gi", node: "n1"))
        h.client.seed(pvcs, Self.pvc("waits", size: "500Mi"))
        h.client.seed(pvcs, Self.pvc("defaulted", size: "1Gi", cls: nil))
        let loop = h.loop(1) { PersistentVolumeController(client: h.client, informers: h.informers, events: h.events, queue: $0, logger: h.logger) }
        try await h.run([loop]) {
            // A claim without a class gets the default one and is handed to its provisioner.
            try await eventually(timeout: .seconds(5), "default class and provisioner") {
                let c = h.client.object(pvcs, namespace: "default", name: "defaulted")
                return c?["spec"]["storageClassName"] == "dynamic"
                    && c?["metadata"]["annotations"][Storage.Keys.storageProvisioner] == "drv.example.com"
            }
            // WaitForFirstConsumer: nothing until the scheduler names a node, then bound there.
            let waiting = try #require(h.client.object(pvcs, namespace: "default", name: "waits"))
            #expect(waiting["spec"]["volumeName"].isNull)
            #expect(waiting["metadata"]["finalizers"] == [.string(Storage.Keys.pvcProtection)])
            _ = try await h.client.patch(pvcs, namespace: "default", name: "waits",
                                         ["metadata": ["annotations": [Storage.Keys.selectedNode: "n1"]]], fieldManager: "test")
            try await eventually(timeout: .seconds(5), "claim and volume bound") {
                h.client.object(pvcs, namespace: "default", name: "waits")?["status"]["phase"] == "Bound"
                    && h.client.object(pvs, name: "v1")?["status"]["phase"] == "Bound"
            }
            let claim = try #require(h.client.object(pvcs, namespace: "default", name: "waits"))
            #expect(claim["spec"]["volumeName"] == "v1" && claim["status"]["capacity"]["storage"] == "1Gi")
            #expect(h.client.object(pvs, name: "v1")?["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"])
            // The claim goes (no pod uses it): finalizer removed, volume Released (Retain by default).
            _ = try await h.client.delete(pvcs, namespace: "default", name: "waits")
            try await eventually(timeout: .seconds(5), "claim gone, volume released") {
                h.client.object(pvcs, namespace: "default", name: "waits") == nil
                    && h.client.object(pvs, name: "v1")?["status"]["phase"] == "Released"
            }
        }
    }
}
