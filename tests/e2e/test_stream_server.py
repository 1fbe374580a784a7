"""The cloud stream server against an external cluster, the way KubeEdge does it: kube-apiserver
reaches a node's kubelet port (the Node's daemonEndpoints, 10350 at the node's InternalIP); a
DNAT rule on the cloud host sends that to `swiftedge cloud --stream-port` (KubeEdge's :10003),
which finds the node by that address and goes through its stream tunnel. kube-apiserver cannot
be had here, so this test plays its part with its own clients: HTTPS with a kubelet client
certificate signed by the cluster CA, `Host: <node IP>:10350`, SPDY/3.1 upgrades
(tests/e2e/spdy_client.py) for exec and port-forward, plain GET for container logs."""
import json
import re
import subprocess

import pytest
import requests
import urllib3

from cloudedge import Cloud, Edge
from conftest import Kubectl, free_port, kubectl_binaries, wait_for
from spdy_client import SPDYClient, UpgradeRefused, exec_
from test_edged import SHELL_PODS, Containerd, containerd, no_stray_edges  # noqa: F401 (fixtures)

urllib3.disable_warnings()
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


def client_certificate(cloud, d):
    """A kubelet client certificate as kube-apiserver has one (signed by the cluster CA)."""
    pki = cloud.dir / "pki"
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "client.key"), "-out", str(d / "client.csr"),
                    "-subj", "/O=system:masters/CN=kube-apiserver-kubelet-client"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(d / "client.csr"), "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
                    "-CAcreateserial", "-out", str(d / "client.crt"), "-days", "1"], check=True, capture_output=True)
    return str(d / "client.crt"), str(d / "client.key")


