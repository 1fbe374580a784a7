import CloudEdgeProtocol
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

/// The API address in-cluster clients of the node's pods are given.
public struct InClusterAPI: Sendable, Equatable {
    public var host: String
    public var port: Int
    public init(host: String, port: Int) { self.host = host; self.port = port }
}

/// Builds CRI configs for a pod from its spec and the node's store.
struct RuntimeConfigBuilder: Sendable {
    let nodeName: String
    let nodeIP: String
    /// Pod volumes live under `<podsDirectory>/<uid>/volumes`.
    let podsDirectory: String
    /// Container logs: `<logDirectory>/<ns>_<name>_<uid>/<container>/<attempt>.log`, as kubelet.
    let logDirectory: String
    let lookup: ObjectLookup
    /// Tokens for `serviceAccountToken` projections (nil: the files stay empty).
    var tokens: ServiceAccountTokenSource? = nil
    /// The address in-cluster clients are given (`KUBERNETES_SERVICE_HOST/PORT`): the node's MetaServer.
    var inClusterAPI: InClusterAPI? = nil
    /// Resolver of `ClusterFirst` pods.
    var clusterDNS: ClusterDNSConfiguration? = nil
    /// The pod network Edged configures (nil: the runtime's own); pods off the host network wait
    /// until it has a subnet.
    var network: PodNetworkState? = nil
    /// The node's CSI volumes (nil: a claim bound to a CSI volume cannot run here).
    var csiVolumes: (any PodVolumePublisher)? = nil

    /// Why a pod cannot get its sandbox yet (nil: it can).
    func networkNotReady(_ pod: PodModel) -> String? {
        guard !pod.hostNetwork, let network, !network.isReady else { return nil }
        return "network is not ready: the node has no pod CIDR from the cloud yet (spec.podCIDR)"
    }

    func sandboxConfig(_ pod: PodModel, attempt: UInt32) -> Runtime_V1_PodSandboxConfig {
        var c = Runtime_V1_PodSandboxConfig()
        c.metadata.name = pod.name
        c.metadata.namespace = pod.namespace
        c.metadata.uid = pod.uid
        c.metadata.attempt = attempt
        c.logDirectory = "\(logDirectory)/\(pod.namespace)_\(pod.name)_\(pod.uid)"
        var labels = pod.labels
        labels[RuntimeLabels.podUID] = pod.uid
        labels[RuntimeLabels.podName] = pod.name
        labels[RuntimeLabels.podNamespace] = pod.namespace
        labels[RuntimeLabels.node] = nodeName
        c.labels = labels
        c.annotations = pod.annotations
        // Host-network pods share the node's network and UTS namespaces: no hostname is set
        // (the runtime cannot set one without a private UTS namespace).
        if !pod.hostNetwork { c.hostname = pod.name }
        c.linux.securityContext.namespaceOptions = namespaceOptions(pod)
        if let dns = clusterDNS?.dnsConfig(for: pod) {
            c.dnsConfig = dns
        } else if pod.dnsPolicy == "None" || pod.dnsConfig != nil {
            c.dnsConfig = ClusterDNSConfiguration(servers: []).dnsConfig(for: pod) ?? Runtime_V1_DNSConfig()
        }
        for container in pod.containers {
            for p in container.ports {
                var m = Runtime_V1_PortMapping()
                m.containerPort = p.containerPort
                m.hostPort = p.hostPort ?? (pod.hostNetwork ? p.containerPort : 0)
                m.protocol = p.protocol == "UDP" ? .udp : (p.protocol == "SCTP" ? .sctp : .tcp)
                if let ip = p.hostIP { m.hostIp = ip }
                if m.hostPort != 0 { c.portMappings.append(m) }
            }
        }
        return c
    }

