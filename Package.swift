// swift-tools-version:6.1
import PackageDescription

/// How the shipped executables are linked on Linux: with lld, relative relocations packed (DT_RELR,
/// glibc ≥ 2.36) and no symbols exported. The loader then reads a few kB of relocations instead
/// of 4 MB and the dynamic symbol table shrinks from 73,000 entries to a few hundred: the edge
/// process's RSS drops by about 6.5 MB (measured: 42.8 → 36.3 MB idle; see docs/architecture.md).
///
/// Release builds also place the functions the edge runs next to each other, in the order they
/// first run (`scripts/symbol-order/edge.order` and the two linker scripts beside it, made by
/// `gen-symbol-order.py` from an exact function profile): the kernel maps code in 64 KB blocks
/// around each fault, so hot code scattered through 37 MB of text costs many times its size in
/// RSS. It takes effect with function sections (`scripts/release-flags.sh`).
/// `SWIFTEDGE_SYMBOL_ORDER=off` leaves it out, `=<path>` uses another file.
let symbolOrderFile = Context.environment["SWIFTEDGE_SYMBOL_ORDER"]
    ?? String(#filePath.dropLast("Package.swift".count)) + "scripts/symbol-order/edge.order"
let symbolOrder: [String] = symbolOrderFile == "off" ? [] :
    ["-Xlinker", "--symbol-ordering-file=\(symbolOrderFile)", "-Xlinker", "--no-warn-symbol-ordering",
     "-Xlinker", "-T", "-Xlinker", String(#filePath.dropLast("Package.swift".count)) + "scripts/symbol-order/edge-text.ld",
     "-Xlinker", "-T", "-Xlinker", String(#filePath.dropLast("Package.swift".count)) + "scripts/symbol-order/edge-idle.ld"]
/// Release builds also link the C++ standard library statically (`scripts/link/libstdc++.so`), and
/// SQLite: GRDB asks for `-lsqlite3` ahead of everything else, so Debian's archive is linked whole
/// (the linker still drops its unused sections); its objects then join the ordered code instead of
/// mapping libsqlite3.so's 1.2 MB of pages. The shared library stays listed as needed but unused.
let staticLibraries = ["-L" + String(#filePath.dropLast("Package.swift".count)) + "scripts/link",
                 "-Xlinker", "--whole-archive", "-Xlinker", "-l:libsqlite3.a", "-Xlinker", "--no-whole-archive"]
let smallExecutable: [LinkerSetting] = [
    .unsafeFlags(["-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs", "-Xlinker", "--no-export-dynamic"],
                 .when(platforms: [.linux])),
    .unsafeFlags(symbolOrder + staticLibraries, .when(platforms: [.linux], configuration: .release)),
]

let package = Package(
    name: "SwiftEdge",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "swiftedge", targets: ["SwiftEdgeCLI"]),
        .executable(name: "swiftedge-fleet", targets: ["SwiftEdgeFleet"]),
        .executable(name: "swiftedge-edge", targets: ["SwiftEdgeEdgeCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.8.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    ],
    targets: [
        // The one place for default ports and paths.
        .target(name: "DefaultSettings", path: "Sources/Support/DefaultSettings"),
        // Concurrency helpers shared by every side: Backoff (the one reconnect/retry back-off),
        // StateSignal (a followed value: the edge's "connected"), WakeSignal, withTimeLimit, LazyMap.
        .target(name: "AsyncSupport", path: "Sources/Support/AsyncSupport"),
        // The field table of Kubernetes' built-in protobuf messages (generated by scripts/gen-kube-proto-schema.py).
        .target(name: "KubeProtoTable", path: "Sources/Generated/KubeProtoTable"),
        // KubeEdge's ObjectSync/ClusterObjectSync CRDs, embedded (generated by scripts/gen-embedded-crds.py).
        .target(name: "KubeEdgeCRDs", path: "Sources/Generated/KubeEdgeCRDs"),
        // DMI configData scalars packed as KubeEdge packs them (protobuf Any of wrapper types).
        .target(name: "DMIValues", dependencies: ["DMI",
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        ], path: "Sources/Devices/DMIValues"),
        // KubeEdge's cloudcore.yaml / edgecore.yaml as typed values (every key optional), load/save.
        .target(name: "ComponentConfig", dependencies: ["DefaultSettings",
            .product(name: "Yams", package: "Yams"),
        ], path: "Sources/Operations/ComponentConfig"),
        // kubectl's SPDY sessions (remotecommand exec/attach, port-forward) relayed through a node's stream tunnel.
        .target(name: "SPDYStreams", dependencies: [
            "SPDY", "StreamTunnel", "KubeAPI",
            .product(name: "Logging", package: "swift-log"),
        ], path: "Sources/Channel/SPDYStreams"),
        // KubeEdge's edgecontroller: what each node is sent (EdgeObjects) and what nodes report (NodeUpstream).
        .target(name: "EdgeController", dependencies: [
            "CloudEdgeProtocol", "ControllerRuntime", "KubeAPI", "KubeAuth", "KubeClient", "PKI", "ReliableSync",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
        ], path: "Sources/Cloud/EdgeController"),
        // KubeEdge's admission webhook: its rules for Devices, Rules, RuleEndpoints, NodeUpgradeJobs and offline pods, and its server.
        .target(name: "KubeEdgeAdmission", dependencies: [
            "KubeAPI", "KubeClient", "HTTPService",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Cloud/KubeEdgeAdmission"),
        // KubeEdge's csidriver for edge CSI plugins, with the provisioner, attacher and attach-detach controller it relies on (controller calls through the nodes).
        .target(name: "CSIDriver", dependencies: [
            "CSI", "CloudEdgeProtocol", "CloudHub", "ControllerRuntime", "KubeAPI", "KubeClient",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        ], path: "Sources/Cloud/CSIDriver"),
        // KubeEdge's devicecontroller: device status reports from the nodes into DeviceStatus objects.
        .target(name: "DeviceController", dependencies: [
            "KubeAPI", "KubeClient",
            .product(name: "Logging", package: "swift-log"),
        ], path: "Sources/Cloud/DeviceController"),
        // Kubernetes object model: JSON values, metadata, selectors, patch engines, resource registry.
        .target(name: "KubeAPI", path: "Sources/Kube/KubeAPI"),
        // Identities and RBAC: UserInfo, ServiceAccount tokens (JWT, ES256), the RBAC evaluator and bootstrap policy.
        .target(name: "KubeAuth", dependencies: [
            "KubeAPI",
            .product(name: "Crypto", package: "swift-crypto"),
        ], path: "Sources/Kube/KubeAuth"),
        // Reads Kubernetes protobuf bodies (kubectl's typed clients, client-go) into JSON.
        .target(name: "KubeProtobuf", dependencies: ["KubeProtoTable", "KubeAPI"], path: "Sources/Kube/KubeProtobuf"),
        // Revisioned object store (SQLite via GRDB) with watch history and compaction.
        .target(name: "ObjectStore", dependencies: [
            "KubeAPI",
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
        ], path: "Sources/Kube/ObjectStore"),
        // REST + watch client for any Kubernetes API server (kubeconfig, TLS, token/cert auth).
        .target(name: "KubeClient", dependencies: [
            "KubeAPI",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Yams", package: "Yams"),
            .product(name: "Logging", package: "swift-log"),
        ], path: "Sources/Kube/KubeClient"),
        // Shared informers, rate-limited work queues, reconcile loops, leader election, event recording.
        .target(name: "ControllerRuntime", dependencies: ["AsyncSupport",
            "KubeAPI", "KubeClient",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Kube/ControllerRuntime"),
        // The embedded control plane: scheduler and core controllers (ordinary API clients).
        .target(name: "ControlPlane", dependencies: [
            "KubeAPI", "KubeAuth", "KubeClient", "ControllerRuntime",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Kube/ControlPlane"),
        // KubeEdge's cloud–edge message model (typed; JSON only at the wire).
        .target(name: "CloudEdgeProtocol", dependencies: ["KubeAPI", .product(name: "Crypto", package: "swift-crypto")], path: "Sources/Channel/CloudEdgeProtocol"),
        // WebSocket framing of cloud–edge messages (both sides).
        .target(name: "CloudEdgeTransport", dependencies: ["AsyncSupport",
            "CloudEdgeProtocol",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
        ], path: "Sources/Channel/CloudEdgeTransport"),
        // CloudHub: the edge nodes' WebSocket server (mTLS), sessions, acks, node authorization.
        .target(name: "CloudHub", dependencies: ["DefaultSettings", "AsyncSupport", "HTTPService",
            "CloudEdgeProtocol", "CloudEdgeTransport", "PKI", "KubeAPI", "StreamTunnel",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Cloud/CloudHub"),
        // EdgeHub: the edge end of the channel (join, mTLS WebSocket client, reconnect, acks).
        .target(name: "EdgeHub", dependencies: ["DefaultSettings", "AsyncSupport",
            "CloudEdgeProtocol", "CloudEdgeTransport", "PKI", "StreamTunnel", "KubeAPI",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Edge/EdgeHub"),
        // Reliable cloud→edge delivery (acked versions per node and object, ObjectSync records).
        .target(name: "ReliableSync", dependencies: ["KubeEdgeCRDs", "AsyncSupport",
            "CloudEdgeProtocol", "KubeAPI", "KubeClient",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Cloud/ReliableSync"),
        // The cloud side composed (KubeEdge's cloudcore; the edge's counterpart is EdgeCore): secrets
        // and tokens, CloudHub + certificate service, the edge and device controllers, reliable
        // delivery; the `cloud`, `apiserver`, `controller-manager` and `gettoken` commands.
        .target(name: "CloudCore", dependencies: ["CSIDriver", 
            "DefaultSettings", "APIServer", "ControlPlane", "CommandSupport", "MetricsEndpoint", "ComponentConfig", "ObjectStore",
            "EdgeController", "DeviceController", "CloudHub", "ReliableSync", "ControllerRuntime", "KubeClient", "KubeAPI", "PKI", "CloudEdgeProtocol", "StreamTunnel", "CloudStream",
            "KubeEdgeAdmission", "HTTPService", "KubeAuth", "RuleRouter",
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ], path: "Sources/Cloud/CloudCore"),
        // The edge node's store of everything it received (SQLite), acked only after commit.
        .target(name: "MetaStore", dependencies: [
            "CloudEdgeProtocol", "KubeAPI",
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
        ], path: "Sources/Edge/MetaStore"),
        // Self-signed CA, certificates (PEM) and join tokens: the API server's, CloudHub's and the nodes'.
        .target(name: "PKI", dependencies: [
            "KubeAPI",
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
        ], path: "Sources/Channel/PKI"),
        // The Kubernetes-compatible HTTP API server.
        .target(name: "APIServer", dependencies: ["DefaultSettings", "SPDYStreams", "HTTPService",
            "KubeAPI", "KubeAuth", "ObjectStore", "PKI", "KubeProtobuf", "StreamTunnel", "SPDY",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "Yams", package: "Yams"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "_CryptoExtras", package: "swift-crypto"),
        ], path: "Sources/Kube/APIServer"),
        // Simulated edge nodes (join, EdgeHub, in-memory store) for fleet tests and benchmarks.
        .target(name: "FleetSimulator", dependencies: ["AsyncSupport",
            "EdgeHub", "CloudEdgeProtocol", "KubeAPI", "PKI",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Tools/FleetSimulator"),
        // `swiftedge-fleet`: a fleet of simulated nodes in one process, with a status endpoint.
        .executableTarget(name: "SwiftEdgeFleet", dependencies: [
            "FleetSimulator", "KubeAPI",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Tools/SwiftEdgeFleet"),
        // The edge node's registration and status reports (Node object, heartbeats).
        .target(name: "NodeStatus", dependencies: ["DefaultSettings",
            "EdgeHub", "CloudEdgeProtocol", "KubeAPI",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Edge/NodeStatus"),
        // MetaServer: the edge's local, read-only Kubernetes-style API over the node's store.
        .target(name: "MetaServer", dependencies: ["DefaultSettings",
            "HTTPService", "AsyncSupport", "KubeAuth", "PKI",
            "MetaStore", "KubeAPI", "CloudEdgeProtocol",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Edge/MetaServer"),
        // KubeEdge's router in the cloud: Rules and RuleEndpoints, the REST ingress, REST targets.
        .target(name: "RuleRouter", dependencies: ["AsyncSupport", "CloudEdgeProtocol", "ControllerRuntime", "HTTPService", "KubeAPI", "KubeClient",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Cloud/RuleRouter"),
        // The router's eventbus on a node: MQTT topics of Rules to and from the cloud.
        .target(name: "EventBus", dependencies: ["CloudEdgeProtocol", "MQTT",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Edge/EventBus"),
        // KubeEdge's servicebus: the cloud's REST calls to HTTP apps on a node, and apps' calls out.
        .target(name: "ServiceBus", dependencies: ["AsyncSupport", "CloudEdgeProtocol", "HTTPService",
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Edge/ServiceBus"),
        // EdgeMesh in the edge agent: cluster DNS, the ClusterIP proxy, relays to other nodes' pods.
        .target(name: "EdgeMesh", dependencies: ["AsyncSupport", "CloudEdgeProtocol", "KubeAPI", "MetaStore", "PKI", "StreamTunnel",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOTLS", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Edge/EdgeMesh"),
        // Kubernetes CRI runtime.v1 client (generated by scripts/gen-protos.sh from ../shared/protos).
        .target(name: "CRI", dependencies: [
            .product(name: "GRPCCore", package: "grpc-swift-2"),
            .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        ], path: "Sources/Generated/CRI"),
        // The stream tunnel (logs, exec): frames, the cloud end and the edge end.
        .target(name: "StreamTunnel", dependencies: ["AsyncSupport",
            "KubeAPI",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
        ], path: "Sources/Channel/StreamTunnel"),
        // Edged's view of a CRI runtime (containerd, CRI-O): the calls it makes, over gRPC on a unix socket.
        .target(name: "ContainerRuntime", dependencies: ["AsyncSupport",
            "CRI", "KubeAPI",
            .product(name: "GRPCCore", package: "grpc-swift-2"),
            .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Edge/ContainerRuntime"),
        // Edged: runs the node's pods through the CRI (lifecycle, probes, volumes, status upstream).
        .target(name: "Edged", dependencies: ["AsyncSupport",
            "ContainerRuntime", "CRI", "CloudEdgeProtocol", "KubeAPI", "MetaStore", "Mounts", "StreamTunnel", "SPDY",
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Edge/Edged"),
        // The CSI v1.9.0 services (Identity, Controller, Node) and kubelet's plugin Registration, client and server (generated by scripts/gen-protos.sh).
        .target(name: "CSI", dependencies: [
            .product(name: "GRPCCore", package: "grpc-swift-2"),
            .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        ], path: "Sources/Generated/CSI"),
        // Bind mounts and the mount table (/proc/self/mountinfo), for CSI volumes and the teardown that must not delete through them.
        .target(name: "Mounts", path: "Sources/Edge/Mounts"),
        // SwiftEdge's built-in CSI driver: node-local directory volumes, published with bind mounts (`swiftedge csi local-path`).
        .target(name: "LocalPathDriver", dependencies: ["CSI", "Mounts",
            .product(name: "GRPCCore", package: "grpc-swift-2"),
            .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Edge/LocalPathDriver"),
        // kubelet's CSI half for Edged: plugin registration (plugins_registry), staging and publishing volumes, the CSINode report, the controller calls the cloud relays.
        .target(name: "CSIPlugins", dependencies: ["AsyncSupport", "CSI", "CloudEdgeProtocol", "Edged", "KubeAPI", "Mounts",
            .product(name: "GRPCCore", package: "grpc-swift-2"),
            .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        ], path: "Sources/Edge/CSIPlugins"),
        // KubeEdge DMI v1beta1 client and server (generated by scripts/gen-protos.sh).
        .target(name: "DMI", dependencies: [
            .product(name: "GRPCCore", package: "grpc-swift-2"),
            .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        ], path: "Sources/Generated/DMI"),
        // Plain-HTTP Prometheus `/metrics` for the cloud and edge processes.
        // A Hummingbird responder served over HTTP/1.1 without Foundation's calendar (see HTTPService).
        .target(name: "HTTPService", dependencies: [
            "KubeAPI",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Support/HTTPService"),
        .target(name: "MetricsEndpoint", dependencies: [
            "HTTPService",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Support/MetricsEndpoint"),
        // Flags and observability set-up shared by the executables.
        .target(name: "CommandSupport", dependencies: [
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ], path: "Sources/Support/CommandSupport"),
        // The edge node's composition (`swiftedge edge` / `swiftedge-edge`): channel, store,
        // MetaServer, node status, Edged on the CRI runtime.
        .target(name: "EdgeCore", dependencies: ["DefaultSettings", "ComponentConfig",
            "CommandSupport", "CloudEdgeProtocol", "EdgeHub", "MetaStore", "MetaServer", "NodeStatus", "Edged", "EdgeMesh", "EventBus", "ServiceBus", "StreamTunnel", "ContainerRuntime", "MetricsEndpoint",
            "DeviceTwin", "MQTT", "KubeAPI", "CSIPlugins", "LocalPathDriver",
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Edge/EdgeCore"),
        // zlib (SPDY header compression).
        .systemLibrary(name: "CZlib", path: "Sources/Support/CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // SPDY/3.1 framing and header compression (kubectl port-forward).
        .target(name: "SPDY", dependencies: ["CZlib"], path: "Sources/Kube/SPDY"),
        // Pod streams as kubelet serves them (SPDY exec/attach/port-forward, container logs):
        // the cloud stream server an external kube-apiserver reaches through the node's kubelet port.
        .target(name: "CloudStream", dependencies: ["DefaultSettings", "SPDYStreams",
            "StreamTunnel", "SPDY", "KubeAPI",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Cloud/CloudStream"),
        // MQTT 3.1.1: codec, topic matching and a reconnecting client on NIO (see docs/architecture.md).
        .target(name: "MQTT", dependencies: ["AsyncSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Devices/MQTT"),
        // The edge's devices: twins, the EventBus (MQTT topics), the DMI server and mapper calls.
        .target(name: "DeviceTwin", dependencies: ["DMIValues", "AsyncSupport",
            "MQTT", "DMI", "MetaStore", "KubeAPI", "CloudEdgeProtocol",
            .product(name: "GRPCCore", package: "grpc-swift-2"),
            .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Devices/DeviceTwin"),
        // Modbus TCP: requests and answers as values, and a client (the Modbus mapper's device side).
        .target(name: "Modbus", dependencies: [
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ], path: "Sources/Devices/Modbus"),
        // The Modbus TCP mapper (`swiftedge mapper modbus`): DMI registration, polling, twins, desired writes.
        .target(name: "ModbusMapper", dependencies: ["DefaultSettings", "DMIValues",
            "Modbus", "DMI", "KubeAPI",
            .product(name: "GRPCCore", package: "grpc-swift-2"),
            .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Devices/ModbusMapper"),
        // Operations: the `swiftedge init/join/reset` procedures (CloudInit, EdgeJoin, NodeReset) and
        // what they manage: systemd units or background processes, reachability checks.
        .target(name: "Operations", dependencies: ["DefaultSettings",
            "ComponentConfig", "CloudCore", "EdgeHub", "ContainerRuntime", "KubeClient", "PKI",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ], path: "Sources/Operations/Operations"),
        // `swiftedge-edge`: the edge node alone, without the cloud's code (smaller, lighter).
        .executableTarget(name: "SwiftEdgeEdgeCLI", dependencies: [
            "EdgeCore", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], path: "Sources/Executables/SwiftEdgeEdgeCLI", linkerSettings: smallExecutable),
        // The `swiftedge` executable: parses flags and composes services.
        .executableTarget(name: "SwiftEdgeCLI", dependencies: ["DefaultSettings",
            "CloudCore", "EdgeCore", "Operations", "ModbusMapper", "LocalPathDriver", "CommandSupport", "MetricsEndpoint",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Sources/Executables/SwiftEdgeCLI", linkerSettings: smallExecutable),
        // Release-mode benchmark of the embedded API server (prints figures).
        .executableTarget(name: "APIBenchmark", dependencies: [
            "KubeAPI",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOFoundationCompat", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ], path: "Sources/Tools/APIBenchmark"),
        // Release-mode benchmark of the control plane: scheduling throughput, Deployment → bound.
        .executableTarget(name: "SchedulerBenchmark", dependencies: [
            "KubeAPI", "KubeClient",
            .product(name: "Logging", package: "swift-log"),
        ], path: "Sources/Tools/SchedulerBenchmark"),
        // Release-mode benchmark of the cloud–edge channel (connections, delivery, resync).
        .executableTarget(name: "CloudEdgeBenchmark", dependencies: [
            "CloudHub", "ReliableSync", "CloudEdgeProtocol", "KubeAPI", "PKI",
            .product(name: "Logging", package: "swift-log"),
        ], path: "Sources/Tools/CloudEdgeBenchmark"),
        // Test support (never a dependency of anything under Sources/): InMemoryKubeClient, the
        // in-memory cloud–edge channel, fixtures, eventually().
        .target(name: "TestSupport", dependencies: ["KubeAPI", "KubeClient", "AsyncSupport", "CloudEdgeProtocol", "ReliableSync"],
                path: "Tests/Support/TestSupport"),
        .testTarget(name: "CloudEdgeProtocolTests", dependencies: ["CloudEdgeProtocol", "KubeAPI"], path: "Tests/Channel/CloudEdgeProtocolTests"),
        .testTarget(name: "CSITests", dependencies: [
            "CSIPlugins", "LocalPathDriver", "CSIDriver", "CloudEdgeProtocol", "KubeAPI", "AsyncSupport",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Tests/Edge/CSITests"),
        .testTarget(name: "AsyncSupportTests", dependencies: ["AsyncSupport"], path: "Tests/Support/AsyncSupportTests"),
        .testTarget(name: "KubeEdgeAdmissionTests", dependencies: ["KubeEdgeAdmission", "KubeAPI"], path: "Tests/Cloud/KubeEdgeAdmissionTests"),
        .testTarget(name: "APIServerTests", dependencies: ["APIServer", "KubeAPI"], path: "Tests/Kube/APIServerTests"),
        .testTarget(name: "KubeAuthTests", dependencies: ["KubeAuth", "KubeAPI"], path: "Tests/Kube/KubeAuthTests"),
        .testTarget(name: "KubeAPITests", dependencies: ["KubeAPI", "KubeProtobuf"], path: "Tests/Kube/KubeAPITests"),
        .testTarget(name: "ContractTests", dependencies: [
            "CRI", "DMI",
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        ], path: "Tests/Generated/ContractTests"),
        .testTarget(name: "EdgedTests", dependencies: [
            "Edged", "ContainerRuntime", "CRI", "KubeAPI", "PKI", "MetaStore", "MetaServer", "CloudEdgeProtocol", "KubeAuth",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ], path: "Tests/Edge/EdgedTests"),
        .testTarget(name: "RuleRouterTests", dependencies: ["RuleRouter", "CloudEdgeProtocol", "KubeAPI"], path: "Tests/Cloud/RuleRouterTests"),
        .testTarget(name: "EdgeMeshTests", dependencies: ["EdgeMesh", "KubeAPI"], path: "Tests/Edge/EdgeMeshTests"),
        .testTarget(name: "OperationsTests", dependencies: ["ComponentConfig", "Operations", "PKI"], path: "Tests/Operations/OperationsTests"),
        .testTarget(name: "SPDYTests", dependencies: ["SPDY"], path: "Tests/Kube/SPDYTests"),
        .testTarget(name: "CloudStreamTests", dependencies: ["SPDYStreams", "CloudStream", "StreamTunnel"], path: "Tests/Cloud/CloudStreamTests"),
        .testTarget(name: "MQTTTests", dependencies: ["MQTT",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ], path: "Tests/Devices/MQTTTests"),
        .testTarget(name: "DeviceTwinTests", dependencies: ["DeviceTwin", "KubeAPI"], path: "Tests/Devices/DeviceTwinTests"),
        .testTarget(name: "ModbusTests", dependencies: ["DMIValues", "Modbus", "ModbusMapper", "DMI"], path: "Tests/Devices/ModbusTests"),
        .testTarget(name: "ObjectStoreTests", dependencies: ["ObjectStore", "KubeAPI", "APIServer",
            .product(name: "GRDB", package: "GRDB.swift"), .product(name: "Logging", package: "swift-log")], path: "Tests/Kube/ObjectStoreTests"),
        .testTarget(name: "ControlPlaneTests", dependencies: [
            "ControlPlane", "ControllerRuntime", "KubeAPI", "KubeClient", "TestSupport", .product(name: "Logging", package: "swift-log"),
        ], path: "Tests/Kube/ControlPlaneTests"),
        .testTarget(name: "CloudHubTests", dependencies: [
            "CloudHub", "EdgeHub", "CloudEdgeProtocol", "PKI", "KubeAPI", "StreamTunnel", "TestSupport",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Crypto", package: "swift-crypto"),
        ], path: "Tests/Cloud/CloudHubTests"),
        .testTarget(name: "ReliableSyncTests", dependencies: [
            "ReliableSync", "CloudHub", "EdgeHub", "CloudEdgeProtocol", "PKI", "KubeAPI", "MetaStore", "TestSupport",
            .product(name: "Logging", package: "swift-log"),
        ], path: "Tests/Cloud/ReliableSyncTests"),
        .testTarget(name: "EdgeControllerTests", dependencies: [
            "EdgeController", "ReliableSync", "ControllerRuntime", "TestSupport", "CloudEdgeProtocol", "KubeAPI", "KubeClient",
            .product(name: "Logging", package: "swift-log"),
        ], path: "Tests/Cloud/EdgeControllerTests"),
        .testTarget(name: "KubeClientTests", dependencies: [
            "KubeClient", "APIServer", "KubeAPI", "ControllerRuntime", "TestSupport",
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
        ], path: "Tests/Kube/KubeClientTests"),
    ]
)
