#!/usr/bin/env bash
# Extra flags for release builds of the SwiftEdge executables (used by quickstart.sh and bench.sh):
#   swift build -c release --static-swift-stdlib --product swiftedge $(bash scripts/release-flags.sh)
# Every function, ours and our dependencies', goes in its own section, so the linker drops the
# unused ones (--gc-sections) and can place the ones the edge runs next to each other
# (scripts/symbol-order/). Changing these flags rebuilds every dependency once.
echo "-Xswiftc -Xfrontend -Xswiftc -function-sections -Xcc -ffunction-sections -Xcc -fdata-sections"