    /// The namespaces of the pod's sandbox and of each of its containers, as kubelet sets them: the
    /// pod's network and IPC namespaces (or the node's), and each container its own PID namespace
    /// unless the pod shares one (`shareProcessNamespace`) or uses the node's.
    func namespaceOptions(_ pod: PodModel) -> Runtime_V1_NamespaceOption {
        var o = Runtime_V1_NamespaceOption()
        o.network = pod.hostNetwork ? .node : .pod
        o.pid = pod.hostPID ? .node : (pod.shareProcessNamespace ? .pod : .container)
        o.ipc = pod.hostIPC ? .node : .pod
        return o
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
        c.linux.securityContext.namespaceOptions = namespaceOptions(pod)
        let limits = spec.resources.limits ?? [:], requests = spec.resources.requests ?? [:]
        if let cpu = Quantity.milliValue(limits["cpu"] ?? .null) {
            c.linux.resources.cpuPeriod = 100_000
            c.linux.resources.cpuQuota = max(1000, cpu * 100)
        }
        if let cpu = Quantity.milliValue(requests["cpu"] ?? .null) ?? Quantity.milliValue(limits["cpu"] ?? .null) {
            c.linux.resources.cpuShares = max(2, cpu * 1024 / 1000)
        }
        if let mem = Quantity.value(limits["memory"] ?? .null) { c.linux.resources.memoryLimitInBytes = mem }
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
        // kubelet's variables for the `kubernetes` Service, pointing at the node's MetaServer (the
        // pod's own env and envFrom may override them).
        if let api = inClusterAPI {
            let port = String(api.port)
            for (k, v) in [("KUBERNETES_SERVICE_HOST", api.host), ("KUBERNETES_SERVICE_PORT", port), ("KUBERNETES_SERVICE_PORT_HTTPS", port),
                           ("KUBERNETES_PORT", "tcp://\(api.host):\(port)")] { add(k, v) }
        }
        for source in spec.envFrom {
            let prefix = source.prefix ?? ""
            if let ref = source.configMapRef, let name = ref.name {
                guard let cm = try await configMap(pod.namespace, name) else {
                    if ref.optional == true { continue }
                    throw ConfigError(message: "configmap \"\(name)\" not found")
                }
                for (k, v) in (cm.data ?? [:]).sorted(by: { $0.key < $1.key }) { add(prefix + k, v) }
            } else if let ref = source.secretRef, let name = ref.name {
                guard let s = try await secret(pod.namespace, name) else {
                    if ref.optional == true { continue }
                    throw ConfigError(message: "secret \"\(name)\" not found")
                }
                for (k, v) in try secretData(s).sorted(by: { $0.key < $1.key }) { add(prefix + k, String(decoding: v, as: UTF8.self)) }
            }
        }
        for e in spec.env {
            let name = e.name
            if let v = e.value { add(name, expand(v, known)); continue }
            guard let from = e.valueFrom else { continue }
            if let ref = from.configMapKeyRef {
                let cmName = ref.name ?? "", key = ref.key
                if let cm = try await configMap(pod.namespace, cmName), let v = cm.data?[key] {
                    add(name, v)
                } else if ref.optional != true {
                    throw ConfigError(message: "couldn't find key \(key) in ConfigMap \(pod.namespace)/\(cmName)")
                }
            } else if let ref = from.secretKeyRef {
                let sName = ref.name ?? "", key = ref.key
                if let s = try await secret(pod.namespace, sName), let v = try secretData(s)[key] {
                    add(name, String(decoding: v, as: UTF8.self))
                } else if ref.optional != true {
                    throw ConfigError(message: "couldn't find key \(key) in Secret \(pod.namespace)/\(sName)")
                }
            } else if let path = from.fieldRef?.fieldPath {
                add(name, try field(pod, path, podIP: podIP))
            } else if let r = from.resourceFieldRef {
                add(name, try resourceValue(pod, r, defaultContainer: spec))
            }
        }
        return out
    }

    /// A container's request or limit as the downward API gives it: the quantity divided by the
    /// divisor (default 1), rounded up, as kubelet does.
    func resourceValue(_ pod: PodModel, _ r: Core.ResourceFieldSelector, defaultContainer: ContainerSpec?) throws -> String {
        guard let c = pod.containers.first(where: { $0.name == (r.containerName ?? defaultContainer?.name) }) ?? defaultContainer else {
            throw ConfigError(message: "resourceFieldRef \(r.resource): no container \(r.containerName ?? "(unnamed)")")
        }
        let parts = r.resource.split(separator: ".", maxSplits: 1).map(String.init)
        guard parts.count == 2, parts[0] == "limits" || parts[0] == "requests" else {
            throw ConfigError(message: "unsupported resource \(r.resource)")
        }
        let q = (parts[0] == "limits" ? c.resources.limits : c.resources.requests)?[parts[1]] ?? .null
        let divisor = r.divisor ?? .null
        if parts[1] == "cpu" {
            let milli = Quantity.milliValue(q) ?? 0
            let per = max(1, divisor.isNull ? 1000 : (Quantity.milliValue(divisor) ?? 1000))
            return String((milli + per - 1) / per)
        }
        let value = Quantity.value(q) ?? 0
        let per = max(1, divisor.isNull ? 1 : (Quantity.value(divisor) ?? 1))
        return String((value + per - 1) / per)
    }

