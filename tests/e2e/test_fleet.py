"""A fleet of 100 simulated edge nodes (`swiftedge-fleet`, one process) against `swiftedge cloud`:
10,000 pod updates with random disconnects and one `kill -9` + restart of the cloud; at the end every
node holds exactly the latest version of every object meant for it, and a resync after the whole
fleet was offline sends only what changed meanwhile."""
import json
import random
import signal
import subprocess
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kubernetes
import pytest

from cloudedge import Cloud
from conftest import BIN, free_port, wait_for

FLEET_BIN = Path(BIN).parent / "swiftedge-fleet"
NODES, PODS_PER_NODE, UPDATES = 100, 10, 10_000
NS = "fleet"


class FleetProc:
    def __init__(self, tmp, cloud, token):
        self.port = free_port()
        self.log = tmp / "fleet.log"
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [str(FLEET_BIN), "--nodes", str(NODES), "--token", token, "--data-dir", str(tmp / "fleet"),
             "--cloudhub-port", str(cloud.hub_port), "--cert-port", str(cloud.cert_port), "--status-port", str(self.port),
             "--heartbeat", "2", "--disconnect-every", "100", "--reconnect-base", "50", "--reconnect-max", "500"],
            stdout=self.logf, stderr=subprocess.STDOUT)
        wait_for(lambda: self.proc.poll() is None and "ready" in self.log.read_text(), 120, what="fleet joined")

    def get(self, path):
        return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30).read())

    def post(self, path):
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method="POST"), timeout=10).read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.logf.close()


def api(cloud):
    cfg = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(cloud.kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = 16
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(cfg))


def expected(v1):
    """node → {meta key: (uid, rv)}: every pod bound to a fleet node, the ConfigMap its
    kube-api-access volume projects (kube-root-ca.crt), and the Node itself."""
    want = {f"fleet-{i}": {} for i in range(NODES)}
    root_ca = v1.read_namespaced_config_map("kube-root-ca.crt", NS)
    for p in v1.list_namespaced_pod(NS).items:
        if p.spec.node_name in want:
            want[p.spec.node_name][f"{NS}/pod/{p.metadata.name}"] = (p.metadata.uid, int(p.metadata.resource_version))
            want[p.spec.node_name][f"{NS}/configmap/kube-root-ca.crt"] = (root_ca.metadata.uid, int(root_ca.metadata.resource_version))
    for n in v1.list_node().items:
        if n.metadata.name in want:
            want[n.metadata.name][f"null/node/{n.metadata.name}"] = (n.metadata.uid, int(n.metadata.resource_version))
    # Edge nodes also get every Service and Endpoints (service discovery at the edge).
    shared = {f"{o.metadata.namespace}/service/{o.metadata.name}": (o.metadata.uid, int(o.metadata.resource_version))
              for o in v1.list_service_for_all_namespaces().items}
    shared.update({f"{o.metadata.namespace}/endpoints/{o.metadata.name}": (o.metadata.uid, int(o.metadata.resource_version))
                   for o in v1.list_endpoints_for_all_namespaces().items})
    # And every CSIDriver (whether a driver's volumes wait for their VolumeAttachment).
    storage = kubernetes.client.StorageV1Api(v1.api_client)
    shared.update({f"null/csidriver/{o.metadata.name}": (o.metadata.uid, int(o.metadata.resource_version))
                   for o in storage.list_csi_driver().items})
    for objs in want.values():
        objs.update(shared)
    return want


def diff(fleet, v1):
    have = fleet.get("/state")
    lost = stale = extra = 0
    for node, objs in expected(v1).items():
        held = have.get(node, {})
        for key, (uid, rv) in objs.items():
            h = held.get(key)
            if h is None:
                lost += 1
            elif (h["uid"], h["rv"]) != (uid, rv):
                stale += 1
        extra += len(set(held) - set(objs))
    return lost, stale, extra


@pytest.fixture
def cloud(tmp_path):
    # Fleet nodes send no heartbeats: keep the node lifecycle controller from changing their Nodes.
    c = Cloud(tmp_path, ["--node-monitor-grace-period", "3600"]).start()
    yield c
    c.stop()


