#!/usr/bin/env python3
"""API server benchmark with the clients users have (prints figures): a `swiftedge apiserver
--no-controllers` of its own (data in a temp dir removed at the end, loopback only), driven by

- `wrk` (Debian's): ConfigMap creates/s at 1, 8 and 32 connections, non-2xx counted by the Lua
  `response()` hook;
- the official Python `kubernetes` client: ConfigMap creates/s with 1 and 8 threads (each thread
  its own ApiClient);
- `kubectl create configmap`: sequential creates/s (kubectl's process start dominates);
- LIST of 10,000 pods (created first with aiohttp, 32 in flight), p50/p99: raw HTTP with
  `requests` (JSON, and Accept: application/vnd.kubernetes.protobuf), the Python client's
  `list_namespaced_pod`, and `kubectl get pods -o json` (the whole process timed);
- watch latency: 500 concurrent watches (asyncio + aiohttp), then 20 ConfigMaps created one by
  one; create → event delivery over all watchers, p50/p99/max;
- the server's RSS idle, after the creates, and with 10k pods + 500 watchers;

then one table (rows = measurement, columns = wrk/raw HTTP, Python client, kubectl) and a block
comparing with kube-apiserver 1.36 + etcd 3.5 measured on the same kind of machine.

    scripts/api-bench-clients.py [--bin .build/release/swiftedge] [--quick] [--secs 10] ...

Progress goes to stderr, figures to stdout.
"""
import argparse
import asyncio
import faulthandler
import json
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import kubernetes
import requests
from kubernetes import client, config

REPO = Path(__file__).resolve().parents[1]
KUBECTL = "kubectl"

# kube-apiserver 1.36 + etcd 3.5 on the same kind of machine (2 cores, 24 GiB).
KUBE = {"wrk1": 227.0, "wrk8": 656.0, "wrk32": 792.0, "py8": 188.0, "list_p99": 3.3, "rss_mb": 1499.0}

PROBLEMS = []          # (where, what) the server did wrong, exact messages
_problem_lock = threading.Lock()


def problem(where, what):
    with _problem_lock:
        PROBLEMS.append((where, what))


