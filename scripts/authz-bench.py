#!/usr/bin/env python3
"""The cost of authorization on the request path (prints figures): one `swiftedge apiserver
--no-controllers` of its own (temp dir, loopback), driven with the same clients as
scripts/api-bench-clients.py, once as the admin (system:masters: the authorizer chain stops at
once) and once as a ServiceAccount bound to the `edit` ClusterRole in the namespace (a bound
token: signature verified once and cached, the ServiceAccount and pod looked up, then the Node
authorizer and RBAC over the aggregated `edit` rules on every request). Runs alternate
admin / ServiceAccount (`--rounds`, median reported) so drift hits both alike:

- `wrk` ConfigMap creates/s at 8 and 32 connections;
- LIST of `--pods` pods, p50/p99 over `--lists` requests (raw HTTP, `requests`, JSON).

    scripts/authz-bench.py [--bin .build-release/release/swiftedge] [--secs 10] [--rounds 3] [--pods 2000]

Progress goes to stderr, figures to stdout.
"""
import argparse
import asyncio
import importlib.util
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("api_bench", REPO / "scripts" / "api-bench-clients.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def must(r, what):
    if r.status_code not in (200, 201, 409):
        sys.exit(f"{what}: {r.status_code} {r.text[:400]}")
    return r


def service_account_token(srv):
    """A bound token of ServiceAccount bench/bench, granted `edit` in namespace bench."""
    post = lambda path, body: must(requests.post(srv.url + path, headers=srv.auth, verify=srv.ca, timeout=30, json=body), path)
    post("/api/v1/namespaces/bench/serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bench"}})
    post("/apis/rbac.authorization.k8s.io/v1/namespaces/bench/rolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "bench-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "ServiceAccount", "name": "bench", "namespace": "bench"}]})
    r = post("/api/v1/namespaces/bench/serviceaccounts/bench/token",
             {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 7200}})
    token = r.json()["status"]["token"]
    # The ServiceAccount really is subject to RBAC: it may create ConfigMaps in bench, not Secrets elsewhere.
    sa = {"Authorization": f"Bearer {token}"}
    ok = requests.post(srv.url + "/api/v1/namespaces/bench/configmaps", headers=sa, verify=srv.ca, timeout=30,
                       json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "probe-"}})
    no = requests.get(srv.url + "/api/v1/namespaces/default/secrets", headers=sa, verify=srv.ca, timeout=30)
    if ok.status_code != 201 or no.status_code != 403:
        sys.exit(f"the ServiceAccount is not authorized as expected: create {ok.status_code}, list secrets elsewhere {no.status_code}")
    return token


def list_times(srv, token, n):
    sess = requests.Session()
    sess.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json"})
    url = srv.url + "/api/v1/namespaces/bench/pods"
    return bench.time_lists(lambda: sess.get(url, verify=srv.ca, timeout=300).content, n)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=str(REPO / ".build-release" / "release" / "swiftedge"))
    ap.add_argument("--secs", type=int, default=10, help="seconds per wrk run (default 10)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating admin/ServiceAccount rounds (default 3)")
    ap.add_argument("--pods", type=int, default=2000, help="pods to LIST (default 2000)")
    ap.add_argument("--lists", type=int, default=20, help="timed LISTs per round (default 20)")
    ap.add_argument("--server-arg", action="append", default=[], help="extra `swiftedge apiserver` flag (repeatable), e.g. --server-arg=--no-fsync "
                                                                         "(takes the disk's variance out: what authorization costs is CPU)")
    a = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found (Debian: apt-get install wrk)")
    if not Path(a.bin).exists():
        sys.exit(f"{a.bin} not found: build it (swift build -c release ...) or pass --bin")
    tmp = Path(tempfile.mkdtemp(prefix="swiftedge-authz-bench-"))
    srv = None
    try:
        bench.step(f"starting {a.bin} apiserver (data in {tmp})")
        srv = bench.Server(a.bin, tmp, a.server_arg)
        bench.create_namespace(srv, "bench")
        tokens = {"admin": srv.token, "sa": service_account_token(srv)}
        lua = {who: tmp / f"create-{who}.lua" for who in tokens}
        for who, t in tokens.items():
            lua[who].write_text(bench.WRK_LUA.replace("@TOKEN@", t))
        bench.step(f"creating {a.pods} pods")
        made, _ = asyncio.run(bench.create_pods(srv, a.pods))
        rates = {(who, c): [] for who in tokens for c in (8, 32)}
        lists = {who: [] for who in tokens}
        for r in range(a.rounds):
            for who in tokens:
                for c in (8, 32):
                    bench.step(f"round {r + 1}: wrk creates as {who}, {c} connections, {a.secs} s")
                    res = bench.run_wrk(srv, lua[who], c, a.secs)
                    rates[(who, c)].append(res["rate"])
                    bench.step(f"   {res['rate']:,.0f}/s {res['statuses']}")
                bench.step(f"round {r + 1}: LIST {made} pods x{a.lists} as {who}")
                lists[who] += list_times(srv, tokens[who], a.lists)
        if bench.PROBLEMS:
            for where, what in bench.PROBLEMS:
                print(f"PROBLEM {where}: {what}", file=sys.stderr)
        med = lambda v: statistics.median(v)
        print()
        print(f"Authorization cost — {Path(a.bin).resolve()} {' '.join(a.server_arg)}; {a.rounds} alternating rounds (median), wrk {a.secs} s "
              f"per run, LIST of {made} pods x{a.lists} per round; admin = system:masters, sa = ServiceAccount bound to `edit`")
        for c in (8, 32):
            print(f"  per round, {c} connections: admin " + " ".join(f"{v:,.0f}" for v in rates[("admin", c)])
                  + " | sa " + " ".join(f"{v:,.0f}" for v in rates[("sa", c)]))
        print(f"{'measurement':34} {'admin':>12} {'sa (RBAC)':>12} {'cost':>8}")
        for c in (8, 32):
            ad, sa = med(rates[("admin", c)]), med(rates[("sa", c)])
            print(f"{f'wrk creates/s, {c} connections':34} {ad:12,.0f} {sa:12,.0f} {(ad - sa) / ad * 100:7.1f}%")
        for p in (50, 99):
            ad, sa = bench.pct(lists["admin"], p) * 1000, bench.pct(lists["sa"], p) * 1000
            print(f"{f'LIST p{p} (ms)':34} {ad:12.1f} {sa:12.1f} {(sa - ad) / ad * 100:7.1f}%")
        print("target (issue 18): < 10 % slower with RBAC on")
    finally:
        if srv:
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
