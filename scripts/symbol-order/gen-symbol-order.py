#!/usr/bin/env python3
"""Writes the linker's symbol ordering file for the edge (scripts/symbol-order/edge.order).

Why: the kernel maps an executable's code in 64 KB blocks around each page fault (fault-around,
and large page-cache folios), so code run scattered across ~37 MB of text costs several times its
own size in resident memory. Linking the functions the edge really runs next to each other (lld
`--symbol-ordering-file`, see `smallExecutable` in Package.swift) makes that code one dense block.

How: `scripts/edge-bench.py --profiling --text-profile` runs a release edge under textprofile.so,
which records exactly which 4 KB code pages ran, over a typical workload: join, connect, pods
started one by one and at once, a pod with a ConfigMap and probes of each kind, a MetaServer list,
a metrics scrape, deletions, idle.
1. On the linker's own layout: the functions on the pages that ran are the candidates. Every
   function that ran is among them, with its page neighbours (a page holds ~30 functions and
   about a third of them run, so neither shuffled layouts nor an instrumented build's counters
   separated them usefully: dropping the functions `-profile-generate` saw idle cost more in
   faults outside the block than it saved).
2. On a layout with the candidates first: functions that still ran outside that block (the
   workload varies a little between runs) are added.
The functions are written in their address order and the edge is linked again with the new file.
Re-run after large changes (functions missing from the file are placed after the listed ones, so
a stale file costs memory, not correctness):

    python3 scripts/symbol-order/gen-symbol-order.py [--pods 20]

Needs containerd (scripts/containerd.sh) and gcc; takes a few minutes.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def link(order):
    """Links the release edge with SWIFTEDGE_SYMBOL_ORDER=`order` (a file, or "off")."""
    flags = subprocess.run(["bash", str(REPO / "scripts" / "release-flags.sh")], check=True, capture_output=True, text=True).stdout.split()
    env = dict(os.environ, SWIFTEDGE_SYMBOL_ORDER=order) if order else dict(os.environ)
    subprocess.run(["swift", "build", "-c", "release", "--static-swift-stdlib", "--product", "swiftedge-edge", *flags],
                   cwd=REPO, check=True, env=env)
    return REPO / ".build" / "release" / "swiftedge-edge"


def text_symbols(binary):
    """(address, size, name) of the binary's functions."""
    out = subprocess.run(["nm", "-S", "--defined-only", str(binary)], check=True, capture_output=True, text=True).stdout
    symbols = []
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[2] in "tTwW":
            size = int(parts[1], 16)
            if size > 0:
                symbols.append((int(parts[0], 16), size, parts[3]))
    return symbols


def ran(symbols, pages, outside=None):
    """Names of the functions overlapping a page that ran (optionally only those outside the
    address range `outside`)."""
    names = set()
    for address, size, name in symbols:
        if outside and outside[0] <= address < outside[1]:
            continue
        if any(p in pages for p in range(address // 4096 * 4096, address + size, 4096)):
            names.add(name)
    return names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=20)
    ap.add_argument("--bin", default=str(REPO / ".build" / "release" / "swiftedge"), help="cloud binary for the runs")
    ap.add_argument("--out", default=str(HERE / "edge.order"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="swiftedge-symbol-order-") as tmp:
        tmp = Path(tmp)
        so = tmp / "textprofile.so"
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(so), str(HERE / "textprofile.c")], check=True)

        def profile(step, order):
            binary = tmp / f"edge-{step}"
            shutil.copy(link(order), binary)
            out = tmp / f"pages-{step}.txt"
            subprocess.run([sys.executable, str(REPO / "scripts" / "edge-bench.py"), "--pods", str(a.pods), "--bin", a.bin,
                            "--profiling", "--edge-bin", str(binary), "--text-profile", str(out)],
                           check=True, env=dict(os.environ, TEXTPROFILE_SO=str(so)))
            return text_symbols(binary), {int(line, 16) for line in out.read_text().split()}

        def write(path, names, symbols):
            order, seen = [], set()
            for _, _, name in sorted(s for s in symbols if s[2] in names):
                if name not in seen:
                    seen.add(name)
                    order.append(name)
            Path(path).write_text("".join(n + "\n" for n in order))
            return order

        print("== 1/2: code pages the release edge runs, in the linker's own layout", flush=True)
        reference, pages = profile(1, "off")
        size = lambda names: sum(s for _, s, n in reference if n in names) / 1e6
        found = ran(reference, pages)
        print(f"   {len(pages)} code pages ran ({len(pages) * 4096 / 1e6:.1f} MB); {len(found)} functions on them, {size(found):.2f} MB", flush=True)

        print("== 2/2: with those first: what still runs outside them", flush=True)
        write(tmp / "order-1.txt", found, reference)
        symbols, pages = profile(2, str(tmp / "order-1.txt"))
        listed = [(a_, a_ + s_) for a_, s_, n in symbols if n in found]
        block = (min(lo for lo, _ in listed), max(hi for _, hi in listed))
        more = ran(symbols, pages, outside=block)
        inside = sum(1 for p in pages if block[0] <= p < block[1])
        print(f"   block {(block[1] - block[0]) / 1e6:.1f} MB, {inside * 4096 / 1e6:.1f} MB of it ran; "
              f"{len(pages) - inside} pages ran outside it: {len(more)} functions added, {size(more):.2f} MB", flush=True)
        order = write(a.out, found | more, reference)
        print(f"{len(order)} functions → {a.out}")
    print("== linking the edge with it")
    link(None)


if __name__ == "__main__":
    main()
