import CloudEdgeProtocol
import ControllerRuntime
import KubeAPI
import KubeAuth
import KubeClient
import Logging
import ReliableSync
import Synchronization

/// What each edge node is sent, from shared informers: the pods bound to it, the ConfigMaps,
/// Secrets and PersistentVolumeClaims those pods reference (volumes, projected volumes, env,
/// envFrom, image pull secrets — and nothing else, as KubeEdge's location cache), the volumes
/// those claims are bound to, its VolumeAttachments, its own Node, and — to nodes labelled
/// `node-role.kubernetes.io/edge` — every Service and Endpoints (service discovery at the edge).
/// KubeEdge devices (`devices.kubeedge.io/v1beta1`): each Device goes to the node in its
/// `spec.nodeName`, with the DeviceModel it references (a model goes to every node that has one of
/// its devices; desired twin values travel inside the Device).
/// Every change is reported to ``ReliableSync`` as "look at this object for that node".
public final class EdgeObjects: NodeObjectSource {
    let pods: SharedInformer
    let nodes: SharedInformer
    let configMaps: SharedInformer
    let secrets: SharedInformer
    let services: SharedInformer
    let endpoints: SharedInformer
    /// CSIDrivers: every edge node gets them (whether a driver's volumes wait for attachment).
    let csiDrivers: SharedInformer
    let devices: SharedInformer
    let deviceModels: SharedInformer
    let roles: SharedInformer
    let roleBindings: SharedInformer
    let clusterRoles: SharedInformer
    let clusterRoleBindings: SharedInformer
    let claims: SharedInformer
    let volumes: SharedInformer
    let attachments: SharedInformer
    /// VolumeAttachments by `spec.nodeName`.
    let attachmentsByNode = InformerIndex { o in
        let n = o["spec"]["nodeName"].stringValue ?? ""
        return n.isEmpty ? [] : [n]
    }
    /// Devices by `spec.nodeName`.
    let devicesByNode = InformerIndex(EdgeObjects.boundNode)
    /// Devices by the model they use (`<ns>/<model>`).
    let devicesByModel = InformerIndex { o in EdgeObjects.modelKey(of: o).map { [$0] } ?? [] }
    /// Pods by `spec.nodeName`.
    let byNode = InformerIndex(EdgeObjects.boundNode)
    /// The node a pod or device is bound to (`spec.nodeName`), as index keys.
    static func boundNode(_ o: JSON) -> [String] {
        let n = o["spec"]["nodeName"].stringValue ?? ""
        return n.isEmpty ? [] : [n]
    }
    /// Pods by what they reference: `<kind>:<ns>/<name>` (`configmap:default/app`, `secret:default/tls`).
    let byReference = InformerIndex { EdgeObjects.references(of: $0) }
    /// uid → (informer key, kind) for every object a node may be sent.
    let uids = Mutex<[String: (key: String, kind: EdgeResourceKind)]>([:])
    let sync: Mutex<ReliableSync?> = Mutex(nil)

