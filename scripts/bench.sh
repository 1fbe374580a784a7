#!/usr/bin/env bash
# Builds release binaries and runs the API server, control-plane and cloud–edge channel
# benchmarks (prints figures). BENCH_PODS / BENCH_WATCHERS change the API sizes (defaults 10000 /
# 500); BENCH_NODES / BENCH_OBJECTS the fleet sizes (defaults "1000,5000" / 20 per node);
# BENCH_EDGE_PODS the edge benchmark's pod count (50; needs containerd, see scripts/containerd.sh);
# BENCH_DEVICES the device benchmark's device count (1000; needs mosquitto).
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --static-swift-stdlib --product swiftedge $(bash scripts/release-flags.sh)
swift build -c release --static-swift-stdlib --product swiftedge-edge $(bash scripts/release-flags.sh)
swift build -c release --static-swift-stdlib --product APIBenchmark $(bash scripts/release-flags.sh)
swift build -c release --static-swift-stdlib --product SchedulerBenchmark $(bash scripts/release-flags.sh)
swift build -c release --static-swift-stdlib --product swiftedge-fleet $(bash scripts/release-flags.sh)
swift build -c release --static-swift-stdlib --product CloudEdgeBenchmark $(bash scripts/release-flags.sh)
.build/release/APIBenchmark
echo
.build/release/SchedulerBenchmark
echo
.build/release/CloudEdgeBenchmark
echo
python3 scripts/edge-bench.py --pods "${BENCH_EDGE_PODS:-50}"
echo
python3 scripts/pvc-bench.py --claims "${BENCH_PVC_CLAIMS:-20}"
echo
python3 scripts/stream-bench.py
echo
python3 scripts/device-bench.py --devices "${BENCH_DEVICES:-1000}"
