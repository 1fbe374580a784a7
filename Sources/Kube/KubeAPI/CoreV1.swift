/// Typed views of the core/v1 fields the edge acts on (Edged, MetaServer), decoded from the
/// stored JSON with ``JSONValueDecoder``. Only what is read is declared; the JSON stays the stored
/// and forwarded form, so fields unknown here are never lost.
public enum Core {
    public struct ObjectMeta: Decodable, Sendable, Equatable {
        public var name: String?
        public var namespace: String?
        public var uid: String?
        public var resourceVersion: String?
        public var labels: [String: String]?
        public var annotations: [String: String]?
        public var deletionTimestamp: String?
    }

    public struct Pod: Decodable, Sendable, Equatable {
        public var metadata: ObjectMeta?
        public var spec: PodSpec?
    }

    public struct PodSpec: Decodable, Sendable, Equatable {
        public var containers: [Container]?
        public var volumes: [Volume]?
        public var restartPolicy: String?
        public var hostNetwork: Bool?
        public var hostPID: Bool?
        public var shareProcessNamespace: Bool?
        public var hostIPC: Bool?
        public var terminationGracePeriodSeconds: Int64?
        public var serviceAccountName: String?
        public var nodeName: String?
        public var dnsPolicy: String?
        public var dnsConfig: PodDNSConfig?
        public var hostname: String?
        public var subdomain: String?
        public var securityContext: PodSecurityContext?
    }

    /// The pod-level security settings Edged applies to volumes.
    public struct PodSecurityContext: Decodable, Sendable, Equatable {
        public var fsGroup: Int64?
        public var runAsUser: Int64?
        public var runAsGroup: Int64?
        /// `Always` (default) or `OnRootMismatch`.
        public var fsGroupChangePolicy: String?
    }

    /// `spec.dnsConfig`: extra resolver settings (all of them with `dnsPolicy: None`).
    public struct PodDNSConfig: Decodable, Sendable, Equatable {
        public var nameservers: [String]?
        public var searches: [String]?
        public var options: [PodDNSConfigOption]?
    }

    public struct PodDNSConfigOption: Decodable, Sendable, Equatable {
        public var name: String?
        public var value: String?
    }

    public struct Container: Decodable, Sendable, Equatable {
        public var name: String?
        public var image: String?
        public var command: [String]?
        public var args: [String]?
        public var workingDir: String?
        public var env: [EnvVar]?
        public var envFrom: [EnvFromSource]?
        public var volumeMounts: [VolumeMount]?
        public var ports: [ContainerPort]?
        public var resources: ResourceRequirements?
        public var imagePullPolicy: String?
        /// Probes stay JSON here: Edged reads them into its own ``ProbeSpec``-like values.
        public var livenessProbe: JSON?
        public var readinessProbe: JSON?
        public var startupProbe: JSON?
        public var stdin: Bool?
        public var tty: Bool?
    }

    public struct EnvVar: Decodable, Sendable, Equatable {
        public var name: String
        public var value: String?
        public var valueFrom: EnvVarSource?
        public init(name: String, value: String? = nil, valueFrom: EnvVarSource? = nil) { self.name = name; self.value = value; self.valueFrom = valueFrom }
    }

    public struct EnvVarSource: Decodable, Sendable, Equatable {
        public var configMapKeyRef: KeySelector?
        public var secretKeyRef: KeySelector?
        public var fieldRef: FieldSelector?
        public var resourceFieldRef: ResourceFieldSelector?
    }

    /// A key of a ConfigMap or Secret (`configMapKeyRef`, `secretKeyRef`).
    public struct KeySelector: Decodable, Sendable, Equatable {
        public var name: String?
        public var key: String
        public var optional: Bool?
    }

    public struct FieldSelector: Decodable, Sendable, Equatable {
        public var apiVersion: String?
        public var fieldPath: String
    }

    public struct ResourceFieldSelector: Decodable, Sendable, Equatable {
        public var containerName: String?
        public var resource: String
        /// A quantity (default 1; for cpu, `1m` gives millicores).
        public var divisor: JSON?
    }

    public struct EnvFromSource: Decodable, Sendable, Equatable {
        public var prefix: String?
        public var configMapRef: LocalReference?
        public var secretRef: LocalReference?
    }

    /// A ConfigMap or Secret in the pod's namespace, by name.
    public struct LocalReference: Decodable, Sendable, Equatable {
        public var name: String?
        public var optional: Bool?
    }

    public struct VolumeMount: Decodable, Sendable, Equatable {
        public var name: String
        public var mountPath: String
        public var readOnly: Bool?
        public var subPath: String?
        public var mountPropagation: String?
    }

    public struct ContainerPort: Decodable, Sendable, Equatable {
        public var name: String?
        public var containerPort: Int32
        public var hostPort: Int32?
        /// TCP (default), UDP or SCTP.
        public var `protocol`: String?
        public var hostIP: String?
    }