    public init(informers: InformerFactory) {
        pods = informers.informer(ResourceType.pods)
        nodes = informers.informer(ResourceType.nodes)
        configMaps = informers.informer(ResourceType.configMaps)
        secrets = informers.informer(ResourceType.secrets)
        services = informers.informer(ResourceType.services)
        endpoints = informers.informer(ResourceType.endpoints)
        csiDrivers = informers.informer(ResourceType.csiDrivers)
        devices = informers.informer(ResourceType.devices)
        deviceModels = informers.informer(ResourceType.deviceModels)
        roles = informers.informer(ResourceType.roles)
        roleBindings = informers.informer(ResourceType.roleBindings)
        clusterRoles = informers.informer(ResourceType.clusterRoles)
        clusterRoleBindings = informers.informer(ResourceType.clusterRoleBindings)
        claims = informers.informer(ResourceType.persistentVolumeClaims)
        volumes = informers.informer(ResourceType.persistentVolumes)
        attachments = informers.informer(ResourceType.volumeAttachments)
        claims.addHandler { [self] ev in
            // The nodes whose pods mount the claim get it, and the volume it is bound to.
            func look(_ c: JSON) {
                notifyNodesReferencing(c, kind: .persistentVolumeClaim)
                if let v = Self.boundVolume(of: c), let pv = volumes.cache.get(v) {
                    for n in nodesReferencing(c, kind: .persistentVolumeClaim) { notify(pv, node: n) }
                }
            }
            switch ev {
            case .added(let c): track(c, .persistentVolumeClaim); look(c)
            case .updated(let old, let c):
                track(c, .persistentVolumeClaim); look(c)
                if Self.boundVolume(of: old) != Self.boundVolume(of: c), let v = Self.boundVolume(of: old), let pv = volumes.cache.get(v) {
                    for n in nodesReferencing(c, kind: .persistentVolumeClaim) { notify(pv, node: n) }
                }
            case .deleted(let c): look(c); untrack(c)
            case .synced: break
            }
        }
        volumes.addHandler { [self] ev in
            func look(_ v: JSON) { for n in nodesUsing(volume: v["metadata"]["name"].stringValue ?? "") { notify(v, node: n) } }
            switch ev {
            case .added(let v), .updated(_, let v): track(v, .persistentVolume); look(v)
            case .deleted(let v): look(v); untrack(v)
            case .synced: break
            }
        }
        attachments.addHandler { [self] ev in
            attachmentsByNode.handle(ev)
            switch ev {
            case .added(let a), .updated(_, let a): track(a, .volumeAttachment); notify(a, node: a["spec"]["nodeName"].stringValue)
            case .deleted(let a): notify(a, node: a["spec"]["nodeName"].stringValue); untrack(a)
            case .synced: break
            }
        }
        for (informer, kind) in [(roles, EdgeResourceKind.role), (roleBindings, .roleBinding), (clusterRoles, .clusterRole),
                                 (clusterRoleBindings, .clusterRoleBinding)] {
            informer.addHandler { [self] ev in
                // Who is granted what may have changed for any node with pods: each looks again at
                // the object, and — for a role — at the bindings that grant it.
                func look(_ o: JSON) {
                    let related = kind == .role || kind == .clusterRole ? bindings(granting: o, kind: kind) : []
                    for n in nodesWithPods() { for x in [o] + related { notify(x, node: n) } }
                }
                switch ev {
                case .added(let o), .updated(_, let o): track(o, kind); look(o)
                case .deleted(let o): look(o); untrack(o)
                case .synced: break
                }
            }
        }
        devices.addHandler { [self] ev in
            devicesByNode.handle(ev)
            devicesByModel.handle(ev)
            switch ev {
            case .added(let d):
                track(d, .device); notify(d, node: nodeName(d)); notifyModel(of: d, node: nodeName(d))
            case .updated(let old, let d):
                track(d, .device); notify(d, node: nodeName(d)); notifyModel(of: d, node: nodeName(d))
                if nodeName(old) != nodeName(d) || Self.modelKey(of: old) != Self.modelKey(of: d) {
                    notify(d, node: nodeName(old)); notifyModel(of: old, node: nodeName(old))
                }
            case .deleted(let d):
                notify(d, node: nodeName(d)); untrack(d); notifyModel(of: d, node: nodeName(d))
            case .synced: break
            }
        }
        deviceModels.addHandler { [self] ev in
            switch ev {
            case .added(let m), .updated(_, let m):
                track(m, .deviceModel); notifyNodesUsing(m)
            case .deleted(let m): notifyNodesUsing(m); untrack(m)
            case .synced: break
            }
        }
        pods.addHandler { [self] ev in
            byNode.handle(ev)
            byReference.handle(ev)
            switch ev {
            case .added(let p):
                track(p, .pod); notify(p, node: nodeName(p)); notifyReferenced(by: p, node: nodeName(p))
                notifyGrants(of: p, node: nodeName(p))
            case .updated(let old, let p):
                track(p, .pod); notify(p, node: nodeName(p))
                // What the node must hold may have changed: references added or dropped, or the pod moved.
                notifyReferenced(by: old, node: nodeName(old)); notifyReferenced(by: p, node: nodeName(p))
                if nodeName(old) != nodeName(p) { notify(p, node: nodeName(old)); notifyGrants(of: old, node: nodeName(old)) }
                if nodeName(old) != nodeName(p) || Self.serviceAccount(of: old) != Self.serviceAccount(of: p) {
                    notifyGrants(of: p, node: nodeName(p))
                }
            case .deleted(let p):
                notify(p, node: nodeName(p)); untrack(p); notifyReferenced(by: p, node: nodeName(p))
                notifyGrants(of: p, node: nodeName(p))
            case .synced: break
            }
        }
        nodes.addHandler { [self] ev in
            switch ev {
            case .updated(let old, let n) where Self.withoutStatus(old) == Self.withoutStatus(n):
                // The node's own heartbeats: not echoed back to it (a reconnect's comparison
                // still sends the current Node once if anything changed).
                track(n, .node)
            case .added(let n), .updated(_, let n):
                track(n, .node)
                guard let name = n["metadata"]["name"].stringValue else { return }
                notify(n, node: name)
                // It may have become (or stopped being) an edge node: look at the shared objects.
                for o in services.cache.list() + endpoints.cache.list() + csiDrivers.cache.list() { notify(o, node: name) }
            case .deleted(let n): notify(n, node: n["metadata"]["name"].stringValue); untrack(n)
            case .synced: break
            }
        }
        for (informer, kind) in [(services, EdgeResourceKind.service), (endpoints, EdgeResourceKind.endpoints), (csiDrivers, EdgeResourceKind.csiDriver)] {
            informer.addHandler { [self] ev in
                switch ev {
                case .added(let o), .updated(_, let o): track(o, kind); for n in edgeNodes() { notify(o, node: n) }
                case .deleted(let o): for n in edgeNodes() { notify(o, node: n) }; untrack(o)
                case .synced: break
                }
            }
        }
        for (informer, kind) in [(configMaps, EdgeResourceKind.configMap), (secrets, EdgeResourceKind.secret)] {
            informer.addHandler { [self] ev in
                switch ev {
                case .added(let o), .updated(_, let o): track(o, kind); notifyNodesReferencing(o, kind: kind)
                case .deleted(let o): notifyNodesReferencing(o, kind: kind); untrack(o)
                case .synced: break
                }
            }
        }
    }