def test_kubelet_api_through_the_cloud_stream_server(tmp_path, containerd):
    stream_port = free_port()
    cloud = Cloud(tmp_path, extra_args=["--stream-port", str(stream_port)]).start()
    try:
        binaries = kubectl_binaries()
        k = Kubectl(binaries[max(binaries)], max(binaries), cloud.kubeconfig, tmp_path)
        edge = Edge(tmp_path, cloud, "shop-9", runtime=containerd.sock).start(cloud.token())
        wait_for(lambda: "stream tunnel connected" in edge.log.read_text(), 30, what="stream tunnel")
        assert f"cloud stream server (kubelet API for kube-apiserver) on 127.0.0.1:{stream_port}" in cloud.log.read_text()
        web_port = free_port()
        k("apply", "-f", "-", input=SHELL_PODS.replace("NODE", "shop-9").replace("WEBPORT", str(web_port)))
        k("wait", "--for=condition=Ready", "pod/shell", "--timeout=60s", timeout=70)
        wait_for(lambda: "tick 4" in k.run("logs", "shell", "-c", "main", check=False).stdout, 30, what="a few log lines")

        # Where kube-apiserver would connect: the node's InternalIP and daemon endpoint port.
        node = json.loads(k("get", "node", "shop-9", "-o", "json"))
        ip = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
        kubelet_port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        assert kubelet_port == 10350
        host = f"{ip}:{kubelet_port}"
        cert = client_certificate(cloud, tmp_path)
        base = f"https://127.0.0.1:{stream_port}"

        # Container logs (GET /containerLogs/{ns}/{pod}/{container}, kubelet's query parameters).
        r = requests.get(f"{base}/containerLogs/default/shell/main?tailLines=3", headers={"Host": host}, cert=cert, verify=False, timeout=20)
        assert r.status_code == 200 and len(r.text.splitlines()) == 3 and r.text.startswith("tick "), (r.status_code, r.text)
        r = requests.get(f"{base}/containerLogs/default/shell/side?timestamps=true", headers={"Host": host}, cert=cert, verify=False,
                         timeout=20)
        assert r.status_code == 200, r.text
        # follow: new lines keep coming on the open response.
        with requests.get(f"{base}/containerLogs/default/shell/main?follow=true&tailLines=1", headers={"Host": host}, cert=cert,
                          verify=False, stream=True, timeout=20) as r:
            lines = r.iter_lines()
            first = int(next(lines).split()[1])
            assert int(next(lines).split()[1]) == first + 1
        # An address that is no node's, and no client certificate: refused.
        r = requests.get(f"{base}/containerLogs/default/shell/main", headers={"Host": "192.0.2.99:10350"}, cert=cert, verify=False, timeout=20)
        assert r.status_code == 404 and "no edge node has the address 192.0.2.99" in r.text, r.text
        try:
            requests.get(f"{base}/containerLogs/default/shell/main", headers={"Host": host}, verify=False, timeout=20)
            raise AssertionError("a request without a client certificate was served")
        except requests.exceptions.SSLError:
            pass
        except requests.exceptions.ConnectionError:
            pass

        # /metrics/resource (what metrics-server scrapes for kubectl top): cumulative counters.
        def scrape():
            r = requests.get(f"{base}/metrics/resource", headers={"Host": host}, cert=cert, verify=False, timeout=20)
            assert r.status_code == 200 and "# TYPE node_cpu_usage_seconds_total counter" in r.text, (r.status_code, r.text[:500])
            samples = {}
            for line in r.text.splitlines():
                if line and not line.startswith("#"):
                    m = re.match(r"^(\S+) (\S+)(?: \d+)?$", line)  # name{labels} value [timestamp ms]
                    assert m, line
                    samples[m.group(1)] = float(m.group(2))
            return samples
        first = scrape()
        key = 'container_memory_working_set_bytes{container="main",namespace="default",pod="shell"}'
        assert first[key] > 0 and 'container_start_time_seconds{container="web",namespace="default",pod="shell"}' in first, first
        assert first['pod_memory_working_set_bytes{namespace="default",pod="shell"}'] >= first[key]
        wait_for(lambda: scrape()["node_cpu_usage_seconds_total"] > first["node_cpu_usage_seconds_total"], 20, 0.5, what="node CPU counter rising")

        # exec over SPDY (remotecommand v4): output on stdout/stderr, the exit code in the Status.
        out, err, status = exec_(stream_port, host, "/exec/default/shell/main?command=sh&command=-c&command=echo+hi%3B+echo+oops+%3E%262%3B+exit+3"
                                 "&output=1&error=1", cert)
        st = json.loads(status)
        assert out == b"hi\n" and err == b"oops\n", (out, err)
        assert st["status"] == "Failure" and st["reason"] == "NonZeroExitCode" and st["details"]["causes"][0]["message"] == "3", st
        # stdin, and its end (FIN) reaching the command.
        out, _, status = exec_(stream_port, host, "/exec/default/shell/main?command=sort&command=-r&input=1&output=1&error=1", cert,
                               stdin=b"apple\ncherry\nbanana\n")
        assert out == b"cherry\nbanana\napple\n" and json.loads(status)["status"] == "Success", (out, status)
        # A terminal: the size sent on the resize stream is the terminal's.
        out, _, status = exec_(stream_port, host, "/exec/default/shell/main?command=sh&command=-c&command=sleep+1%3B+stty+size"
                               "&output=1&tty=1", cert, tty=(123, 45))
        assert out.strip() == b"45 123" and json.loads(status)["status"] == "Success", (out, status)
        # A container that does not exist: the reason on the error stream.
        _, _, status = exec_(stream_port, host, "/exec/default/shell/nope?command=true&output=1&error=1", cert)
        assert b"nope" in status, status

        # port-forward over SPDY (portforward.k8s.io): an error and a data stream per connection.
        c = SPDYClient(stream_port, "/portForward/default/shell", host, "portforward.k8s.io", cert)
        try:
            assert "X-Stream-Protocol-Version: portforward.k8s.io" in c.response, c.response
            e = c.open({"streamtype": "error", "port": str(web_port), "requestid": "0"})
            d = c.open({"streamtype": "data", "port": str(web_port), "requestid": "0"})
            assert c.until(lambda: {e, d} <= c.replied)
            c.send(d, b"GET /index.html HTTP/1.0\r\n\r\n")
            c.until(lambda: d in c.finished)
            assert b"200 OK" in c.data[d] and b"hello-from-the-pod" in c.data[d], c.data[d][:300]
        finally:
            c.close()

        # A client that offers only protocols the server does not speak is refused.
        try:
            SPDYClient(stream_port, "/exec/default/shell/main?command=true&output=1", host, "v99.channel.k8s.io", cert).close()
            raise AssertionError("an unknown stream protocol was accepted")
        except (UpgradeRefused, OSError):
            pass
        edge.stop()
    finally:
        cloud.stop()