def test_fleet_converges_through_disconnects_and_a_cloud_kill(cloud, tmp_path):
    v1 = api(cloud)
    v1.create_namespace({"metadata": {"name": NS}})
    pool = ThreadPoolExecutor(16)
    list(pool.map(lambda i: v1.create_node({"metadata": {"name": f"fleet-{i}", "labels": {"node-role.kubernetes.io/edge": ""}}}),
                  range(NODES)))

    def pod(name, node):
        return {"metadata": {"name": name, "labels": {"v": "0"}},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}}

    names = [(f"p-{i}-{j}", f"fleet-{i}") for i in range(NODES) for j in range(PODS_PER_NODE)]
    list(pool.map(lambda nn: v1.create_namespaced_pod(NS, pod(*nn)), names))
    fleet = FleetProc(tmp_path, cloud, cloud.token())
    try:
        wait_for(lambda: fleet.get("/summary")["connected"] == NODES, 60, what="all nodes connected")
        wait_for(lambda: diff(fleet, v1) == (0, 0, 0), 60, interval=0.5, what="initial delivery")

        rng = random.Random(7)
        live = list(names)
        serial = [0]

        def update(u):
            name, node = live[rng.randrange(len(live))] if u % 100 else (None, None)
            if name is None:  # every 100th update replaces a pod (a delete and a create)
                i = rng.randrange(len(live))
                old, node = live[i]
                serial[0] += 1
                live[i] = (f"r-{serial[0]}", node)
                return [("delete", old, node), ("create", live[i][0], node)]
            return [("patch", name, u, node)]

        def run(op):
            if op[0] == "patch":
                v1.patch_namespaced_pod(op[1], NS, {"metadata": {"labels": {"v": str(op[2])}}})
            elif op[0] == "delete":
                v1.delete_namespaced_pod(op[1], NS, grace_period_seconds=0)
            else:
                v1.create_namespaced_pod(NS, pod(op[1], op[2]))

        def burst(lo, hi):
            ops = [update(u) for u in range(lo, hi)]
            # Operations on one pod stay in order: group by pod, run groups concurrently.
            by_pod = {}
            for group in ops:
                for op in group:
                    by_pod.setdefault(op[1], []).append(op)
            list(pool.map(lambda seq: [run(op) for op in seq], by_pod.values()))

        burst(0, UPDATES // 2)
        # kill -9 while deliveries are in flight; restart with the same data.
        cloud.stop(signal.SIGKILL)
        cloud.start()
        v1 = api(cloud)
        burst(UPDATES // 2, UPDATES)
        fleet.post("/chaos?ms=0")  # with chaos on, a node or two is always redialling
        wait_for(lambda: fleet.get("/summary")["connected"] == NODES, 60, what="all nodes reconnected")
        try:
            wait_for(lambda: diff(fleet, v1) == (0, 0, 0), 90, interval=0.5, what="convergence")
        finally:
            lost, stale, extra = diff(fleet, v1)
            print(f"fleet: {NODES} nodes, {UPDATES} updates, lost={lost} stale={stale} extra={extra}")
        assert (lost, stale, extra) == (0, 0, 0)

        # The whole fleet goes offline; 7 pods change and 3 are deleted meanwhile; on reconnect the
        # resync sends exactly those (counted by the cloud), never a relist.
        before = {k[0]: v for k, v in cloud.metrics().items() if k[0].startswith("swiftedge_sync_resync")}
        fleet.post("/offline")
        wait_for(lambda: fleet.get("/summary")["connected"] == 0, 30, what="fleet offline")
        wait_for(lambda: cloud.metrics().get(("swiftedge_cloudhub_connected_nodes", frozenset())) == 0, 30, what="cloud saw the fleet go")
        changed = rng.sample(live, 10)
        for name, _ in changed[:7]:
            v1.patch_namespaced_pod(name, NS, {"metadata": {"labels": {"v": "offline"}}})
        for name, _ in changed[7:]:
            v1.delete_namespaced_pod(name, NS, grace_period_seconds=0)
        fleet.post("/online")

        def delta():
            m = {k[0]: v for k, v in cloud.metrics().items() if k[0].startswith("swiftedge_sync_resync")}
            return {k.removeprefix("swiftedge_sync_resync").removesuffix("_total").strip("_"): m.get(k, 0) - before.get(k, 0) for k in m}

        # (A node that chaos had disconnected just before it was switched off may add one more resync.)
        wait_for(lambda: (lambda d: d["s"] >= NODES and d["sent"] >= 7 and d["deleted"] >= 3)(delta()), 60, interval=0.2,
                 what="every node resynced")
        wait_for(lambda: diff(fleet, v1) == (0, 0, 0), 30, interval=0.5, what="convergence after the offline period")
        d = delta()
        print(f"resync after the fleet was offline: {d}")
        assert (d["sent"], d["deleted"]) == (7, 3), d
        assert d["unchanged"] >= NODES * PODS_PER_NODE - 10 + NODES, d  # the remaining pods, the Nodes (and services), compared, not sent
    finally:
        fleet.stop()
        pool.shutdown()
