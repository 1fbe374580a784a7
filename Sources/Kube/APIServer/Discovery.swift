import KubeAPI

/// Legacy (`APIGroupList`/`APIResourceList`) and aggregated (`apidiscovery.k8s.io/v2`) discovery.
enum Discovery {
    static let version: JSON = [
        "major": "1", "minor": "32", "gitVersion": "v1.32.0-swiftedge", "gitCommit": "swiftedge",
        "gitTreeState": "clean", "buildDate": "2026-11-25T00:00:00Z", "goVersion": "swift6.3", "compiler": "swiftc",
        "platform": "linux/amd64",
    ]

    static let aggregatedContentType = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"

    static func groupObject(_ name: String, _ versions: [String]) -> JSON {
        let vs: [JSON] = versions.map { ["groupVersion": .string("\(name)/\($0)"), "version": .string($0)] }
        return ["name": .string(name), "versions": .array(vs), "preferredVersion": vs.first ?? .null]
    }

    static func apiVersions(_ req: APIRequest, registry: ResourceRegistry, advertise: String) -> APIResponse {
        if req.wantsAggregatedDiscovery { return aggregated(core: true, registry: registry) }
        return .json(200, ["kind": "APIVersions", "versions": ["v1"],
                           "serverAddressByClientCIDRs": [["clientCIDR": "0.0.0.0/0", "serverAddress": .string(advertise)]]])
    }

    static func apiGroups(_ req: APIRequest, registry: ResourceRegistry) -> APIResponse {
        if req.wantsAggregatedDiscovery { return aggregated(core: false, registry: registry) }
        let groups = registry.groups().filter { !$0.name.isEmpty }.map { groupObject($0.name, $0.versions) }
        return .json(200, ["kind": "APIGroupList", "apiVersion": "v1", "groups": .array(groups)])
    }

    static func subresourceKind(_ t: ResourceType, _ s: Subresource) -> (group: String, version: String, kind: String, verbs: [String]) {
        switch s {
        case .status: return ("", "", t.kind, ["get", "patch", "update"])
        case .scale: return ("autoscaling", "v1", "Scale", ["get", "patch", "update"])
        case .binding: return ("", "", "Binding", ["create"])
        case .eviction: return ("policy", "v1", "Eviction", ["create"])
        case .log: return ("", "", "Pod", ["get"])
        case .exec, .attach, .portforward: return ("", "", "\(t.kind)\(s.rawValue.capitalized)Options", ["create", "get"])
        case .proxy: return ("", "", "\(t.kind)ProxyOptions", ["create", "delete", "get", "patch", "update"])
        case .finalize: return ("", "", t.kind, ["update"])
        case .approval: return ("", "", t.kind, ["get", "patch", "update"])
        case .token: return ("authentication.k8s.io", "v1", "TokenRequest", ["create"])
        }
    }

    static func resourceList(group: String, version: String, registry: ResourceRegistry) -> JSON {
        var resources: [JSON] = []
        for t in registry.allTypes where t.group == group && t.version == version {
            var r: JSON = ["name": .string(t.resource), "singularName": .string(t.singular), "namespaced": .bool(t.namespaced),
                           "kind": .string(t.kind), "verbs": .array(t.verbs.map { .string($0) })]
            if !t.shortNames.isEmpty { r["shortNames"] = .array(t.shortNames.map { .string($0) }) }
            if !t.categories.isEmpty { r["categories"] = .array(t.categories.map { .string($0) }) }
            resources.append(r)
            for s in t.subresources.sorted(by: { $0.rawValue < $1.rawValue }) {
                let k = subresourceKind(t, s)
                var sr: JSON = ["name": .string("\(t.resource)/\(s.rawValue)"), "singularName": "", "namespaced": .bool(t.namespaced),
                                "kind": .string(k.kind), "verbs": .array(k.verbs.map { .string($0) })]
                if !k.group.isEmpty { sr["group"] = .string(k.group); sr["version"] = .string(k.version) }
                resources.append(sr)
            }
        }
        return ["kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": .string(group.isEmpty ? version : "\(group)/\(version)"), "resources": .array(resources)]
    }

