import CRI
import CloudEdgeProtocol
import Foundation
import KubeAPI
import Synchronization

/// The node's pod network, as kubelet's kubenet did it: a CNI `bridge` with `host-local`
/// addresses from the subnet the cloud gave the node (`spec.podCIDR`), written where the runtime
/// reads its CNI configuration. Pods on the node reach each other by IP through the bridge.
public struct PodNetworkConfiguration: Sendable, Equatable {
    /// The runtime's CNI configuration directory (containerd's `conf_dir`).
    public var cniConfDirectory: String
    /// Where `host-local` keeps its leases (node-local, survives restarts).
    public var cniDataDirectory: String
    /// The bridge pods are attached to (its address is the pods' gateway).
    public var bridge = "swe0"
    /// Source-NAT pods' traffic leaving the node (the bridge plugin's `ipMasq`).
    public var masquerade = true

    public init(cniConfDirectory: String, cniDataDirectory: String) {
        self.cniConfDirectory = cniConfDirectory; self.cniDataDirectory = cniDataDirectory
    }

    /// The network list file Edged owns in ``cniConfDirectory``.
    public static let fileName = "10-swiftedge.conflist"

    /// The CNI network list for `subnet` (spec 0.4.0: bridge + host-local).
    public func conflist(subnet: IPv4Network) -> JSON {
        let gateway = subnet.address(1).map { JSON.string($0.description) } ?? .null
        let ipam: JSON = ["type": "host-local", "ranges": [[["subnet": .string(subnet.description), "gateway": gateway]]],
                          "routes": [["dst": "0.0.0.0/0"]], "dataDir": .string(cniDataDirectory)]
        let bridgePlugin: JSON = ["type": "bridge", "bridge": .string(bridge), "isGateway": true, "ipMasq": .bool(masquerade),
                                  "hairpinMode": true, "ipam": ipam]
        return ["cniVersion": "0.4.0", "name": "swiftedge", "plugins": [bridgePlugin]]
    }

    /// Writes the network list for `subnet` if it differs from what is there (a temporary file
    /// renamed over the old one: the runtime never reads half a file). Returns whether it wrote.
    @discardableResult
    public func write(subnet: IPv4Network) throws -> Bool {
        let fm = FileManager.default
        try fm.createDirectory(atPath: cniConfDirectory, withIntermediateDirectories: true)
        try fm.createDirectory(atPath: cniDataDirectory, withIntermediateDirectories: true)
        let path = cniConfDirectory + "/" + Self.fileName
        let bytes = conflist(subnet: subnet).serialized() + [0x0A]
        if let old = fm.contents(atPath: path), Array(old) == bytes { return false }
        let tmp = cniConfDirectory + "/." + Self.fileName + ".tmp"
        guard fm.createFile(atPath: tmp, contents: Data(bytes)) else {
            throw ConfigError(message: "cannot write the pod network configuration \(tmp)")
        }
        guard rename(tmp, path) == 0 else {
            let e = String(cString: strerror(errno))
            try? fm.removeItem(atPath: tmp)
            throw ConfigError(message: "cannot install the pod network configuration \(path): \(e)")
        }
        return true
    }
}

/// Resolver settings for pods (kubelet's `--cluster-dns`, `--cluster-domain`).
public struct ClusterDNSConfiguration: Sendable, Equatable {
    /// Nameservers of `ClusterFirst` pods (the node's EdgeMesh DNS).
    public var servers: [String]
    public var domain = "cluster.local"

    public init(servers: [String], domain: String = "cluster.local") { self.servers = servers; self.domain = domain }

    /// The sandbox's resolver for `pod`, as kubelet's dns configurer: nil leaves the runtime's
    /// default (the node's own resolv.conf) in place.
    func dnsConfig(for pod: PodModel) -> Runtime_V1_DNSConfig? {
        var c = Runtime_V1_DNSConfig()
        let clusterFirst = pod.dnsPolicy == "ClusterFirstWithHostNet" || (pod.dnsPolicy == "ClusterFirst" && !pod.hostNetwork)
        if clusterFirst && !servers.isEmpty {
            c.servers = servers
            c.searches = ["\(pod.namespace).svc.\(domain)", "svc.\(domain)", domain]
            c.options = ["ndots:5"]
        } else if pod.dnsPolicy != "None" && pod.dnsConfig == nil {
            return nil
        }
        if let extra = pod.dnsConfig {
            for s in extra.nameservers ?? [] where !c.servers.contains(s) { c.servers.append(s) }
            for s in extra.searches ?? [] where !c.searches.contains(s) { c.searches.append(s) }
            for o in extra.options ?? [] {
                guard let name = o.name, !name.isEmpty else { continue }
                c.options.removeAll { $0 == name || $0.hasPrefix(name + ":") }
                c.options.append(o.value.map { "\(name):\($0)" } ?? name)
            }
        }
        return c
    }
}

/// The subnet the node's pod network is configured for (nil until the cloud gave one and the
/// network list is written): pods off the host network wait for it.
final class PodNetworkState: Sendable {
    let subnet = Mutex<IPv4Network?>(nil)
    var isReady: Bool { subnet.withLock { $0 != nil } }
}
