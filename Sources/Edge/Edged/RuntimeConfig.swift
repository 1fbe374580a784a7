import CRI
import Foundation
import KubeAPI

/// Labels and annotations Edged puts on what it creates in the runtime (kubelet's names, so
/// `ctr`/`crictl` users see familiar keys), plus the node's own label so several nodes (or a
/// kubelet) can share one runtime.
enum RuntimeLabels {
    static let podUID = "io.kubernetes.pod.uid"
    static let podName = "io.kubernetes.pod.name"
    static let podNamespace = "io.kubernetes.pod.namespace"
    static let containerName = "io.kubernetes.container.name"
    static let restartCount = "io.kubernetes.container.restartCount"
    static let node = "swiftedge.io/node"
}

/// A container that cannot be configured yet (a missing ConfigMap, Secret or key): reported as
/// `CreateContainerConfigError`, retried when the node receives more objects.
struct ConfigError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// Reads an object the node holds by its store key (`<ns>/configmap/<name>`).
typealias ObjectLookup = @Sendable (String) async throws -> JSON?

/// Builds CRI configs for a pod from its spec and the node's store.
struct RuntimeConfigBuilder: Sendable {
    let nodeName: String
    let nodeIP: String
    /// Pod volumes live under `<podsDirectory>/<uid>/volumes`.
    let podsDirectory: String
    /// Container logs: `<logDirectory>/<ns>_<name>_<uid>/<container>/<attempt>.log`, as kubelet.
    let logDirectory: String
    let lookup: ObjectLookup

    func sandboxConfig(_ pod: PodModel, attempt: UInt32) -> Runtime_V1_PodSandboxConfig {
        var c = Runtime_V1_PodSandboxConfig()
        c.metadata.name = pod.name
        c.metadata.namespace = pod.namespace
        c.metadata.uid = pod.uid
        c.metadata.attempt = attempt
        c.logDirectory = "\(logDirectory)/\(pod.namespace)_\(pod.name)_\(pod.uid)"
        var labels: [String: String] = [:]
        for (k, v) in pod.object["metadata"]["labels"].objectValue ?? [:] { if let s = v.stringValue { labels[k] = s } }
        labels[RuntimeLabels.podUID] = pod.uid
        labels[RuntimeLabels.podName] = pod.name
        labels[RuntimeLabels.podNamespace] = pod.namespace
        labels[RuntimeLabels.node] = nodeName
        c.labels = labels
        var annotations: [String: String] = [:]
        for (k, v) in pod.object["metadata"]["annotations"].objectValue ?? [:] { if let s = v.stringValue { annotations[k] = s } }
        c.annotations = annotations
        // Host-network pods share the node's network and UTS namespaces: no hostname is set
        // (the runtime cannot set one without a private UTS namespace).
        if !pod.hostNetwork { c.hostname = pod.name }
        c.linux.securityContext.namespaceOptions.network = pod.hostNetwork ? .node : .pod
        c.linux.securityContext.namespaceOptions.pid = (pod.object["spec"]["hostPID"].boolValue ?? false) ? .node : .container
        c.linux.securityContext.namespaceOptions.ipc = (pod.object["spec"]["hostIPC"].boolValue ?? false) ? .node : .pod
        for container in pod.containers {
            for p in container.ports {
                guard let cp = p["containerPort"].intValue else { continue }
                var m = Runtime_V1_PortMapping()
                m.containerPort = Int32(cp)
                m.hostPort = Int32(p["hostPort"].intValue ?? (pod.hostNetwork ? cp : 0))
                m.protocol = p["protocol"].stringValue == "UDP" ? .udp : (p["protocol"].stringValue == "SCTP" ? .sctp : .tcp)
                if let ip = p["hostIP"].stringValue { m.hostIp = ip }
                if m.hostPort != 0 { c.portMappings.append(m) }
            }
        }
        return c
    }

