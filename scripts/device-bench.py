#!/usr/bin/env python3
"""Device twin benchmark (prints figures): a release `swiftedge cloud`, one `swiftedge edge` with
the real mosquitto as its MQTT broker, N Devices (default 1,000) of one DeviceModel bound to
the node. Devices report over MQTT (`$hw/events/device/<ns>/<name>/twin/update`, KubeEdge's
format) at an offered rate; the value reported is the send time, so a watch on DeviceStatus
in the cloud gives each update's end-to-end latency.

- twin updates/s that reached DeviceStatus (device → MQTT → edge twin → cloud → API server),
  and latency p50/p99; the edge sends the latest value per device, so when updates come faster
  than the cloud writes them, older values are folded (the count of folded updates is printed);
- edge RSS connected with N devices, idle and under load.

    scripts/device-bench.py [--devices 1000] [--rate 1000] [--seconds 20] [--bin .build/release/swiftedge]
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from kubernetes import client, config, watch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from importlib import import_module  # noqa: E402

bench = import_module("edge-bench")
free_port, rss_mb, wait, pct = bench.free_port, bench.rss_mb, bench.wait, bench.pct
GROUP, VERSION = "devices.kubeedge.io", "v1beta1"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=1000, help="offered twin updates per second (all devices in turn)")
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--keep", action="store_true", help="keep the data directory and logs")
    ap.add_argument("--bin", default=str(REPO / ".build" / "release" / "swiftedge"), help="cloud binary")
    ap.add_argument("--edge-bin", default=str(REPO / ".build" / "release" / "swiftedge-edge"), help="edge binary")
    a = ap.parse_args()
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    tmp = Path(tempfile.mkdtemp(prefix="swiftedge-device-bench-"))
    procs = []
    try:
        broker = free_port()
        (tmp / "mosquitto.conf").write_text(f"listener {broker} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        procs.append(subprocess.Popen([mosquitto, "-c", str(tmp / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        api, hub, cert, metrics = free_port(), free_port(), free_port(), free_port()
        cloud_log = open(tmp / "cloud.log", "wb")
        procs.append(subprocess.Popen([a.bin, "cloud", "--data-dir", str(tmp / "cloud"), "--port", str(api), "--cloudhub-port", str(hub),
                                       "--cert-port", str(cert), "--metrics-port", str(metrics), "--log-level", "warning"],
                                      stdout=cloud_log, stderr=subprocess.STDOUT))
        wait(lambda: (tmp / "cloud" / "admin.kubeconfig").exists() and
             subprocess.run([a.bin, "gettoken", "--kubeconfig", str(tmp / "cloud" / "admin.kubeconfig")], capture_output=True).returncode == 0,
             60, "cloud")
        kubeconfig = tmp / "cloud" / "admin.kubeconfig"
        token = subprocess.run([a.bin, "gettoken", "--kubeconfig", str(kubeconfig)], check=True, capture_output=True, text=True).stdout.strip()
        edge_log = open(tmp / "edge.log", "wb")
        edge = subprocess.Popen([a.edge_bin, "--cloud", "127.0.0.1", "--cloudhub-port", str(hub), "--cert-port", str(cert),
                                 "--node-name", "bench-1", "--token", token, "--data-dir", str(tmp / "edge"), "--metaserver-port", "0",
                                 "--metrics-port", "0", "--remote-runtime-endpoint", "", "--mqtt-server", f"tcp://127.0.0.1:{broker}",
                                 "--log-level", os.environ.get("EDGE_LOG_LEVEL", "warning")], stdout=edge_log, stderr=subprocess.STDOUT)
        procs.append(edge)
        config.load_kube_config(config_file=str(kubeconfig))
        core, crd = client.CoreV1Api(), client.CustomObjectsApi()

        def node_ready():
            try:
                n = core.read_node("bench-1")
            except client.ApiException:
                return False
            return any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
        wait(node_ready, 60, "node Ready")

        crd.create_namespaced_custom_object(GROUP, VERSION, "default", "devicemodels", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "DeviceModel", "metadata": {"name": "bench-model"},
            "spec": {"protocol": "mqtt", "properties": [{"name": "seq", "type": "STRING", "accessMode": "ReadOnly"}]}})
        t0 = time.time()
        names = [f"dev-{i:05d}" for i in range(a.devices)]
        for n in names:
            crd.create_namespaced_custom_object(GROUP, VERSION, "default", "devices", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "Device", "metadata": {"name": n},
                "spec": {"deviceModelRef": {"name": "bench-model"}, "nodeName": "bench-1", "protocol": {"protocolName": "mqtt"},
                         "properties": [{"name": "seq", "reportToCloud": True}]}})
        created = time.time() - t0

        # The node has them all when its membership lists N devices.
        members = {"n": 0}
        got = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench")

        def on_message(_c, _u, m):
            if m.topic.endswith("membership/get/result"):
                members["n"] = len(json.loads(m.payload).get("devices", []))
                got.set()
        c.on_message = on_message
        c.connect("127.0.0.1", broker)
        c.loop_start()
        c.subscribe("$hw/events/node/bench-1/membership/get/result", qos=0)
        time.sleep(0.5)

        def all_on_node():
            got.clear()
            c.publish("$hw/events/node/bench-1/membership/get", json.dumps({"event_id": "", "timestamp": 0}))
            got.wait(5)
            return members["n"] == a.devices
        t1 = time.time()
        wait(all_on_node, 300, f"{a.devices} devices on the node")
        delivered_all = time.time() - t0
        time.sleep(3)
        idle_rss = rss_mb(edge.pid)

        seen = {}  # (device, value) → arrival
        lock = threading.Lock()
        stop = threading.Event()

        def watcher():
            w = watch.Watch()
            rv = crd.list_namespaced_custom_object(GROUP, VERSION, "default", "devicestatuses")["metadata"]["resourceVersion"]
            for ev in w.stream(crd.list_namespaced_custom_object, GROUP, VERSION, "default", "devicestatuses", resource_version=rv,
                               timeout_seconds=0):
                now = time.time()
                o = ev["object"]
                for t in (o.get("status") or {}).get("twins") or []:
                    v = (t.get("reported") or {}).get("value")
                    if t.get("propertyName") == "seq" and v:
                        with lock:
                            seen.setdefault((o["metadata"]["name"], v), now)
                if stop.is_set():
                    return
        threading.Thread(target=watcher, daemon=True).start()
        time.sleep(1)

        def publish(n, value):
            c.publish(f"$hw/events/device/default/{n}/twin/update",
                      json.dumps({"event_id": "", "timestamp": int(time.time() * 1000), "twin": {"seq": {"actual": {"value": value}}}}))

        # Warm-up: every DeviceStatus created once.
        for n in names:
            publish(n, "0")
        wait(lambda: sum(1 for k in list(seen) if k[1] == "0") >= a.devices, 300, "warm-up statuses")
        warm = time.time() - t1

        sent = {}
        peak_rss = 0.0
        start = time.time()
        i = 0
        total = a.rate * a.seconds
        while i < total:
            due = start + i / a.rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            n = names[i % a.devices]
            value = f"{time.time():.6f}"
            sent[(n, value)] = time.time()
            publish(n, value)
            i += 1
            if i % a.rate == 0:
                peak_rss = max(peak_rss, rss_mb(edge.pid))
        publish_end = time.time()
        # Everything that will arrive has arrived when each device's last value has.
        last = {}
        for (n, v) in sent:
            last[n] = v
        wait(lambda: all((n, v) in seen for n, v in last.items()), 120, "the last value of every device")
        end = max(seen[(n, v)] for n, v in last.items())
        stop.set()
        arrived = [(k, seen[k]) for k in sent if k in seen]
        latencies = [t - float(k[1]) for k, t in arrived]
        ms = lambda v: f"{v * 1000:.0f} ms"
        print(f"Device twin benchmark ({a.devices} devices on one node, reports over MQTT (mosquitto), offered {a.rate} updates/s for {a.seconds} s)")
        print(f"  {a.devices} Devices created in {created:.1f} s; all on the node {delivered_all:.1f} s after the first; first DeviceStatus of each within {warm:.1f} s")
        print(f"  twin updates that reached DeviceStatus: {len(arrived)} of {len(sent)} sent ({len(sent) - len(arrived)} folded into a newer value),"
              f" {len(arrived) / (end - start):.0f}/s (publishing took {publish_end - start:.1f} s, the last arrived {end - publish_end:.1f} s after)")
        print(f"  device → DeviceStatus latency: p50 {ms(pct(latencies, 50))}  p99 {ms(pct(latencies, 99))}  max {ms(max(latencies))}")
        print(f"  edge RSS with {a.devices} devices: connected and idle {idle_rss:.1f} MB, under load (peak sample) {peak_rss:.1f} MB")
        c.loop_stop()
    finally:
        bench.stop_all(procs)
        if a.keep:
            print(f"  logs and data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
