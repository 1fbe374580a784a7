"""The cloud–edge channel as a user runs it: `swiftedge cloud` (embedded API server), a token from
`swiftedge gettoken`, `swiftedge edge` joining over TLS; objects bound to the node reach its
database; bad tokens are refused with clear messages; after the edge was away or the cloud was
killed (-9) and restarted, the node converges on exactly the latest versions and the resync sends
only what changed."""
import json
import re
import signal
import ssl
import subprocess
import urllib.error
import urllib.request

import pytest

from cloudedge import Cloud, Edge
from conftest import BIN, Kubectl, free_port, kubectl_binaries, wait_for


@pytest.fixture
def cloud(tmp_path):
    c = Cloud(tmp_path).start()
    yield c
    c.stop()


@pytest.fixture(autouse=True)
def no_stray_edges():
    """Edge processes a failed test left running are stopped."""
    yield
    subprocess.run(["pkill", "-f", f"{BIN} edge "], check=False)


def kubectl_for(cloud, tmp_path):
    binaries = kubectl_binaries()
    return Kubectl(binaries[max(binaries)], max(binaries), cloud.kubeconfig, tmp_path)


def test_bad_tokens_are_refused_with_clear_messages(cloud, tmp_path):
    token = cloud.token()
    h, jwt = token.split(".", 1)
    cases = [
        (h + "." + jwt[:-4] + ("AAAA" if not jwt.endswith("AAAA") else "BBBB"), "signature invalid"),
        ("0" * 64 + "." + jwt, "CA hash mismatch"),
        ("garbage", "malformed token"),
    ]
    for i, (bad, expect) in enumerate(cases):
        e = Edge(tmp_path, cloud, f"bad{i}")
        p = subprocess.run(e.args(bad), capture_output=True, text=True, timeout=60)
        assert p.returncode != 0, p.stdout
        assert expect in p.stderr + p.stdout, p.stderr
    e = Edge(tmp_path, cloud, "nowhere")
    p = subprocess.run(e.args(token, cert_port=free_port()), capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "cannot reach 127.0.0.1:" in p.stderr + p.stdout


def test_join_deliver_resync_and_cloud_kill(cloud, tmp_path):
    k = kubectl_for(cloud, tmp_path)
    edge = Edge(tmp_path, cloud, "shop-1").start(cloud.token())
    wait_for(lambda: "connected to the cloud" in edge.log.read_text(), 30, what="edge connected")

    # The node registers itself (labels, capacity, node info) and keeps its Ready heartbeat fresh.
    def node():
        p = k.run("get", "node", "shop-1", "-o", "json", check=False)
        return json.loads(p.stdout) if p.returncode == 0 else None

    n = wait_for(node, 30, what="node registered")
    assert n["metadata"]["labels"]["node-role.kubernetes.io/edge"] == "" and n["metadata"]["labels"]["site"] == "shop"
    assert int(n["status"]["capacity"]["cpu"]) >= 1 and n["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.")
    ready = {c["type"]: c for c in n["status"]["conditions"]}["Ready"]
    assert ready["status"] == "True"
    wait_for(lambda: {c["type"]: c for c in node()["status"]["conditions"]}["Ready"]["lastHeartbeatTime"] != ready["lastHeartbeatTime"],
             30, what="a fresh heartbeat")
    assert "shop-1   Ready" in k("get", "nodes")
    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"app-{i}", "namespace": "default", "labels": {"v": "1"}},
             "spec": {"nodeName": "shop-1", "containers": [{"name": "c", "image": "nginx:1.25"}]}} for i in range(20)]
    k("apply", "-f", "-", input="\n".join(json.dumps(p) for p in pods))

    def latest():
        items = json.loads(k("get", "pods", "-n", "default", "-o", "json"))["items"]
        return {f"default/pod/{p['metadata']['name']}": int(p["metadata"]["resourceVersion"]) for p in items
                if p["spec"].get("nodeName") == "shop-1"}

    def converged():
        have = {key: rv for key, (rv, _) in edge.stored("pod").items()}
        return have == latest()

    wait_for(converged, 30, what="20 pods on the edge")
    assert "null/node/shop-1" in edge.stored("node")
    syncs = json.loads(k("get", "objectsyncs", "-n", "default", "-o", "json"))["items"]
    assert len([o for o in syncs if o["spec"]["objectKind"] == "Pod"]) == 20
    m = cloud.metrics()
    node = frozenset({("node", "shop-1")})
    assert m[("swiftedge_sync_node_messages_acked_total", node)] >= 21  # 20 pods and the Node
    assert m[("swiftedge_cloudhub_node_bytes_sent_total", node)] > 20 * 200
    assert m[("swiftedge_cloudhub_node_bytes_received_total", node)] > 0
    assert m[("swiftedge_sync_node_queue_depth", node)] == 0
    assert ("swiftedge_sync_node_ack_latency_seconds_count", node) in m

    def node_rv():
        return edge.stored("node").get("null/node/shop-1", (0, None))[0]

    # The edge goes away; 5 pods change and 2 are deleted meanwhile.
    wait_for(lambda: node_rv() > 0, 30, what="the Node on the edge")
    node_before = node_rv()
    edge.stop()
    for i in range(5):
        k("label", "pod", f"app-{i}", "v=2", "--overwrite")
    k("delete", "pod", "app-18", "app-19", "--grace-period=0", "--force")
    resyncs_before = len(cloud.resyncs("shop-1"))
    edge.start()
    wait_for(converged, 30, what="edge caught up after being away")
    wait_for(lambda: len(cloud.resyncs("shop-1")) > resyncs_before, 30, what="the resync report")
    resync = cloud.resyncs("shop-1")[-1]
    # Only what changed, never a relist: the 5 pods, and the Node if its status moved on (its
    # heartbeats are not echoed to it while connected; a reconnect sends the current Node once).
    node_resent = int(node_rv() != node_before)
    assert (int(resync["sent"]) - node_resent, resync["deleted"]) == (5, "2"), (resync, node_resent)
    assert edge.stored("pod")["default/pod/app-0"][1]["metadata"]["labels"]["v"] == "2"

    # kill -9 of the cloud; on restart it restores what the node has from ObjectSync and sends nothing again.
    before = len(cloud.resyncs("shop-1"))
    wait_for(lambda: node_rv() > 0, 30, what="the Node on the edge")
    node_before = node_rv()
    pods_before = {key: rv for key, (rv, _) in edge.stored("pod").items()}
    cloud.stop(signal.SIGKILL)
    cloud.start()
    wait_for(lambda: len(cloud.resyncs("shop-1")) > before, 60, what="resync after the cloud restart")
    resync = cloud.resyncs("shop-1")[-1]
    node_resent = int(node_rv() != node_before)
    assert int(resync["sent"]) - node_resent + int(resync["deleted"]) == 0, (resync, node_resent)
    assert {key: rv for key, (rv, _) in edge.stored("pod").items()} == pods_before
    k("label", "pod", "app-7", "v=3", "--overwrite")
    wait_for(converged, 30, what="a change after the restart")
    edge.stop()


