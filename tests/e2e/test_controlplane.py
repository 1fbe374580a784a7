"""The embedded control plane, driven the way a user drives a cluster: real kubectl against a
server running the scheduler and controllers, with node agents that register Nodes, renew
Leases and report pod status as a node would."""
import json
import subprocess
import threading
import time
import uuid

import pytest
import requests

from conftest import BIN, Kubectl, Server, kubectl_binaries, wait_for
from nodeagent import NodeAgent

FAST = ["--node-monitor-period", "0.5", "--node-monitor-grace-period", "3", "--leader-elect-retry-period", "0.5",
        "--job-backoff", "1"]


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("controlplane"), FAST, controllers=True).start()
    yield s
    s.stop()


@pytest.fixture
def k(cp, tmp_path):
    binaries = kubectl_binaries()
    version = max(binaries)
    return Kubectl(binaries[version], version, cp.kubeconfig, tmp_path)


@pytest.fixture
def world(cp):
    """A namespace plus a label that isolates this test's nodes from other tests' nodes."""
    ns = "cp-" + uuid.uuid4().hex[:6]
    r = cp.http("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    assert r.status_code == 201, r.text
    agents = []

    def node(name, **kw):
        labels = dict(kw.pop("labels", {}))
        labels["swiftedge-test"] = ns
        a = NodeAgent(cp, f"{ns}-{name}", labels=labels, **kw).start()
        agents.append(a)
        return a

    yield ns, node
    for a in agents:
        a.delete()


def apply(k, ns, obj):
    k("apply", "-n", ns, "-f", "-", input=json.dumps(obj))


def pods(cp, ns, selector):
    return cp.http("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector={selector}").json()["items"]


def live(items):
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def deployment(ns, name, replicas=3, image="nginx:1.25", node_selector=None, cpu=None, tolerations=None, surge=1, unavailable=0):
    container = {"name": "app", "image": image}
    if cpu:
        container["resources"] = {"requests": {"cpu": cpu}}
    spec = {"containers": [container], "nodeSelector": {"swiftedge-test": ns, **(node_selector or {})}}
    if tolerations:
        spec["tolerations"] = tolerations
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


class PodTracker:
    """Watches a label selector and records the most pods alive at once during a rollout."""

    def __init__(self, cp, ns, selector):
        self.cp, self.ns, self.selector = cp, ns, selector
        self.alive = {}
        self.max_alive = 0
        self.stopped = False
        lst = cp.http("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector={selector}").json()
        for p in lst["items"]:
            self._apply("ADDED", p)
        self.rv = lst["metadata"]["resourceVersion"]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _apply(self, t, p):
        name = p["metadata"]["name"]
        if t == "DELETED" or p["metadata"].get("deletionTimestamp"):
            self.alive.pop(name, None)
        else:
            self.alive[name] = p
        self.max_alive = max(self.max_alive, len(self.alive))

    def _run(self):
        while not self.stopped:
            resp = requests.get(self.cp.url + f"/api/v1/namespaces/{self.ns}/pods?watch=1&timeoutSeconds=2&allowWatchBookmarks=true"
                                f"&labelSelector={self.selector}&resourceVersion={self.rv}",
                                headers={"Authorization": f"Bearer {self.cp.token}"}, verify=self.cp.ca, stream=True, timeout=(5, 30))
            for line in resp.iter_lines():
                if line:
                    ev = json.loads(line)
                    self.rv = ev["object"]["metadata"]["resourceVersion"]
                    if ev["type"] != "BOOKMARK":
                        self._apply(ev["type"], ev["object"])

    def close(self):
        self.stopped = True


def test_deployment_schedules_rolls_out_undoes_and_scales(cp, k, world):
    ns, node = world
    node("a", labels={"zone": "a"}, cpu="4")
    node("b", labels={"zone": "a"}, cpu="2")
    node("c", labels={"zone": "b"}, cpu="8")  # wrong zone
    node("d", labels={"zone": "a"}, cpu="8", taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])
    apply(k, ns, deployment(ns, "web", replicas=3, node_selector={"zone": "a"}, cpu="1500m"))
    k("rollout", "status", "-n", ns, "deployment/web", "--timeout=60s")
    placed = sorted(p["spec"]["nodeName"] for p in live(pods(cp, ns, "app=web")))
    # a (4 CPU) fits two 1.5-CPU pods, b (2 CPU) one; c is the wrong zone and d is tainted.
    assert placed == [f"{ns}-a", f"{ns}-a", f"{ns}-b"], placed
    for p in live(pods(cp, ns, "app=web")):
        cond = {c["type"]: c["status"] for c in p["status"]["conditions"]}
        assert cond["PodScheduled"] == "True" and cond["Ready"] == "True"
    d = json.loads(k("get", "-n", ns, "deployment/web", "-o", "json"))
    assert d["status"]["availableReplicas"] == 3 and d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    events = k("get", "events", "-n", ns, "--field-selector", "reason=Scheduled", "-o", "name")
    assert events.count("event") >= 3
    assert "Scheduled" in k("describe", "-n", ns, "pod", live(pods(cp, ns, "app=web"))[0]["metadata"]["name"])

    # Make room for the surge pod, then change the image: at most replicas + maxSurge pods at once.
    node("e", labels={"zone": "a"}, cpu="4")
    tracker = PodTracker(cp, ns, "app=web")
    k("set", "image", "-n", ns, "deployment/web", "app=nginx:1.26")
    k("rollout", "status", "-n", ns, "deployment/web", "--timeout=60s")
    tracker.close()
    assert tracker.max_alive <= 4, tracker.max_alive
    images = {p["spec"]["containers"][0]["image"] for p in live(pods(cp, ns, "app=web"))}
    assert images == {"nginx:1.26"}
    assert len(json.loads(k("get", "rs", "-n", ns, "-o", "json"))["items"]) == 2
    history = k("rollout", "history", "-n", ns, "deployment/web")
    assert "1" in history and "2" in history

    k("rollout", "undo", "-n", ns, "deployment/web")
    k("rollout", "status", "-n", ns, "deployment/web", "--timeout=60s")
    wait_for(lambda: {p["spec"]["containers"][0]["image"] for p in live(pods(cp, ns, "app=web"))} == {"nginx:1.25"}, 30, what="undo")
    d = json.loads(k("get", "-n", ns, "deployment/web", "-o", "json"))
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"

    k("scale", "-n", ns, "deployment/web", "--replicas=5")
    k("rollout", "status", "-n", ns, "deployment/web", "--timeout=60s")
    assert len(live(pods(cp, ns, "app=web"))) == 5
    k("scale", "-n", ns, "deployment/web", "--replicas=1")
    k("rollout", "status", "-n", ns, "deployment/web", "--timeout=60s")
    wait_for(lambda: len(pods(cp, ns, "app=web")) == 1, 30, what="scale down to 1")

    # GC: deleting the Deployment removes its ReplicaSets and pods.
    k("delete", "-n", ns, "deployment/web", "--wait=true", "--timeout=60s")
    wait_for(lambda: not json.loads(k("get", "rs,pods", "-n", ns, "-o", "json"))["items"], 30, what="GC of ReplicaSets and pods")


