#!/usr/bin/env bash
# Builds release binaries and runs the API server and control-plane benchmarks (prints figures).
# BENCH_PODS / BENCH_WATCHERS change the sizes (defaults 10000 / 500).
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --static-swift-stdlib --product swiftedge
swift build -c release --static-swift-stdlib --product APIBenchmark
swift build -c release --static-swift-stdlib --product SchedulerBenchmark
.build/release/APIBenchmark
echo
.build/release/SchedulerBenchmark