    /// The name of the ServiceAccount a pod runs as (`default` when unset).
    static func serviceAccountName(of pod: JSON) -> String {
        pod["spec"]["serviceAccountName"].stringValue.flatMap { $0.isEmpty ? nil : $0 } ?? "default"
    }

    /// The ServiceAccount a pod runs as, as a user.
    static func serviceAccount(of pod: JSON) -> UserInfo {
        let ns = pod["metadata"]["namespace"].stringValue ?? "default"
        return UserInfo(username: ServiceAccountName.username(namespace: ns, name: serviceAccountName(of: pod)), groups: ServiceAccountName.groups(namespace: ns))
    }

    /// The ServiceAccounts of the pods bound to a node.
    func serviceAccounts(on node: String) -> [UserInfo] {
        Array(Set(byNode.objects(node, in: pods.cache).map(Self.serviceAccount(of:))))
    }

    /// What MetaServer serves (get/list/watch of the synced core kinds): only grants of these
    /// travel to nodes — the discovery and review roles every account holds stay in the cloud.
    static let servedAtTheEdge: Set<String> = Set(EdgeResourceKind.allCases.filter(\.isSynced).compactMap(\.resourceType)
        .filter { $0.group.isEmpty }.map(\.resource))

    /// Whether a role's rules grant a read of anything MetaServer serves.
    static func grantsEdgeReads(_ role: JSON) -> Bool {
        let rules = (try? JSONValueDecoder().decode([PolicyRule].self, from: role["rules"])) ?? []
        return rules.contains { r in
            (r.apiGroups ?? []).contains { $0.isEmpty || $0 == "*" }
                && (r.resources ?? []).contains { $0 == "*" || servedAtTheEdge.contains($0) }
                && r.verbs.contains { ["get", "list", "watch", "*"].contains($0) }
        }
    }