def test_unschedulable_pod_reports_and_retries_when_nodes_change(cp, k, world):
    ns, node = world
    node("small", cpu="1")
    apply(k, ns, deployment(ns, "big", replicas=1, cpu="3"))
    def pending():
        ps = pods(cp, ns, "app=big")
        if ps and any(c["type"] == "PodScheduled" and c["status"] == "False" for c in ps[0]["status"].get("conditions", [])):
            return ps[0]
    p = wait_for(pending, 30, what="PodScheduled=False")
    cond = [c for c in p["status"]["conditions"] if c["type"] == "PodScheduled"][0]
    assert cond["reason"] == "Unschedulable"
    assert "Insufficient cpu" in cond["message"] and "0/" in cond["message"]
    wait_for(lambda: "FailedScheduling" in k("get", "events", "-n", ns), 15, what="FailedScheduling event")
    node("large", cpu="4")
    k("rollout", "status", "-n", ns, "deployment/big", "--timeout=60s")
    assert live(pods(cp, ns, "app=big"))[0]["spec"]["nodeName"] == f"{ns}-large"


def test_daemonset_targets_edge_nodes_including_new_ones(cp, k, world):
    ns, node = world
    node("edge-1", edge=True)
    node("edge-2", edge=True)
    node("cloud-1")
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
          "spec": {"selector": {"matchLabels": {"app": "agent"}},
                   "template": {"metadata": {"labels": {"app": "agent"}},
                                "spec": {"nodeSelector": {"node-role.kubernetes.io/edge": "", "swiftedge-test": ns},
                                         "containers": [{"name": "a", "image": "busybox:1.36"}]}}}}
    apply(k, ns, ds)
    k("rollout", "status", "-n", ns, "daemonset/agent", "--timeout=60s")
    on = lambda: sorted(p["spec"]["nodeName"] for p in live(pods(cp, ns, "app=agent")))
    assert on() == [f"{ns}-edge-1", f"{ns}-edge-2"]
    node("edge-3", edge=True)
    wait_for(lambda: on() == [f"{ns}-edge-1", f"{ns}-edge-2", f"{ns}-edge-3"], 30, what="daemon pod on the new edge node")
    k("rollout", "status", "-n", ns, "daemonset/agent", "--timeout=60s")
    st = json.loads(k("get", "-n", ns, "daemonset/agent", "-o", "json"))["status"]
    assert st["desiredNumberScheduled"] == 3 and st["numberReady"] == 3


