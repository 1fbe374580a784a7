"""A real Prometheus (Debian's `prometheus`, /usr/bin/prometheus) scrapes the `swiftedge cloud`'s
and a joined `swiftedge edge`'s /metrics endpoints with an ordinary scrape config: both targets
come up, and PromQL sees `up` and SwiftEdge's own series with the expected values."""
import json
import os
import shutil
import subprocess
import time

import pytest
import requests

from cloudedge import Cloud, Edge
from conftest import free_port, wait_for

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
TARGETS_DEADLINE = 60


@pytest.fixture
def cloud(tmp_path):
    c = Cloud(tmp_path).start()
    yield c
    c.stop()


@pytest.fixture
def edge(tmp_path, cloud):
    e = Edge(tmp_path, cloud, "shop-p").start(cloud.token())
    try:
        wait_for(lambda: "connected to the cloud" in e.log.read_text(), 30, what="edge connected")
        yield e
    finally:
        e.stop()


def write_config(path, cloud_port, edge_port):
    # JSON is YAML: a plain two-job scrape config with static targets.
    cfg = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "swiftedge-cloud", "metrics_path": "/metrics",
             "static_configs": [{"targets": [f"127.0.0.1:{cloud_port}"], "labels": {"role": "cloud"}}]},
            {"job_name": "swiftedge-edge", "metrics_path": "/metrics",
             "static_configs": [{"targets": [f"127.0.0.1:{edge_port}"], "labels": {"role": "edge", "node": "shop-p"}}]},
        ],
    }
    path.write_text(json.dumps(cfg, indent=2))


class Prometheus:
    def __init__(self, tmp_path, config):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "prometheus.log"
        self.args = [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=info"]
        self.proc = None

    def start(self):
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self.args, stdout=self.logf, stderr=subprocess.STDOUT)

        def ready():
            assert self.proc.poll() is None, f"prometheus exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
            try:
                return requests.get(self.url + "/-/ready", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(ready, 60, interval=0.2, what="prometheus ready")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()

    def api(self, path, **params):
        r = requests.get(self.url + path, params=params, timeout=10)
        assert r.status_code == 200, f"GET {path} {params}: {r.status_code} {r.text}"
        body = r.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql):
        """{job: float} of an instant vector query."""
        data = self.api("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", data
        return {s["metric"].get("job"): float(s["value"][1]) for s in data["result"]}


def test_prometheus_scrapes_cloud_and_edge(tmp_path, cloud, edge):
    assert os.access(PROMETHEUS, os.X_OK), f"{PROMETHEUS} missing: install the apt package prometheus"
    version = subprocess.run([PROMETHEUS, "--version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and "prometheus, version" in version.stdout + version.stderr, version

    # Both endpoints answer before Prometheus is pointed at them.
    for port in (cloud.metrics_port, edge.metrics_port):
        r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert r.status_code == 200 and "swiftedge_" in r.text, (port, r.status_code, r.text[:500])

    config = tmp_path / "prometheus.yml"
    write_config(config, cloud.metrics_port, edge.metrics_port)
    check = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True, timeout=30) \
        if shutil.which("promtool") else None
    if check is not None:
        assert check.returncode == 0, check.stdout + check.stderr

    prom = Prometheus(tmp_path, config).start()
    try:
        want = {"swiftedge-cloud": f"127.0.0.1:{cloud.metrics_port}", "swiftedge-edge": f"127.0.0.1:{edge.metrics_port}"}
        deadline = time.monotonic() + TARGETS_DEADLINE
        targets = {}
        while True:
            active = prom.api("/api/v1/targets", state="active")["activeTargets"]
            targets = {t["labels"]["job"]: t for t in active}
            if set(targets) == set(want) and all(t["health"] == "up" for t in targets.values()):
                break
            if time.monotonic() > deadline:
                report = {job: (t["scrapeUrl"], t["health"], t.get("lastError")) for job, t in targets.items()}
                raise AssertionError(f"targets not all up within {TARGETS_DEADLINE}s (job: url, health, lastError): {report}; "
                                     f"wanted {want}\nprometheus log:\n{prom.log.read_text()[-2000:]}")
            time.sleep(0.5)
        for job, instance in want.items():
            t = targets[job]
            assert t["labels"]["instance"] == instance and t["scrapeUrl"] == f"http://{instance}/metrics", t
            assert t["lastError"] == "", t

        # The cloud reports its one connected node, the edge its hub counters; `up` is 1 for both.
        def value(promql, job):
            """The sample of `job` in `promql`'s result, waiting for it to be ingested."""
            def got():
                v = prom.query(promql).get(job)
                return (v,) if v is not None else None
            return wait_for(got, 30, interval=0.5, what=f"{promql} for {job}")[0]

        up = wait_for(lambda: (lambda v: v if len(v) == 2 else None)(prom.query("up")), 30, interval=0.5,
                      what="`up` for both jobs")
        assert up == {"swiftedge-cloud": 1.0, "swiftedge-edge": 1.0}, up
        assert value('swiftedge_cloudhub_connected_nodes{job="swiftedge-cloud"}', "swiftedge-cloud") == 1
        assert value('swiftedge_cloudhub_node_messages_sent_total{job="swiftedge-cloud",node="shop-p"}', "swiftedge-cloud") > 0
        assert value('swiftedge_edgehub_reconnects_total{job="swiftedge-edge",node="shop-p"}', "swiftedge-edge") == 0
        assert value('swiftedge_edgehub_upstream_dropped_total{job="swiftedge-edge"}', "swiftedge-edge") == 0
        # Prometheus's own per-scrape series: samples were ingested from each target.
        samples = prom.query("scrape_samples_scraped")
        assert samples.get("swiftedge-cloud", 0) > 10 and samples.get("swiftedge-edge", 0) > 0, samples

        # The edge going away is seen: connected nodes drops to 0 and the edge target goes down.
        edge.stop()
        wait_for(lambda: prom.query('swiftedge_cloudhub_connected_nodes{job="swiftedge-cloud"}').get("swiftedge-cloud") == 0,
                 30, interval=0.5, what="connected nodes 0 after the edge stopped")
        wait_for(lambda: prom.query('up{job="swiftedge-edge"}').get("swiftedge-edge") == 0, 30, interval=0.5,
                 what="the edge target down after the edge stopped")
    finally:
        prom.stop()