    func field(_ pod: PodModel, _ path: String, podIP: String) throws -> String {
        switch path {
        case "metadata.name": return pod.name
        case "metadata.namespace": return pod.namespace
        case "metadata.uid": return pod.uid
        case "spec.nodeName": return nodeName
        case "spec.serviceAccountName": return pod.serviceAccountName
        case "status.hostIP": return nodeIP
        case "status.podIP": return podIP
        case "metadata.labels": return Self.keyValueLines(pod.labels)
        case "metadata.annotations": return Self.keyValueLines(pod.annotations)
        default:
            for (prefix, dict) in [("metadata.labels", pod.labels), ("metadata.annotations", pod.annotations)] {
                if path.hasPrefix(prefix + "['"), path.hasSuffix("']") {
                    let key = String(path.dropFirst(prefix.count + 2).dropLast(2))
                    return dict[key] ?? ""
                }
            }
            throw ConfigError(message: "unsupported fieldPath \(path)")
        }
    }

    /// `key="value"` lines, sorted by key (the downward API's file format for labels/annotations).
    static func keyValueLines(_ d: [String: String]) -> String {
        d.keys.sorted().map { k in
            let v = (d[k] ?? "").replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n")
            return "\(k)=\"\(v)\""
        }.joined(separator: "\n")
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

    func object(_ kind: EdgeResourceKind, _ namespace: String?, _ name: String) async throws -> JSON? {
        try await lookup(ResourceRef(namespace: namespace, kind: kind, name: name).description)
    }

    /// An object the node holds, typed (nil: not there; a malformed one is an error naming it).
    func typed<T: Decodable>(_ kind: EdgeResourceKind, _ namespace: String?, _ name: String) async throws -> T? {
        guard let o = try await object(kind, namespace, name) else { return nil }
        do { return try JSONValueDecoder().decode(T.self, from: o) } catch {
            throw ConfigError(message: "\(kind) \"\(name)\": \(error)")
        }
    }

    func configMap(_ namespace: String, _ name: String) async throws -> Core.ConfigMap? { try await typed(.configMap, namespace, name) }
    func secret(_ namespace: String, _ name: String) async throws -> Core.Secret? { try await typed(.secret, namespace, name) }

    func secretData(_ s: Core.Secret) throws -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        for (k, b) in s.data ?? [:] {
            guard let d = Data(base64Encoded: b) else { throw ConfigError(message: "secret key \(k) is not base64") }
            out[k] = Array(d)
        }
        for (k, v) in s.stringData ?? [:] { out[k] = Array(v.utf8) }
        return out
    }

    // MARK: volumes

    /// Rewrites the file volumes of a running pod (configMap, secret, downwardAPI, projected —
    /// a ServiceAccount token past 80 % of its life is replaced) from the node's store; each
    /// directory changes atomically, and only when its content did. Errors are left to the next round.
    func refreshFileVolumes(_ pod: PodModel) async throws {
        var only = pod
        only.volumes = pod.volumes.filter { $0.configMap != nil || $0.secret != nil || $0.downwardAPI != nil || $0.projected != nil }
        guard !only.volumes.isEmpty else { return }
        _ = try await prepareVolumes(only)
    }

    func volumeDirectory(_ pod: PodModel) -> String { "\(podsDirectory)/\(pod.uid)/volumes" }