def step(what):
    print(f"  .. {what}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


class Server:
    def __init__(self, binary, tmp, extra):
        self.dir = tmp / "data"
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.log = tmp / "server.log"
        args = [binary, "apiserver", "--data-dir", str(self.dir), "--port", str(self.port), "--no-controllers", *extra]
        self.proc = subprocess.Popen(args, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        self.kubeconfig = self.dir / "admin.kubeconfig"
        self.ca = str(self.dir / "pki" / "ca.crt")
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"server exited ({self.proc.returncode}): {self.log.read_text()[-3000:]}")
            if self.kubeconfig.exists() and (self.dir / "admin.token").exists():
                try:
                    if requests.get(self.url + "/readyz", verify=self.ca, timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
            time.sleep(0.1)
        else:
            sys.exit("server did not become ready in 120 s")
        self.token = (self.dir / "admin.token").read_text().strip()
        self.auth = {"Authorization": f"Bearer {self.token}"}

    def rss(self):
        return rss_mb(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def create_namespace(srv, name):
    r = requests.post(srv.url + "/api/v1/namespaces", headers=srv.auth, verify=srv.ca, timeout=30,
                      json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    if r.status_code not in (200, 201, 409):
        sys.exit(f"creating namespace {name}: {r.status_code} {r.text}")


# ---------------------------------------------------------------- wrk

WRK_LUA = r"""
wrk.method = "POST"
wrk.body = '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"wrk-"},"data":{"app":"bench","tier":"edge","note":"a small value"}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer @TOKEN@"

local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} sample = "" end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if (status < 200 or status > 299) and sample == "" then sample = string.format("%d %s", status, body or "") end
end
function done(summary, latency, requests)
  local agg = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do agg[k] = (agg[k] or 0) + v end
    local s = t:get("sample")
    if s ~= nil and s ~= "" then io.write("SAMPLE " .. string.gsub(s, "\n", " ") .. "\n") end
  end
  for k, v in pairs(agg) do io.write(string.format("STATUS %d %d\n", k, v)) end
  local e = summary.errors
  io.write(string.format("DURATION_US %d\nREQUESTS %d\n", summary.duration, summary.requests))
  io.write(string.format("ERRORS connect=%d read=%d write=%d status=%d timeout=%d\n", e.connect, e.read, e.write, e.status, e.timeout))
  io.write(string.format("LATENCY_US p50=%d p99=%d\n", latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(srv, lua, conns, secs):
    out = subprocess.run(["wrk", "-t", str(min(conns, 2)), "-c", str(conns), "-d", f"{secs}s", "-s", str(lua),
                          srv.url + "/api/v1/namespaces/bench/configmaps"],
                         capture_output=True, text=True, timeout=secs + 120)
    if out.returncode != 0:
        sys.exit(f"wrk failed ({out.returncode}): {out.stderr}{out.stdout}")
    statuses, errors, sample, lat = Counter(), {}, [], (0, 0)
    dur = None
    for line in out.stdout.splitlines():
        if line.startswith("STATUS "):
            _, code, n = line.split()
            statuses[int(code)] += int(n)
        elif line.startswith("DURATION_US "):
            dur = int(line.split()[1]) / 1e6
        elif line.startswith("ERRORS "):
            errors = {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
        elif line.startswith("SAMPLE "):
            sample.append(line[7:])
        elif line.startswith("LATENCY_US "):
            p50, p99 = (int(kv.split("=")[1]) for kv in line.split()[1:])
            lat = (p50 / 1000, p99 / 1000)
    ok = sum(n for c, n in statuses.items() if 200 <= c <= 299)
    non2xx = sum(n for c, n in statuses.items() if not 200 <= c <= 299)
    sock_errors = errors.get("connect", 0) + errors.get("read", 0) + errors.get("write", 0) + errors.get("timeout", 0)
    if non2xx:
        problem(f"wrk {conns} conns", f"{non2xx} non-2xx ({dict(statuses)}); first: {sample[0][:400] if sample else '?'}")
    if sock_errors:
        problem(f"wrk {conns} conns", f"socket errors {errors}")
    return {"rate": ok / dur, "non2xx": non2xx, "sock_errors": sock_errors, "lat": lat, "statuses": dict(statuses)}


# ---------------------------------------------------------------- Python client creates

def py_creates(srv, threads, secs):
    stop_at = [0.0]
    start = threading.Barrier(threads + 1, action=lambda: stop_at.__setitem__(0, time.perf_counter() + secs), timeout=120)
    counts, fails = [0] * threads, Counter()

    def worker(i):
        api = client.CoreV1Api(config.new_client_from_config(config_file=str(srv.kubeconfig)))
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": f"py{threads}-{i}-"},
                "data": {"app": "bench", "tier": "edge", "note": "a small value"}}
        api.list_namespaced_config_map("bench", limit=1)  # connection up before the clock starts
        start.wait()
        n = 0
        while time.perf_counter() < stop_at[0]:
            try:
                api.create_namespaced_config_map("bench", body)
                n += 1
            except client.ApiException as e:
                fails[e.status] += 1
                if sum(fails.values()) <= 3:
                    problem(f"python client {threads} threads", f"{e.status} {e.reason}: {(e.body or '')[:400]}")
            except Exception as e:  # noqa: BLE001 - transport errors are what we want to see
                fails[type(e).__name__] += 1
                if sum(fails.values()) <= 3:
                    problem(f"python client {threads} threads", f"{type(e).__name__}: {e}")
        counts[i] = n
        api.api_client.close()

    with ThreadPoolExecutor(threads) as ex:
        futs = [ex.submit(worker, i) for i in range(threads)]
        start.wait()
        t0 = stop_at[0] - secs
        for f in futs:
            f.result()
        elapsed = time.perf_counter() - t0
    return {"rate": sum(counts) / elapsed, "fails": sum(fails.values())}


# ---------------------------------------------------------------- kubectl creates

def kubectl_creates(srv, n):
    fails = 0
    t0 = time.perf_counter()
    for i in range(n):
        r = subprocess.run([KUBECTL, "--kubeconfig", str(srv.kubeconfig), "create", "configmap", f"kubectl-{i}", "-n", "bench",
                            "--from-literal=app=bench", "--from-literal=tier=edge"], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            fails += 1
            if fails <= 3:
                problem("kubectl create configmap", (r.stderr or r.stdout).strip()[:400])
    return {"rate": n / (time.perf_counter() - t0), "fails": fails}


# ---------------------------------------------------------------- pods

def pod_body():
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "bench-", "labels": {"app": "bench"}},
            "spec": {"containers": [{"name": "main", "image": "docker.io/library/busybox:1.36", "command": ["sleep", "3600"]}]}}


async def create_pods(srv, n, inflight=32):
    ctx = ssl.create_default_context(cafile=srv.ca)
    body = json.dumps(pod_body())
    made, fails, nxt = [0], Counter(), [0]
    hdrs = {**srv.auth, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ssl=ctx), headers=hdrs) as s:
        async def worker():
            while nxt[0] < n:
                nxt[0] += 1
                for attempt in range(3):
                    try:
                        async with s.post(srv.url + "/api/v1/namespaces/bench/pods", data=body) as r:
                            text = await r.text()
                            if r.status in (200, 201):
                                made[0] += 1
                                if made[0] % 1000 == 0:
                                    step(f"{made[0]} pods")
                                break
                            fails[r.status] += 1
                            if sum(fails.values()) <= 3:
                                problem("pod creates (aiohttp)", f"{r.status}: {text[:400]}")
                    except aiohttp.ClientError as e:
                        fails[type(e).__name__] += 1
                        if sum(fails.values()) <= 3:
                            problem("pod creates (aiohttp)", f"{type(e).__name__}: {e}")
        await asyncio.gather(*(worker() for _ in range(inflight)))
    return made[0], sum(fails.values())


# ---------------------------------------------------------------- LIST

def time_lists(fn, n):
    fn()  # warm-up, not counted
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def list_bench(srv, pods, n):
    url = srv.url + "/api/v1/namespaces/bench/pods"
    res = {}
    sess = requests.Session()
    sess.headers.update(srv.auth)
    get = lambda headers: sess.get(url, headers=headers, verify=srv.ca, timeout=300)  # verify per request: a session's loses to REQUESTS_CA_BUNDLE

    step(f"LIST {pods} pods x{n}: raw HTTP (requests, JSON)")
    r = get({"Accept": "application/json"})
    got = len(r.json()["items"])
    if got != pods:
        problem("LIST JSON", f"{got} items, expected {pods}")
    res["raw_json"] = time_lists(lambda: get({"Accept": "application/json"}).content, n)
    res["json_mb"] = len(r.content) / 1e6

    step(f"LIST {pods} pods x{n}: raw HTTP (requests, Accept: application/vnd.kubernetes.protobuf)")
    pb = {"Accept": "application/vnd.kubernetes.protobuf"}
    r = get(pb)
    ctype = r.headers.get("Content-Type", "")
    res["pb_ctype"] = ctype
    res["pb_mb"] = len(r.content) / 1e6
    if r.status_code != 200:
        problem("LIST protobuf", f"{r.status_code}: {r.text[:400]}")
    elif not ctype.startswith("application/vnd.kubernetes.protobuf"):
        problem("LIST protobuf", f"Accept: application/vnd.kubernetes.protobuf answered 200 with Content-Type: {ctype!r} "
                                 f"(body starts {r.content[:24]!r}); kube-apiserver sends protobuf (magic k8s\\x00) or 406")
    elif not r.content.startswith(b"k8s\x00"):
        problem("LIST protobuf", f"protobuf body without the k8s\\x00 magic: {r.content[:24]!r}")
    res["pb"] = time_lists(lambda: get(pb).content, n)

    step(f"LIST {pods} pods x{n}: Python client list_namespaced_pod")
    api_client = config.new_client_from_config(config_file=str(srv.kubeconfig))
    core = client.CoreV1Api(api_client)
    got = len(core.list_namespaced_pod("bench").items)
    if got != pods:
        problem("LIST python client", f"{got} items, expected {pods}")
    res["py"] = time_lists(lambda: core.list_namespaced_pod("bench", _request_timeout=300), n)
    api_client.close()

    step(f"LIST {pods} pods x{n}: kubectl get pods -o json")
    cmd = [KUBECTL, "--kubeconfig", str(srv.kubeconfig), "get", "pods", "-n", "bench", "-o", "json"]
    r = subprocess.run(cmd, capture_output=True, timeout=300)
    if r.returncode != 0:
        problem("kubectl get pods", r.stderr.decode(errors="replace").strip()[:400])
    elif len(json.loads(r.stdout)["items"]) != pods:
        problem("kubectl get pods", f"{len(json.loads(r.stdout)['items'])} items, expected {pods}")

    def kubectl_list():
        p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
        if p.returncode != 0:
            problem("kubectl get pods", p.stderr.decode(errors="replace").strip()[:400])
    res["kubectl"] = time_lists(kubectl_list, n)
    return res


# ---------------------------------------------------------------- watch

async def watch_bench(srv, watchers, objects, on_ready):
    ctx = ssl.create_default_context(cafile=srv.ca)
    ns = "bench-watch"
    base = srv.url + f"/api/v1/namespaces/{ns}/configmaps"
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=60)
    arrivals = {}          # name -> [perf_counter at delivery]
    complete = {}          # name -> asyncio.Event set when every watcher has it
    connected, failed = [0], [0]
    all_up = asyncio.Event()
    hdrs = {**srv.auth, "Accept": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ssl=ctx), headers=hdrs, timeout=timeout) as s:
        async with s.get(base + "?limit=1") as r:
            rv = (await r.json())["metadata"]["resourceVersion"]

        async def watcher(i):
            try:
                async with s.get(f"{base}?watch=1&resourceVersion={rv}") as r:
                    if r.status != 200:
                        failed[0] += 1
                        problem("watch", f"watch {i}: {r.status} {(await r.text())[:400]}")
                        return
                    connected[0] += 1
                    if connected[0] + failed[0] == watchers:
                        all_up.set()
                    async for line in r.content:
                        t = time.perf_counter()
                        if not line.strip():
                            continue
                        ev = json.loads(line)
                        if ev.get("type") != "ADDED":
                            if ev.get("type") == "ERROR":
                                problem("watch", f"watch {i}: ERROR event {json.dumps(ev)[:400]}")
                            continue
                        name = ev["object"]["metadata"]["name"]
                        lst = arrivals.setdefault(name, [])
                        lst.append(t)
                        if len(lst) == connected[0] and name in complete:
                            complete[name].set()
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                failed[0] += 1
                problem("watch", f"watch {i}: {type(e).__name__}: {e}")
                if connected[0] + failed[0] == watchers:
                    all_up.set()
            except asyncio.CancelledError:
                pass

        step(f"opening {watchers} watches")
        tasks = []
        for i in range(watchers):
            tasks.append(asyncio.create_task(watcher(i)))
            if i % 50 == 49:
                await asyncio.sleep(0)  # let the handshakes proceed in waves
        try:
            await asyncio.wait_for(all_up.wait(), 180)
        except asyncio.TimeoutError:
            problem("watch", f"only {connected[0]} of {watchers} watches open after 180 s")
        step(f"{connected[0]} watches open ({failed[0]} failed); creating {objects} ConfigMaps one by one")

        async def create(name):
            complete[name] = asyncio.Event()
            t0 = time.perf_counter()
            async with s.post(base, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                                          "data": {"i": name}}) as r:
                if r.status not in (200, 201):
                    problem("watch create", f"{r.status}: {(await r.text())[:400]}")
                    return t0, False
            if len(arrivals.get(name, [])) >= connected[0]:
                complete[name].set()
            try:
                await asyncio.wait_for(complete[name].wait(), 30)
            except asyncio.TimeoutError:
                problem("watch", f"{name}: delivered to {len(arrivals.get(name, []))} of {connected[0]} watchers within 30 s")
            return t0, True

        await create("warm-up")  # every watch proven live before timing
        lat, missing = [], 0
        for k in range(objects):
            name = f"obj-{k:03d}"
            t0, ok = await create(name)
            if not ok:
                continue
            got = arrivals.get(name, [])
            missing += connected[0] - len(got)
            lat.extend(t - t0 for t in got)
            await asyncio.sleep(0.05)
        rss = on_ready()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"lat": lat, "connected": connected[0], "failed": failed[0], "missing": missing, "rss": rss}


# ---------------------------------------------------------------- report

def fmt_rate(v):
    return f"{v:,.0f}/s" if v >= 10 else f"{v:.1f}/s"


def fmt_s(v):
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def p50p99(v):
    return f"{fmt_s(statistics.median(v))} / {fmt_s(pct(v, 99))}"


def table(rows, headers):
    widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(len(headers))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(REPO / ".build" / "release" / "swiftedge"))
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 s steps, 2k pods, 5 lists, 100 watchers, 10 kubectl creates")
    ap.add_argument("--secs", type=int, help="seconds per wrk run (default 10; --quick 2)")
    ap.add_argument("--py-secs", type=float, help="seconds per Python client run (default 10; --quick 2)")
    ap.add_argument("--kubectl-creates", type=int, help="sequential kubectl creates (default 30; --quick 10)")
    ap.add_argument("--pods", type=int, help="pods to LIST (default 10000; --quick 2000)")
    ap.add_argument("--lists", type=int, help="timed LISTs per client (default 20; --quick 5)")
    ap.add_argument("--watchers", type=int, help="concurrent watches (default 500; --quick 100)")
    ap.add_argument("--watch-objects", type=int, default=20, help="objects created one by one under watch (default 20)")
    ap.add_argument("--kubectl", help="kubectl binary (default: the one on PATH)")
    ap.add_argument("--server-arg", action="append", default=[], help="extra `swiftedge apiserver` flag (repeatable), e.g. --server-arg=--no-fsync")
    a = ap.parse_args()
    q = a.quick
    secs = a.secs or (2 if q else 10)
    py_secs = a.py_secs or (2 if q else 10)
    kc_n = a.kubectl_creates or (10 if q else 30)
    pods = a.pods or (2000 if q else 10000)
    lists = a.lists or (5 if q else 20)
    watchers = a.watchers or (100 if q else 500)
    global KUBECTL
    if not shutil.which("wrk"):
        sys.exit("wrk not found (Debian: apt-get install wrk)")
    KUBECTL = a.kubectl or shutil.which("kubectl")
    if not KUBECTL:
        sys.exit("kubectl not found: pass --kubectl")
    if "/.pyenv/shims/" in KUBECTL:  # time kubectl itself, not pyenv's shim script in front of it
        real = subprocess.run(["pyenv", "which", "kubectl"], capture_output=True, text=True)
        KUBECTL = real.stdout.strip() if real.returncode == 0 and real.stdout.strip() else KUBECTL
    kubectl_version = subprocess.run([KUBECTL, "version", "--client"], capture_output=True, text=True).stdout.split("\n")[0]
    if not Path(a.bin).exists():
        sys.exit(f"{a.bin} not found: build it (swift build -c release ...) or pass --bin")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * watchers + 1024))
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # inherited by the server too
    faulthandler.dump_traceback_later(int(os.environ.get("BENCH_HANG_AFTER", "1800")), exit=True)

    tmp = Path(tempfile.mkdtemp(prefix="swiftedge-api-bench-"))
    srv = None
    try:
        step(f"starting {a.bin} apiserver (data in {tmp})")
        srv = Server(a.bin, tmp, a.server_arg)
        create_namespace(srv, "bench")
        create_namespace(srv, "bench-watch")
        time.sleep(1)
        rss_idle = srv.rss()

        lua = tmp / "create-configmap.lua"
        lua.write_text(WRK_LUA.replace("@TOKEN@", srv.token))
        wrk = {}
        for c in (1, 8, 32):
            step(f"wrk: ConfigMap creates, {c} connections, {secs:g} s")
            wrk[c] = run_wrk(srv, lua, c, secs)
            step(f"   {wrk[c]['rate']:,.0f}/s, latency p50 {wrk[c]['lat'][0]:.1f} ms p99 {wrk[c]['lat'][1]:.1f} ms, "
                 f"statuses {wrk[c]['statuses']}")
        py = {}
        for t in (1, 8):
            step(f"Python client: ConfigMap creates, {t} thread(s), {py_secs:g} s")
            py[t] = py_creates(srv, t, py_secs)
            step(f"   {py[t]['rate']:,.0f}/s")
        step(f"kubectl create configmap x{kc_n}, sequential")
        kc = kubectl_creates(srv, kc_n)
        step(f"   {kc['rate']:.1f}/s")
        rss_creates = srv.rss()

        step(f"creating {pods} pods (aiohttp, 32 in flight)")
        t0 = time.perf_counter()
        made, pod_fails = asyncio.run(create_pods(srv, pods))
        step(f"   {made} pods in {time.perf_counter() - t0:.1f} s ({made / (time.perf_counter() - t0):,.0f}/s), {pod_fails} failures")
        if made != pods:
            problem("pod creates", f"{made} of {pods} created")
        rss_pods = srv.rss()
        lst = list_bench(srv, made, lists)

        w = asyncio.run(watch_bench(srv, watchers, a.watch_objects, srv.rss))
        rss_watch = w["rss"]

        # ------------------------------------------------------------ output
        print()
        print(f"SwiftEdge API server with real clients — {Path(a.bin).resolve()}"
              f"{' (--quick)' if q else ''}; server, clients and load on one {os.cpu_count()}-core machine, TLS on loopback")
        print(f"  clients: wrk {subprocess.run(['wrk', '-v'], capture_output=True, text=True).stdout.split()[1]}, kubernetes (Python) "
              f"{kubernetes.__version__}, kubectl {kubectl_version.replace('Client Version: ', '')}, aiohttp {aiohttp.__version__}, "
              f"requests {requests.__version__}")
        print(f"  wrk {secs:g} s per run; Python client {py_secs:g} s per run; {kc_n} kubectl creates; "
              f"LIST of {made} pods x{lists} (after 1 warm-up; JSON {lst['json_mb']:.1f} MB, 'protobuf' {lst['pb_mb']:.1f} MB "
              f"as {lst['pb_ctype'] or '?'}); {w['connected']} watchers x {a.watch_objects} objects")
        print()
        n2 = lambda *v: " / ".join(str(x) for x in v)
        wl = w["lat"]
        rows = [
            ("ConfigMap creates/s, 1 conn / 1 thread / sequential", fmt_rate(wrk[1]["rate"]), fmt_rate(py[1]["rate"]), fmt_rate(kc["rate"])),
            ("ConfigMap creates/s, 8 conns / 8 threads", fmt_rate(wrk[8]["rate"]), fmt_rate(py[8]["rate"]), "-"),
            ("ConfigMap creates/s, 32 conns", fmt_rate(wrk[32]["rate"]), "-", "-"),
            ("create latency p50/p99, wrk 1 / 32 conns", f"{wrk[1]['lat'][0]:.1f}/{wrk[1]['lat'][1]:.1f} ms, {wrk[32]['lat'][0]:.1f}/{wrk[32]['lat'][1]:.1f} ms", "-", "-"),
            ("non-2xx / failed creates (1/8/32; 1/8; kubectl)", n2(*(wrk[c]["non2xx"] + wrk[c]["sock_errors"] for c in (1, 8, 32))),
             n2(py[1]["fails"], py[8]["fails"]), str(kc["fails"])),
            (f"LIST {made} pods p50/p99, JSON", p50p99(lst["raw_json"]), p50p99(lst["py"]), p50p99(lst["kubectl"])),
            (f"LIST {made} pods p50/p99, Accept protobuf", p50p99(lst["pb"]), "-", "-"),
            (f"watch create→event, {w['connected']} watchers p50/p99/max",
             f"{fmt_s(statistics.median(wl))} / {fmt_s(pct(wl, 99))} / {fmt_s(max(wl))}" if wl else "no events", "-", "-"),
            ("watch events missing / watches failed", f"{w['missing']} / {w['failed']}", "-", "-"),
            ("server RSS idle", f"{rss_idle:.0f} MB", "", ""),
            ("server RSS after the creates", f"{rss_creates:.0f} MB", "", ""),
            (f"server RSS with {made} pods", f"{rss_pods:.0f} MB", "", ""),
            (f"server RSS with {made} pods + {w['connected']} watchers", f"{rss_watch:.0f} MB", "", ""),
        ]
        print(table(rows, ("measurement", "wrk / raw HTTP", "python client", "kubectl")))
        print("  (raw HTTP: LIST with requests, watch with asyncio + aiohttp; python client LIST includes building its model objects;")
        print("   kubectl: the whole process, incl. its 500-item pages; watch latency includes the one Python loop reading every watch)")

        print()
        print("Reference: kube-apiserver 1.36 + etcd 3.5 measured on the same kind of machine")
        swift_p99 = pct(lst["raw_json"], 99)
        ref = [
            ("ConfigMap creates/s, wrk 1 conn", f"{KUBE['wrk1']:,.0f}/s", fmt_rate(wrk[1]["rate"]), f"{wrk[1]['rate'] / KUBE['wrk1']:.2f}×", "-", ""),
            ("ConfigMap creates/s, wrk 8 conns", f"{KUBE['wrk8']:,.0f}/s", fmt_rate(wrk[8]["rate"]), f"{wrk[8]['rate'] / KUBE['wrk8']:.2f}×", "≥5×",
             "yes" if wrk[8]["rate"] >= 5 * KUBE["wrk8"] else "NO"),
            ("ConfigMap creates/s, wrk 32 conns", f"{KUBE['wrk32']:,.0f}/s", fmt_rate(wrk[32]["rate"]), f"{wrk[32]['rate'] / KUBE['wrk32']:.2f}×", "≥5×",
             "yes" if wrk[32]["rate"] >= 5 * KUBE["wrk32"] else "NO"),
            ("ConfigMap creates/s, Python client 8 threads", f"{KUBE['py8']:,.0f}/s", fmt_rate(py[8]["rate"]), f"{py[8]['rate'] / KUBE['py8']:.2f}×", "-", ""),
            (f"LIST pods p99 (kube: 10,000; here {made}, raw JSON)", fmt_s(KUBE["list_p99"]), fmt_s(swift_p99),
             f"{swift_p99 / KUBE['list_p99']:.3f}× ({KUBE['list_p99'] / swift_p99:.1f}× faster)", "≥5× faster",
             "yes" if KUBE["list_p99"] / swift_p99 >= 5 else "NO"),
            (f"control plane RSS (kube: 10k pods; here {made} pods + {w['connected']} watchers)", f"{KUBE['rss_mb']:,.0f} MB", f"{rss_watch:.0f} MB",
             f"{rss_watch / KUBE['rss_mb']:.3f}×", "≤0.1×", "yes" if rss_watch <= KUBE["rss_mb"] / 10 else "NO"),
            (f"  the same without the watchers ({made} pods)", f"{KUBE['rss_mb']:,.0f} MB", f"{rss_pods:.0f} MB",
             f"{rss_pods / KUBE['rss_mb']:.3f}×", "≤0.1×", "yes" if rss_pods <= KUBE["rss_mb"] / 10 else "NO"),
        ]
        print(table(ref, ("measurement", "kube", "SwiftEdge", "SwiftEdge/kube", "target", "met")))
        if q or made != 10000 or "debug" in str(a.bin):
            print("  (not comparable: " + ", ".join(x for x in (
                "--quick" if q else "", f"{made} pods" if made != 10000 else "",
                "debug build" if "debug" in str(a.bin) else "") if x) + ")")

        print()
        bad = [l for l in srv.log.read_text(errors="replace").splitlines() if re.search(r"\b(error|critical|fault)\b", l, re.I)]
        if PROBLEMS or bad:
            print("What the server did wrong:")
            for where, what in PROBLEMS:
                print(f"  - {where}: {what}")
            if bad:
                print(f"  - server log: {len(bad)} error line(s), first: {bad[0][:400]}")
        else:
            print("What the server did wrong: nothing seen (no non-2xx, no transport errors, no error lines in its log)")
    finally:
        if srv:
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