    func containerConfig(_ pod: PodModel, _ spec: ContainerSpec, attempt: UInt32, podIP: String) async throws -> Runtime_V1_ContainerConfig {
        var c = Runtime_V1_ContainerConfig()
        c.metadata.name = spec.name
        c.metadata.attempt = attempt
        c.image.image = spec.image
        let env = try await environment(pod, spec, podIP: podIP)
        let vars = Dictionary(env, uniquingKeysWith: { _, b in b })
        c.command = spec.command.map { expand($0, vars) }
        c.args = spec.args.map { expand($0, vars) }
        c.workingDir = spec.workingDir
        c.envs = env.map { var kv = Runtime_V1_KeyValue(); kv.key = $0.0; kv.value = Data($0.1.utf8); return kv }
        c.mounts = try await mounts(pod, spec)
        c.labels = [RuntimeLabels.podUID: pod.uid, RuntimeLabels.podName: pod.name, RuntimeLabels.podNamespace: pod.namespace,
                    RuntimeLabels.containerName: spec.name, RuntimeLabels.node: nodeName]
        c.annotations = [RuntimeLabels.restartCount: String(attempt)]
        c.logPath = "\(spec.name)/\(attempt).log"
        c.stdin = spec.stdin
        c.tty = spec.tty
        let limits = spec.resources["limits"], requests = spec.resources["requests"]
        if let cpu = Quantity.milliValue(limits["cpu"]) {
            c.linux.resources.cpuPeriod = 100_000
            c.linux.resources.cpuQuota = max(1000, cpu * 100)
        }
        if let cpu = Quantity.milliValue(requests["cpu"]) ?? Quantity.milliValue(limits["cpu"]) {
            c.linux.resources.cpuShares = max(2, cpu * 1024 / 1000)
        }
        if let mem = Quantity.value(limits["memory"]) { c.linux.resources.memoryLimitInBytes = mem }
        return c
    }

    // MARK: environment

    /// The container's environment: `envFrom` first, then `env` (later wins), with `$(VAR)`
    /// references expanded as Kubernetes does.
    func environment(_ pod: PodModel, _ spec: ContainerSpec, podIP: String) async throws -> [(String, String)] {
        var out: [(String, String)] = []
        var known: [String: String] = [:]
        func add(_ k: String, _ v: String) {
            if known[k] != nil { out.removeAll { $0.0 == k } }
            known[k] = v
            out.append((k, v))
        }
        for source in spec.envFrom {
            let prefix = source["prefix"].stringValue ?? ""
            if let name = source["configMapRef"]["name"].stringValue {
                guard let cm = try await object("configmap", pod.namespace, name) else {
                    if source["configMapRef"]["optional"].boolValue == true { continue }
                    throw ConfigError(message: "configmap \"\(name)\" not found")
                }
                for (k, v) in (cm["data"].objectValue ?? [:]).sorted(by: { $0.key < $1.key }) { add(prefix + k, v.stringValue ?? "") }
            } else if let name = source["secretRef"]["name"].stringValue {
                guard let s = try await object("secret", pod.namespace, name) else {
                    if source["secretRef"]["optional"].boolValue == true { continue }
                    throw ConfigError(message: "secret \"\(name)\" not found")
                }
                for (k, v) in try secretData(s).sorted(by: { $0.key < $1.key }) { add(prefix + k, String(decoding: v, as: UTF8.self)) }
            }
        }
        for e in spec.env {
            guard let name = e["name"].stringValue else { continue }
            if let v = e["value"].stringValue { add(name, expand(v, known)); continue }
            let from = e["valueFrom"]
            if !from["configMapKeyRef"].isNull {
                let ref = from["configMapKeyRef"]
                let cmName = ref["name"].stringValue ?? "", key = ref["key"].stringValue ?? ""
                if let cm = try await object("configmap", pod.namespace, cmName), let v = cm["data"][key].stringValue {
                    add(name, v)
                } else if ref["optional"].boolValue != true {
                    throw ConfigError(message: "couldn't find key \(key) in ConfigMap \(pod.namespace)/\(cmName)")
                }
            } else if !from["secretKeyRef"].isNull {
                let ref = from["secretKeyRef"]
                let sName = ref["name"].stringValue ?? "", key = ref["key"].stringValue ?? ""
                if let s = try await object("secret", pod.namespace, sName), let v = try secretData(s)[key] {
                    add(name, String(decoding: v, as: UTF8.self))
                } else if ref["optional"].boolValue != true {
                    throw ConfigError(message: "couldn't find key \(key) in Secret \(pod.namespace)/\(sName)")
                }
            } else if let path = from["fieldRef"]["fieldPath"].stringValue {
                add(name, try field(pod, path, podIP: podIP))
            } else if !from["resourceFieldRef"].isNull {
                let r = from["resourceFieldRef"]
                let c = pod.containers.first { $0.name == (r["containerName"].stringValue ?? spec.name) } ?? spec
                let res = r["resource"].stringValue ?? ""
                let parts = res.split(separator: ".", maxSplits: 1).map(String.init)
                if parts.count == 2 {
                    let q = c.resources[parts[0]][parts[1]]
                    add(name, parts[1] == "cpu" ? String(((Quantity.milliValue(q) ?? 0) + 999) / 1000) : String(Quantity.value(q) ?? 0))
                }
            }
        }
        return out
    }