def test_configmaps_and_secrets_follow_the_pods_that_use_them(cloud, tmp_path):
    k = kubectl_for(cloud, tmp_path)
    edge = Edge(tmp_path, cloud, "shop-2").start(cloud.token())
    wait_for(lambda: k.run("get", "node", "shop-2", check=False).returncode == 0, 30, what="node registered")
    k("create", "configmap", "app-config", "--from-literal=mode=v1")
    k("create", "configmap", "unused", "--from-literal=x=y")
    k("create", "secret", "generic", "app-secret", "--from-literal=password=s3cret")
    k("create", "secret", "generic", "other-secret", "--from-literal=a=b")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "uses-config", "namespace": "default"},
           "spec": {"nodeName": "shop-2",
                    "containers": [{"name": "c", "image": "busybox",
                                    "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "mode"}}}],
                                    "volumeMounts": [{"name": "s", "mountPath": "/s"}]}],
                    "volumes": [{"name": "s", "secret": {"secretName": "app-secret"}}]}}
    k("apply", "-f", "-", input=json.dumps(pod))

    def held(type_, key):
        row = edge.stored(type_).get(key)
        return row[1] if row else None

    wait_for(lambda: held("configmap", "default/configmap/app-config"), 30, what="the referenced configmap on the edge")
    wait_for(lambda: held("secret", "default/secret/app-secret"), 30, what="the referenced secret on the edge")
    assert held("configmap", "default/configmap/app-config")["data"]["mode"] == "v1"
    # Only what the node's pods reference reaches it (kube-root-ca.crt: the pod's kube-api-access volume).
    assert set(edge.stored("configmap")) == {"default/configmap/app-config", "default/configmap/kube-root-ca.crt"}
    assert set(edge.stored("secret")) == {"default/secret/app-secret"}

    k("patch", "configmap", "app-config", "-p", json.dumps({"data": {"mode": "v2"}}))
    wait_for(lambda: (held("configmap", "default/configmap/app-config") or {}).get("data", {}).get("mode") == "v2", 30,
             what="the configmap update on the edge")

    # The pod goes: so do the objects only it needed.
    k("delete", "pod", "uses-config", "--grace-period=0", "--force")
    wait_for(lambda: not edge.stored("configmap") and not edge.stored("secret"), 30, what="configmap and secret removed from the edge")
    edge.stop()


