#!/usr/bin/env python3
"""Writes the linker's symbol ordering file for the edge (scripts/symbol-order/edge.order).

Why: the kernel maps an executable's code in 64 KB blocks around each page fault (fault-around,
and large page-cache folios), so code run scattered across ~37 MB of text costs many times its
own size in resident memory. Linking the functions the edge really runs next to each other (lld
`--symbol-ordering-file`, see `smallExecutable` in Package.swift) makes that code one dense block.

How: `scripts/edge-bench.py --func-profile` runs a release edge under funcprofile.so, which
records exactly which functions run, in the order they first run (a breakpoint on every
function's first byte, removed when it traps), over a typical workload: join, connect, pods
started one by one and at once, a pod with a ConfigMap and probes of each kind, a MetaServer
list, a metrics scrape, the cloud restarting (reconnect and resync), deletions, idle. Runs vary a
little, so the file is the union of several runs: run 1's functions in first-run order, then
what later runs added. Function names do not depend on the layout, so any release build of the
same code can be profiled.

Functions without a symbol (some value witnesses are emitted as private `.L__unnamed_N`
functions) cannot be named in the file; `edge-text.ld` gathers all of them (~0.3 MB) into one
section before `.text` instead. Re-run after large changes (functions missing from the file are
placed after the listed ones, so a stale file costs memory, not correctness):

    python3 scripts/symbol-order/gen-symbol-order.py [--pods 20] [--runs 4]

Needs containerd (scripts/containerd.sh) and gcc; takes a few minutes.
"""
import argparse
import bisect
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


SCRATCH = REPO / ".build"


def link(link_map=None):
    """Links the release edge as configured (Package.swift) and returns its path (with a link map
    written to `link_map`). The ordering file is not an input SwiftPM tracks, so the old
    executable is removed to make it link again."""
    (SCRATCH / "release" / "swiftedge-edge").unlink(missing_ok=True)
    flags = subprocess.run(["bash", str(REPO / "scripts" / "release-flags.sh")], check=True, capture_output=True, text=True).stdout.split()
    if link_map:
        flags += ["-Xlinker", f"-Map={link_map}"]
    subprocess.run(["swift", "build", "-c", "release", "--static-swift-stdlib", "--product", "swiftedge-edge", "--scratch-path", str(SCRATCH), *flags],
                   cwd=REPO, check=True)
    return SCRATCH / "release" / "swiftedge-edge"


def whole_object_code(link_map):
    """The `.text` sections of objects compiled without function sections (the toolchain's
    Foundation and stdlib archives), from an lld link map: (address, size, input, symbol names)."""
    sections, current, output = [], None, None
    for line in Path(link_map).read_text().splitlines():
        m = re.match(r"^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+ (.*)$", line)
        if not m:
            continue
        rest = m.group(3)
        indent = len(rest) - len(rest.lstrip(" "))
        if indent == 0:
            output, current = rest.strip(), None
        elif indent == 8:
            current = None
            name = rest.strip()
            if output in (".text", ".text.idle") and name.endswith(":(.text)"):
                current = (int(m.group(1), 16), int(m.group(2), 16), name[: -len(":(.text)")], set())
                sections.append(current)
        elif indent == 16 and current:
            current[3].add(rest.strip())
    return sections


def idle_rules(sections, hits, order):
    """Linker script patterns for whole-object code that would join the ordered block only because
    it defines a local symbol of the same name as one that ran elsewhere (`objectdestroyTm`,
    outlined copies …), yet none of its own code ran."""
    hits = sorted(hits)
    rules = []
    for address, size, source, symbols in sections:
        i = bisect.bisect_left(hits, address)
        ran = i < len(hits) and hits[i] < address + size
        if size >= 4096 and not ran and symbols & order:
            m = re.match(r"^(.*/)?([^/]+\.a)\((.+)\)$", source)
            rules.append(f"*{m.group(2)}:{m.group(3)}(.text)" if m else f"{source}(.text)")
    return rules


def function_names(binary):
    """Link-time address → (size, names) of the binary's functions (aliases share an address)."""
    out = subprocess.run(["nm", "-S", "--defined-only", str(binary)], check=True, capture_output=True, text=True).stdout
    names = {}
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[2] in "tTwW" and int(parts[1], 16) > 0:
            size, aliases = names.setdefault(int(parts[0], 16), (int(parts[1], 16), []))
            aliases.append(parts[3])
    return names


IDLE_HEADER = """/* Generated by gen-symbol-order.py, with edge.order; added to release links (Package.swift).
   Code of objects compiled without function sections (the toolchain's Foundation and stdlib
   archives) that none of the profiled runs executed, but that defines a local symbol named like
   one that ran elsewhere: the ordering file names symbols, not objects, so these whole sections
   would otherwise sit inside the block of code the edge runs. They go after .text instead. */
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=20)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--bin", default=str(REPO / ".build" / "release" / "swiftedge"), help="cloud binary for the runs")
    ap.add_argument("--out", default=str(HERE / "edge.order"))
    ap.add_argument("--idle-out", default=str(HERE / "edge-idle.ld"))
    ap.add_argument("--scratch-path", default=str(REPO / ".build"), help="the build folder of the release build to relink")
    a = ap.parse_args()
    global SCRATCH
    SCRATCH = Path(a.scratch_path).resolve()
    with tempfile.TemporaryDirectory(prefix="swiftedge-symbol-order-") as tmp:
        tmp = Path(tmp)
        so = tmp / "funcprofile.so"
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(so), str(HERE / "funcprofile.c")], check=True)
        binary = tmp / "swiftedge-edge"
        shutil.copy(link(tmp / "edge.map"), binary)
        names = function_names(binary)
        order, seen, total, ran = [], set(), 0, set()
        for run in range(1, a.runs + 1):
            print(f"== run {run}/{a.runs}: the functions the release edge runs", flush=True)
            hits = tmp / f"hits-{run}.txt"
            subprocess.run([sys.executable, str(REPO / "scripts" / "edge-bench.py"), "--pods", str(a.pods), "--bin", a.bin,
                            "--edge-bin", str(binary), "--func-profile", str(hits)],
                           check=True, env=dict(os.environ, FUNCPROFILE_SO=str(so)))
            added = 0
            for line in hits.read_text().split():
                ran.add(int(line, 16))
                size, aliases = names.get(int(line, 16), (0, []))
                new = [name for name in aliases if name not in seen]
                seen.update(new)
                order += new
                if new:
                    added += size
                    total += size
            print(f"   {added / 1e6:.2f} MB of functions added, {total / 1e6:.2f} MB ({len(order)} names) in all", flush=True)
        Path(a.out).write_text("".join(n + "\n" for n in order))
        print(f"{len(order)} functions → {a.out}")
        rules = idle_rules(whole_object_code(tmp / "edge.map"), ran, seen)
        Path(a.idle_out).write_text(IDLE_HEADER + "SECTIONS {\n  .text.idle : {\n" + "".join(f"    {r}\n" for r in rules)
                                    + "  }\n}\nINSERT AFTER .text;\n")
        print(f"{len(rules)} idle whole-object sections → {a.idle_out}")
    print("== linking the edge with it")
    link()


if __name__ == "__main__":
    main()
