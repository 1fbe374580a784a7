/// The one place for SwiftEdge's default ports and paths (KubeEdge's where it has one). Flags,
/// config files and library configurations take their defaults from here; production paths are
/// all overridable (`--config-dir`, `--data-dir`, …) so tests and demos never touch them.
public enum Defaults {
    // Ports
    /// CloudHub's WebSocket server (KubeEdge's cloudHub.websocket.port).
    public static let cloudHubPort = 10000
    /// The certificate service edge nodes join through (cloudHub.https.port).
    public static let certificatePort = 10002
    /// The cloud stream server for an external kube-apiserver (cloudStream.streamPort).
    public static let streamPort = 10003
    /// The cloud's Prometheus endpoint (commonConfig.monitorServer).
    public static let cloudMetricsPort = 9091
    /// The embedded API server.
    public static let apiServerPort = 6443
    /// The kubelet port a node advertises (`daemonEndpoints`; CloudStream answers for it).
    public static let kubeletPort = 10350
    /// The edge's local read API (metaManager.metaServer).
    public static let metaServerPort = 10550
    /// The edge's Prometheus endpoint on 127.0.0.1.
    public static let edgeMetricsPort = 10352
    /// KubeEdge's admission webhook (`cloud/cmd/admission`).
    public static let admissionPort = 443

    // Paths
    /// Config files (`config/cloudcore.yaml`, `config/edgecore.yaml`).
    public static let configDirectory = "/etc/kubeedge"
    /// The edge node's certificates, database, pod volumes, DMI socket.
    public static let edgeDataDirectory = "/var/lib/kubeedge"
    /// The cloud's database, certificates and admin kubeconfig.
    public static let cloudDataDirectory = "/var/lib/kubeedge/cloud"
    /// `swiftedge admission`'s generated CA and serving certificate.
    public static let admissionCertDirectory = configDirectory + "/admission"
    /// `swiftedge apiserver`'s data.
    public static let apiServerDataDirectory = "/var/lib/swiftedge/apiserver"
    /// Container logs (kubelet's layout).
    public static let podLogsDirectory = "/var/log/pods"
    /// Where `init`/`join` write systemd units.
    public static let systemdDirectory = "/etc/systemd/system"
    /// The CRI endpoint of the container runtime.
    public static let containerRuntimeEndpoint = "unix:///run/containerd/containerd.sock"
    /// The edge's DMI socket (KubeEdge's deviceTwin.dmiSockPath).
    public static let dmiSocket = edgeDataDirectory + "/dmi.sock"
    /// The Modbus mapper's own DMI socket.
    public static let modbusMapperSocket = edgeDataDirectory + "/modbus.sock"
}
