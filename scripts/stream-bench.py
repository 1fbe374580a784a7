#!/usr/bin/env python3
"""Stream tunnel benchmark (prints figures): a release `swiftedge cloud`, one `swiftedge edge` on
a private containerd (scripts/containerd.sh), a pod that wrote a large log and one that echoes.

- exec round trip: a line written to an interactive `cat` (stdin → tunnel → runtime → stdout →
  tunnel → client), p50/p99 over N lines; and a whole `exec -- true` (upgrade, CRI Exec, exit
  status), p50/p99;
- log streaming throughput: `GET pods/<p>/log` of a ~50 MB log read to the end, MB/s, and the same
  through kubectl.

    scripts/stream-bench.py [--bin .build/release/swiftedge] [--lines 200] [--log-mb 50]
"""
import argparse
import faulthandler
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from kubernetes import client, config
from kubernetes.stream import stream

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from importlib import import_module  # noqa: E402

bench = import_module("edge-bench")


def pod(name, node, command):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "hostNetwork": True, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": "docker.io/local/busybox:1", "command": ["sh", "-c", command]}]}}


def step(what):
    print(f"  .. {what}", file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(REPO / ".build" / "release" / "swiftedge"))
    ap.add_argument("--lines", type=int, default=200)
    ap.add_argument("--log-mb", type=int, default=50)
    a = ap.parse_args()
    faulthandler.dump_traceback_later(int(__import__("os").environ.get("BENCH_HANG_AFTER", "600")), exit=True)  # a hang prints where it is
    tmp = Path(tempfile.mkdtemp(prefix="swiftedge-stream-bench-"))
    procs = []
    try:
        sock = subprocess.run(["bash", str(REPO / "scripts" / "containerd.sh"), "start", str(tmp / "ctd")], check=True,
                              capture_output=True, text=True).stdout.strip()
        api, hub, cert, metrics = (bench.free_port() for _ in range(4))
        procs.append(subprocess.Popen([a.bin, "cloud", "--data-dir", str(tmp / "cloud"), "--port", str(api), "--cloudhub-port", str(hub),
                                       "--cert-port", str(cert), "--metrics-port", str(metrics), "--log-level", "warning"],
                                      stdout=open(tmp / "cloud.log", "wb"), stderr=subprocess.STDOUT))
        kubeconfig = tmp / "cloud" / "admin.kubeconfig"
        bench.wait(lambda: kubeconfig.exists() and "CloudHub listening" in (tmp / "cloud.log").read_text(), 60, "cloud")
        token = subprocess.run([a.bin, "gettoken", "--kubeconfig", str(kubeconfig)], check=True, capture_output=True, text=True).stdout.strip()
        procs.append(subprocess.Popen([a.bin, "edge", "--cloud", "127.0.0.1", "--cloudhub-port", str(hub), "--cert-port", str(cert),
                                       "--node-name", "bench-1", "--token", token, "--data-dir", str(tmp / "edge"),
                                       "--metaserver-port", str(bench.free_port()), "--metrics-port", str(bench.free_port()),
                                       "--remote-runtime-endpoint", f"unix://{sock}", "--pod-logs-dir", str(tmp / "logs"), "--log-level", "warning"],
                                      stdout=open(tmp / "edge.log", "wb"), stderr=subprocess.STDOUT))
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        core = client.CoreV1Api(api_client)
        line = "x" * 99
        lines = a.log_mb * 1024 * 1024 // 100
        core.create_namespaced_pod("default", pod("echo", "bench-1", "trap 'exit 0' TERM; while true; do sleep 1; done"))
        core.create_namespaced_pod("default", pod("loggen", "bench-1", f"yes {line} | head -n {lines}; echo done; trap 'exit 0' TERM; while true; do sleep 1; done"))

        def running(name):
            try:
                return core.read_namespaced_pod(name, "default").status.phase == "Running"
            except client.ApiException:
                return False
        step("waiting for the pods")
        bench.wait(lambda: running("echo") and running("loggen"), 120, "pods Running")
        step("waiting for the log to be written")
        log_dir = next((tmp / "logs").glob("default_loggen_*"))
        bench.wait(lambda: any(f.read_bytes().endswith(b"done\n") for f in log_dir.glob("main/*.log")), 120, "log written")
        log_file = next(log_dir.glob("main/*.log"))

        step("exec round trips")
        resp = stream(core.connect_get_namespaced_pod_exec, "echo", "default", command=["cat"], stdin=True, stdout=True, stderr=False,
                      tty=False, _preload_content=False)
        rtts = []
        for i in range(a.lines + 10):
            msg = f"ping {i}\n"
            t0 = time.perf_counter()
            resp.write_stdin(msg)
            got = ""
            while not got.endswith(msg):
                resp.update(timeout=5)
                if resp.peek_stdout():
                    got += resp.read_stdout()
            if i >= 10:  # warm-up
                rtts.append(time.perf_counter() - t0)
        resp.close()
        whole = []
        for _ in range(30):
            t0 = time.perf_counter()
            r = stream(core.connect_get_namespaced_pod_exec, "echo", "default", command=["true"], stderr=True, stdin=False, stdout=True,
                       tty=False, _preload_content=False)
            r.run_forever(timeout=10)
            assert r.returncode == 0
            whole.append(time.perf_counter() - t0)

        step("log throughput")
        cfg = api_client.configuration
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        req = urllib.request.Request(f"{cfg.host}/api/v1/namespaces/default/pods/loggen/log",
                                     headers={"Authorization": "Bearer " + (tmp / "cloud" / "admin.token").read_text().strip()})
        t0 = time.perf_counter()
        total = 0
        with urllib.request.urlopen(req, context=ctx, timeout=300) as r:
            while True:
                b = r.read(1 << 20)
                if not b:
                    break
                total += len(b)
        raw = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "logs", "loggen"], capture_output=True, timeout=300)
        kubectl_s = time.perf_counter() - t0
        assert out.stdout.count(b"\n") == lines + 1, (out.stdout.count(b"\n"), lines + 1)
        assert total == len(out.stdout), (total, len(out.stdout))

        ms = lambda v: f"{v * 1000:.2f} ms"
        print(f"Stream tunnel benchmark (cloud, edge, containerd and the client on one machine; TLS on loopback)")
        print(f"  exec round trip (line through an interactive cat), {len(rtts)} lines: p50 {ms(statistics.median(rtts))}  p99 {ms(bench.pct(rtts, 99))}")
        print(f"  exec -- true (upgrade, CRI Exec, exit status), {len(whole)} runs: p50 {ms(statistics.median(whole))}  p99 {ms(bench.pct(whole, 99))}")
        print(f"  log streaming: {total / 1e6:.1f} MB ({lines + 1} lines; CRI log file {log_file.stat().st_size / 1e6:.1f} MB) "
              f"in {raw:.2f} s = {total / 1e6 / raw:.1f} MB/s (HTTP client), kubectl logs {total / 1e6 / kubectl_s:.1f} MB/s, nothing lost")
    finally:
        bench.stop_all(procs)
        subprocess.run(["bash", str(REPO / "scripts" / "containerd.sh"), "stop", str(tmp / "ctd")], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