def test_service_endpoints_follow_readiness(cp, k, world):
    ns, node = world
    agent = node("n1")
    apply(k, ns, deployment(ns, "api", replicas=3))
    k("rollout", "status", "-n", ns, "deployment/api", "--timeout=60s")
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"},
           "spec": {"selector": {"app": "api"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}
    apply(k, ns, svc)

    def endpoints():
        r = cp.http("GET", f"/api/v1/namespaces/{ns}/endpoints/api")
        if r.status_code != 200:
            return None
        subsets = r.json().get("subsets") or [{}]
        return (len(subsets[0].get("addresses", [])), len(subsets[0].get("notReadyAddresses", [])), subsets[0].get("ports"))

    wait_for(lambda: endpoints() and endpoints()[:2] == (3, 0), 30, what="3 ready endpoints")
    assert endpoints()[2] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    victim = live(pods(cp, ns, "app=api"))[0]["metadata"]["name"]
    agent.set_ready(ns, victim, False)
    wait_for(lambda: endpoints()[:2] == (2, 1), 30, what="one not-ready endpoint")

    def slice_ready():
        items = cp.http("GET", f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector=kubernetes.io/service-name=api").json()["items"]
        return sorted(e["conditions"]["ready"] for s in items for e in s.get("endpoints") or [])

    wait_for(lambda: slice_ready() == [False, True, True], 30, what="EndpointSlice readiness")
    agent.set_ready(ns, victim, True)
    wait_for(lambda: endpoints()[:2] == (3, 0), 30, what="endpoint ready again")
    wait_for(lambda: slice_ready() == [True, True, True], 30, what="EndpointSlice ready again")


def test_statefulset_ordered_and_job_completes(cp, k, world):
    ns, node = world
    node("n1")
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
           "spec": {"serviceName": "db", "replicas": 3, "selector": {"matchLabels": {"app": "db"}},
                    "template": {"metadata": {"labels": {"app": "db"}},
                                 "spec": {"nodeSelector": {"swiftedge-test": ns}, "containers": [{"name": "db", "image": "redis:7"}]}}}}
    apply(k, ns, sts)
    k("rollout", "status", "-n", ns, "statefulset/db", "--timeout=60s")
    ps = sorted(live(pods(cp, ns, "app=db")), key=lambda p: p["metadata"]["creationTimestamp"])
    assert [p["metadata"]["name"] for p in ps] == ["db-0", "db-1", "db-2"]
    assert ps[1]["spec"]["hostname"] == "db-1" and ps[1]["spec"]["subdomain"] == "db"

    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "batch"},
           "spec": {"completions": 3, "parallelism": 2,
                    "template": {"metadata": {"annotations": {"nodeagent/outcome": "succeed"}},
                                 "spec": {"restartPolicy": "Never", "nodeSelector": {"swiftedge-test": ns},
                                          "containers": [{"name": "w", "image": "busybox:1.36"}]}}}}
    apply(k, ns, job)
    k("wait", "-n", ns, "--for=condition=complete", "job/batch", "--timeout=60s")
    st = json.loads(k("get", "-n", ns, "job/batch", "-o", "json"))["status"]
    assert st["succeeded"] == 3

    failing = json.loads(json.dumps(job))
    failing["metadata"]["name"] = "broken"
    failing["spec"].update({"completions": 1, "parallelism": 1, "backoffLimit": 1})
    failing["spec"]["template"]["metadata"]["annotations"]["nodeagent/outcome"] = "fail"
    apply(k, ns, failing)
    k("wait", "-n", ns, "--for=condition=failed", "job/broken", "--timeout=60s")
    st = json.loads(k("get", "-n", ns, "job/broken", "-o", "json"))["status"]
    assert st["failed"] == 2
    assert [c["reason"] for c in st["conditions"] if c["type"] == "Failed"] == ["BackoffLimitExceeded"]


