import ControllerRuntime
import KubeAPI
import KubeClient
import Logging

/// kube-controller-manager's persistentvolume-binder, pvc-protection and pv-protection
/// controllers: claims are bound to the smallest free volume that fits (class, access modes,
/// size, selector, volume mode; pre-bound volumes first); a `WaitForFirstConsumer` claim waits
/// for the scheduler's `volume.kubernetes.io/selected-node` and is bound only to a volume that
/// node can use; a claim no volume fits is handed to its class's provisioner (the
/// `volume.kubernetes.io/storage-provisioner` annotation — the cloud's CSI driver, or any
/// external provisioner, creates the volume). A volume whose claim is gone is `Released`; with
/// `Retain` it stays so, with `Delete` its provisioner deletes it. Claims without a class get the
/// default class, also after they were created. Finalizers keep a claim while a pod uses it and a
/// volume while it is bound.
final class PersistentVolumeController: Reconciler {
    let name = "persistentvolume"
    let client: KubeClient
    let claims: SharedInformer
    let volumes: SharedInformer
    let classes: SharedInformer
    let pods: SharedInformer
    let events: EventRecorder
    let logger: Logger
    static let manager = "persistentvolume-controller"
    static let decoder = JSONValueDecoder()
    /// Work keys: claims are `pvc:<ns>/<name>`, volumes `pv:<name>`.
    static func claimKey(_ ns: String, _ name: String) -> String { "pvc:\(ns)/\(name)" }
    static func volumeKey(_ name: String) -> String { "pv:\(name)" }

    init(client: KubeClient, informers: InformerFactory, events: EventRecorder, queue: WorkQueue, logger: Logger) {
        self.client = client; self.events = events; self.logger = logger
        claims = informers.informer(R.pvcs)
        volumes = informers.informer(R.pvs)
        classes = informers.informer(R.storageClasses)
        pods = informers.informer(R.pods)
        claims.addHandler { ev in
            switch ev {
            case .added(let c), .updated(_, let c), .deleted(let c):
                queue.add(Self.claimKey(c.namespace, c.name))
                if let v = c["spec"]["volumeName"].stringValue, !v.isEmpty { queue.add(Self.volumeKey(v)) }
            case .synced: break
            }
        }
        volumes.addHandler { ev in
            switch ev {
            case .added(let v), .updated(_, let v), .deleted(let v):
                queue.add(Self.volumeKey(v.name))
                let ref = v["spec"]["claimRef"]
                if let ns = ref["namespace"].stringValue, let n = ref["name"].stringValue { queue.add(Self.claimKey(ns, n)) }
            case .synced: break
            }
        }
        // A new or changed class (a default one, a provisioner) may settle waiting claims.
        classes.addHandler { [claims] ev in
            if case .synced = ev { return }
            for c in claims.cache.list() where (c["spec"]["volumeName"].stringValue ?? "").isEmpty { queue.add(Self.claimKey(c.namespace, c.name)) }
        }
        // A pod that stops or goes may release a claim being deleted.
        pods.addHandler { ev in
            switch ev {
            case .updated(_, let p), .deleted(let p):
                for claim in PodReferences(pod: p).persistentVolumeClaims { queue.add(Self.claimKey(p.namespace, claim)) }
            default: break
            }
        }
    }

    func claim(_ json: JSON) -> Storage.PersistentVolumeClaim? { try? Self.decoder.decode(Storage.PersistentVolumeClaim.self, from: json) }
    func volume(_ json: JSON) -> Storage.PersistentVolume? { try? Self.decoder.decode(Storage.PersistentVolume.self, from: json) }

    func storageClass(_ name: String) -> Storage.StorageClass? {
        classes.cache.get(name).flatMap { try? Self.decoder.decode(Storage.StorageClass.self, from: $0) }
    }

