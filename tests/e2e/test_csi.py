"""CSI at the edge, as a user runs it: `swiftedge cloud`, one `swiftedge edge` on a private
containerd, `kubectl apply` in the cloud.

- The built-in local-path driver (in the edge agent) behind the default StorageClass: a
  StatefulSet's claim gets a volume provisioned through the cloud → edge forwarding
  (CreateVolume on the node the scheduler picked), its data survives the pod's deletion and an
  edge restart made while the cloud is down, and is removed with the claim (reclaim Delete).
- An independent CSI plugin written from the spec in Python (tests/csi/csi_plugin.py),
  registered through the node's plugins_registry: a claim of its class is provisioned through the
  forwarding, attached (VolumeAttachment → ControllerPublishVolume), staged, published into a pod,
  then unpublished, unstaged, detached and deleted; its socket going away unregisters it, a new
  one registers it again.
"""
import json
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from cloudedge import Cloud, Edge
from conftest import BIN, REPO, Kubectl, kubectl_binaries, wait_for
from test_edged import containerd  # noqa: F401  (module fixture: a private containerd)

PLUGIN = REPO / "tests" / "csi" / "csi_plugin.py"


def mounts_under(path):
    p = str(Path(path).resolve())
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4] == p or line.split()[4].startswith(p + "/")]


@pytest.fixture(autouse=True)
def no_stray_edges():
    yield
    subprocess.run(["pkill", "-f", f"{BIN} edge "], check=False)


@pytest.fixture
def cluster(tmp_path, containerd):  # noqa: F811
    cloud = Cloud(tmp_path).start()
    binaries = kubectl_binaries()
    k = Kubectl(binaries[max(binaries)], max(binaries), cloud.kubeconfig, tmp_path)
    edge = Edge(tmp_path, cloud, "store-1", runtime=containerd.sock)
    # Unix socket paths hold 107 bytes: the node's directory (plugins, plugins_registry) is kept short.
    short = Path(tempfile.mkdtemp(prefix="se-csi-", dir="/tmp"))
    edge.dir = short / "edge"
    # Short CSI deadlines and frequent volume stats, so the failure cases and the metrics show quickly.
    base_args = edge.args
    edge.args = lambda token=None, cert_port=None: base_args(token, cert_port) + ["--csi-timeout", "3", "--volume-stats-period", "1"]
    edge.start(cloud.token())
    try:
        wait_for(lambda: "True" in k.run("get", "node", "store-1", "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                                         check=False).stdout, 40, what="node Ready")
        yield cloud, edge, k
    finally:
        edge.stop()
        cloud.stop()
        # Nothing stays mounted below the test's folders, whatever happened.
        for base in (tmp_path, short):
            for m in sorted(mounts_under(base), key=len, reverse=True):
                subprocess.run(["umount", "-l", m], check=False)
        if not mounts_under(short):
            shutil.rmtree(short, ignore_errors=True)


def obj(k, *args):
    return json.loads(k("get", *args, "-o", "json"))


def exists(k, *args):
    return k.run("get", *args, check=False).returncode == 0


def csinode_drivers(k):
    if not exists(k, "csinode", "store-1"):
        return []
    return [d["name"] for d in obj(k, "csinode", "store-1")["spec"].get("drivers") or []]


SET = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: cache}
spec:
  serviceName: cache
  replicas: 1
  selector: {matchLabels: {app: cache}}
  template:
    metadata: {labels: {app: cache}}
    spec:
      hostNetwork: true
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: docker.io/local/busybox:1
        command: ["sh", "-c", "trap 'exit 0' TERM; [ -f /data/first ] || echo $(cat /proc/sys/kernel/random/uuid) > /data/first; while true; do sleep 1; done"]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 50Mi}}
