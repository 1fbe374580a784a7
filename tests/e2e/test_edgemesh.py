"""EdgeMesh across nodes that cannot reach each other, on three simulated hosts (netns.py): the
cloud in host `cloud`, edge nodes `a` and `b` each with its own containerd (no CNI network of its
own: the edge agent writes the pod network from the node's spec.podCIDR). Deployments `web` (on
b) and `near` (on a), a Service in front of each, a client pod on a: the client resolves the
Services through its node's mesh DNS (169.254.96.16) and reaches the replicas round-robin through
its node's proxy — web's relayed through the cloud (a has no route to b). With the cloud stopped
the mesh goes on from the node's store (names resolve, near answers; web, whose only path is the
cloud, comes back with it); a deleted replica is no longer reached within 2 s although it still
serves; a Service without endpoints refuses connections at once."""
import ipaddress
import json
import os
import re
import signal
import sys
import time

import pytest

from conftest import BIN, kubectl_binaries, wait_for
from netns import Topology

MESH_DNS = "169.254.96.16"
CLUSTER_CIDR = "10.244.0.0/16"
# Fixed ports: every namespace is fresh, nothing else listens there.
API_PORT, HUB_PORT, CERT_PORT, CLOUD_METRICS_PORT = 6443, 10000, 10002, 9091
METASERVER_PORT, EDGE_METRICS_PORT, RELAY_PORT = 10550, 10352, 20006


def tail(path, n=3000):
    return path.read_text(errors="replace")[-n:] if path.exists() else f"({path} not written)"


class NsKubectl:
    """kubectl run inside a host (the cloud's: its API server listens on a cloud address)."""

    def __init__(self, host, binary, kubeconfig, home):
        self.host, self.binary, self.kubeconfig, self.home = host, binary, kubeconfig, home
        home.mkdir(parents=True, exist_ok=True)

    def env(self):
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home), "KUBECONFIG": str(self.kubeconfig)}

    def run(self, *args, input=None, check=True, timeout=60):
        p = self.host.run(self.binary, *args, input=input, check=False, timeout=timeout, env=self.env())
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    def __call__(self, *args, **kw):
        return self.run(*args, **kw).stdout

    def json(self, *args):
        return json.loads(self(*args, "-o", "json"))


class NsCloud:
    """`swiftedge cloud` inside host `cloud`: CloudHub and the certificate service on every
    address of the namespace (a's link and b's link; advertised both), the API server on the
    address of a's link."""

    def __init__(self, topo, dir, extra_args=()):
        self.topo, self.host, self.dir, self.extra_args = topo, topo.cloud, dir, list(extra_args)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = dir / "cloud.log"
        self.address = topo.cloud_ip["a"]
        self.proc = None

    @property
    def kubeconfig(self):
        return self.dir / "admin.kubeconfig"

    def args(self):
        return [BIN, "cloud", "--data-dir", self.dir, "--bind-address", self.address, "--port", API_PORT,
                "--hub-bind-address", "0.0.0.0", "--cloudhub-port", HUB_PORT, "--cert-port", CERT_PORT,
                "--metrics-port", CLOUD_METRICS_PORT, *self.extra_args, "--advertise-address", *self.topo.cloud_ip.values()]

    def starts(self):
        return self.log.read_text(errors="replace").count("CloudHub listening") if self.log.exists() else 0

    def start(self):
        before = self.starts()
        self.proc = self.host.popen(self.args(), log=self.log)
        wait_for(lambda: self.proc.poll() is not None or self.starts() > before, 60, interval=0.1, what="cloud start",
                 detail=lambda: tail(self.log))
        assert self.proc.poll() is None, f"cloud exited {self.proc.returncode} at start:\n{tail(self.log)}"
        return self

    def stop(self):
        rc = self.host.stop(self.proc, signal.SIGTERM, timeout=30)
        assert rc == 0, f"cloud exited {rc} on SIGTERM:\n{tail(self.log)}"

    def token(self):
        return self.host.run(BIN, "gettoken", "--kubeconfig", self.kubeconfig).stdout.strip()