def test_metaserver_serves_the_node_offline(cloud, tmp_path):
    """Real kubectl against the edge's MetaServer lists the node's pods — also with the cloud gone
    and after the edge process restarted while offline."""
    k = kubectl_for(cloud, tmp_path)
    edge = Edge(tmp_path, cloud, "shop-3").start(cloud.token())
    wait_for(lambda: k.run("get", "node", "shop-3", check=False).returncode == 0, 30, what="node registered")
    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"m-{i}", "namespace": "default", "labels": {"app": "a" if i < 2 else "b"}},
             "spec": {"nodeName": "shop-3", "containers": [{"name": "c", "image": "busybox"}]}} for i in range(3)]
    k("apply", "-f", "-", input="\n".join(json.dumps(p) for p in pods))
    wait_for(lambda: len(edge.stored("pod")) == 3, 30, what="pods on the edge")
    binaries = kubectl_binaries()
    kubectl = binaries[max(binaries)]

    # MetaServer serves HTTPS with a certificate from the cluster's signer; the node's own client
    # certificate reads everything it holds; nobody else gets in without credentials.
    ca = k("get", "configmap", "kube-root-ca.crt", "-o", "jsonpath={.data.ca\\.crt}")
    kubeconfig = edge.metaserver_kubeconfig(ca, tmp_path / "metaserver.kubeconfig")
    wait_for(lambda: (edge.dir / "certs" / "metaserver.crt").exists(), 30, what="MetaServer serving certificate")

    def local(*args):
        return subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True, timeout=60)

    anonymous = ssl.create_default_context(cafile=str(kubeconfig) + ".ca.crt")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"https://127.0.0.1:{edge.metaserver_port}/api/v1/pods", context=anonymous, timeout=10)
    assert refused.value.code == 401 and json.loads(refused.value.read())["reason"] == "Unauthorized"

    def names(*args):
        p = local("get", "pods", "-o", "json", *args)
        assert p.returncode == 0, p.stderr
        return sorted(i["metadata"]["name"] for i in json.loads(p.stdout)["items"])

    assert names("-A") == ["m-0", "m-1", "m-2"]
    assert names("-n", "default", "-l", "app=a") == ["m-0", "m-1"]
    table = local("get", "pods", "-n", "default")
    assert table.returncode == 0 and "m-2" in table.stdout, table.stderr
    missing = local("get", "pod", "nope", "-n", "default")
    assert missing.returncode != 0 and 'pods "nope" not found' in missing.stderr
    assert "shop-3" in local("get", "nodes").stdout
    # Services (and their Endpoints) reach every edge node.
    k("create", "service", "clusterip", "web", "--tcp=80:8080")
    wait_for(lambda: "default/service/web" in edge.stored("service"), 30, what="the service on the edge")
    assert "web" in local("get", "svc", "-n", "default").stdout

    # A watch (as `kubectl get -w` does it: list, then watch from the list's resourceVersion).
    watcher = subprocess.Popen([kubectl, "--kubeconfig", str(kubeconfig), "get", "pods", "-n", "default", "-w", "-o", "name"],
                               stdout=subprocess.PIPE, text=True)
    seen = []
    try:
        for _ in range(3):
            seen.append(watcher.stdout.readline().strip())  # the three listed pods
        k("apply", "-f", "-", input=json.dumps({**pods[0], "metadata": {**pods[0]["metadata"], "name": "m-new"}}))
        seen.append(watcher.stdout.readline().strip())
    finally:
        watcher.kill()
    assert sorted(seen[:3]) == ["pod/m-0", "pod/m-1", "pod/m-2"] and seen[3] == "pod/m-new", seen

    # The cloud goes away; the node still answers, also after its own restart.
    cloud.stop(signal.SIGKILL)
    expected = ["m-0", "m-1", "m-2", "m-new"]
    assert names("-A") == expected
    edge.stop()
    edge.start()
    wait_for(lambda: local("get", "pods", "-A").returncode == 0, 30, what="MetaServer back while offline")
    assert names("-A") == expected
    edge.stop()
    cloud.start()


