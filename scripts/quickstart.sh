#!/usr/bin/env bash
# Quick start: installs what is needed, builds SwiftEdge (release) and runs the main job.
# Today the main job is the embedded Kubernetes-compatible API server; it writes an admin
# kubeconfig and prints how to use it with kubectl. Data lives in ./run (override with
# SWIFTEDGE_DATA=/path); stop with Ctrl-C, start again to continue where it left off.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing system packages (libsqlite3-dev)"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libsqlite3-dev ca-certificates >/dev/null
fi
echo "== building swiftedge (release; the first build takes several minutes)"
swift build -c release --static-swift-stdlib --product swiftedge
DATA="${SWIFTEDGE_DATA:-$PWD/run/apiserver}"
mkdir -p "$DATA"
echo "== starting the embedded API server (data in $DATA)"
exec "$PWD/.build/release/swiftedge" apiserver --data-dir "$DATA" --kubeconfig "$DATA/admin.kubeconfig" "$@"