    /// The default class (kube: the newest of those annotated default).
    func defaultClass() -> String? {
        classes.cache.list().filter { $0["metadata"]["annotations"][Storage.Keys.defaultClass].stringValue == "true" }
            .max { ($0["metadata"]["creationTimestamp"].stringValue ?? "", $1.name) < ($1["metadata"]["creationTimestamp"].stringValue ?? "", $0.name) }?.name
    }

    func reconcile(_ key: String) async throws -> ReconcileResult {
        if key.hasPrefix("pvc:") { return try await syncClaim(String(key.dropFirst(4))) }
        if key.hasPrefix("pv:") { return try await syncVolume(String(key.dropFirst(3))) }
        return .done
    }

    // MARK: claims

    func syncClaim(_ key: String) async throws -> ReconcileResult {
        guard var json = claims.cache.get(key), let c = claim(json) else { return .done }
        let finalizers = (json["metadata"]["finalizers"].arrayValue ?? []).compactMap(\.stringValue)
        if json.isDeleting {
            guard finalizers.contains(Storage.Keys.pvcProtection) else { return .done }
            if let user = podUsing(claim: json.name, namespace: json.namespace) {
                logger.debug("claim in use; kept", metadata: ["claim": "\(key)", "pod": "\(user)"])
                return .done
            }
            json["metadata"]["finalizers"] = .array(finalizers.filter { $0 != Storage.Keys.pvcProtection }.map { .string($0) })
            try await writeClaim(json)
            return .done
        }
        if !finalizers.contains(Storage.Keys.pvcProtection) {
            json["metadata"]["finalizers"] = .array((finalizers + [Storage.Keys.pvcProtection]).map { .string($0) })
            try await writeClaim(json)
            return .done  // the update comes back through the informer
        }
        // Retroactive default class (kube ≥ 1.28): only for claims not bound yet.
        if json["spec"]["storageClassName"].isNull && c.volumeName.isEmpty, let def = defaultClass() {
            json["spec"]["storageClassName"] = .string(def)
            try await writeClaim(json)
            return .done
        }
        if !c.volumeName.isEmpty { return try await syncBoundClaim(json, c) }
        return try await bindOrProvision(json, c)
    }

    /// A claim that names its volume: the volume's claimRef completed, both statuses Bound; a
    /// claim whose volume went is Lost.
    func syncBoundClaim(_ json: JSON, _ c: Storage.PersistentVolumeClaim) async throws -> ReconcileResult {
        guard var pvJSON = volumes.cache.get(c.volumeName), let pv = volume(pvJSON) else {
            if c.phase != "Lost" {
                try await setClaimStatus(json, phase: "Lost", volume: nil)
                events.record(json, .warning, reason: "ClaimLost", message: "Bound claim has lost its PersistentVolume. Data on the volume is lost!")
            }
            return .done
        }
        if let ref = pv.claimRef {
            guard ref.name == json.name, ref.namespace == json.namespace else {
                // The volume is someone else's: this claim waits (kube: "volume already bound to a different claim").
                if c.phase != "Pending" { try await setClaimStatus(json, phase: "Pending", volume: nil) }
                events.record(json, .warning, reason: "FailedBinding", message: "volume \"\(pv.metadata?.name ?? "")\" already bound to a different claim.")
                return .done
            }
            if (ref.uid ?? "").isEmpty {
                pvJSON["spec"]["claimRef"]["uid"] = .string(json.uid)
                try await writeVolume(pvJSON)
                return .done
            }
            if ref.uid != json.uid { return .done }  // the old claim of that name; the volume is Released
        } else {
            pvJSON["spec"]["claimRef"] = claimRef(json)
            try await writeVolume(pvJSON)
            return .done
        }
        if pv.phase != "Bound" { try await setVolumePhase(pvJSON, "Bound") }
        if c.annotations[Storage.Keys.bindCompleted] != "yes" {
            var u = json
            u["metadata"]["annotations"][Storage.Keys.bindCompleted] = "yes"
            try await writeClaim(u)
            return .done
        }
        if c.phase != "Bound" || json["status"]["capacity"].isNull {
            try await setClaimStatus(json, phase: "Bound", volume: pvJSON)
            events.record(json, .normal, reason: "Bound", message: "Successfully bound to volume \(pv.metadata?.name ?? "")")
        }
        return .done
    }