    /// Quantities stay JSON (strings or numbers), read with ``Quantity``.
    public struct ResourceRequirements: Decodable, Sendable, Equatable {
        public var limits: [String: JSON]?
        public var requests: [String: JSON]?
        public init(limits: [String: JSON]? = nil, requests: [String: JSON]? = nil) { self.limits = limits; self.requests = requests }
    }

    public struct Volume: Decodable, Sendable, Equatable {
        public var name: String
        public var hostPath: HostPathVolumeSource?
        public var emptyDir: JSON?
        public var configMap: ConfigMapVolumeSource?
        public var secret: SecretVolumeSource?
        public var projected: ProjectedVolumeSource?
        public var downwardAPI: DownwardAPIVolumeSource?
        public var persistentVolumeClaim: PersistentVolumeClaimVolumeSource?
        public var csi: CSIVolumeSource?
        public var ephemeral: JSON?
    }

    /// A pod volume backed by a claim (resolved through the PersistentVolume it is bound to).
    public struct PersistentVolumeClaimVolumeSource: Decodable, Sendable, Equatable {
        public var claimName: String
        public var readOnly: Bool?
    }

    /// An inline CSI volume (`spec.volumes[].csi`): the driver publishes it for this pod only.
    public struct CSIVolumeSource: Decodable, Sendable, Equatable {
        public var driver: String
        public var readOnly: Bool?
        public var fsType: String?
        public var volumeAttributes: [String: String]?
        public var nodePublishSecretRef: LocalReference?
    }

    /// Several sources in one directory (kube-apiserver's `kube-api-access-*` volume is one).
    public struct ProjectedVolumeSource: Decodable, Sendable, Equatable {
        public var sources: [VolumeProjection]?
        public var defaultMode: Int32?
    }

    /// One source of a projected volume; exactly one member is set.
    public struct VolumeProjection: Decodable, Sendable, Equatable {
        public var configMap: ConfigMapProjection?
        public var secret: SecretProjection?
        public var downwardAPI: DownwardAPIProjection?
        public var serviceAccountToken: ServiceAccountTokenProjection?
        public var clusterTrustBundle: JSON?
    }

    public struct ConfigMapProjection: Decodable, Sendable, Equatable {
        public var name: String?
        public var items: [KeyToPath]?
        public var optional: Bool?
    }

    public struct SecretProjection: Decodable, Sendable, Equatable {
        public var name: String?
        public var items: [KeyToPath]?
        public var optional: Bool?
    }

    public struct DownwardAPIProjection: Decodable, Sendable, Equatable {
        public var items: [DownwardAPIVolumeFile]?
    }

    public struct ServiceAccountTokenProjection: Decodable, Sendable, Equatable {
        public var audience: String?
        public var expirationSeconds: Int64?
        public var path: String
    }

    public struct DownwardAPIVolumeSource: Decodable, Sendable, Equatable {
        public var items: [DownwardAPIVolumeFile]?
        public var defaultMode: Int32?
    }

    /// A pod field or a container's resource written to a file (`path` relative, checked on use).
    public struct DownwardAPIVolumeFile: Decodable, Sendable, Equatable {
        public var path: String
        public var fieldRef: FieldSelector?
        public var resourceFieldRef: ResourceFieldSelector?
        public var mode: Int32?
    }

    public struct HostPathVolumeSource: Decodable, Sendable, Equatable {
        public var path: String
        public var type: String?
    }

    public struct ConfigMapVolumeSource: Decodable, Sendable, Equatable {
        public var name: String?
        public var items: [KeyToPath]?
        public var defaultMode: Int32?
        public var optional: Bool?
    }

    public struct SecretVolumeSource: Decodable, Sendable, Equatable {
        public var secretName: String?
        public var items: [KeyToPath]?
        public var defaultMode: Int32?
        public var optional: Bool?
    }

    /// One key projected to a file. `path` comes from the wire: it is relative and never
    /// leaves the volume (``isSafeRelativePath``).
    public struct KeyToPath: Decodable, Sendable, Equatable {
        public var key: String
        public var path: String
        public var mode: Int32?
    }

    public struct ConfigMap: Decodable, Sendable, Equatable {
        public var metadata: ObjectMeta?
        public var data: [String: String]?
        /// base64, as on the wire.
        public var binaryData: [String: String]?
    }

    public struct Secret: Decodable, Sendable, Equatable {
        public var metadata: ObjectMeta?
        /// base64, as on the wire.
        public var data: [String: String]?
        public var stringData: [String: String]?
        public var type: String?
    }
}

extension String {
    /// A relative path that stays inside the directory it is joined to: not empty, not absolute,
    /// no `..` component (what kubelet checks for `items[].path` and `subPath`).
    public var isSafeRelativePath: Bool {
        guard !isEmpty, !hasPrefix("/") else { return false }
        return !split(separator: "/", omittingEmptySubsequences: false).contains { $0 == ".." }
    }
}
