"""Pods on a real containerd, as a user runs them: `swiftedge cloud`, one `swiftedge edge` joined
with a token and pointed at a private containerd (scripts/containerd.sh: busybox and pause images
built locally), `kubectl apply` in the cloud. Covers env and files from a ConfigMap, probes and
restart counts, offline autonomy (cloud stopped, edge restarted: same containers, MetaServer
still serves the pods), convergence when the cloud returns, and deletion."""
import base64
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cloudedge import Cloud, Edge
from conftest import BIN, REPO, Kubectl, free_port, kubectl_binaries, wait_for


@pytest.fixture(scope="module")
def containerd(tmp_path_factory):
    assert shutil.which("containerd") and shutil.which("ctr"), "containerd is not installed (apt-get install containerd runc)"
    d = tmp_path_factory.mktemp("ctd")
    sock = subprocess.run(["bash", str(REPO / "scripts" / "containerd.sh"), "start", str(d)], capture_output=True, text=True,
                          timeout=120)
    assert sock.returncode == 0, sock.stderr
    yield Containerd(Path(sock.stdout.strip()))
    subprocess.run(["bash", str(REPO / "scripts" / "containerd.sh"), "stop", str(d)], timeout=60)


class Containerd:
    def __init__(self, sock):
        self.sock = sock

    def ctr(self, *args):
        return subprocess.run(["ctr", "-a", str(self.sock), "-n", "k8s.io", *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout

    def running(self):
        """Container ids with a running task."""
        return {line.split()[0] for line in self.ctr("tasks", "ls").splitlines()[1:] if line.split()[2] == "RUNNING"}

    def containers(self, pod=None, container=None):
        filters = []
        if pod:
            filters.append(f'labels."io.kubernetes.pod.name"=={pod}')
        if container:
            filters.append(f'labels."io.kubernetes.container.name"=={container}')
        return set(self.ctr("containers", "ls", "-q", *([",".join(filters)] if filters else [])).split())


@pytest.fixture
def cloud(tmp_path):
    c = Cloud(tmp_path).start()
    yield c
    c.stop()


@pytest.fixture(autouse=True)
def no_stray_edges():
    yield
    subprocess.run(["pkill", "-f", f"{BIN} edge "], check=False)


MANIFESTS = """
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config}
data: {GREETING: hello-from-the-cloud, app.conf: "mode=edge\\n"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {kubernetes.io/hostname: NODE}
      hostNetwork: true
      terminationGracePeriodSeconds: 5
      containers:
      - name: main
        image: docker.io/local/busybox:1
        command: ["sh", "-c"]
        args:
        - trap 'exit 0' TERM;
          echo "$GREETING $(cat /etc/app/app.conf) $(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace) $(head -c 27 /var/run/secrets/kubernetes.io/serviceaccount/ca.crt)" > /out/$POD_NAME;
          while true; do sleep 1; done
        env:
        - name: GREETING
          valueFrom: {configMapKeyRef: {name: web-config, key: GREETING}}
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        volumeMounts:
        - {name: conf, mountPath: /etc/app}
        - {name: out, mountPath: /out}
        readinessProbe:
          exec: {command: ["test", "-f", "/etc/app/app.conf"]}
          periodSeconds: 1
      volumes:
      - name: conf
        configMap: {name: web-config}
      - name: out
        hostPath: {path: OUT, type: DirectoryOrCreate}
---
apiVersion: v1
kind: Pod
metadata: {name: flaky}
spec:
  nodeName: NODE
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: docker.io/local/busybox:1
    command: ["sh", "-c", "trap 'exit 0' TERM; touch /tmp/alive; sleep 2; rm /tmp/alive; while true; do sleep 1; done"]
    livenessProbe:
      exec: {command: ["test", "-f", "/tmp/alive"]}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {name: httpd}
spec:
  nodeName: NODE
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: docker.io/local/busybox:1
    command: ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 127.0.0.1:HTTPPORT -h /www"]
    ports: [{name: http, containerPort: HTTPPORT}]
    readinessProbe:
      httpGet: {path: /index.html, port: http, host: 127.0.0.1}
      periodSeconds: 1
    livenessProbe:
      tcpSocket: {port: HTTPPORT, host: 127.0.0.1}
      periodSeconds: 1
"""


def pods(k, selector="app=web"):
    return json.loads(k("get", "pods", *(["-l", selector] if selector else []), "-o", "json"))["items"]


def ready(pod):
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def node_heartbeat(k, node):
    r = k.run("get", "node", node, "-o", "json", check=False)
    if r.returncode != 0:
        return None, ""
    n = json.loads(r.stdout)
    c = next(c for c in n["status"]["conditions"] if c["type"] == "Ready")
    return c["status"], c["lastHeartbeatTime"]


def test_pods_run_on_containerd_and_survive_offline(cloud, containerd, tmp_path):
    binaries = kubectl_binaries()
    k = Kubectl(binaries[max(binaries)], max(binaries), cloud.kubeconfig, tmp_path)
    edge = Edge(tmp_path, cloud, "shop-1", runtime=containerd.sock).start(cloud.token())
    wait_for(lambda: node_heartbeat(k, "shop-1")[0] == "True", 30, what="node Ready")
    wide = k("get", "nodes", "-o", "wide")
    assert "containerd://" in wide, wide

    out = tmp_path / "out"
    http_port = free_port()
    k("apply", "-f", "-", input=MANIFESTS.replace("NODE", "shop-1").replace("OUT", str(out)).replace("HTTPPORT", str(http_port)))
    k("wait", "--for=condition=Ready", "pod", "-l", "app=web", "--timeout=90s", timeout=100)
    # HTTP readiness and TCP liveness probes against a server in the pod (host network, loopback).
    k("wait", "--for=condition=Ready", "pod/httpd", "--timeout=60s", timeout=70)
    # Events recorded on the node reach the cloud (kubectl describe shows them).
    assert "httpd" in k("get", "pods")
    assert k("get", "lease", "-n", "kube-node-lease", "shop-1", "-o", "jsonpath={.spec.holderIdentity}") == "shop-1"
    wait_for(lambda: "Started container main" in k("get", "events", "--field-selector", "involvedObject.name=httpd"), 20, what="events")
    table = k("get", "pods", "-o", "wide")
    web = pods(k)
    assert len(web) == 2 and all(p["spec"]["nodeName"] == "shop-1" and p["status"]["phase"] == "Running" for p in web), table
    # The ConfigMap's value arrived in the env, its key as a mounted file (written by the container).
    for p in web:
        f = out / p["metadata"]["name"]
        wait_for(lambda: f.exists() and f.read_text().strip(), 20, what=f"{f} written")
        # The kube-api-access volume the API server added, as kube-apiserver does: namespace and CA.
        assert f.read_text().strip() == "hello-from-the-cloud mode=edge default -----BEGIN CERTIFICATE-----"
    # A failing liveness probe restarts the container; kubectl shows the count.
    def flaky_restarts():
        p = json.loads(k("get", "pod", "flaky", "-o", "json"))
        return p["status"].get("containerStatuses", [{}])[0].get("restartCount", 0)
    wait_for(lambda: flaky_restarts() >= 1, 60, what="flaky restarted")
    assert "flaky" in k("get", "pod", "flaky")
    assert json.loads(k("get", "pod", "flaky", "-o", "json"))["status"]["containerStatuses"][0]["lastState"]["terminated"]

    web_ids = {p["metadata"]["name"]: p["status"]["containerStatuses"][0]["containerID"].split("://")[1] for p in web}
    assert set(web_ids.values()) <= containerd.running()

    # The node's MetaServer, as the node itself (its client certificate; the cluster CA verifies MetaServer).
    metaserver = edge.metaserver_kubeconfig(k("get", "configmap", "kube-root-ca.crt", "-o", "jsonpath={.data.ca\\.crt}"),
                                            tmp_path / "metaserver.kubeconfig")
    wait_for(lambda: (edge.dir / "certs" / "metaserver.crt").exists(), 30, what="MetaServer serving certificate")

    # The cloud goes away: containers keep running.
    cloud.stop()
    assert set(web_ids.values()) <= containerd.running()
    # The edge restarts while the cloud is down: pods restored from the store, the same
    # containers adopted (none created), and supervision goes on (flaky keeps restarting).
    flaky_before = containerd.containers(pod="flaky")
    edge.stop()
    restarted_at = time.time()
    edge.start()
    wait_for(lambda: "pods restored from the local store" in edge.log.read_text().split("restoring pods from the local store")[-1], 10,
             what="pods restored")
    restored_ms = int(edge.log.read_text().split("pods restored from the local store")[0].rsplit("elapsedMs=", 1)[1].split()[0])
    assert restored_ms < 2000, restored_ms
    assert set(web_ids.values()) <= containerd.running()
    for name, cid in web_ids.items():
        mains = containerd.containers(pod=name, container="main")
        assert mains == {cid}, f"{name}: containers {mains}, expected only {cid}"
    wait_for(lambda: containerd.containers(pod="flaky") - flaky_before, 30, what="flaky restarted while offline")
    # MetaServer serves the pods from the local store, to a real kubectl.
    local = subprocess.run([k.binary, "--kubeconfig", str(metaserver), "get", "pods", "-o", "name"], capture_output=True, text=True,
                           timeout=30, env=k.env())
    assert local.returncode == 0, local.stderr
    assert all(f"pod/{n}" in local.stdout for n in web_ids), local.stdout

    # The cloud returns: a change made right away (3 replicas) runs, the node reports within
    # seconds, and no container was restarted by the reconnect.
    cloud.start()
    back = time.time()
    k("scale", "deployment", "web", "--replicas=3")
    wait_for(lambda: (lambda s: s[0] == "True" and s[1] >= time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(back)))(node_heartbeat(k, "shop-1")),
             15, what="fresh node heartbeat")
    node_ready_s = time.time() - back
    wait_for(lambda: len([p for p in pods(k) if ready(p)]) == 3, 30, what="3 replicas ready")
    scaled_s = time.time() - back
    print(f"\nnode reported Ready {node_ready_s:.1f}s and the new replica Ready {scaled_s:.1f}s after the cloud returned;"
          f" the node's pods restored in {restored_ms} ms after an offline edge restart")
    assert node_ready_s < 5, node_ready_s
    assert scaled_s < 10, scaled_s
    for p in pods(k):
        if p["metadata"]["name"] in web_ids:
            cs = p["status"]["containerStatuses"][0]
            assert cs["containerID"].endswith(web_ids[p["metadata"]["name"]]) and cs["restartCount"] == 0, cs

    # Deleting the Deployment removes its containers and sandboxes from the node.
    k("delete", "deployment", "web", "--wait=true", timeout=90)
    k("delete", "pod", "flaky", "httpd", "--wait=true", timeout=90)
    wait_for(lambda: not pods(k, None), 60, what="pods gone")
    wait_for(lambda: not containerd.containers(), 30, what="containers removed")
    sandboxes = containerd.ctr("containers", "ls", "-q")
    assert sandboxes.strip() == "", sandboxes
    edge.stop()


LOG_PODS = """
apiVersion: v1
kind: Pod
metadata: {name: talker}
spec:
  nodeName: NODE
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: docker.io/local/busybox:1
    command: ["sh", "-c", "trap 'exit 0' TERM; for i in 1 2 3 4 5; do echo line $i; done; echo oops >&2; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done"]
  - name: crasher
    image: docker.io/local/busybox:1
    command: ["sh", "-c", "echo started at $(date +%s%N); sleep 1; exit 1"]
"""


def test_kubectl_logs_through_the_stream_tunnel(cloud, containerd, tmp_path):
    binaries = kubectl_binaries()
    k = Kubectl(binaries[max(binaries)], max(binaries), cloud.kubeconfig, tmp_path)
    edge = Edge(tmp_path, cloud, "shop-2", runtime=containerd.sock).start(cloud.token())
    wait_for(lambda: node_heartbeat(k, "shop-2")[0] == "True", 30, what="node Ready")
    wait_for(lambda: "stream tunnel connected" in edge.log.read_text(), 20, what="stream tunnel")
    k("apply", "-f", "-", input=LOG_PODS.replace("NODE", "shop-2"))

    def logs(*args, check=True):
        return k.run("logs", "talker", *args, check=check)
    wait_for(lambda: "tick 2" in logs("-c", "main", check=False).stdout, 60, what="logs")
    out = logs("-c", "main").stdout.splitlines()
    # stdout in order; stderr too (interleaved as the runtime wrote it)
    assert [l for l in out if l != "oops"][:5] == ["line 1", "line 2", "line 3", "line 4", "line 5"] and "oops" in out, out[:8]
    assert logs("-c", "main", "--tail=2").stdout.count("\n") == 2
    stamped = logs("-c", "main", "--timestamps", "--tail=1").stdout
    assert stamped.split(" ", 1)[0].endswith("Z") and " tick " in stamped, stamped
    # kubectl picks the first container itself; the API without a container asks to choose.
    assert "line 1\n" in logs().stdout
    r = k.run("get", "--raw", "/api/v1/namespaces/default/pods/talker/log", check=False)
    assert r.returncode != 0 and "a container name must be specified" in r.stderr, r.stderr
    # --previous after a restart: the earlier run's output.
    wait_for(lambda: json.loads(k("get", "pod", "talker", "-o", "json"))["status"]["containerStatuses"][0].get("restartCount", 0) >= 1
             or any(c.get("restartCount", 0) >= 1 for c in json.loads(k("get", "pod", "talker", "-o", "json"))["status"]["containerStatuses"]),
             60, what="crasher restarted")
    previous = logs("-c", "crasher", "--previous").stdout
    current = logs("-c", "crasher", check=False).stdout
    assert previous.startswith("started at") and previous != current, (previous, current)
    # -f streams new lines as they are written.
    p = k.popen("logs", "-f", "talker", "-c", "main", "--tail=1")
    seen = []
    deadline = time.time() + 20
    while time.time() < deadline and len(seen) < 4:
        seen.append(p.stdout.readline().strip())
    p.terminate()
    p.wait(timeout=10)
    ticks = [int(s.split()[1]) for s in seen if s.startswith("tick ")]
    assert len(ticks) >= 4 and ticks == sorted(ticks) and ticks[-1] > ticks[0], seen
    # A pod whose node has no tunnel: a clear error.
    k("delete", "pod", "talker", "--wait=true", timeout=60)
    edge.stop()


SHELL_PODS = """
apiVersion: v1
kind: Pod
metadata: {name: shell}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  nodeName: NODE
  containers:
  - name: main
    image: docker.io/local/busybox:1
    command: ["sh", "-c", "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done"]
  - name: side
    image: docker.io/local/busybox:1
    command: ["sh", "-c", "trap 'exit 0' TERM; echo side > /tmp/who; while true; do sleep 1; done"]
  - name: web
    image: docker.io/local/busybox:1
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-the-pod > /www/index.html && head -c 3000000 /dev/urandom > /www/big && exec httpd -f -p 127.0.0.1:WEBPORT -h /www"]
  - name: bulk
    image: docker.io/local/busybox:1
    command: ["sh", "-c", "yes 0123456789012345678901234567890123456789012345678901234567890123456789 | head -n 60000; echo done; trap 'exit 0' TERM; while true; do sleep 1; done"]
"""


def test_kubectl_exec_and_attach_through_the_stream_tunnel(cloud, containerd, tmp_path):
    binaries = kubectl_binaries()
    edge = Edge(tmp_path, cloud, "shop-3", runtime=containerd.sock).start(cloud.token())
    k = Kubectl(binaries[max(binaries)], max(binaries), cloud.kubeconfig, tmp_path)
    wait_for(lambda: "stream tunnel connected" in edge.log.read_text(), 30, what="stream tunnel")
    web_port = free_port()
    k("apply", "-f", "-", input=SHELL_PODS.replace("NODE", "shop-3").replace("WEBPORT", str(web_port)))
    k("wait", "--for=condition=Ready", "pod/shell", "--timeout=60s", timeout=70)
    for version, binary in sorted(binaries.items()):
        kv = Kubectl(binary, version, cloud.kubeconfig, tmp_path)
        # Output on both channels, and the exit code through the error channel's Status.
        r = kv.run("exec", "shell", "-c", "main", "--", "sh", "-c", "echo hi; echo oops >&2; exit 3", check=False)
        assert r.returncode == 3 and r.stdout == "hi\n" and "oops" in r.stderr, (version, r)
        # The container named is the one that runs the command.
        assert kv("exec", "shell", "-c", "side", "--", "cat", "/tmp/who") == "side\n"
        # stdin reaches the command.
        r = kv.run("exec", "-i", "shell", "-c", "main", "--", "sh", "-c", "read a; read b; echo got $a $b", input="one\ntwo\n")
        assert r.stdout == "got one two\n", (version, r)
        # A large stdin arrives whole (the cloud waits for the node's window; nothing is dropped).
        big = "".join(f"{i:07d} stdin line for the flow control check\n" for i in range(60000))
        r = kv.run("exec", "-i", "shell", "-c", "main", "--", "sh", "-c", "cat > /tmp/in; wc -c < /tmp/in; tail -n 1 /tmp/in",
                   input=big, timeout=60)
        assert r.stdout.split("\n")[:2] == [str(len(big)), "0059999 stdin line for the flow control check"], (version, r.stdout[:200])
        # The end of stdin reaches the command (commands that read to EOF finish).
        r = kv.run("exec", "-i", "shell", "-c", "main", "--", "sort", "-r", input="apple\ncherry\nbanana\n", timeout=30)
        assert r.returncode == 0 and r.stdout == "cherry\nbanana\napple\n", (version, r)
        # Clear errors: an unknown container, a command that does not exist.
        r = kv.run("exec", "shell", "-c", "nope", "--", "true", check=False)
        assert r.returncode != 0 and "container nope is not valid for pod shell" in r.stderr, (version, r.stderr)
        r = kv.run("exec", "shell", "-c", "main", "--", "/no/such/binary", check=False)
        assert r.returncode != 0 and "no such file or directory" in r.stderr, (version, r.stderr)

    # An interactive shell with a terminal, driven through tmux as a person would type.
    done = tmp_path / "exec-exit"
    session = f"swiftedge-{os.getpid()}"
    env = " ".join(f"{key}={value}" for key, value in k.env().items() if key in ("KUBECONFIG", "HOME"))
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30",
                    f"env {env} {k.binary} exec -it shell -c main -- sh; echo $? > {done}"], check=True)
    try:
        def pane():
            return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout
        wait_for(lambda: "/ #" in pane(), 30, what="shell prompt")
        subprocess.run(["tmux", "send-keys", "-t", session, "echo $((6*7)); stty size", "Enter"], check=True)
        wait_for(lambda: "42" in pane().split("echo $((6*7)); stty size", 1)[-1], 15, what="command output")
        assert "30 100" in pane(), pane()  # the terminal size reached the container (resize channel)
        subprocess.run(["tmux", "send-keys", "-t", session, "exit 5", "Enter"], check=True)
        wait_for(lambda: done.exists() and done.read_text().strip(), 15, what="kubectl exec -it to end")
        assert done.read_text().strip() == "5"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)

    # The Python client's stream() (WebSocket v4) reads the exit code from the error channel.
    from kubernetes import client, config
    from kubernetes.stream import stream
    api = client.CoreV1Api(config.new_client_from_config(config_file=str(cloud.kubeconfig)))
    resp = stream(api.connect_get_namespaced_pod_exec, "shell", "default", container="main",
                  command=["sh", "-c", "echo from-python; exit 7"], stderr=True, stdin=False, stdout=True, tty=False,
                  _preload_content=False)
    resp.run_forever(timeout=20)
    assert resp.returncode == 7 and "from-python" in resp.read_stdout(), resp.returncode

    # kubectl attach follows the main process's output.
    p = k.popen("attach", "shell", "-c", "main")
    ticks = []
    deadline = time.time() + 20
    while time.time() < deadline and len(ticks) < 3:
        line = p.stdout.readline().strip()
        if line.startswith("tick "):
            ticks.append(int(line.split()[1]))
    p.terminate()
    p.wait(timeout=10)
    assert len(ticks) == 3 and ticks == sorted(ticks), ticks

    # A large log arrives whole (the tunnel's flow control holds the node back, nothing is dropped).
    wait_for(lambda: k("logs", "shell", "-c", "bulk", "--tail=1") == "done\n", 60, what="bulk log written")
    bulk = k("logs", "shell", "-c", "bulk")
    assert bulk.count("\n") == 60001 and bulk.endswith("done\n") and len(bulk) == 60000 * 71 + 5, (bulk.count("\n"), len(bulk))

    # kubectl top: usage measured on the node (CRI stats, /proc), asked for through the tunnel.
    def top(*args):
        return [line.split() for line in k("top", *args).splitlines()[1:]]
    nodes = wait_for(lambda: [r for r in top("nodes") if r[0] == "shop-3"], 20, what="node metrics")
    assert nodes[0][1].endswith("m") and nodes[0][3].endswith("Mi") and int(nodes[0][3][:-2]) > 0, nodes
    rows = {(r[0], r[1]): r for r in top("pods", "--containers")}
    assert {("shell", c) for c in ("main", "side", "bulk", "web")} <= rows.keys(), rows
    assert all(r[2].endswith("m") and r[3].endswith("Mi") for r in rows.values()), rows
    # The ticking container uses CPU; the metrics API answers the Python client too.
    from kubernetes import client as kclient
    custom = kclient.CustomObjectsApi(config.new_client_from_config(config_file=str(cloud.kubeconfig)))
    pm = custom.get_namespaced_custom_object("metrics.k8s.io", "v1beta1", "default", "pods", "shell")
    usage = {c["name"]: c["usage"] for c in pm["containers"]}
    assert usage["main"]["cpu"].endswith("n") and int(usage["main"]["cpu"][:-1]) > 0, usage
    assert int(usage["side"]["memory"][:-2]) > 0, usage
    # Prometheus metrics from the edge process itself.
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{edge.metrics_port}/metrics", timeout=10).read().decode()
    assert "swiftedge_edged_pods" in text and "swiftedge_edgehub_reconnects_total" in text, text[:500]

    # kubectl port-forward (SPDY tunnelled in a WebSocket), with both kubectl versions: several
    # connections, a 3 MB body intact, and a port nothing listens on reported as such.
    import hashlib
    import urllib.request
    pod_sum = k("exec", "shell", "-c", "web", "--", "sha256sum", "/www/big").split()[0]
    for version, binary in sorted(binaries.items()):
        kv = Kubectl(binary, version, cloud.kubeconfig, tmp_path)
        local = free_port()
        pf = kv.popen("port-forward", "pod/shell", f"{local}:{web_port}")
        try:
            wait_for(lambda: "Forwarding from 127.0.0.1" in (pf.stdout.readline() or ""), 20, what="port-forward listening")
            for _ in range(3):
                assert urllib.request.urlopen(f"http://127.0.0.1:{local}/index.html", timeout=10).read() == b"hello-from-the-pod\n"
            body = urllib.request.urlopen(f"http://127.0.0.1:{local}/big", timeout=30).read()
            assert len(body) == 3000000 and hashlib.sha256(body).hexdigest() == pod_sum, (version, len(body))
        finally:
            pf.terminate()
            pf.wait(timeout=10)
    closed, local = free_port(), free_port()
    pf = k.popen("port-forward", "pod/shell", f"{local}:{closed}")
    try:
        wait_for(lambda: "Forwarding from 127.0.0.1" in (pf.stdout.readline() or ""), 20, what="port-forward listening")
        with pytest.raises(Exception):
            urllib.request.urlopen(f"http://127.0.0.1:{local}/", timeout=10).read()
        out, _ = pf.communicate(timeout=20)  # kubectl gives up on the pod after the error
        assert f"error forwarding port {closed} to pod shell" in out and "connection refused" in out, out
    finally:
        if pf.poll() is None:
            pf.kill()

    # A node without its tunnel: the error names the node.
    edge.stop()
    r = k.run("exec", "shell", "-c", "main", "--", "true", check=False)
    assert r.returncode != 0 and 'cannot reach node "shop-3"' in r.stderr, r.stderr


