#!/usr/bin/env python3
"""Edge node benchmark (prints figures): a release `swiftedge cloud`, one `swiftedge edge` on a
private containerd (scripts/containerd.sh), pods pinned to the node with a local image.

- pod create → Running reported in the cloud (watch event), p50/p99 over N pods created one
  after another, and over N pods created at once;
- the edge process's RSS connected and idle, with 10 pods and with N pods;
- the edge binary's size (`swiftedge-edge`, as built, and stripped).

    scripts/edge-bench.py [--pods 50] [--bin .build/release/swiftedge]
"""
import argparse
import os
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
import urllib.error
import urllib.request
from pathlib import Path

from kubernetes import client, config, watch

REPO = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid, field="VmRSS"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


def _try(f):
    """True when f() returns without raising."""
    try:
        f()
        return True
    except Exception:
        return False


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def stop_all(procs):
    """SIGTERM, newest first; killed if not gone within 30 s."""
    for p in reversed(procs):
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def pod(name, node):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"bench": "edge"}},
            "spec": {"nodeName": node, "hostNetwork": True, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": "docker.io/local/busybox:1",
                                     "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}]}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=50)
    ap.add_argument("--keep", action="store_true", help="keep the data directory and logs")
    ap.add_argument("--edge-arg", action="append", default=[], help="an extra argument for the edge (repeatable), e.g. --edge-arg=--no-local-path")
    ap.add_argument("--bin", default=str(REPO / ".build" / "release" / "swiftedge"), help="cloud binary")
    ap.add_argument("--edge-bin", default=str(REPO / ".build" / "release" / "swiftedge-edge"), help="edge binary (swiftedge-edge)")
    ap.add_argument("--profiling", action="store_true",
                    help="also run what a typical node does beyond the benchmark (ConfigMap, probes, MetaServer, metrics), "
                         "for profiles (scripts/symbol-order)")
    ap.add_argument("--func-profile", metavar="FILE",
                    help="run the edge under scripts/symbol-order/funcprofile.so (LD_PRELOAD, $FUNCPROFILE_SO) and write the "
                         "link-time addresses of the functions it ran to FILE, in first-run order (figures are then not representative)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="swiftedge-edge-bench-"))
    procs = []
    try:
        sock = subprocess.run(["bash", str(REPO / "scripts" / "containerd.sh"), "start", str(tmp / "ctd")], check=True,
                              capture_output=True, text=True).stdout.strip()
        api, hub, cert, metrics = free_port(), free_port(), free_port(), free_port()
        cloud_log = open(tmp / "cloud.log", "ab")

        def start_cloud():
            """Starts the cloud (again) and waits until CloudHub listens."""
            started = (tmp / "cloud.log").read_text().count("CloudHub listening")
            cloud = subprocess.Popen([a.bin, "cloud", "--data-dir", str(tmp / "cloud"), "--port", str(api), "--cloudhub-port", str(hub),
                                      "--cert-port", str(cert), "--metrics-port", str(metrics)], stdout=cloud_log, stderr=subprocess.STDOUT)
            wait(lambda: (tmp / "cloud.log").read_text().count("CloudHub listening") > started, 60, "cloud")
            return cloud
        procs.append(start_cloud())
        kubeconfig = tmp / "cloud" / "admin.kubeconfig"
        token = subprocess.run([a.bin, "gettoken", "--kubeconfig", str(kubeconfig)], check=True, capture_output=True, text=True).stdout.strip()
        edge_log = open(tmp / "edge.log", "wb")
        metaserver, edge_metrics = free_port(), free_port()
        edge_env = dict(os.environ)
        if a.func_profile:
            edge_env.update(LD_PRELOAD=os.environ["FUNCPROFILE_SO"], FUNCPROFILE_OUT=str(Path(a.func_profile).resolve()), SWIFT_BACKTRACE="enable=no")
        edge = subprocess.Popen([a.edge_bin, "--cloud", "127.0.0.1", "--cloudhub-port", str(hub), "--cert-port", str(cert),
                                 "--node-name", "bench-1", "--token", token, "--data-dir", str(tmp / "edge"), "--metaserver-port", str(metaserver), "--metrics-port", str(edge_metrics),
                                 "--remote-runtime-endpoint", f"unix://{sock}", "--pod-logs-dir", str(tmp / "logs"), "--log-level", os.environ.get("EDGE_LOG_LEVEL", "warning"), *a.edge_arg],
                                stdout=edge_log, stderr=subprocess.STDOUT, env=edge_env)
        procs.append(edge)
        config.load_kube_config(config_file=str(kubeconfig))
        core = client.CoreV1Api()

        def node_ready():
            try:
                n = core.read_node("bench-1")
            except client.ApiException:
                return False
            return any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
        wait(node_ready, 60, "node Ready")

        running = {}
        seen = threading.Condition()

        def watcher():
            w = watch.Watch()
            for ev in w.stream(core.list_namespaced_pod, "default", label_selector="bench=edge", timeout_seconds=0):
                p = ev["object"]
                if p.status and p.status.phase == "Running":
                    with seen:
                        running.setdefault(p.metadata.name, time.time())
                        seen.notify_all()
        threading.Thread(target=watcher, daemon=True).start()
        time.sleep(5)  # connected and idle
        idle_rss, idle_anon = rss_mb(edge.pid), rss_mb(edge.pid, "RssAnon")

        def run(names):
            created = {}
            for n in names:
                created[n] = time.time()
                core.create_namespaced_pod("default", pod(n, "bench-1"))
            with seen:
                seen.wait_for(lambda: all(n in running for n in names), timeout=300)
            missing = [n for n in names if n not in running]
            if missing:
                sys.exit(f"pods never Running: {missing[:5]}")
            return [running[n] - created[n] for n in names]

        sequential = []
        rss10 = anon10 = 0.0
        for i in range(a.pods):
            sequential += run([f"seq-{i}"])
            if i == 9:
                time.sleep(2)
                rss10, anon10 = rss_mb(edge.pid), rss_mb(edge.pid, "RssAnon")
        time.sleep(2)
        rss_n, anon_n = rss_mb(edge.pid), rss_mb(edge.pid, "RssAnon")
        core.delete_collection_namespaced_pod("default", label_selector="bench=edge")
        wait(lambda: not core.list_namespaced_pod("default", label_selector="bench=edge").items, 120, "pods deleted")
        t0 = time.time()
        burst = run([f"burst-{i}" for i in range(a.pods)])
        burst_all = time.time() - t0
        rss_burst = rss_mb(edge.pid)
        core.delete_collection_namespaced_pod("default", label_selector="bench=edge")
        wait(lambda: not core.list_namespaced_pod("default", label_selector="bench=edge").items, 120, "pods deleted")

        if a.profiling or a.func_profile:
            # Beyond the benchmark: what a typical node also does (config from a ConfigMap, probes of
            # each kind, a local MetaServer list, a metrics scrape), so its code is profiled too.
            core.create_namespaced_config_map("default", {"metadata": {"name": "bench-config"}, "data": {"greeting": "hello"}})
            spec = pod("probed", "bench-1")
            main_container = spec["spec"]["containers"][0]
            main_container["command"] = ["sh", "-c", "trap 'exit 0' TERM; httpd -p 127.0.0.1:18181 -h /config; while true; do sleep 1; done"]
            main_container["env"] = [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "bench-config", "key": "greeting"}}}]
            main_container["volumeMounts"] = [{"name": "config", "mountPath": "/config"}]
            main_container["livenessProbe"] = {"exec": {"command": ["cat", "/config/greeting"]}, "periodSeconds": 1}
            main_container["readinessProbe"] = {"httpGet": {"path": "/greeting", "port": 18181, "host": "127.0.0.1"}, "periodSeconds": 1}
            main_container["startupProbe"] = {"tcpSocket": {"port": 18181, "host": "127.0.0.1"}, "periodSeconds": 1}
            spec["spec"]["volumes"] = [{"name": "config", "configMap": {"name": "bench-config"}}]
            core.create_namespaced_pod("default", spec)

            def ready():
                p = core.read_namespaced_pod("probed", "default")
                return any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
            wait(ready, 60, "probed pod Ready")
            time.sleep(3)
            # MetaServer is HTTPS and wants a pod's token or the node's certificate: an anonymous
            # list is refused (401), which still runs its TLS and authentication path.
            try:
                urllib.request.urlopen(f"https://127.0.0.1:{metaserver}/api/v1/pods", timeout=10, context=ssl._create_unverified_context()).read()
            except urllib.error.HTTPError:
                pass
            urllib.request.urlopen(f"http://127.0.0.1:{edge_metrics}/metrics", timeout=10).read()
            core.delete_namespaced_pod("probed", "default")
            wait(lambda: not core.list_namespaced_pod("default", field_selector="metadata.name=probed").items, 60, "probed pod deleted")
            # The cloud restarts: the edge reconnects and resyncs, then starts a pod created meanwhile.
            stop_all(procs[:1])
            procs[0] = start_cloud()

            def phase(name):
                try:
                    return core.read_namespaced_pod(name, "default").status.phase
                except Exception:  # the API server may still be starting
                    return None
            def create_after_restart():
                try:
                    core.create_namespaced_pod("default", pod("after-restart", "bench-1"))
                except client.ApiException as e:
                    if e.status != 409:  # 409: an earlier attempt went through
                        raise
            wait(lambda: _try(create_after_restart), 60, "API server back")
            wait(lambda: phase("after-restart") == "Running", 60, "pod Running after the cloud restarted")
            core.delete_namespaced_pod("after-restart", "default")
            wait(lambda: phase("after-restart") is None, 60, "after-restart pod deleted")
        size = os.path.getsize(a.edge_bin)
        stripped = tmp / "swiftedge-edge.stripped"
        shutil.copy(a.edge_bin, stripped)
        subprocess.run(["strip", str(stripped)], check=False)
        ms = lambda v: f"{v * 1000:.0f} ms"
        print(f"Edge benchmark ({a.pods} pods, busybox image local, containerd {subprocess.run(['containerd', '--version'], capture_output=True, text=True).stdout.split()[2]})")
        print(f"  pod create → Running reported, one at a time: p50 {ms(pct(sequential, 50))}  p99 {ms(pct(sequential, 99))}  max {ms(max(sequential))}"
              f" (slowest: {', '.join(f'#{i} {ms(v)}' for i, v in sorted(enumerate(sequential), key=lambda x: -x[1])[:3])})")
        print(f"  pod create → Running reported, {a.pods} at once:  p50 {ms(pct(burst, 50))}  p99 {ms(pct(burst, 99))}  all Running after {burst_all:.1f} s")
        print(f"  edge RSS: connected and idle {idle_rss:.1f} MB, 10 pods {rss10:.1f} MB, {a.pods} pods {rss_n:.1f} MB (after the burst {rss_burst:.1f} MB)")
        print(f"    of which the process's own memory (RssAnon; the rest is pages of the executable): "
              f"{idle_anon:.1f} / {anon10:.1f} / {anon_n:.1f} MB")
        print(f"  edge binary: {size / 1e6:.1f} MB as built, {os.path.getsize(stripped) / 1e6:.1f} MB stripped ({a.edge_bin})")
    finally:
        stop_all(procs)
        subprocess.run(["bash", str(REPO / "scripts" / "containerd.sh"), "stop", str(tmp / "ctd")], check=False)
        if a.keep:
            print(f"  logs and data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