    /// Prepares every volume of the pod on the node and returns their host paths. ConfigMap
    /// and Secret volumes are rewritten when their contents change (files replaced by rename).
    func prepareVolumes(_ pod: PodModel) async throws -> [String: String] {
        var paths: [String: String] = [:]
        let fm = FileManager.default
        for v in pod.volumes {
            let name = v.name
            let base = volumeDirectory(pod)
            if let hostPath = v.hostPath?.path {
                switch v.hostPath?.type ?? "" {
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
            } else if v.emptyDir != nil {
                let dir = "\(base)/empty-dir/\(name)"
                try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
                try Self.applyFSGroup(pod.securityContext, to: dir)
                paths[name] = dir
            } else if let ref = v.configMap {
                let dir = "\(base)/configmap/\(name)"
                try writeFiles(try await configMapFiles(pod, ref.name, items: ref.items, optional: ref.optional), to: dir)
                paths[name] = dir
            } else if let ref = v.secret {
                let dir = "\(base)/secret/\(name)"
                try writeFiles(try await secretFiles(pod, ref.secretName, items: ref.items, optional: ref.optional), to: dir)
                paths[name] = dir
            } else if let d = v.downwardAPI {
                let dir = "\(base)/downward-api/\(name)"
                try writeFiles(try downwardFiles(pod, d.items ?? []), to: dir)
                paths[name] = dir
            } else if let p = v.projected {
                let dir = "\(base)/projected/\(name)"
                var files: [String: [UInt8]] = [:]
                for source in p.sources ?? [] {
                    var part: [String: [UInt8]]
                    if let ref = source.configMap {
                        part = try await configMapFiles(pod, ref.name, items: ref.items, optional: ref.optional)
                    } else if let ref = source.secret {
                        part = try await secretFiles(pod, ref.name, items: ref.items, optional: ref.optional)
                    } else if let d = source.downwardAPI {
                        part = try downwardFiles(pod, d.items ?? [])
                    } else if let t = source.serviceAccountToken {
                        // Without a token source (no cloud channel) the file exists, empty: in-cluster
                        // clients start and get 401 when they call.
                        var token: [UInt8] = []
                        if let tokens { token = Array(try await tokens.token(pod, volume: name, t).utf8) }
                        part = [t.path: token]
                    } else {
                        throw ConfigError(message: "volume \(name): unsupported projected source (only configMap, secret, downwardAPI and serviceAccountToken)")
                    }
                    for (path, data) in part {
                        if files[path] != nil { throw ConfigError(message: "volume \(name): two sources project \(path)") }
                        files[path] = data
                    }
                }
                try writeFiles(files, to: dir)
                paths[name] = dir
            } else if let claim = v.persistentVolumeClaim {
                let path = try await claimVolumePath(pod, claim)
                if claim.readOnly != true { try Self.applyFSGroup(pod.securityContext, to: path) }
                paths[name] = path
            } else {
                throw ConfigError(message: "volume \(name): only configMap, secret, projected, downwardAPI, emptyDir, hostPath and persistentVolumeClaim volumes are supported")
            }
        }
        return paths
    }

    /// The files of a ConfigMap (every key, or `items`); empty when it is missing and optional.
    func configMapFiles(_ pod: PodModel, _ name: String?, items: [Core.KeyToPath]?, optional: Bool?) async throws -> [String: [UInt8]] {
        let cmName = name ?? ""
        guard let cm = try await configMap(pod.namespace, cmName) else {
            if optional == true { return [:] }
            throw ConfigError(message: "configmap \"\(cmName)\" not found")
        }
        var files: [String: [UInt8]] = [:]
        for (k, x) in cm.data ?? [:] { files[k] = Array(x.utf8) }
        for (k, x) in cm.binaryData ?? [:] { files[k] = Data(base64Encoded: x).map { Array($0) } ?? [] }
        return try select(files, items: items, optional: optional == true, what: "configmap \"\(cmName)\"")
    }

    /// The files of a Secret (every key, or `items`); empty when it is missing and optional.
    func secretFiles(_ pod: PodModel, _ name: String?, items: [Core.KeyToPath]?, optional: Bool?) async throws -> [String: [UInt8]] {
        let sName = name ?? ""
        guard let s = try await secret(pod.namespace, sName) else {
            if optional == true { return [:] }
            throw ConfigError(message: "secret \"\(sName)\" not found")
        }
        return try select(try secretData(s), items: items, optional: optional == true, what: "secret \"\(sName)\"")
    }

    /// Downward API files: pod fields and container resources.
    func downwardFiles(_ pod: PodModel, _ items: [Core.DownwardAPIVolumeFile]) throws -> [String: [UInt8]] {
        var files: [String: [UInt8]] = [:]
        for item in items {
            if let f = item.fieldRef {
                files[item.path] = Array(try field(pod, f.fieldPath, podIP: "").utf8)
            } else if let r = item.resourceFieldRef {
                files[item.path] = Array(try resourceValue(pod, r, defaultContainer: nil).utf8)
            } else {
                throw ConfigError(message: "downwardAPI item \(item.path): needs fieldRef or resourceFieldRef")
            }
        }
        return files
    }

    /// Every key as a file, or only `items` (key → path); a missing key is an error unless optional.
    func select(_ files: [String: [UInt8]], items: [Core.KeyToPath]?, optional: Bool, what: String) throws -> [String: [UInt8]] {
        guard let items else { return files }
        var wanted: [String: [UInt8]] = [:]
        for i in items {
            guard let data = files[i.key] else {
                if optional { continue }
                throw ConfigError(message: "\(what): key \(i.key) not found")
            }
            wanted[i.path] = data
        }
        return wanted
    }

    /// Writes `wanted` (relative path → content) into `dir` as kubelet's atomic writer does:
    /// the files go into a fresh `..<time>` directory, the `..data` symlink is swapped to it in
    /// one rename, and each top-level name is a symlink through `..data`. A reader sees the old
    /// set or the new one, never a mix. Nothing is written when the content is unchanged.
    func writeFiles(_ wanted: [String: [UInt8]], to dir: String) throws {
        let fm = FileManager.default
        for path in wanted.keys {
            guard path.isSafeRelativePath, !path.hasPrefix("..") else { throw ConfigError(message: "bad volume path \(path)") }
        }
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let dataLink = "\(dir)/..data"
        let current = try? fm.destinationOfSymbolicLink(atPath: dataLink)
        if let current, Self.readTree("\(dir)/\(current)") == wanted { return }
        let stamp = "..\(Self.writerStamp())"
        let fresh = "\(dir)/\(stamp)"
        for (path, data) in wanted {
            let target = "\(fresh)/\(path)"
            try fm.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data(data).write(to: URL(fileURLWithPath: target))
        }
        try fm.createDirectory(atPath: fresh, withIntermediateDirectories: true)
        let tmpLink = "\(dir)/..data_tmp"
        try? fm.removeItem(atPath: tmpLink)
        try fm.createSymbolicLink(atPath: tmpLink, withDestinationPath: stamp)
        if rename(tmpLink, dataLink) != 0 { throw ConfigError(message: "cannot update \(dataLink): errno \(errno)") }
        // The visible names: a symlink through ..data for each top-level entry.
        let top = Set(wanted.keys.map { String($0.split(separator: "/", maxSplits: 1)[0]) })
        for name in top {
            let link = "\(dir)/\(name)"
            if (try? fm.destinationOfSymbolicLink(atPath: link)) == "..data/\(name)" { continue }
            try? fm.removeItem(atPath: link)  // a plain file of an older layout, or a stale link
            try fm.createSymbolicLink(atPath: link, withDestinationPath: "..data/\(name)")
        }
        for existing in (try? fm.contentsOfDirectory(atPath: dir)) ?? [] where existing != "..data" && existing != stamp && !top.contains(existing) {
            try? fm.removeItem(atPath: "\(dir)/\(existing)")
        }
    }

    /// Every regular file under `root`, by relative path (symlinks are not followed).
    static func readTree(_ root: String) -> [String: [UInt8]]? {
        let fm = FileManager.default
        guard let names = fm.subpaths(atPath: root) else { return nil }
        var out: [String: [UInt8]] = [:]
        for n in names {
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: "\(root)/\(n)", isDirectory: &isDir), !isDir.boolValue else { continue }
            out[n] = fm.contents(atPath: "\(root)/\(n)").map { Array($0) } ?? []
        }
        return out
    }