def test_corrupt_edge_database_is_recovered_from_the_cloud(cloud, tmp_path):
    k = kubectl_for(cloud, tmp_path)
    edge = Edge(tmp_path, cloud, "shop-4").start(cloud.token())
    wait_for(lambda: k.run("get", "node", "shop-4", check=False).returncode == 0, 30, what="node registered")
    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"c-{i}", "namespace": "default"},
             "spec": {"nodeName": "shop-4", "containers": [{"name": "c", "image": "busybox"}]}} for i in range(3)]
    k("apply", "-f", "-", input="\n".join(json.dumps(p) for p in pods))
    wait_for(lambda: len(edge.stored("pod")) == 3, 30, what="pods on the edge")
    edge.stop()

    db = edge.dir / "edge.db"
    for suffix in ["-wal", "-shm"]:
        (edge.dir / f"edge.db{suffix}").unlink(missing_ok=True)
    data = db.read_bytes()
    db.write_bytes(b"this is not a database" + data[22:len(data) // 2])  # garbage header, truncated

    # Refusing to start says what to do.
    p = subprocess.run(edge.args() + ["--no-recover-store"], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "is unusable" in p.stderr + p.stdout and "--recover-store" in p.stderr + p.stdout, p.stderr

    # By default the file is moved aside, the node starts empty and the cloud sends everything again.
    edge.start()
    wait_for(lambda: "moved aside" in edge.log.read_text(), 30, what="recovery logged")
    assert list(edge.dir.glob("edge.db.corrupt-*"))
    wait_for(edge.store_ready, 30, what="the new store created")
    wait_for(lambda: sorted(edge.stored("pod")) == [f"default/pod/c-{i}" for i in range(3)], 30, what="pods sent again")
    wait_for(lambda: "null/node/shop-4" in edge.stored("node"), 30, what="the Node sent again")
    # SIGTERM with the node still connected: the cloud closes the connection and exits 0 (checked by stop()).
    cloud.stop()
    edge.stop()
    cloud.start()


def test_openssl_clients_accept_cloudhub_certificate_with_the_ca(cloud):
    """Interop finding 2: OpenSSL (Python's ssl, curl, openssl s_client) took CloudHub's certificate for
    a self-signed one because its subject equalled the CA's. With the CA from /ca.crt they verify it."""
    import ssl
    insecure = ssl.create_default_context()
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
    der = urllib.request.urlopen(f"https://127.0.0.1:{cloud.cert_port}/ca.crt", context=insecure, timeout=10).read()
    pem = ssl.DER_cert_to_PEM_cert(der)
    ca_file = cloud.dir / "ca-from-cert-port.pem"
    ca_file.write_text(pem)
    # Python's ssl, verifying (the certificate port serves the same certificate as CloudHub).
    verified = ssl.create_default_context(cadata=pem)
    body = urllib.request.urlopen(f"https://127.0.0.1:{cloud.cert_port}/ca.crt", context=verified, timeout=10).read()
    assert body == der
    p = subprocess.run(["curl", "-sS", "-o", "/dev/null", "--cacert", str(ca_file), f"https://127.0.0.1:{cloud.cert_port}/ca.crt"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    # CloudHub's port (it asks for a client certificate, so only the server's verification is checked).
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{cloud.hub_port}", "-CAfile", str(ca_file),
                        "-verify_return_error", "-showcerts"], input="", capture_output=True, text=True, timeout=20)
    assert "Verify return code: 0 (ok)" in p.stdout, p.stdout[-1500:] + p.stderr[-1500:]
    subjects = re.findall(r"^subject=(.*)$", p.stdout, re.M)
    issuers = re.findall(r"^issuer=(.*)$", p.stdout, re.M)
    assert subjects and issuers and subjects[0] != issuers[0] and "KubeEdge" in issuers[0], (subjects, issuers)