    /// An unbound claim: bound to the best free volume, or handed to its class's provisioner.
    func bindOrProvision(_ json: JSON, _ c: Storage.PersistentVolumeClaim) async throws -> ReconcileResult {
        let cls = c.storageClassName.flatMap(storageClass)
        var node: (name: String, labels: [String: String])?
        if cls?.waitsForFirstConsumer == true {
            guard let selected = c.annotations[Storage.Keys.selectedNode], !selected.isEmpty else {
                if c.phase != "Pending" || json["status"].isNull { try await setClaimStatus(json, phase: "Pending", volume: nil) }
                events.record(json, .normal, reason: "WaitForFirstConsumer", message: "waiting for first consumer to be created before binding")
                return .done
            }
            let labels = (try? await client.get(R.nodes, namespace: nil, name: selected))?.labels ?? [:]
            node = (selected, labels)
        }
        let all = volumes.cache.list().compactMap(volume)
        if let pv = VolumeBinding.bestVolume(for: c, among: all, node: node), var pvJSON = volumes.cache.get(pv.metadata?.name ?? "") {
            // kube's order: the volume's claimRef first (it is the reservation), then the claim.
            if pv.claimRef == nil || (pv.claimRef?.uid ?? "").isEmpty {
                pvJSON["spec"]["claimRef"] = claimRef(json)
                pvJSON["metadata"]["annotations"][Storage.Keys.boundByController] = "yes"
                try await writeVolume(pvJSON)
            }
            var u = json
            u["spec"]["volumeName"] = .string(pv.metadata?.name ?? "")
            u["metadata"]["annotations"][Storage.Keys.boundByController] = "yes"
            try await writeClaim(u)
            logger.info("claim bound", metadata: ["claim": "\(json.namespace)/\(json.name)", "volume": "\(pv.metadata?.name ?? "")"])
            return .done
        }
        if json["status"]["phase"].isNull { try await setClaimStatus(json, phase: "Pending", volume: nil) }
        guard let cls, cls.provisioner != Storage.Keys.noProvisioner else {
            let message = c.storageClassName.map { name in
                cls == nil ? "storageclass.storage.k8s.io \"\(name)\" not found" : "no persistent volumes available for this claim and no storage class is set"
            } ?? "no persistent volumes available for this claim and no storage class is set"
            events.record(json, .warning, reason: cls == nil && c.storageClassName != nil ? "ProvisioningFailed" : "FailedBinding", message: message)
            return .done
        }
        if c.annotations[Storage.Keys.storageProvisioner] != cls.provisioner {
            var u = json
            u["metadata"]["annotations"][Storage.Keys.storageProvisioner] = .string(cls.provisioner)
            u["metadata"]["annotations"][Storage.Keys.betaStorageProvisioner] = .string(cls.provisioner)
            try await writeClaim(u)
        }
        events.record(json, .normal, reason: "ExternalProvisioning",
                      message: "Waiting for a volume to be created either by the external provisioner '\(cls.provisioner)' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.")
        return .done
    }

    func claimRef(_ claim: JSON) -> JSON {
        ["kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": .string(claim.namespace), "name": .string(claim.name),
         "uid": .string(claim.uid), "resourceVersion": claim["metadata"]["resourceVersion"]]
    }

    /// The first pod (not finished) that mounts the claim.
    func podUsing(claim: String, namespace: String) -> String? {
        pods.cache.list().first { p in
            p.namespace == namespace && !PodUtil.isTerminal(p) && PodReferences(pod: p).persistentVolumeClaims.contains(claim)
        }?.name
    }

    func setClaimStatus(_ json: JSON, phase: String, volume pv: JSON?) async throws {
        var u = json
        u["status"]["phase"] = .string(phase)
        if let pv {
            u["status"]["capacity"] = pv["spec"]["capacity"]
            u["status"]["accessModes"] = pv["spec"]["accessModes"]
        }
        try await writeClaim(u, subresource: "status")
    }