class NsEdge:
    """`swiftedge edge` inside node host `name`, pods on that host's containerd."""

    def __init__(self, topo, name, containerd, dir, extra_args=()):
        self.host, self.name, self.containerd, self.dir = (topo.cloud if containerd is None else topo.hosts[name]), name, containerd, dir
        self.extra_args = list(extra_args)
        self.log = dir.parent / f"edge-{name}.log"
        self.proc = None

    def args(self, token=None):
        h = self.host
        # The relay node (no containerd) runs on the cloud's host and reaches the cloud by loopback.
        cloud_ip, ip = (h.cloud_ip, h.ip) if self.containerd else ("127.0.0.1", "127.0.0.1")
        a = [BIN, "edge", "--cloud", cloud_ip, "--cloudhub-port", HUB_PORT, "--cert-port", CERT_PORT, "--node-name", self.name,
             "--node-ip", ip, "--data-dir", self.dir, "--heartbeat", 2, "--node-status-interval", 1,
             "--metaserver-port", METASERVER_PORT + (0 if self.containerd else 1), "--metrics-port", EDGE_METRICS_PORT + (0 if self.containerd else 1),
             "--remote-runtime-endpoint", f"unix://{self.containerd.sock}" if self.containerd else "", "--pod-logs-dir", self.dir / "logs",
             *self.extra_args]
        return a + (["--token", token] if token else [])

    def start(self, token=None):
        self.proc = self.host.popen(self.args(token), log=self.log)
        return self

    def stop(self):
        return self.host.stop(self.proc, signal.SIGTERM, timeout=30)

    def tunnels(self):
        """How many times the node's stream tunnel (kubectl logs and exec) has connected."""
        return self.log.read_text(errors="replace").count("stream tunnel connected") if self.log.exists() else 0


SERVER = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: NAME}
spec:
  replicas: 2
  selector: {matchLabels: {app: NAME}}
  template:
    metadata: {labels: {app: NAME}}
    spec:
      nodeSelector: {kubernetes.io/hostname: NODE}
      terminationGracePeriodSeconds: 10
      containers:
      - name: web
        image: docker.io/local/busybox:1
        # Answers with the pod's name; on SIGTERM it goes on serving for 6 s (a deleted replica
        # still answers: only the mesh dropping its endpoint keeps clients away from it).
        command: ["sh", "-c"]
        args:
        - mkdir -p /www && echo "$POD_NAME" > /www/index.html;
          httpd -f -p 8080 -h /www & httpd=$!;
          trap 'sleep 6; kill $httpd; exit 0' TERM;
          while true; do sleep 0.5; done
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        ports: [{containerPort: 8080}]
        readinessProbe:
          exec: {command: ["timeout", "1", "wget", "-qO-", "http://127.0.0.1:8080/"]}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: NAME}
spec:
  selector: {app: NAME}
  ports: [{port: 8080, targetPort: 8080}]
"""

# One line per request: "<unix time> OK <answer>" or "<unix time> FAIL <error>", read back with
# kubectl logs (also for the time the cloud was away); requests start once /shared/go exists (the
# round-robin checks through kubectl exec come first, alone). Deadlines with `timeout`, not wget's
# -T: Debian's busybox-static 1.35 wget segfaults whenever -T is given.
PROBE = (" while true; do"
         "   if [ -e /shared/go ]; then"
         "     if r=$(timeout 2 wget -qO- http://$TARGET:8080/ 2>/tmp/err); then echo \"$(date +%s) OK $r\";"
         "     else echo \"$(date +%s) FAIL $(tr '\\n' ' ' < /tmp/err)\"; fi;"
         "   fi;"
         "   sleep 0.2;"
         " done")

CLIENT = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
    "spec": {
        "nodeName": "a", "terminationGracePeriodSeconds": 1,
        "volumes": [{"name": "shared", "emptyDir": {}}],
        "containers": [{"name": "shell", "image": "docker.io/local/busybox:1", "command": ["sleep", "3600"],
                        "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}] + [
            {"name": f"probe-{target}", "image": "docker.io/local/busybox:1", "command": ["sh", "-c", PROBE],
             "env": [{"name": "TARGET", "value": target}], "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}
            for target in ("web", "near")],
    },
}

# web: two replicas on b (the client's requests relayed through the cloud); near: two on a, the
# client's own node (reached over a's pod bridge, with or without the cloud); nobody: no endpoints.
MANIFESTS = (SERVER.replace("NAME", "web").replace("NODE", "b") + "---" + SERVER.replace("NAME", "near").replace("NODE", "a") + """---
apiVersion: v1
kind: Service
metadata: {name: nobody}
spec:
  selector: {app: nobody}
  ports: [{port: 8080, targetPort: 8080}]