    /// kubelet's timestamped directory name (`2026_12_04_10_00_00.123456789`), unique per write.
    static func writerStamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = time_t(ts.tv_sec)
        var tm = tm()
        gmtime_r(&t, &tm)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let nanos = String(ts.tv_nsec)
        return "\(tm.tm_year + 1900)_\(two(tm.tm_mon + 1))_\(two(tm.tm_mday))_\(two(tm.tm_hour))_\(two(tm.tm_min))_\(two(tm.tm_sec))."
            + String(repeating: "0", count: max(0, 9 - nanos.count)) + nanos
    }

    /// kubelet's volume ownership for `fsGroup`: everything in the volume gets the group, read
    /// and write for it, and directories the setgid bit so new files inherit it. With
    /// `fsGroupChangePolicy: OnRootMismatch` nothing is walked when the root already has it.
    static func applyFSGroup(_ context: Core.PodSecurityContext?, to root: String) throws {
        guard let group = context?.fsGroup, let gid = gid_t(exactly: group) else { return }
        var st = stat()
        guard lstat(root, &st) == 0 else { return }
        if context?.fsGroupChangePolicy == "OnRootMismatch" && st.st_gid == gid && st.st_mode & S_ISGID != 0 { return }
        func fix(_ path: String) {
            var s = stat()
            guard lstat(path, &s) == 0, s.st_mode & S_IFMT != S_IFLNK else { return }
            _ = lchown(path, uid_t.max, gid)  // uid_t.max: keep the owner
            let isDir = s.st_mode & S_IFMT == S_IFDIR
            var mode = (s.st_mode & 0o7777) | S_IRGRP | S_IWGRP
            if isDir { mode |= S_IXGRP | S_ISGID }
            _ = chmod(path, mode)
        }
        // Walked without following symlinks: a link a container planted never leads outside.
        func walk(_ dir: String, depth: Int) {
            fix(dir)
            guard depth < 64, let d = opendir(dir) else { return }
            defer { closedir(d) }
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name == "." || name == ".." { continue }
                let path = "\(dir)/\(name)"
                var s = stat()
                guard lstat(path, &s) == 0 else { continue }
                if s.st_mode & S_IFMT == S_IFDIR { walk(path, depth: depth + 1) } else { fix(path) }
            }
        }
        walk(root, depth: 0)
    }

    /// The host path of `sub` inside a volume (created as a directory when missing, as kubelet
    /// does). Refused when it leaves the volume: `..`, an absolute path, or a symlink inside the
    /// volume pointing out of it (a container can plant one in a volume it writes).
    static func subPath(_ sub: String, in root: String) throws -> String {
        guard sub.isSafeRelativePath else { throw ConfigError(message: "subPath \(sub) must be a relative path inside the volume") }
        let joined = root + "/" + sub
        func resolved(_ p: String) -> String? {
            guard let r = realpath(p, nil) else { return nil }
            defer { free(r) }
            return String(cString: r)
        }
        guard let base = resolved(root) else { throw ConfigError(message: "volume path \(root) does not exist") }
        if resolved(joined) == nil {
            // Missing: the deepest existing ancestor must be inside before anything is created.
            var parent = (joined as NSString).deletingLastPathComponent
            while resolved(parent) == nil && parent.count > root.count { parent = (parent as NSString).deletingLastPathComponent }
            guard let p = resolved(parent), p == base || p.hasPrefix(base + "/") else {
                throw ConfigError(message: "subPath \(sub) leaves its volume")
            }
            try FileManager.default.createDirectory(atPath: joined, withIntermediateDirectories: true)
        }
        guard let r = resolved(joined), r == base || r.hasPrefix(base + "/") else {
            throw ConfigError(message: "subPath \(sub) leaves its volume")
        }
        return r
    }

    func mounts(_ pod: PodModel, _ spec: ContainerSpec) async throws -> [Runtime_V1_Mount] {
        guard !spec.volumeMounts.isEmpty else { return [] }
        let paths = try await prepareVolumes(pod)
        var out: [Runtime_V1_Mount] = []
        for m in spec.volumeMounts {
            guard var host = paths[m.name] else { throw ConfigError(message: "volumeMount \(m.name): no such volume") }
            if let sub = m.subPath, !sub.isEmpty {
                host = try Self.subPath(sub, in: host)
            }
            var x = Runtime_V1_Mount()
            x.containerPath = m.mountPath
            x.hostPath = host
            x.readonly = m.readOnly ?? false || pod.volumes.first { $0.name == m.name }?.persistentVolumeClaim?.readOnly == true
            out.append(x)
        }
        return out
    }
}
