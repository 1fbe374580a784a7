"""Every acknowledged write survives a restart, kill -9 included."""
import signal
import socket
import subprocess
import threading

from conftest import BIN, Server


def test_kill9_keeps_acknowledged_writes(tmp_path):
    srv = Server(tmp_path / "data").start()
    acked = {}
    stop = threading.Event()
    enough = threading.Event()

    def writer(idx):
        i = 0
        while not stop.is_set():
            name = f"w{idx}-{i}"
            try:
                r = srv.http("POST", "/api/v1/namespaces/default/configmaps",
                             json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"i": str(i)}})
            except Exception:
                return
            if r.status_code == 201:
                acked[name] = r.json()["metadata"]["resourceVersion"]
                if len(acked) >= 200:
                    enough.set()
            i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    # Let the writers get going, then kill the server without warning.
    assert enough.wait(60), "writers did not get going"
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) >= 200
    srv2 = Server(tmp_path / "data")
    srv2.start()
    try:
        items = srv2.http("GET", "/api/v1/namespaces/default/configmaps").json()["items"]
        stored = {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in items}
        missing = [n for n in acked if n not in stored]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
        assert all(stored[n] == rv for n, rv in acked.items())
        # New writes continue after the last durable revision.
        r = srv2.http("POST", "/api/v1/namespaces/default/configmaps", json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after"}})
        assert int(r.json()["metadata"]["resourceVersion"]) > max(int(v) for v in acked.values())
    finally:
        srv2.stop()


def test_graceful_restart_keeps_crds_served(tmp_path):
    srv = Server(tmp_path / "d2").start()
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "gadgets.example.com"},
           "spec": {"group": "example.com", "scope": "Cluster", "names": {"plural": "gadgets", "kind": "Gadget"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}
    assert srv.http("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd).status_code == 201
    assert srv.http("POST", "/apis/example.com/v1/gadgets", json={"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}, "x": 1}).status_code == 201
    srv.stop()
    srv.start()
    try:
        r = srv.http("GET", "/apis/example.com/v1/gadgets/g")
        assert r.status_code == 200 and r.json()["x"] == 1
    finally:
        srv.stop()


def test_sigterm_with_open_watch_shuts_down_promptly(tmp_path):
    import time
    import requests
    srv = Server(tmp_path / "d3").start()
    resp = requests.get(srv.url + "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=600",
                        headers={"Authorization": f"Bearer {srv.token}"}, verify=srv.ca, stream=True, timeout=30)
    assert resp.status_code == 200
    start = time.time()
    srv.proc.send_signal(signal.SIGTERM)
    srv.proc.wait(timeout=20)
    assert srv.proc.returncode == 0 and time.time() - start < 15
    srv.logf.close()


def test_metrics_endpoint(server):
    server.http("GET", "/api/v1/namespaces")
    r = server.http("GET", "/metrics")
    assert r.status_code == 200
    assert "swiftedge_apiserver_requests_total" in r.text and "swiftedge_store_writes_total" in r.text
    import requests
    assert requests.get(server.url + "/metrics", verify=server.ca, timeout=10).status_code == 401


def test_cloud_with_a_port_in_use_exits_with_the_error(tmp_path):
    """A CloudHub port another process holds ends `swiftedge cloud` with the bind error at once; it
    used to hang forever with the API server up and CloudHub never listening (CI's 60 s start timeouts)."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        r = subprocess.run([str(BIN), "cloud", "--data-dir", str(tmp_path / "cloud"), "--port", "0",
                            "--cloudhub-port", str(holder.getsockname()[1]), "--cert-port", "0", "--metrics-port", "0"],
                           capture_output=True, text=True, timeout=30)
    finally:
        holder.close()
    assert r.returncode != 0
    assert "Address already in use" in r.stdout + r.stderr
    assert "CloudHub listening" not in r.stdout + r.stderr