---
""" + json.dumps(CLIENT))


def ready(pod):
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def node_ready(k, node):
    r = k.run("get", "node", node, "-o", "json", check=False)
    if r.returncode != 0:
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in json.loads(r.stdout)["status"].get("conditions", []))


def probe_lines(k, target):
    """[(unix time, "OK"|"FAIL", answer or error)] of the client's probe of `target` so far."""
    out = []
    for line in k("logs", "client", "-c", f"probe-{target}", timeout=60).splitlines():
        m = re.match(r"^(\d+) (OK|FAIL) ?(.*)$", line.strip())
        if m:
            out.append((int(m.group(1)), m.group(2), m.group(3).strip()))
    return out


def alternating(answers):
    """Whether consecutive answers always differ (round-robin over two replicas)."""
    return all(x != y for x, y in zip(answers, answers[1:]))


@pytest.fixture
def topology(tmp_path):
    with Topology(tmp_path) as t:
        yield t


def test_edgemesh_service_discovery_across_nodes(topology, tmp_path):
    assert BIN.exists(), f"{BIN} not built; run `swift build` first"
    t = topology
    binaries = kubectl_binaries()
    ctd = {n: t.containerd(t.hosts[n], tmp_path / f"ctd-{n}", cni=False) for n in t.NODES}
    for n, c in ctd.items():
        assert os.listdir(c.cni_conf_dir) == [], f"containerd of {n} has a CNI network of its own"

    cloud = NsCloud(t, tmp_path / "cloud", ["--cluster-cidr", CLUSTER_CIDR]).start()
    k = NsKubectl(t.cloud, binaries[max(binaries)], cloud.kubeconfig, tmp_path / "home")
    # The admin kubeconfig names the API server by its bind address (reachable inside the cloud only).
    server = k("config", "view", "-o", "jsonpath={.clusters[0].cluster.server}").strip()
    assert server == f"https://{cloud.address}:{API_PORT}", server
    token = cloud.token()
    # A relay node (KubeEdge's relayNodes) on the cloud's host, which both nodes reach: their
    # traffic to each other's pods goes through it, with or without the cloud.
    relay = NsEdge(t, "relay", None, tmp_path / "edge-relay", ["--mesh-relay-listen", f"0.0.0.0:{RELAY_PORT}"]).start(token)
    edges = {n: NsEdge(t, n, ctd[n], tmp_path / f"edge-{n}", ["--cni-conf-dir", ctd[n].cni_conf_dir, "--edgemesh",
                                                              "--mesh-relay", f"relay={t.hosts[n].cloud_ip}:{RELAY_PORT}"]).start(token)
             for n in t.NODES}
    logs = lambda: "\n".join(f"--- {e.log.name}\n{tail(e.log, 1500)}" for e in [*edges.values(), relay]) + f"\n--- cloud\n{tail(cloud.log, 1500)}"  # noqa: E731
    for n in t.NODES:
        wait_for(lambda: node_ready(k, n), 60, interval=0.5, what=f"node {n} Ready", detail=logs)
        wait_for(lambda: edges[n].tunnels(), 30, interval=0.2, what=f"stream tunnel of {n}", detail=logs)
    assert "10.200.1.2" in k("get", "node", "a", "-o", "wide") and "10.200.2.2" in k("get", "node", "b", "-o", "wide")

    # Every node has its own /24 of the cluster CIDR; the edge agent wrote its pod network there.
    cluster = ipaddress.ip_network(CLUSTER_CIDR)
    cidrs = {}
    for n in t.NODES:
        cidrs[n] = ipaddress.ip_network(wait_for(lambda: k("get", "node", n, "-o", "jsonpath={.spec.podCIDR}").strip(), 30,
                                                 interval=0.5, what=f"podCIDR of {n}"))
        assert cidrs[n].prefixlen == 24 and cidrs[n].subnet_of(cluster), (n, cidrs[n])
        wait_for(lambda: os.listdir(ctd[n].cni_conf_dir), 30, interval=0.2, what=f"CNI network written on {n}", detail=logs)
    assert cidrs["a"] != cidrs["b"], cidrs

    k("apply", "-f", "-", input=MANIFESTS)
    for app in ("web", "near"):
        k("wait", "--for=condition=Ready", "pod", "-l", f"app={app}", "--timeout=120s", timeout=130)
    k("wait", "--for=condition=Ready", "pod/client", "--timeout=120s", timeout=130)
    wide = k("get", "pods", "-o", "wide")
    pods = {p["metadata"]["name"]: p for p in k.json("get", "pods")["items"]}
    replicas = {app: sorted(n for n, p in pods.items() if p["metadata"].get("labels", {}).get("app") == app) for app in ("web", "near")}
    web = replicas["web"]
    assert len(web) == 2 and len(replicas["near"]) == 2, wide
    for name, p in pods.items():
        node, ip = p["spec"]["nodeName"], p["status"].get("podIP")
        assert node == ("b" if name in web else "a"), wide
        assert ip and ipaddress.ip_address(ip) in cidrs[node], (name, ip, cidrs[node], wide)
        assert ip in wide
    assert len({p["status"]["podIP"] for p in pods.values()}) == len(pods), wide

    def client(*cmd, check=True, timeout=30):
        return k.run("exec", "client", "-c", "shell", "--", *cmd, check=check, timeout=timeout)

    # The pod's resolver is the node's mesh DNS; the Service's name resolves to its ClusterIP.
    resolv = client("cat", "/etc/resolv.conf").stdout
    assert re.search(rf"^nameserver {re.escape(MESH_DNS)}$", resolv, re.M), resolv
    assert re.search(r"^search default\.svc\.cluster\.local svc\.cluster\.local cluster\.local$", resolv, re.M), resolv
    cluster_ip = k("get", "service", "web", "-o", "jsonpath={.spec.clusterIP}").strip()
    assert ipaddress.ip_address(cluster_ip)
    looked_up = client("nslookup", "web.default.svc.cluster.local", check=False)
    assert MESH_DNS in looked_up.stdout and re.search(rf"^Address:?\s+{re.escape(cluster_ip)}$", looked_up.stdout, re.M), looked_up

    # HTTP through the Service: both replicas (on b) answer the client (on a), round-robin (the
    # probes have not started: these are the Service's only requests).
    url = "http://web.default.svc.cluster.local:8080/"
    first = wait_for(lambda: client("timeout", "5", "wget", "-qO-", url, check=False).stdout.strip(), 30, interval=0.5,
                     what="an answer through the Service", detail=logs)
    assert first in web, (first, web)
    answers = [client("timeout", "5", "wget", "-qO-", url).stdout.strip() for _ in range(6)]
    assert set(answers) == set(web) and alternating(answers), f"not round-robin over {web}: {answers}"
    # Straight to the ClusterIP too.
    assert client("timeout", "5", "wget", "-qO-", f"http://{cluster_ip}:8080/").stdout.strip() in web

    # A malformed DNS query gets FORMERR (its id kept) and the server goes on answering.
    garbage = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3);"
               f" s.sendto(bytes.fromhex('1234') + b'garbage', ('{MESH_DNS}', 53)); r = s.recv(512); print(r[:2].hex(), r[3] & 15)")
    assert t.a.run(sys.executable, "-c", garbage).stdout.split() == ["1234", "1"]
    assert cluster_ip in client("nslookup", "web.default.svc.cluster.local", check=False).stdout

    # A Service without endpoints: refused at once, not a hang.
    r = client("sh", "-c", "a=$(cut -d' ' -f1 /proc/uptime); timeout 10 wget -qO- http://nobody:8080/; rc=$?;"
               " b=$(cut -d' ' -f1 /proc/uptime); echo \"rc=$rc took=$a $b\"", check=False)
    m = re.search(r"rc=(\d+) took=([\d.]+) ([\d.]+)", r.stdout)
    assert m, r
    assert m.group(1) != "0" and float(m.group(3)) - float(m.group(2)) < 2, r
    assert "refused" in r.stderr.lower(), r.stderr

    # The looping probes start (by the short names, through the search path) and reach both
    # replicas of each Service, in turn.
    client("touch", "/shared/go")

    def ok_answers(target, since=0, until=float("inf")):
        return [rest for ts, status, rest in probe_lines(k, target) if since <= ts <= until and status == "OK"]
    for app in ("web", "near"):
        wait_for(lambda: len(ok_answers(app)) >= 6, 30, interval=1, what=f"probe of {app} answered",
                 detail=lambda: k("logs", "client", "-c", f"probe-{app}", "--tail=20") + logs())
        seen = ok_answers(app)
        assert set(seen) == set(replicas[app]) and alternating(seen), (app, seen)

    # The cloud goes away for a while. The mesh on a goes on from the node's store: the names
    # resolve, `near` (on a) answers over a's bridge and `web` (on b) through the relay node, both
    # round-robin.
    tunnels = {n: e.tunnels() for n, e in edges.items()}
    offline_from = time.time()
    cloud.stop()
    time.sleep(12)
    offline_until = time.time()
    cloud.start()
    # kubectl logs needs the nodes' stream tunnels back (a node may still show Ready before).
    for n, e in edges.items():
        wait_for(lambda: e.tunnels() > tunnels[n], 60, interval=0.2, what=f"stream tunnel of {n} again", detail=logs)
    wait_for(lambda: node_ready(k, "a") and node_ready(k, "b"), 60, interval=0.5, what="nodes Ready again", detail=logs)
    for app in ("web", "near"):
        wait_for(lambda: any(ts > offline_until + 1 for ts, _, _ in probe_lines(k, app)), 60, interval=1,
                 what=f"probe of {app} logged after the cloud returned", detail=logs)
    window = [x for x in probe_lines(k, "near") if offline_from + 1 <= x[0] <= offline_until - 1]
    assert len(window) >= 10, window
    failed = [x for x in window if x[1] != "OK"]
    assert not failed, f"requests to near failed while the cloud was away: {failed[:5]}"
    assert set(x[2] for x in window) == set(replicas["near"]) and alternating([x[2] for x in window]), window
    window = [x for x in probe_lines(k, "web") if offline_from + 1 <= x[0] <= offline_until - 1]
    assert len(window) >= 10, window
    failed = [x for x in window if x[1] != "OK"]
    assert not failed, f"requests to web (through the relay node) failed while the cloud was away: {failed[:5]}"
    assert set(x[2] for x in window) == set(web) and alternating([x[2] for x in window]), window
    assert "EdgeMesh relay connected" in edges["a"].log.read_text() and "EdgeMesh relay connected" in edges["b"].log.read_text()

    # A replica is deleted (it goes on serving for 6 s): within 2 s no request reaches it, and
    # none fails (the other replica, then the replacement, answer).
    gone = web[0]
    deleted_at = time.time()
    k("delete", "pod", gone, "--wait=false")
    wait_for(lambda: any(ts >= deleted_at + 7 for ts, _, _ in probe_lines(k, "web")), 30, interval=1, what="probe lines after the deletion")
    after = [x for x in probe_lines(k, "web") if x[0] >= deleted_at]
    late = [x for x in after if x[2] == gone and x[0] > deleted_at + 2]
    assert not late, f"{gone} still reached more than 2 s after its deletion (at {deleted_at:.1f}): {late[:5]}"
    failed = [x for x in after if x[1] != "OK"]
    assert not failed, f"requests failed after a replica was deleted: {failed[:5]}"
    def replaced():
        items = k.json("get", "pods", "-l", "app=web")["items"]
        names = sorted(p["metadata"]["name"] for p in items if ready(p) and not p["metadata"].get("deletionTimestamp"))
        return names if len(names) == 2 and gone not in names else None
    web_now = wait_for(replaced, 60, interval=0.5, what="a Ready replacement replica", detail=lambda: k("get", "pods", "-o", "wide"))
    wait_for(lambda: set(web_now) <= set(ok_answers("web", since=deleted_at)), 30, interval=1,
             what="probe reaching the replacement replica")

    for n, e in [*edges.items(), ("relay", relay)]:
        rc = e.stop()
        assert rc == 0, f"edge {n} exited {rc} on SIGTERM:\n{tail(e.log, 1500)}"
    cloud.stop()
