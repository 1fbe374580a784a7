import KubeAPI

/// The resource types tests use, with their real traits (status subresource, `tracksGeneration`):
/// the registry's own constants (``ResourceType``), and KubeEdge's device kinds as their CRDs define them.
public enum TestResources {
    public static let pods = ResourceType.pods
    public static let nodes = ResourceType.nodes
    public static let configMaps = ResourceType.configMaps
    public static let secrets = ResourceType.secrets
    public static let services = ResourceType.services
    public static let endpoints = ResourceType.endpoints
    public static let events = ResourceType.events
    public static let namespaces = ResourceType.namespaces
    public static let deployments = ResourceType.deployments
    public static let replicaSets = ResourceType.replicaSets
    public static let leases = ResourceType.leases
    /// KubeEdge's Device and DeviceModel (status subresource, generation tracked, as their CRDs).
    public static let devices = ResourceType(group: "devices.kubeedge.io", version: "v1beta1", resource: "devices", kind: "Device",
                                             namespaced: true, subresources: [.status], tracksGeneration: true, isCustom: true)
    public static let deviceModels = ResourceType(group: "devices.kubeedge.io", version: "v1beta1", resource: "devicemodels",
                                                  kind: "DeviceModel", namespaced: true, tracksGeneration: true, isCustom: true)
}

/// Builders of common objects as JSON, with just what controllers read. Every builder takes the
/// name first; the rest has defaults.
public enum Fixtures {
    static func object(_ pairs: [String: String]) -> JSON {
        .object(pairs.mapValues { .string($0) })
    }

    static func metadata(_ name: String, namespace: String?, labels: [String: String]) -> JSON {
        var m: JSON = ["name": .string(name)]
        if let namespace { m["namespace"] = .string(namespace) }
        if !labels.isEmpty { m["labels"] = object(labels) }
        return m
    }

    /// A container `name` running `image`.
    public static func container(_ name: String = "app", image: String = "nginx:1.27") -> JSON {
        ["name": .string(name), "image": .string(image)]
    }

    /// A pod; `nodeName` binds it; `phase`/`ready` fill a status (honoured by ``InMemoryKubeClient/seed(_:_:)``;
    /// `create` resets a pod's status to Pending as the API server does).
    public static func pod(_ name: String, namespace: String = "default", labels: [String: String] = [:], nodeName: String? = nil,
                           containers: [JSON] = [container()], phase: String? = nil, ready: Bool = false,
                           ownerReferences: [JSON] = []) -> JSON
    {
        var p: JSON = ["apiVersion": "v1", "kind": "Pod", "metadata": metadata(name, namespace: namespace, labels: labels),
                       "spec": ["containers": .array(containers)]]
        if let nodeName { p["spec"]["nodeName"] = .string(nodeName) }
        if !ownerReferences.isEmpty { p["metadata"]["ownerReferences"] = .array(ownerReferences) }
        if let phase {
            p["status"]["phase"] = .string(phase)
            p["status"]["conditions"] = [["type": "Ready", "status": ready ? "True" : "False",
                                          "lastTransitionTime": .string(KubeTime.now().rfc3339)]]
        }
        return p
    }

    /// A pod template (`metadata.labels` + `spec`).
    public static func podTemplate(labels: [String: String], image: String = "nginx:1.27") -> JSON {
        ["metadata": ["labels": object(labels)], "spec": ["containers": [container(image: image)]]]
    }

    /// A node, `Ready=True` with a fresh heartbeat unless `ready` is nil (no conditions) or false.
    public static func node(_ name: String, labels: [String: String] = [:], ready: Bool? = true,
                            heartbeat: KubeTime = .now(), taints: [JSON] = []) -> JSON
    {
        var n: JSON = ["apiVersion": "v1", "kind": "Node", "metadata": metadata(name, namespace: nil, labels: labels), "spec": [:],
                       "status": ["allocatable": ["cpu": "4", "memory": "8Gi", "pods": "110"],
                                  "capacity": ["cpu": "4", "memory": "8Gi", "pods": "110"]]]
        if !taints.isEmpty { n["spec"]["taints"] = .array(taints) }
        if let ready {
            n["status"]["conditions"] = [["type": "Ready", "status": ready ? "True" : "False", "reason": "KubeletReady",
                                          "lastHeartbeatTime": .string(heartbeat.rfc3339), "lastTransitionTime": .string(heartbeat.rfc3339)]]
        }
        return n
    }

    /// An edge node (labelled `node-role.kubernetes.io/edge`).
    public static func edgeNode(_ name: String, labels: [String: String] = [:], ready: Bool? = true, heartbeat: KubeTime = .now()) -> JSON {
        var l = labels
        l["node-role.kubernetes.io/edge"] = ""
        return node(name, labels: l, ready: ready, heartbeat: heartbeat)
    }

