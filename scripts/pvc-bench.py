#!/usr/bin/env python3
"""Storage benchmark (prints figures): a release `swiftedge cloud`, one `swiftedge edge` on a
private containerd (scripts/containerd.sh), the default `local-path` StorageClass.

Time from PVC create to its pod Running (watch event, with the Python client) with a fresh
volume: the claim waits for the scheduler (WaitForFirstConsumer), the volume is created through
the cloud → edge forwarding (CreateVolume on the node), bound, published into the pod.
p50/p99 over N claims, one after another; then the claims' deletion until their volumes are gone.

    scripts/pvc-bench.py [--claims 20] [--bin .build/release/swiftedge]
"""
import argparse
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from kubernetes import client, config, watch

REPO = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def claim(name):
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "labels": {"bench": "pvc"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Mi"}}}}


def pod(name, claim_name):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"bench": "pvc"}},
            "spec": {"hostNetwork": True, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": "docker.io/local/busybox:1",
                                     "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim_name}}]}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--claims", type=int, default=20)
    ap.add_argument("--bin", default=str(REPO / ".build" / "release" / "swiftedge"))
    ap.add_argument("--keep", action="store_true", help="keep the data directory and logs")
    a = ap.parse_args()
    # Short: unix socket paths of the node's plugins hold 107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="se-pvcb-", dir="/tmp"))
    procs = []
    try:
        sock = subprocess.run(["bash", str(REPO / "scripts" / "containerd.sh"), "start", str(tmp / "ctd")], check=True,
                              capture_output=True, text=True).stdout.strip()
        api, hub, cert = free_port(), free_port(), free_port()
        cloud_log = open(tmp / "cloud.log", "ab")
        procs.append(subprocess.Popen([a.bin, "cloud", "--data-dir", str(tmp / "cloud"), "--port", str(api), "--cloudhub-port", str(hub),
                                       "--cert-port", str(cert), "--metrics-port", str(free_port())], stdout=cloud_log, stderr=subprocess.STDOUT))
        wait(lambda: "CloudHub listening" in (tmp / "cloud.log").read_text(), 60, "cloud")
        kubeconfig = tmp / "cloud" / "admin.kubeconfig"
        token = subprocess.run([a.bin, "gettoken", "--kubeconfig", str(kubeconfig)], check=True, capture_output=True, text=True).stdout.strip()
        edge_log = open(tmp / "edge.log", "wb")
        procs.append(subprocess.Popen([a.bin, "edge", "--cloud", "127.0.0.1", "--cloudhub-port", str(hub), "--cert-port", str(cert),
                                       "--node-name", "bench-1", "--token", token, "--data-dir", str(tmp / "edge"), "--metaserver-port", "0",
                                       "--metrics-port", str(free_port()), "--remote-runtime-endpoint", f"unix://{sock}", "--pod-logs-dir", str(tmp / "logs"),
                                       "--log-level", "warning"], stdout=edge_log, stderr=subprocess.STDOUT))
        config.load_kube_config(config_file=str(kubeconfig))
        core, storage = client.CoreV1Api(), client.StorageV1Api()

        def driver_registered():
            try:
                return any(d.name == "local-path.csi.swiftedge.io" for d in storage.read_csi_node("bench-1").spec.drivers or [])
            except client.ApiException:
                return False
        wait(driver_registered, 60, "the node's local-path driver")

        running, seen = {}, threading.Condition()

        def watcher():
            for ev in watch.Watch().stream(core.list_namespaced_pod, "default", label_selector="bench=pvc", timeout_seconds=0):
                p = ev["object"]
                if p.status and p.status.phase == "Running":
                    with seen:
                        running.setdefault(p.metadata.name, time.time())
                        seen.notify_all()
        threading.Thread(target=watcher, daemon=True).start()

        took = []
        for i in range(a.claims):
            name = f"data-{i}"
            t0 = time.time()
            core.create_namespaced_persistent_volume_claim("default", claim(name))
            core.create_namespaced_pod("default", pod(f"user-{i}", name))
            with seen:
                if not seen.wait_for(lambda: f"user-{i}" in running, timeout=120):
                    sys.exit(f"user-{i} never Running")
            took.append(running[f"user-{i}"] - t0)
        volumes = [pv.metadata.name for pv in core.list_persistent_volume().items]
        assert len(volumes) == a.claims, volumes
        t0 = time.time()
        core.delete_collection_namespaced_pod("default", label_selector="bench=pvc")
        wait(lambda: not core.list_namespaced_pod("default", label_selector="bench=pvc").items, 120, "pods deleted")
        core.delete_collection_namespaced_persistent_volume_claim("default", label_selector="bench=pvc")
        wait(lambda: not core.list_persistent_volume().items, 180, "volumes deleted")
        cleanup = time.time() - t0
        left = [p for p in (tmp / "edge" / "storage").iterdir() if not p.name.startswith(".")] if (tmp / "edge" / "storage").exists() else []
        print(f"PVC create → pod Running with a fresh local-path volume, {a.claims} claims one after another:")
        print(f"  p50 {pct(took, 50) * 1000:.0f} ms   p99 {pct(took, 99) * 1000:.0f} ms   mean {statistics.mean(took) * 1000:.0f} ms")
        print(f"pods and claims deleted → all {a.claims} volumes deleted (objects and data): {cleanup:.1f} s; volume directories left: {len(left)}")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["bash", str(REPO / "scripts" / "containerd.sh"), "stop", str(tmp / "ctd")], check=False, capture_output=True)
        with open("/proc/self/mountinfo") as f:
            left = [line.split()[4] for line in f if line.split()[4].startswith(str(tmp) + "/")]
        for m in sorted(left, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], check=False)
        if a.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