def test_port_forward_to_a_pod_with_its_own_network_namespace(cloud, containerd, tmp_path):
    """A pod that is not on the host network: its 127.0.0.1 is its own, so the node cannot dial it;
    port-forward goes through the runtime (CRI PortForward, SPDY to containerd's streaming server)."""
    binaries = kubectl_binaries()
    k = Kubectl(binaries[max(binaries)], max(binaries), cloud.kubeconfig, tmp_path)
    edge = Edge(tmp_path, cloud, "shop-5", runtime=containerd.sock).start(cloud.token())
    wait_for(lambda: "stream tunnel connected" in edge.log.read_text(), 30, what="stream tunnel")
    k("apply", "-f", "-", input="""
apiVersion: v1
kind: Pod
metadata: {name: isolated}
spec:
  nodeName: shop-5
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: docker.io/local/busybox:1
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-its-own-netns > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www"]
""")
    k("wait", "--for=condition=Ready", "pod/isolated", "--timeout=60s", timeout=70)
    # Nothing answers on the node's own 127.0.0.1:8080 (unless by chance): the pod's port is elsewhere.
    local = free_port()
    pf = k.popen("port-forward", "pod/isolated", f"{local}:8080")
    try:
        wait_for(lambda: "Forwarding from 127.0.0.1" in (pf.stdout.readline() or ""), 20, what="port-forward listening")
        import urllib.request
        for _ in range(3):
            assert urllib.request.urlopen(f"http://127.0.0.1:{local}/index.html", timeout=10).read() == b"hello-from-its-own-netns\n"
    finally:
        pf.terminate()
        pf.wait(timeout=10)
    # A port nothing listens on in the pod: the runtime's error reaches kubectl (which reports it;
    # whether it then exits depends on the kubectl version, so its output is read as it comes).
    import threading
    local = free_port()
    pf = k.popen("port-forward", "pod/isolated", f"{local}:8081")
    lines = []
    threading.Thread(target=lambda: [lines.append(line) for line in pf.stdout], daemon=True).start()
    try:
        wait_for(lambda: any("Forwarding from 127.0.0.1" in line for line in lines), 20, what="port-forward listening")
        with pytest.raises(Exception):
            urllib.request.urlopen(f"http://127.0.0.1:{local}/", timeout=10).read()
        try:
            wait_for(lambda: any("8081" in line and "connection refused" in line for line in lines), 20,
                     what="the runtime's error in kubectl's output")
        except AssertionError as e:
            raise AssertionError(f"{e}: {lines}") from None
    finally:
        pf.kill()
        pf.wait(timeout=10)
    k("delete", "pod", "isolated", "--wait=false")
    edge.stop()


