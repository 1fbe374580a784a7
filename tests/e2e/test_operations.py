"""The operations CLI as an operator uses it: `swiftedge init` on the cloud, `swiftedge join` on
an edge machine (with a real containerd), `swiftedge reset` on both, and the errors a join gives
for a wrong, expired or malformed token and an unreachable address. Everything lives in the
test's temporary directory (`--config-dir`, `--data-dir`, `--systemd-dir`) and on loopback."""
import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, Kubectl, free_port, kubectl_binaries, wait_for
from test_edged import containerd  # noqa: F401  (module fixture: a private containerd)


def swiftedge(*args, check=True, timeout=180):
    r = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"swiftedge {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(token: str, exp: int, key: bytes = b"not-this-cloud's-key") -> str:
    """A token with the cloud's CA hash but a JWT signed with another key."""
    header, payload = b64(b'{"alg":"HS256","typ":"JWT"}'), b64(json.dumps({"exp": exp}).encode())
    sig = b64(hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    return f"{token.split('.')[0]}.{header}.{payload}.{sig}"


def node_ready(k, name):
    r = k.run("get", "node", name, "-o", "json", check=False)
    if r.returncode != 0:
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in json.loads(r.stdout)["status"]["conditions"])


def test_init_join_reset(containerd, tmp_path):  # noqa: F811
    cloud_dir, edge_dir, etc_cloud, etc_edge = tmp_path / "cloud", tmp_path / "edge", tmp_path / "etc-cloud", tmp_path / "etc-edge"
    units = tmp_path / "systemd"
    hub, cert, api, metrics = free_port(), free_port(), free_port(), free_port()
    init = swiftedge("init", "--no-systemd", "--config-dir", str(etc_cloud), "--data-dir", str(cloud_dir), "--advertise-address", "127.0.0.1",
                     "--bind-address", "127.0.0.1", "--cloudhub-port", str(hub), "--cert-port", str(cert), "--api-port", str(api),
                     "--metrics-port", str(metrics))
    try:
        out = init.stdout
        assert "[1/4]" in out and "[4/4] Ready" in out, out
        m = re.search(r"swiftedge join --cloudcore-ipport 127\.0\.0\.1:(\d+) --certport (\d+) --token (\S+)", out)
        assert m and int(m.group(1)) == hub and int(m.group(2)) == cert, out
        token = m.group(3)
        assert (etc_cloud / "config" / "cloudcore.yaml").exists() and (cloud_dir / "cloudcore.pid").exists()
        binaries = kubectl_binaries()
        k = Kubectl(binaries[max(binaries)], max(binaries), cloud_dir / "admin.kubeconfig", tmp_path)
        assert "kube-system" in k("get", "namespaces")
        # A second init refuses to overwrite.
        again = swiftedge("init", "--no-systemd", "--config-dir", str(etc_cloud), "--data-dir", str(cloud_dir), check=False)
        assert again.returncode != 0 and "already set up" in again.stderr, again.stderr

        def join(tok, ipport=f"127.0.0.1:{hub}", certport=cert, extra=()):
            return swiftedge("join", "--cloudcore-ipport", ipport, "--certport", str(certport), "--token", tok,
                             "--edgenode-name", "shop-ops", "--labels", "site=shop,tier=edge", "--config-dir", str(etc_edge),
                             "--data-dir", str(edge_dir), "--pod-logs-dir", str(tmp_path / "pod-logs"),
                             "--remote-runtime-endpoint", f"unix://{containerd.sock}", "--metaserver-port", str(free_port()),
                             "--metrics-port", str(free_port()), *extra, check=False)

        # Each failure names its problem, and leaves nothing behind.
        closed = free_port()
        for bad, expected in [
            (lambda: join("not-a-token"), "malformed token"),
            (lambda: join(forged(token, 4102444800)), "not issued by this cloud"),
            (lambda: join(forged(token, 1700000000)), "token expired"),
            (lambda: join("0" * 64 + "." + token.split(".", 1)[1]), "CA hash mismatch"),
            (lambda: join(token, ipport=f"127.0.0.1:{closed}", certport=closed), f"cannot reach 127.0.0.1:{closed}"),
        ]:
            r = bad()
            assert r.returncode != 0 and expected in r.stderr, (expected, r.stdout, r.stderr)
            assert "Usage:" not in r.stderr, r.stderr
            assert not (etc_edge / "config" / "edgecore.yaml").exists() and not (edge_dir / "certs").exists()
        assert "run `swiftedge gettoken`" in join(forged(token, 1700000000)).stderr

        # Joined: without --no-systemd a unit is written (here systemd does not run, so the node
        # is started in the background instead and the command says so).
        systemd_here = Path("/run/systemd/system").exists()
        r = join(token, extra=(["--no-systemd"] if systemd_here else ["--systemd-dir", str(units)]))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "[5/5]" in r.stdout and "Edge node shop-ops joined" in r.stdout, r.stdout
        if not systemd_here:
            unit = (units / "edgecore.service").read_text()
            # the edge node alone (swiftedge-edge) where it is built beside swiftedge
            edge_bin = BIN.resolve().parent / "swiftedge-edge"
            assert f"ExecStart={edge_bin if edge_bin.exists() else BIN.resolve()} edge --config {etc_edge}/config/edgecore.yaml" in unit, unit
            assert "systemd is not running" in r.stdout
        wait_for(lambda: node_ready(k, "shop-ops"), 30, what="node Ready")
        labels = json.loads(k("get", "node", "shop-ops", "-o", "json"))["metadata"]["labels"]
        assert labels["site"] == "shop" and labels["tier"] == "edge" and "node-role.kubernetes.io/edge" in labels
        config = (etc_edge / "config" / "edgecore.yaml").read_text()
        assert "hostnameOverride: shop-ops" in config and "token: ''" in config, config  # the token is not kept
        # A pod on the node, then reset: process, unit, pods in the runtime, data and config gone.
        k("apply", "-f", "-", input=POD)
        k("wait", "--for=condition=Ready", "pod/ops-pod", "--timeout=60s", timeout=70)
        assert containerd.containers(pod="ops-pod")
        pid = int((edge_dir / "edgecore.pid").read_text())
        r = swiftedge("reset", "edge", "--config-dir", str(etc_edge), "--systemd-dir", str(units))
        assert "[4/4]" in r.stdout and "removed 1 pod sandbox" in r.stdout, r.stdout
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        assert not containerd.containers(pod="ops-pod")
        assert not (edge_dir / "certs").exists() and not (edge_dir / "edge.db").exists()
        assert not (etc_edge / "config" / "edgecore.yaml").exists() and not (units / "edgecore.service").exists()
        # Nothing left that a second join trips over: the same node joins again with a new token.
        token2 = swiftedge("gettoken", "--kubeconfig", str(cloud_dir / "admin.kubeconfig")).stdout.strip()
        r = join(token2, extra=["--no-systemd"])
        assert r.returncode == 0, r.stdout + r.stderr
        wait_for(lambda: node_ready(k, "shop-ops"), 30, what="node Ready after the second join")
        swiftedge("reset", "edge", "--config-dir", str(etc_edge))
    finally:
        r = swiftedge("reset", "--config-dir", str(etc_cloud), check=False)
        if (etc_edge / "config" / "edgecore.yaml").exists():
            swiftedge("reset", "--config-dir", str(etc_edge), check=False)
    assert r.returncode == 0 and "cloud reset" in r.stdout, r.stdout + r.stderr
    assert not cloud_dir.exists() and not (etc_cloud / "config" / "cloudcore.yaml").exists()
    assert "nothing to reset" in swiftedge("reset", "--config-dir", str(etc_cloud)).stdout


def test_config_files_and_defaultconfig(tmp_path):
    """`--defaultconfig` prints KubeEdge-shaped files that `--config` reads back; bad files are refused clearly."""
    edge = swiftedge("edge", "--defaultconfig").stdout
    assert edge.startswith("apiVersion: edgecore.config.kubeedge.io/v1alpha2") and "containerRuntimeEndpoint:" in edge, edge
    cloud = swiftedge("cloud", "--defaultconfig").stdout
    assert "kind: CloudCore" in cloud and "advertiseAddress:" in cloud and "tokenRefreshDuration: 12" in cloud, cloud
    bad = tmp_path / "edgecore.yaml"
    bad.write_text("modules:\n  edgeHub:\n    heartbeat: often\n")
    r = swiftedge("edge", "--config", str(bad), check=False)
    assert r.returncode != 0 and "modules.edgeHub.heartbeat" in r.stderr, r.stderr
    bad.write_text("modules: [unclosed\n")
    r = swiftedge("cloud", "--config", str(bad), check=False)
    assert r.returncode != 0 and str(bad) in r.stderr, r.stderr


POD = """
apiVersion: v1
kind: Pod
metadata: {name: ops-pod}
spec:
  nodeName: shop-ops
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: docker.io/local/busybox:1
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"""