def test_unreachable_edge_node_keeps_pods_cloud_node_evicts(cp, k, world):
    ns, node = world
    edge = node("edge", edge=True)
    cloud = node("cloud")
    quick = [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2},
             {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}]
    apply(k, ns, deployment(ns, "at-edge", replicas=2, node_selector={"node-role.kubernetes.io/edge": ""}, tolerations=quick))
    apply(k, ns, deployment(ns, "in-cloud", replicas=2, node_selector={"kubernetes.io/hostname": f"{ns}-cloud"}, tolerations=quick))
    k("rollout", "status", "-n", ns, "deployment/at-edge", "--timeout=60s")
    k("rollout", "status", "-n", ns, "deployment/in-cloud", "--timeout=60s")
    edge_pods = {p["metadata"]["name"] for p in live(pods(cp, ns, "app=at-edge"))}

    edge.stop()
    cloud.stop()

    def node_state(name):
        n = cp.http("GET", f"/api/v1/nodes/{name}").json()
        ready = [c for c in n["status"]["conditions"] if c["type"] == "Ready"][0]["status"]
        return ready, sorted((t["key"], t["effect"]) for t in n["spec"].get("taints", []))

    unreachable = [("node.kubernetes.io/unreachable", "NoExecute"), ("node.kubernetes.io/unreachable", "NoSchedule")]
    wait_for(lambda: node_state(f"{ns}-edge") == ("Unknown", unreachable), 30, what="edge node Unknown + tainted")
    wait_for(lambda: node_state(f"{ns}-cloud") == ("Unknown", unreachable), 30, what="cloud node Unknown + tainted")
    assert "Unknown" in k("get", "nodes", f"{ns}-edge") or "NotReady" in k("get", "nodes", f"{ns}-edge")
    # Cloud pods are evicted once their 2 s toleration runs out ...
    wait_for(lambda: all(p["metadata"].get("deletionTimestamp") for p in pods(cp, ns, "app=in-cloud") if p["spec"].get("nodeName") == f"{ns}-cloud"),
             30, what="eviction of cloud pods")
    # ... by which time the same toleration has also run out on the edge node: its pods stay.
    still = pods(cp, ns, "app=at-edge")
    assert {p["metadata"]["name"] for p in still} == edge_pods
    assert not any(p["metadata"].get("deletionTimestamp") for p in still)
    evictions = cp.http("GET", f"/api/v1/namespaces/{ns}/events?fieldSelector=reason=TaintManagerEviction").json()["items"]
    assert {e["involvedObject"]["name"] for e in evictions} <= {p["metadata"]["name"] for p in pods(cp, ns, "app=in-cloud")}

    # The edge node reconnects: Ready again, taints gone, same pods.
    edge.start()
    wait_for(lambda: node_state(f"{ns}-edge") == ("True", []), 30, what="edge node Ready again")
    assert {p["metadata"]["name"] for p in live(pods(cp, ns, "app=at-edge"))} == edge_pods


def test_namespace_deletion_empties_it(cp, k, world):
    ns, node = world
    node("n1")
    apply(k, ns, deployment(ns, "x", replicas=2))
    k("rollout", "status", "-n", ns, "deployment/x", "--timeout=60s")
    k("create", "configmap", "cfg", "-n", ns, "--from-literal=a=b")
    k("delete", "namespace", ns, "--wait=true", "--timeout=60s")
    r = cp.http("GET", f"/api/v1/namespaces/{ns}")
    assert r.status_code == 404
    assert cp.http("GET", f"/api/v1/namespaces/{ns}/pods").json()["items"] == []


def test_leader_election_hands_over(tmp_path):
    api = Server(tmp_path / "api").start()  # no in-process controllers
    procs = {}
    logs = {}
    try:
        def start(identity):
            logs[identity] = tmp_path / f"{identity}.log"
            f = open(logs[identity], "wb")
            procs[identity] = subprocess.Popen(
                [str(BIN), "controller-manager", "--kubeconfig", str(api.kubeconfig), "--identity", identity,
                 "--leader-elect-lease-duration", "3", "--leader-elect-renew-deadline", "2", "--leader-elect-retry-period", "0.3"],
                stdout=f, stderr=subprocess.STDOUT)

        def holder():
            r = api.http("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/swiftedge-controller-manager")
            return r.json()["spec"].get("holderIdentity") if r.status_code == 200 else None

        start("alpha")
        wait_for(lambda: holder() == "alpha", 30, what="alpha leads")
        start("beta")
        wait_for(lambda: "waiting to acquire lease" in logs["beta"].read_text(), 30, what="beta waits")
        agent = NodeAgent(api, "le-node").start()
        binaries = kubectl_binaries()
        k = Kubectl(binaries[max(binaries)], max(binaries), api.kubeconfig, tmp_path)
        dep = deployment("default", "le", replicas=2)
        dep["spec"]["template"]["spec"]["nodeSelector"] = {}
        apply(k, "default", dep)
        k("rollout", "status", "deployment/le", "--timeout=60s")
        assert "started leading" not in logs["beta"].read_text()

        procs["alpha"].kill()  # no graceful release: beta must wait out the lease
        procs["alpha"].wait()
        wait_for(lambda: holder() == "beta", 30, what="beta takes over")
        assert "started leading" in logs["beta"].read_text()
        k("scale", "deployment/le", "--replicas=3")
        k("rollout", "status", "deployment/le", "--timeout=60s")
        assert len(live(pods(api, "default", "app=le"))) == 3

        # A graceful stop releases the lease at once.
        procs["beta"].terminate()
        procs["beta"].wait(timeout=20)
        wait_for(lambda: not holder(), 10, what="lease released")
        agent.stop()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        api.stop()