IN_CLUSTER = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: svc-reader}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: nobody}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: read-services}
rules:
- {apiGroups: [""], resources: [services], verbs: [get, list, watch]}
- {apiGroups: [""], resources: [configmaps], verbs: [create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: svc-reader-reads-services}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-services}
subjects:
- {kind: ServiceAccount, name: svc-reader}
---
apiVersion: v1
kind: Service
metadata: {name: shop-api}
spec:
  ports: [{port: 80, targetPort: 8080}]
"""

# A busybox in-cluster client: what an operator's client library does with the ServiceAccount
# volume and KUBERNETES_SERVICE_HOST/PORT, once a second; the last answer lands in /out, every
# error is appended to NAME.refused.
IN_CLUSTER_POD = """
apiVersion: v1
kind: Pod
metadata: {name: NAME}
spec:
  nodeName: NODE
  serviceAccountName: ACCOUNT
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: docker.io/local/busybox:1
    command: ["sh", "-c"]
    args:
    - |
      trap 'exit 0' TERM
      sa=/var/run/secrets/kubernetes.io/serviceaccount
      while true; do
        if wget -q -O /out/NAME.tmp --no-check-certificate --header "Authorization: Bearer $(cat $sa/token)" \
             "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/$(cat $sa/namespace)/services" 2>/out/NAME.err
        then mv /out/NAME.tmp /out/NAME.json; else cat /out/NAME.err >> /out/NAME.refused; fi
        sleep 1
      done
    volumeMounts:
    - {name: out, mountPath: /out}
  volumes:
  - name: out
    hostPath: {path: OUT, type: DirectoryOrCreate}