    /// The RBAC objects that grant `users` reads of what MetaServer serves: the bindings naming
    /// them (or their groups) and the roles those bindings grant, with their kinds.
    func grants(to users: [UserInfo]) -> [(object: JSON, kind: EdgeResourceKind)] {
        guard !users.isEmpty else { return [] }
        var out: [(JSON, EdgeResourceKind)] = []
        for (informer, kind) in [(roleBindings, EdgeResourceKind.roleBinding), (clusterRoleBindings, .clusterRoleBinding)] {
            for b in informer.cache.list() {
                guard let g = RBACPolicy.binding(b, appliesToAnyOf: users), g.applies else { continue }
                let role: (JSON, EdgeResourceKind)?
                if g.roleKind == "Role", kind == .roleBinding, let ns = b["metadata"]["namespace"].stringValue {
                    role = roles.cache.get("\(ns)/\(g.roleName)").map { ($0, .role) }
                } else if g.roleKind == "ClusterRole" {
                    role = clusterRoles.cache.get(g.roleName).map { ($0, .clusterRole) }
                } else {
                    role = nil
                }
                guard let role, Self.grantsEdgeReads(role.0) else { continue }
                out.append((b, kind))
                out.append(role)
            }
        }
        var seen = Set<String>()
        return out.filter { seen.insert($0.0["metadata"]["uid"].stringValue ?? "").inserted }
    }

    /// The bindings whose roleRef names this Role or ClusterRole.
    func bindings(granting role: JSON, kind: EdgeResourceKind) -> [JSON] {
        let name = role["metadata"]["name"].stringValue ?? "", ns = role["metadata"]["namespace"].stringValue
        let roleKind = kind == .role ? "Role" : "ClusterRole"
        var out = roleBindings.cache.list().filter { b in
            b["roleRef"]["kind"].stringValue == roleKind && b["roleRef"]["name"].stringValue == name
                && (kind == .clusterRole || b["metadata"]["namespace"].stringValue == ns)
        }
        if kind == .clusterRole {
            out += clusterRoleBindings.cache.list().filter { $0["roleRef"]["kind"].stringValue == "ClusterRole" && $0["roleRef"]["name"].stringValue == name }
        }
        return out
    }

    /// A pod came, went or changed its ServiceAccount: the grants of that account, for its node.
    func notifyGrants(of pod: JSON, node: String?) {
        guard let node else { return }
        for g in grants(to: [Self.serviceAccount(of: pod)]) { notify(g.object, node: node) }
    }

    /// Nodes that run at least one pod (the ones RBAC objects may concern).
    func nodesWithPods() -> [String] {
        nodes.cache.list().compactMap { n in
            guard let name = n["metadata"]["name"].stringValue, !byNode.objects(name, in: pods.cache).isEmpty else { return nil }
            return name
        }
    }

    /// `<ns>/<model>` of a Device.
    static func modelKey(of device: JSON) -> String? {
        guard let m = device["spec"]["deviceModelRef"]["name"].stringValue, !m.isEmpty else { return nil }
        return "\(device["metadata"]["namespace"].stringValue ?? "default")/\(m)"
    }

    func notifyModel(of device: JSON, node: String?) {
        guard let key = Self.modelKey(of: device), let m = deviceModels.cache.get(key) else { return }
        notify(m, node: node)
    }

