#!/usr/bin/env bash
# Regenerates the Swift code of the gRPC contracts in ../shared/protos (run by hand, not in CI;
# the output is committed):
#   Sources/Generated/CRI  ← cri-runtime-v1/api.proto (runtime.v1 RuntimeService + ImageService; client only)
#   Sources/Generated/DMI  ← kubeedge-dmi-v1beta1/api.proto (DeviceManagerService, DeviceMapperService; client and server)
#   Sources/Generated/CSI  ← protos/csi-v1.9.0/csi.proto (csi.v1 Identity, Controller, Node; client and server) and
#                            protos/pluginregistration-v1/api.proto (kubelet's plugin Registration; client and server)
# Debian's protoc is too old for the CRI file, so protoc comes from PyPI's grpcio-tools; the
# plugins (protoc-gen-swift from swift-protobuf 1.39.0, protoc-gen-grpc-swift-2 from
# grpc-swift-protobuf 2.4.1) are built once into .build-protoc.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${SHARED:-../shared/protos}"
PLUGINS="$PWD/.build-protoc"
if [ ! -x "$PLUGINS/.build/release/protoc-gen-grpc-swift-2" ]; then
  mkdir -p "$PLUGINS/Dummy"
  cat > "$PLUGINS/Package.swift" <<'SWIFT'
// swift-tools-version:6.1
import PackageDescription
let package = Package(
    name: "ProtocPlugins",
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", exact: "2.4.1"),
    ],
    targets: [.executableTarget(name: "Dummy", path: "Dummy")]
)
SWIFT
  echo 'print("plugins only")' > "$PLUGINS/Dummy/main.swift"
  (cd "$PLUGINS" && swift build -c release --product protoc-gen-swift && swift build -c release --product protoc-gen-grpc-swift-2)
fi
python3 -m pip install -q grpcio-tools
BIN="$PLUGINS/.build/release"
gen() {  # proto folder, output folder, grpc options
  python3 -m grpc_tools.protoc -I "$SHARED/$1" \
    --plugin=protoc-gen-swift="$BIN/protoc-gen-swift" --swift_out="Sources/Generated/$2" --swift_opt=Visibility=Public \
    --plugin=protoc-gen-grpc-swift-2="$BIN/protoc-gen-grpc-swift-2" --grpc-swift-2_out="Sources/Generated/$2" --grpc-swift-2_opt="$3" \
    "$SHARED/$1/api.proto"
}
gen cri-runtime-v1 CRI Visibility=Public,Server=false
gen kubeedge-dmi-v1beta1 DMI Visibility=Public
mkdir -p Sources/Generated/CSI
SHARED="$PWD/protos" gen pluginregistration-v1 CSI Visibility=Public
python3 -m grpc_tools.protoc -I protos/csi-v1.9.0 \
  --plugin=protoc-gen-swift="$BIN/protoc-gen-swift" --swift_out=Sources/Generated/CSI --swift_opt=Visibility=Public \
  --plugin=protoc-gen-grpc-swift-2="$BIN/protoc-gen-grpc-swift-2" --grpc-swift-2_out=Sources/Generated/CSI --grpc-swift-2_opt=Visibility=Public \
  protos/csi-v1.9.0/csi.proto
echo "generated: $(wc -l Sources/Generated/CRI/*.swift Sources/Generated/DMI/*.swift Sources/Generated/CSI/*.swift | tail -1)"