    /// The node's Lease in `kube-node-lease`.
    public static func lease(node: String, renewTime: KubeTime = .now(), durationSeconds: Int64 = 40) -> JSON {
        ["apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
         "metadata": ["name": .string(node), "namespace": "kube-node-lease"],
         "spec": ["holderIdentity": .string(node), "leaseDurationSeconds": .int(durationSeconds), "renewTime": .string(renewTime.rfc3339Micro)]]
    }

    /// A Deployment selecting `labels` (RollingUpdate with the given maxSurge/maxUnavailable when set).
    public static func deployment(_ name: String, namespace: String = "default", replicas: Int64 = 1, labels: [String: String]? = nil,
                                  image: String = "nginx:1.27", maxSurge: JSON? = nil, maxUnavailable: JSON? = nil) -> JSON
    {
        let l = labels ?? ["app": name]
        var d: JSON = ["apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(name, namespace: namespace, labels: l),
                       "spec": ["replicas": .int(replicas), "selector": ["matchLabels": object(l)],
                                "template": podTemplate(labels: l, image: image)]]
        if maxSurge != nil || maxUnavailable != nil {
            d["spec"]["strategy"] = ["type": "RollingUpdate", "rollingUpdate": [:]]
            if let maxSurge { d["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = maxSurge }
            if let maxUnavailable { d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = maxUnavailable }
        }
        return d
    }

    /// A ReplicaSet selecting `labels`.
    public static func replicaSet(_ name: String, namespace: String = "default", replicas: Int64 = 1, labels: [String: String]? = nil,
                                  image: String = "nginx:1.27") -> JSON
    {
        let l = labels ?? ["app": name]
        return ["apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": metadata(name, namespace: namespace, labels: l),
                "spec": ["replicas": .int(replicas), "selector": ["matchLabels": object(l)], "template": podTemplate(labels: l, image: image)]]
    }

    public static func configMap(_ name: String, namespace: String = "default", data: [String: String] = ["key": "value"]) -> JSON {
        ["apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(name, namespace: namespace, labels: [:]), "data": object(data)]
    }

    /// A Secret; `data` values are given in clear and stored base64-encoded.
    public static func secret(_ name: String, namespace: String = "default", data: [String: String] = ["key": "value"],
                              type: String = "Opaque") -> JSON
    {
        ["apiVersion": "v1", "kind": "Secret", "metadata": metadata(name, namespace: namespace, labels: [:]), "type": .string(type),
         "data": .object(data.mapValues { .string(base64($0)) })]
    }

    public static func service(_ name: String, namespace: String = "default", selector: [String: String] = [:]) -> JSON {
        ["apiVersion": "v1", "kind": "Service", "metadata": metadata(name, namespace: namespace, labels: [:]),
         "spec": ["selector": object(selector), "ports": [["port": 80, "protocol": "TCP"]]]]
    }

    public static func endpoints(_ name: String, namespace: String = "default") -> JSON {
        ["apiVersion": "v1", "kind": "Endpoints", "metadata": metadata(name, namespace: namespace, labels: [:]), "subsets": []]
    }

    /// A KubeEdge Device bound to `nodeName`, using DeviceModel `model`.
    public static func device(_ name: String, namespace: String = "default", nodeName: String, model: String) -> JSON {
        ["apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device", "metadata": metadata(name, namespace: namespace, labels: [:]),
         "spec": ["nodeName": .string(nodeName), "deviceModelRef": ["name": .string(model)], "protocol": ["protocolName": "modbus"]]]
    }

    public static func deviceModel(_ name: String, namespace: String = "default") -> JSON {
        ["apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel", "metadata": metadata(name, namespace: namespace, labels: [:]),
         "spec": ["protocol": "modbus", "properties": [["name": "temperature", "type": "INT"]]]]
    }

    /// The owner reference that makes `owner` (a stored object) the controller of a dependent.
    public static func controllerRef(_ owner: JSON) -> JSON {
        ["apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
         "controller": true, "blockOwnerDeletion": true]
    }

    static func base64(_ s: String) -> String {
        let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        let bytes = Array(s.utf8)
        var out = ""
        var i = 0
        while i < bytes.count {
            let b0 = Int(bytes[i]), b1 = i + 1 < bytes.count ? Int(bytes[i + 1]) : 0, b2 = i + 2 < bytes.count ? Int(bytes[i + 2]) : 0
            out.append(table[b0 >> 2])
            out.append(table[((b0 & 3) << 4) | (b1 >> 4)])
            out.append(i + 1 < bytes.count ? table[((b1 & 15) << 2) | (b2 >> 6)] : "=")
            out.append(i + 2 < bytes.count ? table[b2 & 63] : "=")
            i += 3
        }
        return out
    }
}
