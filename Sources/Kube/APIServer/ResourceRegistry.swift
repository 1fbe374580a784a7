import KubeAPI
import Synchronization

/// The served resources: compiled-in kinds plus those defined by CustomResourceDefinitions.
/// Changes are visible to the next request at once (discovery, OpenAPI, endpoints).
public final class ResourceRegistry: Sendable {
    struct State {
        var types: [ResourceType] = []
        /// CRD name → its resource types (one per served version) and schema per version.
        var custom: [String: CustomResource] = [:]
        var generation = 0
    }

    /// What a CRD contributes.
    struct CustomResource {
        var types: [ResourceType]
        var schemas: [String: JSON]
        var printerColumns: [String: [JSON]]
        var crd: JSON
    }

    let state: Mutex<State>

    public init() {
        state = Mutex(State(types: BuiltinResources.all))
    }

    /// Bumped on every change (used for discovery/OpenAPI hashes).
    var generation: Int { state.withLock { $0.generation } }

    var allTypes: [ResourceType] {
        state.withLock { s in s.types + s.custom.values.flatMap(\.types) }
    }

    func resolve(group: String, version: String, resource: String) -> ResourceType? {
        state.withLock { s in
            if let t = s.types.first(where: { $0.group == group && $0.version == version && $0.resource == resource }) {
                return t
            }
            for c in s.custom.values {
                if let t = c.types.first(where: { $0.group == group && $0.version == version && $0.resource == resource }) {
                    return t
                }
            }
            return nil
        }
    }

    func hasGroupVersion(group: String, version: String) -> Bool {
        allTypes.contains { $0.group == group && $0.version == version }
    }

    /// Any served type for a storage prefix (used by the garbage collector and namespace cleanup).
    func type(forStoragePrefix prefix: String) -> ResourceType? {
        allTypes.first { $0.storagePrefix == prefix }
    }

    /// The served type for an ownerReference's `apiVersion` and `kind`.
    func type(apiVersion: String, kind: String) -> ResourceType? {
        let parts = apiVersion.split(separator: "/", maxSplits: 1).map(String.init)
        let (group, version) = parts.count == 2 ? (parts[0], parts[1]) : ("", apiVersion)
        return allTypes.first { $0.group == group && $0.version == version && $0.kind == kind }
    }

    func schema(for t: ResourceType) -> JSON? {
        state.withLock { s in
            s.custom.values.first { $0.types.contains(t) }?.schemas[t.version]
        }
    }

    func printerColumns(for t: ResourceType) -> [JSON]? {
        state.withLock { s in
            s.custom.values.first { $0.types.contains(t) }?.printerColumns[t.version]
        }
    }

    func customResourceDefinition(named name: String) -> JSON? {
        state.withLock { $0.custom[name]?.crd }
    }

    /// Registers (or replaces) the resources a CRD defines.
    func register(crd: JSON) {
        let spec = crd["spec"]
        let group = spec["group"].stringValue ?? ""
        let names = spec["names"]
        let plural = names["plural"].stringValue ?? ""
        let kind = names["kind"].stringValue ?? ""
        let namespaced = spec["scope"].stringValue != "Cluster"
        var types: [ResourceType] = []
        var schemas: [String: JSON] = [:]
        var columns: [String: [JSON]] = [:]
        for v in spec["versions"].arrayValue ?? [] where v["served"].boolValue != false {
            let version = v["name"].stringValue ?? ""
            var subs: Set<Subresource> = []
            var scale: ScalePaths?
            if !v["subresources"]["status"].isNull { subs.insert(.status) }
            let sc = v["subresources"]["scale"]
            if !sc.isNull {
                subs.insert(.scale)
                func path(_ s: String?) -> [String]? {
                    guard let s, s.hasPrefix(".") else { return nil }
                    return s.dropFirst().split(separator: ".").map(String.init)
                }
                scale = ScalePaths(specReplicas: path(sc["specReplicasPath"].stringValue) ?? ["spec", "replicas"],
                                   statusReplicas: path(sc["statusReplicasPath"].stringValue) ?? ["status", "replicas"],
                                   labelSelector: path(sc["labelSelectorPath"].stringValue))
            }
            var t = ResourceType(group: group, version: version, resource: plural,
                                 singular: names["singular"].stringValue ?? kind.lowercased(), kind: kind,
                                 namespaced: namespaced,
                                 shortNames: (names["shortNames"].arrayValue ?? []).compactMap(\.stringValue),
                                 categories: (names["categories"].arrayValue ?? []).compactMap(\.stringValue),
                                 subresources: subs, scale: scale, tracksGeneration: true, isCustom: true)
            if let lk = names["listKind"].stringValue { t.listKind = lk }
            types.append(t)
            schemas[version] = v["schema"]["openAPIV3Schema"]
            columns[version] = v["additionalPrinterColumns"].arrayValue ?? []
        }
        let name = crd["metadata"]["name"].stringValue ?? ""
        state.withLock { s in
            s.custom[name] = CustomResource(types: types, schemas: schemas, printerColumns: columns, crd: crd)
            s.generation += 1
        }
    }

    func unregister(crdName: String) {
        state.withLock { s in
            s.custom.removeValue(forKey: crdName)
            s.generation += 1
        }
    }

    /// Groups in discovery order: core first, then built-in groups, then custom ones.
    func groups() -> [(name: String, versions: [String])] {
        var order: [String] = []
        var versions: [String: [String]] = [:]
        for t in allTypes {
            if versions[t.group] == nil { order.append(t.group) }
            if !(versions[t.group]?.contains(t.version) ?? false) { versions[t.group, default: []].append(t.version) }
        }
        return order.map { ($0, Self.sortVersions(versions[$0]!)) }
    }

    /// Kubernetes version priority: GA > beta > alpha, higher numbers first.
    static func sortVersions(_ vs: [String]) -> [String] {
        func key(_ v: String) -> (Int, Int, Int) {
            let s = v.dropFirst()
            let digits = s.prefix { $0.isNumber }
            let major = Int(digits) ?? 0
            let rest = s.dropFirst(digits.count)
            if rest.isEmpty { return (3, major, 0) }
            let minor = Int(rest.drop { !$0.isNumber }) ?? 0
            if rest.hasPrefix("beta") { return (2, major, minor) }
            if rest.hasPrefix("alpha") { return (1, major, minor) }
            return (0, major, minor)
        }
        return vs.sorted { key($0) > key($1) }
    }
}