"""


def test_edge_pods_use_the_kubernetes_api_in_cluster_offline(cloud, containerd, tmp_path):
    """Issue 18's acceptance: a pod on an edge node with a bound ServiceAccount token lists the
    Services of its namespace through the node's MetaServer — also with the cloud stopped; a pod
    whose ServiceAccount lacks the Role gets 403. Writes (and kinds the node does not hold) are
    forwarded to the cloud as the pod's ServiceAccount while connected, refused with 503 offline. The token and CA are the pod's own (projected
    kube-api-access volume), used again by a real kubectl that verifies MetaServer's certificate."""
    binaries = kubectl_binaries()
    k = Kubectl(binaries[max(binaries)], max(binaries), cloud.kubeconfig, tmp_path)
    edge = Edge(tmp_path, cloud, "shop-6", runtime=containerd.sock).start(cloud.token())
    wait_for(lambda: node_heartbeat(k, "shop-6")[0] == "True", 30, what="node Ready")
    out = tmp_path / "out"
    k("apply", "-f", "-", input=IN_CLUSTER)
    for name, account in [("reader", "svc-reader"), ("outsider", "nobody")]:
        k("apply", "-f", "-", input=IN_CLUSTER_POD.replace("NAME", name).replace("ACCOUNT", account).replace("NODE", "shop-6")
          .replace("OUT", str(out)))
    k("wait", "--for=condition=Ready", "pod/reader", "pod/outsider", "--timeout=90s", timeout=100)

    def services(f):
        try:
            return sorted(s["metadata"]["name"] for s in json.loads(f.read_text())["items"])
        except (OSError, ValueError):
            return None
    wait_for(lambda: services(out / "reader.json") == ["kubernetes", "shop-api"], 60, what="the reader pod listed its namespace's Services",
             detail=lambda: (out / "reader.refused").read_text() if (out / "reader.refused").exists() else edge.log.read_text()[-2000:])
    wait_for(lambda: (out / "outsider.refused").exists() and "403" in (out / "outsider.refused").read_text(), 30,
             what="the pod without the Role refused with 403", detail=lambda: (out / "outsider.refused").read_text())
    assert not (out / "outsider.json").exists()
    # RBAC objects reached the node only as far as they grant its pods' accounts something.
    assert "default/rolebinding/svc-reader-reads-services" in edge.stored("rolebinding")
    assert "default/role/read-services" in edge.stored("role")

    # The pod's own credentials (projected volume: a bound token, the cluster CA) with a real
    # kubectl that verifies MetaServer's serving certificate against that CA.
    uid = json.loads(k("get", "pod", "reader", "-o", "json"))["metadata"]["uid"]
    volume = next((edge.dir / "pods" / uid / "volumes" / "projected").glob("kube-api-access-*"))
    token = (volume / "token").read_text()
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["kubernetes.io"]["pod"]["uid"] == uid and claims["kubernetes.io"]["serviceaccount"]["name"] == "svc-reader"
    as_pod = edge.metaserver_kubeconfig((volume / "ca.crt").read_text(), tmp_path / "pod.kubeconfig", token=token)

    def pod_kubectl(*args):
        return subprocess.run([k.binary, "--kubeconfig", str(as_pod), *args], capture_output=True, text=True, timeout=30, env=k.env())
    listed = pod_kubectl("get", "services", "-n", "default", "-o", "name")
    assert listed.returncode == 0 and listed.stdout.split() == ["service/kubernetes", "service/shop-api"], listed.stderr
    secrets = pod_kubectl("get", "secrets", "-n", "default")
    assert secrets.returncode != 0 and ('secrets is forbidden: User "system:serviceaccount:default:svc-reader" cannot list resource '
                                        '"secrets" in API group "" in the namespace "default"') in secrets.stderr, secrets.stderr

    # What the node does not hold goes to the cloud, made there as the pod's ServiceAccount: the
    # cluster's RBAC decides (a ConfigMap it may create appears in the cloud; a Secret is refused).
    made = pod_kubectl("create", "configmap", "from-the-edge", "-n", "default", "--from-literal=site=shop-6")
    assert made.returncode == 0, made.stderr
    assert json.loads(k("get", "configmap", "from-the-edge", "-o", "json"))["data"] == {"site": "shop-6"}
    refused = pod_kubectl("create", "secret", "generic", "nope", "-n", "default", "--from-literal=a=b")
    assert refused.returncode != 0 and ('secrets is forbidden: User "system:serviceaccount:default:svc-reader" cannot create resource '
                                        '"secrets"') in refused.stderr, refused.stderr
    leases = pod_kubectl("get", "--raw", "/apis/coordination.k8s.io/v1/namespaces/default/leases")
    assert leases.returncode != 0 and "leases.coordination.k8s.io is forbidden" in leases.stderr, leases.stderr

    # The cloud stops: fresh requests are still answered (and still refused) from the node's store.
    cloud.stop()
    for f in ["reader.json", "outsider.refused"]:
        (out / f).unlink()
    wait_for(lambda: services(out / "reader.json") == ["kubernetes", "shop-api"], 30, what="Services listed with the cloud stopped")
    wait_for(lambda: (out / "outsider.refused").exists() and "403" in (out / "outsider.refused").read_text(), 30,
             what="refused with the cloud stopped")
    assert pod_kubectl("get", "services", "-n", "default", "-o", "name").stdout.split() == ["service/kubernetes", "service/shop-api"]
    # Writes need the cloud: refused with the reason while it is away.
    offline = pod_kubectl("create", "configmap", "while-offline", "-n", "default", "--from-literal=a=b")
    assert offline.returncode != 0 and "the cloud is not reachable" in offline.stderr, offline.stderr
    # A token the node did not issue is nobody's.
    forged = pod_kubectl("--token", token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"), "get", "services")
    assert forged.returncode != 0 and "Unauthorized" in forged.stderr, forged.stderr
    edge.stop()
    cloud.start()