    static func aggregated(core: Bool, registry: ResourceRegistry) -> APIResponse {
        var items: [JSON] = []
        let types = registry.allTypes
        for g in registry.groups() where (g.name.isEmpty) == core {
            var versions: [JSON] = []
            for v in g.versions {
                var resources: [JSON] = []
                for t in types where t.group == g.name && t.version == v {
                    var r: JSON = ["resource": .string(t.resource),
                                   "responseKind": ["group": .string(t.group), "version": .string(t.version), "kind": .string(t.kind)],
                                   "scope": .string(t.namespaced ? "Namespaced" : "Cluster"),
                                   "singularResource": .string(t.singular), "verbs": .array(t.verbs.map { .string($0) })]
                    if !t.shortNames.isEmpty { r["shortNames"] = .array(t.shortNames.map { .string($0) }) }
                    if !t.categories.isEmpty { r["categories"] = .array(t.categories.map { .string($0) }) }
                    let subs: [JSON] = t.subresources.sorted(by: { $0.rawValue < $1.rawValue }).map { s in
                        let k = subresourceKind(t, s)
                        return ["subresource": .string(s.rawValue),
                                "responseKind": ["group": .string(k.group), "version": .string(k.version), "kind": .string(k.kind)],
                                "verbs": .array(k.verbs.map { .string($0) })]
                    }
                    if !subs.isEmpty { r["subresources"] = .array(subs) }
                    resources.append(r)
                }
                versions.append(["version": .string(v), "resources": .array(resources), "freshness": "Current"])
            }
            items.append(["metadata": ["name": .string(g.name), "creationTimestamp": .null], "versions": .array(versions)])
        }
        let body: JSON = ["kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": .emptyObject, "items": .array(items)]
        return .raw(200, body.serialized(), contentType: aggregatedContentType)
    }
}

/// OpenAPI v3: an index per group-version and per-GV documents whose operations carry
/// `x-kubernetes-group-version-kind`, so kubectl uses server-side field validation; CRD
/// schemas are included for `kubectl explain`.
enum OpenAPI {
    static func gvPath(_ group: String, _ version: String) -> String {
        group.isEmpty ? "api/\(version)" : "apis/\(group)/\(version)"
    }

    static func handle(parts: [String], query: [String: String], registry: ResourceRegistry) throws(StatusError) -> APIResponse {
        guard parts.first == "v3" else {
            throw StatusError(.notFound, "the server could not find the requested resource")
        }
        let hash = String(registry.generation, radix: 16)
        if parts.count == 1 {
            var paths: [String: JSON] = [:]
            for g in registry.groups() {
                for v in g.versions {
                    let p = gvPath(g.name, v)
                    paths[p] = ["serverRelativeURL": .string("/openapi/v3/\(p)?hash=\(hash)-\(p.hashValue & 0xffffff)")]
                }
            }
            return .json(200, ["paths": .object(paths)])
        }
        let rest = Array(parts.dropFirst())
        let group: String, version: String
        if rest.count == 2, rest[0] == "api" { group = ""; version = rest[1] }
        else if rest.count == 3, rest[0] == "apis" { group = rest[1]; version = rest[2] }
        else { throw StatusError(.notFound, "the server could not find the requested resource") }
        guard registry.hasGroupVersion(group: group, version: version) else {
            throw StatusError(.notFound, "the server could not find the requested resource")
        }
        return .json(200, document(group: group, version: version, registry: registry))
    }

    static func schemaName(_ t: ResourceType) -> String {
        let g = t.group.isEmpty ? "core" : t.group
        return "io.swiftedge.\(g).\(t.version).\(t.kind)"
    }

    static func document(group: String, version: String, registry: ResourceRegistry) -> JSON {
        var paths: [String: JSON] = [:]
        var schemas: [String: JSON] = [:]
        let params: JSON = [["name": "fieldValidation", "in": "query", "schema": ["type": "string"]],
                            ["name": "fieldManager", "in": "query", "schema": ["type": "string"]],
                            ["name": "dryRun", "in": "query", "schema": ["type": "string"]]]
        for t in registry.allTypes where t.group == group && t.version == version {
            let gvk: JSON = ["group": .string(t.group), "version": .string(t.version), "kind": .string(t.kind)]
            let base = "/" + gvPath(group, version) + (t.namespaced ? "/namespaces/{namespace}" : "") + "/\(t.resource)"
            let builtin = t.isCustom ? nil : BuiltinSchemas.cached(t)
            let ref: JSON = ["$ref": .string("#/components/schemas/\(builtin?.root ?? schemaName(t))")]
            let body: JSON = ["content": ["application/json": ["schema": ref]]]
            func op(_ action: String) -> JSON {
                ["x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": .string(action), "parameters": params,
                 "requestBody": body, "responses": ["200": ["description": "OK", "content": ["application/json": ["schema": ref]]]]]
            }
            paths[base] = ["get": op("list"), "post": op("post")]
            paths[base + "/{name}"] = ["get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")]
            // Built-in schemas come from the types' field table, with the list merge metadata
            // kubectl's apply reads from them (BuiltinSchemas).
            if t.isCustom {
                var schema: JSON = registry.schema(for: t) ?? ["type": "object", "x-kubernetes-preserve-unknown-fields": true]
                schema["x-kubernetes-group-version-kind"] = [gvk]
                schemas[schemaName(t)] = schema
            } else if let builtin {
                schemas.merge(builtin.schemas) { a, _ in a }
            } else {
                schemas[schemaName(t)] = ["type": "object", "x-kubernetes-preserve-unknown-fields": true]
            }
        }
        return ["openapi": "3.0.0", "info": ["title": "Kubernetes", "version": "v1.32.0"],
                "paths": .object(paths), "components": ["schemas": .object(schemas)]]
    }
}