"""


def test_local_path_statefulset(cluster):
    cloud, edge, k = cluster
    # The cloud installs the default class and the driver's CSIDriver; the node registers the driver.
    sc = obj(k, "storageclass", "local-path")
    assert sc["provisioner"] == "local-path.csi.swiftedge.io" and sc["volumeBindingMode"] == "WaitForFirstConsumer"
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert obj(k, "csidriver", "local-path.csi.swiftedge.io")["spec"]["attachRequired"] is False
    wait_for(lambda: "local-path.csi.swiftedge.io" in csinode_drivers(k), 30, what="CSINode lists local-path")
    ids = json.loads(obj(k, "node", "store-1")["metadata"]["annotations"]["csi.volume.kubernetes.io/nodeid"])
    assert ids["local-path.csi.swiftedge.io"] == "store-1"

    k("apply", "-f", "-", input=SET)
    k("wait", "--for=condition=Ready", "pod/cache-0", "--timeout=120s", timeout=130)
    pvc = obj(k, "pvc", "data-cache-0")
    assert pvc["spec"]["storageClassName"] == "local-path" and pvc["status"]["phase"] == "Bound", pvc
    pv = obj(k, "pv", pvc["spec"]["volumeName"])
    assert pv["spec"]["csi"]["driver"] == "local-path.csi.swiftedge.io"
    assert pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == "local-path.csi.swiftedge.io"
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    term = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert term == {"key": "kubernetes.io/hostname", "operator": "In", "values": ["store-1"]}, term
    # No attach for this driver: no VolumeAttachment.
    assert obj(k, "volumeattachments")["items"] == []

    data = edge.dir / "storage" / pv["spec"]["csi"]["volumeHandle"]
    wait_for(lambda: (data / "first").exists(), 30, what="the pod wrote to its volume")
    first = (data / "first").read_text()
    uid = obj(k, "pod", "cache-0")["metadata"]["uid"]
    target = edge.dir / "pods" / uid / "volumes" / "kubernetes.io~csi" / pv["metadata"]["name"] / "mount"
    assert mounts_under(target) == [str(target.resolve())]
    vol_data = json.loads((target.parent / "vol_data.json").read_text())
    assert vol_data["driverName"] == "local-path.csi.swiftedge.io" and vol_data["specVolID"] == pv["metadata"]["name"]
    # kubelet's volume stats, from NodeGetVolumeStats, on the node's metrics endpoint.
    series = re.compile(r'^kubelet_volume_stats_used_bytes\{(?=[^}]*namespace="default")(?=[^}]*persistentvolumeclaim="data-cache-0")[^}]*\} (\d+)', re.M)

    def used_bytes():
        text = urllib.request.urlopen(f"http://127.0.0.1:{edge.metrics_port}/metrics", timeout=5).read().decode()
        m = series.search(text)
        return int(m.group(1)) if m and int(m.group(1)) > 0 else None
    wait_for(used_bytes, 20, what="kubelet_volume_stats_used_bytes of the claim")

    # The pod goes: its volume is unpublished, its replacement finds the data.
    k("delete", "pod", "cache-0", "--wait=true", timeout=60)
    wait_for(lambda: exists(k, "pod", "cache-0") and obj(k, "pod", "cache-0")["metadata"]["uid"] != uid, 60, what="cache-0 recreated")
    assert mounts_under(target) == [] and not target.parent.exists()
    k("wait", "--for=condition=Ready", "pod/cache-0", "--timeout=60s", timeout=70)
    assert (data / "first").read_text() == first

    # The edge restarts while the cloud is down: the pod and its volume carry on.
    uid = obj(k, "pod", "cache-0")["metadata"]["uid"]
    target = edge.dir / "pods" / uid / "volumes" / "kubernetes.io~csi" / pv["metadata"]["name"] / "mount"
    cloud.stop()
    edge.stop()
    edge.start()
    wait_for(lambda: "local-path CSI driver listening" in edge.log.read_text(errors="replace"), 30, what="driver up again offline")
    assert mounts_under(target) == [str(target.resolve())]
    assert (target / "first").read_text() == first
    cloud.start()
    wait_for(lambda: "True" in k.run("get", "node", "store-1", "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                                     check=False).stdout, 60, what="node Ready again")
    k("wait", "--for=condition=Ready", "pod/cache-0", "--timeout=60s", timeout=70)
    assert (data / "first").read_text() == first

    # Set and claim deleted: the volume is deleted on the node (reclaim Delete), data and object.
    k("delete", "statefulset", "cache", "--wait=true", timeout=60)
    k("delete", "pvc", "data-cache-0", "--wait=true", timeout=60)
    wait_for(lambda: not exists(k, "pv", pv["metadata"]["name"]), 60, what="volume deleted")
    wait_for(lambda: not data.exists(), 10, what="volume data removed")
    assert mounts_under(edge.dir) == []


PY_CLASS = """
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: py.csi.test}
spec: {attachRequired: true, podInfoOnMount: true}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: py-csi}
provisioner: py.csi.test
reclaimPolicy: Delete
volumeBindingMode: Immediate
parameters: {flavour: test}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: py-claim}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: py-csi
  resources: {requests: {storage: 20Mi}}
