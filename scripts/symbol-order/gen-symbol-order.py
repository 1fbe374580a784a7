#!/usr/bin/env python3
"""Writes the linker's symbol ordering file for the edge (scripts/symbol-order/edge.order).

Why: the kernel maps an executable's code into memory in 64 KB blocks around each page fault
(fault-around, and large page-cache folios), so code run scattered across ~35 MB of text costs
far more resident memory than the code itself. Linking the functions the edge really runs next
to each other (lld `--symbol-ordering-file`, see `smallExecutable` in Package.swift) makes that
code a dense block.

How: `scripts/edge-bench.py --text-profile` runs a release edge under textprofile.so, which
records exactly which 4 KB code pages run (join, connect, pods started, probed, deleted, idle).
The functions overlapping those pages, in their current address order, are the ordering file.
Re-run after large changes (functions not in the file are simply placed after the listed ones):

    swift build -c release --static-swift-stdlib --product swiftedge-edge $(scripts/release-flags.sh)
    python3 scripts/symbol-order/gen-symbol-order.py [--runs 2] [--pods 20]
"""
import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def text_symbols(binary):
    """(address, size, name) of the functions in the binary, by address."""
    out = subprocess.run(["nm", "-S", "-n", "--defined-only", binary], check=True, capture_output=True, text=True).stdout
    symbols = []
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[2] in "tTwW":
            size = int(parts[1], 16)
            if size > 0:
                symbols.append((int(parts[0], 16), size, parts[3]))
    return symbols


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--edge-bin", default=str(REPO / ".build" / "release" / "swiftedge-edge"))
    ap.add_argument("--bin", default=str(REPO / ".build" / "release" / "swiftedge"), help="cloud binary")
    ap.add_argument("--pods", type=int, default=20)
    ap.add_argument("--runs", type=int, default=1, help="profiling runs (their pages are joined)")
    ap.add_argument("--out", default=str(HERE / "edge.order"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="swiftedge-symbol-order-") as tmp:
        so = Path(tmp) / "textprofile.so"
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(so), str(HERE / "textprofile.c")], check=True)
        pages = set()
        for run in range(a.runs):
            out = Path(tmp) / f"pages-{run}.txt"
            print(f"profiling run {run + 1}/{a.runs} ({a.pods} pods)", flush=True)
            subprocess.run([sys.executable, str(REPO / "scripts" / "edge-bench.py"), "--pods", str(a.pods), "--bin", a.bin,
                            "--edge-bin", a.edge_bin, "--text-profile", str(out)],
                           check=True, env=dict(os.environ, TEXTPROFILE_SO=str(so)))
            pages |= {int(line, 16) for line in out.read_text().split()}
    symbols = text_symbols(a.edge_bin)
    hot = []
    for address, size, name in symbols:
        first, last = address // 4096 * 4096, (address + size - 1) // 4096 * 4096
        if any(p in pages for p in range(first, last + 1, 4096)):
            hot.append((address, size, name))
    names, seen = [], set()
    for _, _, name in hot:
        if name not in seen:
            seen.add(name)
            names.append(name)
    Path(a.out).write_text("".join(n + "\n" for n in names))
    total = sum(s for _, s, _ in hot)
    print(f"{len(pages)} code pages ran ({len(pages) * 4096 / 1e6:.1f} MB); {len(names)} functions on them, "
          f"{total / 1e6:.1f} MB → {a.out}")


if __name__ == "__main__":
    main()