    func field(_ pod: PodModel, _ path: String, podIP: String) throws -> String {
        let m = pod.object["metadata"]
        switch path {
        case "metadata.name": return pod.name
        case "metadata.namespace": return pod.namespace
        case "metadata.uid": return pod.uid
        case "spec.nodeName": return nodeName
        case "spec.serviceAccountName": return pod.object["spec"]["serviceAccountName"].stringValue ?? "default"
        case "status.hostIP": return nodeIP
        case "status.podIP": return podIP
        default:
            for (prefix, dict) in [("metadata.labels", m["labels"]), ("metadata.annotations", m["annotations"])] {
                if path.hasPrefix(prefix + "['"), path.hasSuffix("']") {
                    let key = String(path.dropFirst(prefix.count + 2).dropLast(2))
                    return dict[key].stringValue ?? ""
                }
            }
            throw ConfigError(message: "unsupported fieldPath \(path)")
        }
    }

    /// `$(VAR)` → its value when defined; `$$` → `$`; anything else kept as written.
    func expand(_ s: String, _ vars: [String: String]) -> String {
        guard s.contains("$" as Character) else { return s }
        var out = ""
        var i = s.startIndex
        while i < s.endIndex {
            let ch = s[i]
            let next = s.index(after: i)
            if ch == "$", next < s.endIndex {
                if s[next] == "$" { out.append("$"); i = s.index(after: next); continue }
                if s[next] == "(", let close = s[next...].firstIndex(of: ")") {
                    let name = String(s[s.index(after: next)..<close])
                    if let v = vars[name] { out += v } else { out += s[i...close] }
                    i = s.index(after: close)
                    continue
                }
            }
            out.append(ch)
            i = next
        }
        return out
    }

    func object(_ type: String, _ namespace: String, _ name: String) async throws -> JSON? {
        try await lookup("\(namespace)/\(type)/\(name)")
    }