"""

PY_POD = """
apiVersion: v1
kind: Pod
metadata: {name: py-user}
spec:
  nodeName: store-1
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: docker.io/local/busybox:1
    command: ["sh", "-c", "trap 'exit 0' TERM; echo hello > /vol/greeting; while true; do sleep 1; done"]
    volumeMounts: [{name: v, mountPath: /vol}]
  volumes:
  - name: v
    persistentVolumeClaim: {claimName: py-claim}
"""


class PyPlugin:
    """tests/csi/csi_plugin.py as the node's plugin: its sockets under the node's directories."""

    def __init__(self, tmp, edge, extra=()):
        self.tmp, self.edge, self.extra = tmp, edge, list(extra)
        self.log = tmp / "pycsi.log"
        self.out = tmp / "pycsi.out"
        self.state = tmp / "pycsi-state"
        self.proc = None

    def start(self):
        sock = self.edge.dir / "plugins" / "py.csi.test" / "csi.sock"
        sock.parent.mkdir(parents=True, exist_ok=True)
        (self.edge.dir / "plugins_registry").mkdir(parents=True, exist_ok=True)
        self.outf = open(self.out, "ab")
        self.proc = subprocess.Popen([sys.executable, str(PLUGIN), "--driver", "py.csi.test", "--node-id", "store-1",
                                      "--socket", str(sock), "--registration-dir", str(self.edge.dir / "plugins_registry"),
                                      "--state-dir", str(self.state), "--log", str(self.log), *self.extra], stdout=self.outf, stderr=subprocess.STDOUT)
        wait_for(lambda: b"listening on" in self.out.read_bytes() or self.proc.poll() is not None, 30, what="python plugin listening")
        assert self.proc.poll() is None, self.out.read_text()
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.outf.close()

    def calls(self):
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def methods(self, ok_only=True):
        return [c["method"] for c in self.calls() if not ok_only or c["code"] == "OK"]


def test_python_plugin_through_the_channel(cluster, tmp_path):
    cloud, edge, k = cluster
    plugin = PyPlugin(tmp_path, edge).start()
    try:
        wait_for(lambda: "py.csi.test" in csinode_drivers(k), 30, what="CSINode lists the python plugin")
        assert "NotifyRegistrationStatus" in plugin.methods()
        notify = [c for c in plugin.calls() if c["method"] == "NotifyRegistrationStatus"][-1]
        assert notify["plugin_registered"] is True, notify

        # Provisioned through the cloud → edge forwarding (Immediate: no pod needed).
        k("apply", "-f", "-", input=PY_CLASS)
        wait_for(lambda: obj(k, "pvc", "py-claim")["status"].get("phase") == "Bound", 60, what="claim bound",
                 detail=lambda: k.run("describe", "pvc", "py-claim", check=False).stdout)
        pv = obj(k, "pv", obj(k, "pvc", "py-claim")["spec"]["volumeName"])
        handle = pv["spec"]["csi"]["volumeHandle"]
        create = [c for c in plugin.calls() if c["method"] == "CreateVolume" and c["code"] == "OK"][0]
        assert create["name"] == pv["metadata"]["name"] and create["parameters"] == {"flavour": "test"}, create
        assert pv["spec"]["csi"]["volumeAttributes"]["pycsi/volume-name"] == pv["metadata"]["name"]

        # A pod: attached first (VolumeAttachment, ControllerPublishVolume), then staged and published.
        k("apply", "-f", "-", input=PY_POD)
        k("wait", "--for=condition=Ready", "pod/py-user", "--timeout=90s", timeout=100)
        vas = obj(k, "volumeattachments")["items"]
        assert len(vas) == 1 and vas[0]["spec"]["nodeName"] == "store-1" and vas[0]["status"]["attached"] is True, vas
        assert vas[0]["status"]["attachmentMetadata"] == {"devicePath": f"/dev/pycsi/{handle}"}
        wait_for(lambda: (plugin.state / "volumes" / handle / "greeting").exists(), 20, what="the pod wrote through the mount")
        seq = [m for m in plugin.methods() if m in ("CreateVolume", "ControllerPublishVolume", "NodeStageVolume", "NodePublishVolume")]
        assert seq[:4] == ["CreateVolume", "ControllerPublishVolume", "NodeStageVolume", "NodePublishVolume"], seq
        publish = [c for c in plugin.calls() if c["method"] == "NodePublishVolume" and c["code"] == "OK"][0]
        # podInfoOnMount: the pod's identity in the publish context, beside what CreateVolume returned.
        assert publish["volume_context"]["csi.storage.k8s.io/pod.name"] == "py-user", publish
        assert publish["volume_context"]["csi.storage.k8s.io/serviceAccount.name"] == "default", publish
        assert publish["volume_context"]["pycsi/volume-name"] == pv["metadata"]["name"], publish
        stage = [c for c in plugin.calls() if c["method"] == "NodeStageVolume" and c["code"] == "OK"][0]
        assert stage["staging_target_path"].endswith("/globalmount") and "/plugins/kubernetes.io/csi/py.csi.test/" in stage["staging_target_path"]

        # The pod goes: unpublished, unstaged, then detached; then the claim: deleted.
        k("delete", "pod", "py-user", "--wait=true", timeout=60)
        wait_for(lambda: obj(k, "volumeattachments")["items"] == [], 60, what="VolumeAttachment gone")
        methods = plugin.methods()
        for m in ("NodeUnpublishVolume", "NodeUnstageVolume", "ControllerUnpublishVolume"):
            assert m in methods, methods
        assert methods.index("NodeUnpublishVolume") < methods.index("NodeUnstageVolume") < methods.index("ControllerUnpublishVolume"), methods
        assert mounts_under(edge.dir) == []
        k("delete", "pvc", "py-claim", "--wait=true", timeout=60)
        wait_for(lambda: not exists(k, "pv", pv["metadata"]["name"]), 60, what="volume deleted")
        assert "DeleteVolume" in plugin.methods()
        assert not (plugin.state / "volumes" / handle).exists()

        # The plugin stops (its sockets go): unregistered; started again: registered again.
        plugin.stop()
        wait_for(lambda: "py.csi.test" not in csinode_drivers(k), 30, what="driver dropped from the CSINode")
        plugin.start()
        wait_for(lambda: "py.csi.test" in csinode_drivers(k), 30, what="driver registered again")
    finally:
        plugin.stop()


def test_plugin_that_hangs_then_crashes(cluster, tmp_path):
    cloud, edge, k = cluster
    plugin = PyPlugin(tmp_path, edge, extra=["--hang", "NodePublishVolume"]).start()
    try:
        wait_for(lambda: "py.csi.test" in csinode_drivers(k), 30, what="CSINode lists the python plugin")
        k("apply", "-f", "-", input=PY_CLASS)
        wait_for(lambda: obj(k, "pvc", "py-claim")["status"].get("phase") == "Bound", 60, what="claim bound")
        k("apply", "-f", "-", input=PY_POD)

        def waiting():
            statuses = obj(k, "pod", "py-user").get("status", {}).get("containerStatuses") or []
            return [s.get("state", {}).get("waiting") or {} for s in statuses]
        # The publish call hangs: the node's deadline ends it, the pod waits and says why.
        wait_for(lambda: any(w.get("reason") == "ContainerCreating" and "DEADLINE_EXCEEDED" in w.get("message", "") for w in waiting()),
                 60, what="pod waiting on the hung NodePublishVolume", detail=lambda: str(waiting()))
        msgs = k("get", "events", "--field-selector", "involvedObject.name=py-user,reason=FailedMount", "-o", "jsonpath={.items[*].message}")
        assert "MountVolume.SetUp failed" in msgs, msgs
        hung = [c for c in plugin.calls() if c["method"] == "NodePublishVolume"]
        assert hung and all(c.get("hung") for c in hung), hung

        # The plugin dies mid-call and comes back healthy: the node retries and the pod starts.
        plugin.stop()
        plugin.extra = []
        plugin.start()
        k("wait", "--for=condition=Ready", "pod/py-user", "--timeout=90s", timeout=100)
        target_mounts = [m for m in mounts_under(edge.dir) if m.endswith("/mount")]
        assert len(target_mounts) == 1, mounts_under(edge.dir)

        k("delete", "pod", "py-user", "--wait=true", timeout=60)
        wait_for(lambda: obj(k, "volumeattachments")["items"] == [], 60, what="VolumeAttachment gone")
        assert mounts_under(edge.dir) == []  # nothing half-mounted left behind
    finally:
        plugin.stop()