    // MARK: volumes

    func syncVolume(_ name: String) async throws -> ReconcileResult {
        guard var json = volumes.cache.get(name), let pv = volume(json) else { return .done }
        let finalizers = (json["metadata"]["finalizers"].arrayValue ?? []).compactMap(\.stringValue)
        let claimJSON = pv.claimRef.flatMap { ref in claims.cache.get("\(ref.namespace ?? "")/\(ref.name ?? "")") }
        let claimed = claimJSON.map { c in (pv.claimRef?.uid ?? "").isEmpty || c.uid == pv.claimRef?.uid } ?? false
        if json.isDeleting {
            guard finalizers.contains(Storage.Keys.pvProtection) else { return .done }
            if claimed && pv.phase == "Bound" { return .done }  // kept while a claim uses it
            json["metadata"]["finalizers"] = .array(finalizers.filter { $0 != Storage.Keys.pvProtection }.map { .string($0) })
            try await writeVolume(json)
            return .done
        }
        if !finalizers.contains(Storage.Keys.pvProtection) {
            json["metadata"]["finalizers"] = .array((finalizers + [Storage.Keys.pvProtection]).map { .string($0) })
            try await writeVolume(json)
            return .done
        }
        guard pv.claimRef != nil else {
            if pv.phase != "Available" { try await setVolumePhase(json, "Available") }
            return .done
        }
        if claimed {
            // Bound once the claim names it (a volume pre-bound to a claim waits for that claim).
            let named = claimJSON?["spec"]["volumeName"].stringValue == name
            if named && pv.phase != "Bound" { try await setVolumePhase(json, "Bound") }
            if !named && pv.phase != "Available" && (pv.claimRef?.uid ?? "").isEmpty { try await setVolumePhase(json, "Available") }
            return .done
        }
        // The claim is gone: Released, then reclaimed.
        if pv.phase != "Released" && pv.phase != "Failed" {
            try await setVolumePhase(json, "Released")
            return .done
        }
        switch pv.reclaimPolicy {
        case "Delete":
            if pv.annotations[Storage.Keys.provisionedBy] == nil && pv.phase != "Failed" {
                // No provisioner owns it: nothing can delete what it holds (kube: no deleter plugin).
                try await setVolumePhase(json, "Failed", message: "error getting deleter volume plugin for volume \"\(name)\": no deletable volume plugin matched")
                events.record(json, .warning, reason: "VolumeFailedDelete", message: "error getting deleter volume plugin for volume \"\(name)\": no deletable volume plugin matched")
            }
            // Otherwise its provisioner deletes the volume and then the object.
        case "Recycle":
            if pv.phase != "Failed" {
                try await setVolumePhase(json, "Failed", message: "Recycle is not supported; use Delete or Retain")
            }
        default:
            break  // Retain: stays Released until an administrator acts
        }
        return .done
    }

    func setVolumePhase(_ json: JSON, _ phase: String, message: String? = nil) async throws {
        var u = json
        u["status"]["phase"] = .string(phase)
        u["status"]["message"] = message.map { .string($0) } ?? .null
        u["status"]["lastPhaseTransitionTime"] = .string(KubeTime.now().rfc3339)
        try await writeVolume(u, subresource: "status")
        logger.debug("volume phase", metadata: ["volume": "\(json.name)", "phase": "\(phase)"])
    }

    /// Writes a claim or a volume (conflicts are retried by the queue: the informer brings the newer copy).
    func writeClaim(_ json: JSON, subresource: String? = nil) async throws {
        _ = try await client.update(R.pvcs, namespace: json.namespace, json, subresource: subresource, fieldManager: Self.manager)
    }

    func writeVolume(_ json: JSON, subresource: String? = nil) async throws {
        _ = try await client.update(R.pvs, namespace: nil, json, subresource: subresource, fieldManager: Self.manager)
    }
}