    func secretData(_ s: JSON) throws -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        for (k, v) in s["data"].objectValue ?? [:] {
            guard let b = v.stringValue, let d = Data(base64Encoded: b) else { throw ConfigError(message: "secret key \(k) is not base64") }
            out[k] = Array(d)
        }
        for (k, v) in s["stringData"].objectValue ?? [:] { out[k] = Array((v.stringValue ?? "").utf8) }
        return out
    }

    // MARK: volumes

    func volumeDirectory(_ pod: PodModel) -> String { "\(podsDirectory)/\(pod.uid)/volumes" }

    /// Prepares every volume of the pod on the node and returns their host paths. ConfigMap
    /// and Secret volumes are rewritten when their contents change (files replaced by rename).
    func prepareVolumes(_ pod: PodModel) async throws -> [String: String] {
        var paths: [String: String] = [:]
        let fm = FileManager.default
        for v in pod.volumes {
            guard let name = v["name"].stringValue else { continue }
            let base = volumeDirectory(pod)
            if let hostPath = v["hostPath"]["path"].stringValue {
                switch v["hostPath"]["type"].stringValue ?? "" {
                case "DirectoryOrCreate": try fm.createDirectory(atPath: hostPath, withIntermediateDirectories: true)
                case "FileOrCreate":
                    if !fm.fileExists(atPath: hostPath) {
                        try fm.createDirectory(atPath: (hostPath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                        _ = fm.createFile(atPath: hostPath, contents: nil)
                    }
                case "Directory", "File", "Socket", "CharDevice", "BlockDevice":
                    guard fm.fileExists(atPath: hostPath) else { throw ConfigError(message: "hostPath \(hostPath) does not exist") }
                default: break
                }
                paths[name] = hostPath
            } else if !v["emptyDir"].isNull {
                let dir = "\(base)/empty-dir/\(name)"
                try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
                paths[name] = dir
            } else if !v["configMap"].isNull {
                let ref = v["configMap"], cmName = ref["name"].stringValue ?? ""
                let dir = "\(base)/configmap/\(name)"
                if let cm = try await object("configmap", pod.namespace, cmName) {
                    var files: [String: [UInt8]] = [:]
                    for (k, x) in cm["data"].objectValue ?? [:] { files[k] = Array((x.stringValue ?? "").utf8) }
                    for (k, x) in cm["binaryData"].objectValue ?? [:] { files[k] = x.stringValue.flatMap { Data(base64Encoded: $0) }.map { Array($0) } ?? [] }
                    try write(files, items: ref["items"].arrayValue, to: dir)
                } else if ref["optional"].boolValue == true {
                    try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
                } else {
                    throw ConfigError(message: "configmap \"\(cmName)\" not found")
                }
                paths[name] = dir
            } else if !v["secret"].isNull {
                let ref = v["secret"], sName = ref["secretName"].stringValue ?? ""
                let dir = "\(base)/secret/\(name)"
                if let s = try await object("secret", pod.namespace, sName) {
                    try write(try secretData(s), items: ref["items"].arrayValue, to: dir)
                } else if ref["optional"].boolValue == true {
                    try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
                } else {
                    throw ConfigError(message: "secret \"\(sName)\" not found")
                }
                paths[name] = dir
            } else {
                throw ConfigError(message: "volume \(name): only configMap, secret, emptyDir and hostPath volumes are supported")
            }
        }
        return paths
    }

    func write(_ files: [String: [UInt8]], items: [JSON]?, to dir: String) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var wanted: [String: [UInt8]] = [:]
        if let items {
            for i in items {
                guard let k = i["key"].stringValue, let p = i["path"].stringValue else { continue }
                guard let data = files[k] else { throw ConfigError(message: "key \(k) not found") }
                wanted[p] = data
            }
        } else {
            wanted = files
        }
        for (path, data) in wanted {
            guard !path.hasPrefix("/"), !path.split(separator: "/").contains("..") else { throw ConfigError(message: "bad volume path \(path)") }
            let target = "\(dir)/\(path)"
            if let current = fm.contents(atPath: target), Array(current) == data { continue }
            try fm.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            let tmp = target + ".swiftedge-tmp"
            try Data(data).write(to: URL(fileURLWithPath: tmp))
            if rename(tmp, target) != 0 { throw ConfigError(message: "cannot write \(target): errno \(errno)") }
        }
        for existing in (try? fm.contentsOfDirectory(atPath: dir)) ?? [] where wanted[existing] == nil && !wanted.keys.contains(where: { $0.hasPrefix(existing + "/") }) {
            try? fm.removeItem(atPath: "\(dir)/\(existing)")
        }
    }

    func mounts(_ pod: PodModel, _ spec: ContainerSpec) async throws -> [Runtime_V1_Mount] {
        guard !spec.volumeMounts.isEmpty else { return [] }
        let paths = try await prepareVolumes(pod)
        var out: [Runtime_V1_Mount] = []
        for m in spec.volumeMounts {
            guard let name = m["name"].stringValue, let path = m["mountPath"].stringValue else { continue }
            guard var host = paths[name] else { throw ConfigError(message: "volumeMount \(name): no such volume") }
            if let sub = m["subPath"].stringValue, !sub.isEmpty {
                guard !sub.hasPrefix("/"), !sub.split(separator: "/").contains("..") else { throw ConfigError(message: "bad subPath \(sub)") }
                host += "/" + sub
            }
            var x = Runtime_V1_Mount()
            x.containerPath = path
            x.hostPath = host
            x.readonly = m["readOnly"].boolValue ?? false
            out.append(x)
        }
        return out
    }
}