    func notifyNodesUsing(_ model: JSON) {
        var nodes = Set<String>()
        for d in devicesByModel.objects(InformerCache.key(model), in: devices.cache) { if let n = nodeName(d) { nodes.insert(n) } }
        for n in nodes { notify(model, node: n) }
    }

    /// The node with this InternalIP (what kube-apiserver dials for its kubelet), or this name.
    public func node(forAddress address: String) -> String? {
        for n in nodes.cache.list() {
            for a in n["status"]["addresses"].arrayValue ?? [] where a["type"].stringValue == "InternalIP" && a["address"].stringValue == address {
                return n["metadata"]["name"].stringValue
            }
        }
        return nodes.cache.get(address).flatMap { $0["metadata"]["name"].stringValue }
    }

    /// The node a device is bound to (for node authorization and twin reports).
    public func deviceNode(namespace: String, name: String) -> String? {
        devices.cache.get("\(namespace)/\(name)")?["spec"]["nodeName"].stringValue
    }

    /// Connects the change notifications to the delivery engine.
    public func attach(_ s: ReliableSync) { sync.withLock { $0 = s } }

    static func withoutStatus(_ o: JSON) -> JSON {
        var o = o
        o["status"] = .null
        o["metadata"]["resourceVersion"] = .null
        o["metadata"]["managedFields"] = .null
        return o
    }

    /// The index key of a reference to an object of `kind` (`<ns>/<name>`).
    static func reference(_ kind: EdgeResourceKind, _ key: String) -> String { "\(kind.wireName):\(key)" }

    /// The ConfigMaps, Secrets and PersistentVolumeClaims a pod needs on its node.
    static func references(of pod: JSON) -> [String] {
        let ns = pod["metadata"]["namespace"].stringValue ?? ""
        let refs = PodReferences(pod: pod)
        return (refs.configMaps.map { reference(.configMap, "\(ns)/\($0)") } + refs.secrets.map { reference(.secret, "\(ns)/\($0)") }
            + refs.persistentVolumeClaims.map { reference(.persistentVolumeClaim, "\(ns)/\($0)") }).sorted()
    }

    static let edgeLabel = "node-role.kubernetes.io/edge"

    func isEdgeNode(_ name: String) -> Bool { !(nodes.cache.get(name)?["metadata"]["labels"][Self.edgeLabel].isNull ?? true) }

    func edgeNodes() -> [String] {
        nodes.cache.list().compactMap { n in n["metadata"]["labels"][Self.edgeLabel].isNull ? nil : n["metadata"]["name"].stringValue }
    }

    func nodeName(_ pod: JSON) -> String? { pod["spec"]["nodeName"].stringValue.flatMap { $0.isEmpty ? nil : $0 } }

    func track(_ o: JSON, _ kind: EdgeResourceKind) {
        guard let uid = o["metadata"]["uid"].stringValue else { return }
        uids.withLock { $0[uid] = (InformerCache.key(o), kind) }
    }

    func untrack(_ o: JSON) {
        guard let uid = o["metadata"]["uid"].stringValue else { return }
        _ = uids.withLock { $0.removeValue(forKey: uid) }
    }

    func notify(_ o: JSON, node: String?) {
        guard let node, !node.isEmpty, let uid = o["metadata"]["uid"].stringValue else { return }
        sync.withLock { $0 }?.changed(uid, node: node)
    }

    /// A pod's references, for its node (added, dropped, or the pod gone).
    func notifyReferenced(by pod: JSON, node: String?) {
        guard let node else { return }
        let refs = Self.references(of: pod)
        for ref in refs {
            guard let (informer, key) = lookup(ref), let o = informer.cache.get(key) else { continue }
            notify(o, node: node)
        }
        // The volumes its claims are bound to (a claim bound before the pod came).
        for v in boundVolumes(Set(refs)) { notify(v, node: node) }
    }

    /// A ConfigMap, Secret or claim changed: every node with a pod that references it.
    func notifyNodesReferencing(_ o: JSON, kind: EdgeResourceKind) {
        for n in nodesReferencing(o, kind: kind) { notify(o, node: n) }
    }

    func nodesReferencing(_ o: JSON, kind: EdgeResourceKind) -> Set<String> {
        let ref = Self.reference(kind, InformerCache.key(o))
        var nodes = Set<String>()
        for p in byReference.objects(ref, in: pods.cache) { if let n = nodeName(p) { nodes.insert(n) } }
        return nodes
    }

    /// The volume a claim is bound to.
    static func boundVolume(of claim: JSON) -> String? {
        claim["spec"]["volumeName"].stringValue.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The nodes whose pods mount a claim bound to this volume.
    func nodesUsing(volume name: String) -> Set<String> {
        guard !name.isEmpty else { return [] }
        var out = Set<String>()
        for c in claims.cache.list() where Self.boundVolume(of: c) == name { out.formUnion(nodesReferencing(c, kind: .persistentVolumeClaim)) }
        return out
    }

    /// The volumes the claims referenced by `refs` are bound to.
    func boundVolumes(_ refs: Set<String>) -> [JSON] {
        refs.compactMap { ref -> JSON? in
            guard let (informer, key) = lookup(ref), informer === claims, let c = informer.cache.get(key), let v = Self.boundVolume(of: c) else { return nil }
            return volumes.cache.get(v)
        }
    }

    func lookup(_ ref: String) -> (SharedInformer, String)? {
        guard let colon = ref.firstIndex(of: ":"), let kind = EdgeResourceKind(rawValue: String(ref[..<colon])) else { return nil }
        let key = String(ref[ref.index(after: colon)...])
        switch kind {
        case .configMap: return (configMaps, key)
        case .secret: return (secrets, key)
        case .persistentVolumeClaim: return (claims, key)
        case .persistentVolume, .volumeAttachment, .csiNode, .csiDriver, .volume, .pod, .node, .service, .endpoints, .device, .deviceModel, .podStatus, .podPatch, .nodeStatus, .nodePatch, .lease, .event,
             .deviceStatus, .objectSync, .serviceAccountToken, .caCertificate, .certificateSigningRequest, .apiRequest, .role, .roleBinding, .clusterRole,
             .clusterRoleBinding:
            return nil
        }
    }

    /// Whether a pod bound to `node` uses this ConfigMap or Secret (what the node may read).
    public func isReferenced(_ ref: ResourceRef, by node: String) -> Bool {
        guard ref.kind == .configMap || ref.kind == .secret, let ns = ref.namespace, let name = ref.name else { return false }
        return referenced(by: node).contains(Self.reference(ref.kind, "\(ns)/\(name)"))
    }

    /// References of the pods bound to `node`.
    func referenced(by node: String) -> Set<String> {
        var refs = Set<String>()
        for p in byNode.objects(node, in: pods.cache) { refs.formUnion(Self.references(of: p)) }
        return refs
    }

    public func desired(for node: String) -> [String] {
        var out = byNode.objects(node, in: pods.cache).compactMap { $0["metadata"]["uid"].stringValue }
        let refs = referenced(by: node)
        for ref in refs {
            if let (informer, key) = lookup(ref), let uid = informer.cache.get(key)?["metadata"]["uid"].stringValue { out.append(uid) }
        }
        for v in boundVolumes(refs) { if let uid = v["metadata"]["uid"].stringValue { out.append(uid) } }
        for a in attachmentsByNode.objects(node, in: attachments.cache) { if let uid = a["metadata"]["uid"].stringValue { out.append(uid) } }
        if let n = nodes.cache.get(node), let uid = n["metadata"]["uid"].stringValue { out.append(uid) }
        var models = Set<String>()
        for d in devicesByNode.objects(node, in: devices.cache) {
            if let uid = d["metadata"]["uid"].stringValue { out.append(uid) }
            if let key = Self.modelKey(of: d) { models.insert(key) }
        }
        for key in models { if let uid = deviceModels.cache.get(key)?["metadata"]["uid"].stringValue { out.append(uid) } }
        if isEdgeNode(node) {
            for o in services.cache.list() + endpoints.cache.list() + csiDrivers.cache.list() { if let uid = o["metadata"]["uid"].stringValue { out.append(uid) } }
        }
        for g in grants(to: serviceAccounts(on: node)) { if let uid = g.object["metadata"]["uid"].stringValue { out.append(uid) } }
        return out
    }

    public func object(_ uid: String, for node: String) -> SyncedObject? {
        guard let entry = uids.withLock({ $0[uid] }) else { return nil }
        switch entry.kind {
        case .node:
            guard entry.key == node, let n = nodes.cache.get(entry.key) else { return nil }
            return SyncedObject(n, kind: .node)
        case .pod:
            guard let p = pods.cache.get(entry.key), p["spec"]["nodeName"].stringValue == node else { return nil }
            return SyncedObject(p, kind: .pod)
        case .service, .endpoints, .csiDriver:
            let informer = entry.kind == .service ? services : entry.kind == .endpoints ? endpoints : csiDrivers
            guard isEdgeNode(node), let o = informer.cache.get(entry.key), o["metadata"]["uid"].stringValue == uid else { return nil }
            return SyncedObject(o, kind: entry.kind)
        case .device:
            guard let d = devices.cache.get(entry.key), d["metadata"]["uid"].stringValue == uid, nodeName(d) == node else { return nil }
            return SyncedObject(d, kind: .device)
        case .deviceModel:
            guard let m = deviceModels.cache.get(entry.key), m["metadata"]["uid"].stringValue == uid else { return nil }
            let needed = devicesByModel.objects(entry.key, in: devices.cache).contains { nodeName($0) == node }
            return needed ? SyncedObject(m, kind: .deviceModel) : nil
        case .persistentVolume:
            guard let v = volumes.cache.get(entry.key), v["metadata"]["uid"].stringValue == uid,
                  nodesUsing(volume: entry.key).contains(node) else { return nil }
            return SyncedObject(v, kind: .persistentVolume)
        case .volumeAttachment:
            guard let a = attachments.cache.get(entry.key), a["metadata"]["uid"].stringValue == uid,
                  a["spec"]["nodeName"].stringValue == node else { return nil }
            return SyncedObject(a, kind: .volumeAttachment)
        case .configMap, .secret, .persistentVolumeClaim:
            let informer = entry.kind == .configMap ? configMaps : entry.kind == .secret ? secrets : claims
            guard let o = informer.cache.get(entry.key), o["metadata"]["uid"].stringValue == uid else { return nil }
            // Still needed there? Only while a pod on the node references it.
            let needed = byReference.objects(Self.reference(entry.kind, entry.key), in: pods.cache).contains { nodeName($0) == node }
            return needed ? SyncedObject(o, kind: entry.kind) : nil
        case .role, .roleBinding, .clusterRole, .clusterRoleBinding:
            // Only while it grants a ServiceAccount of the node's pods something.
            guard let g = grants(to: serviceAccounts(on: node)).first(where: { $0.object["metadata"]["uid"].stringValue == uid }) else { return nil }
            return SyncedObject(g.object, kind: g.kind)
        case .csiNode, .volume, .podStatus, .podPatch, .nodeStatus, .nodePatch, .lease, .event, .deviceStatus, .objectSync, .serviceAccountToken, .caCertificate,
             .certificateSigningRequest, .apiRequest:
            return nil  // reports, never tracked
        }
    }

    /// A pod from the cache (token requests of a node's pods are checked against it).
    public func pod(namespace: String, name: String) -> JSON? { pods.cache.get("\(namespace)/\(name)") }

    /// The node a pod is bound to (for node authorization of upstream messages).
    public func podNode(namespace: String, name: String) -> String? {
        pods.cache.get("\(namespace)/\(name)")?["spec"]["nodeName"].stringValue
    }
}
