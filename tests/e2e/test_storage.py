"""Storage at the edge, as a user runs it: `swiftedge cloud` (embedded API server and control
plane), one `swiftedge edge` on a private containerd, `kubectl apply` in the cloud.

- A StatefulSet with volumeClaimTemplates on `local` PersistentVolumes (a WaitForFirstConsumer
  class without a provisioner): the claims are bound by the control plane once the scheduler
  picked the node, the pod writes to its volume, the data survives the pod's deletion, the volume
  is Released (Retain) when the claim goes; a claim that can never bind stays Pending with the reason.
- A ConfigMap mounted in a running pod: a change in the cloud reaches the file in the container
  atomically (kubelet's `..data` swap) within 2 s, and also when it was made while the node was offline.
- A subPath through a symlink in a volume that leads out of it is refused (CreateContainerConfigError).
"""
import json
import subprocess
import time

import pytest

from cloudedge import Cloud, Edge
from conftest import BIN, Kubectl, kubectl_binaries, wait_for
from test_edged import containerd  # noqa: F401  (module fixture: a private containerd)


@pytest.fixture(autouse=True)
def no_stray_edges():
    yield
    subprocess.run(["pkill", "-f", f"{BIN} edge "], check=False)


@pytest.fixture
def cluster(tmp_path, containerd):  # noqa: F811
    cloud = Cloud(tmp_path).start()
    binaries = kubectl_binaries()
    k = Kubectl(binaries[max(binaries)], max(binaries), cloud.kubeconfig, tmp_path)
    edge = Edge(tmp_path, cloud, "store-1", runtime=containerd.sock).start(cloud.token())
    wait_for(lambda: "True" in k.run("get", "node", "store-1", "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                                     check=False).stdout, 40, what="node Ready")
    yield cloud, edge, k
    edge.stop()
    cloud.stop()


def obj(k, *args):
    return json.loads(k("get", *args, "-o", "json"))


def events(k, name):
    return k("get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "jsonpath={.items[*].message}")


STATIC = """
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: manual}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: disk-small}
spec:
  capacity: {storage: 64Mi}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  persistentVolumeReclaimPolicy: Retain
  local: {path: SMALL}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [store-1]}]
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: disk-large}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  persistentVolumeReclaimPolicy: Retain
  local: {path: LARGE}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [store-1]}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      hostNetwork: true
      terminationGracePeriodSeconds: 1
      securityContext: {fsGroup: 2000}
      containers:
      - name: main
        image: docker.io/local/busybox:1
        command: ["sh", "-c", "trap 'exit 0' TERM; [ -f /data/first ] || echo $POD_NAME-$(cat /proc/sys/kernel/random/uuid) > /data/first; while true; do sleep 1; done"]
        env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: manual
      resources: {requests: {storage: 100Mi}}
"""


def test_statefulset_on_local_volumes(cluster, tmp_path):
    cloud, edge, k = cluster
    small, large = tmp_path / "disks" / "small", tmp_path / "disks" / "large"
    small.mkdir(parents=True)
    large.mkdir(parents=True)
    k("apply", "-f", "-", input=STATIC.replace("SMALL", str(small)).replace("LARGE", str(large)))
    k("wait", "--for=condition=Ready", "pod/db-0", "--timeout=90s", timeout=100)
    pvc = obj(k, "pvc", "data-db-0")
    # 100Mi does not fit the 64Mi volume: the smallest that fits is taken.
    assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["volumeName"] == "disk-large", pvc
    assert pvc["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == "store-1"
    assert "kubernetes.io/pvc-protection" in pvc["metadata"]["finalizers"]
    assert obj(k, "pv", "disk-large")["status"]["phase"] == "Bound"
    assert obj(k, "pv", "disk-small")["status"]["phase"] == "Available"
    wait_for(lambda: (large / "first").exists(), 20, what="the pod wrote to its volume")
    first = (large / "first").read_text()
    assert first.startswith("db-0-"), first
    # fsGroup: the volume's files belong to the pod's group.
    assert (large / "first").stat().st_gid == 2000 and large.stat().st_gid == 2000

    # The pod goes; its replacement finds the data (it writes only when the file is missing).
    uid = obj(k, "pod", "db-0")["metadata"]["uid"]
    k("delete", "pod", "db-0", "--wait=true", timeout=60)
    wait_for(lambda: obj(k, "pod", "db-0")["metadata"]["uid"] != uid if k.run("get", "pod", "db-0", check=False).returncode == 0 else False,
             60, what="db-0 recreated")
    k("wait", "--for=condition=Ready", "pod/db-0", "--timeout=60s", timeout=70)
    assert (large / "first").read_text() == first

    # A claim in use is kept while its pod runs; once the set is gone it goes, and the volume is Released.
    k("delete", "pvc", "data-db-0", "--wait=false")
    assert obj(k, "pvc", "data-db-0")["metadata"].get("deletionTimestamp")
    k("delete", "statefulset", "db", "--wait=true", timeout=60)
    wait_for(lambda: k.run("get", "pvc", "data-db-0", check=False).returncode != 0, 60, what="claim deleted once unused")
    wait_for(lambda: obj(k, "pv", "disk-large")["status"]["phase"] == "Released", 30, what="volume Released")
    assert (large / "first").read_text() == first  # Retain keeps the data

    # A claim nothing can serve stays Pending, with the reason.
    k("apply", "-f", "-", input="""
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: huge}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: missing-class
  resources: {requests: {storage: 1Ti}}
""")
    wait_for(lambda: 'storageclass.storage.k8s.io "missing-class" not found' in events(k, "huge"), 20, what="ProvisioningFailed event")
    assert obj(k, "pvc", "huge")["status"]["phase"] == "Pending"
    # A pod mounting it is not scheduled, and says why.
    k("run", "needs-huge", "--image=docker.io/local/busybox:1", "--restart=Never", "--overrides",
      json.dumps({"spec": {"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "huge"}}],
                           "containers": [{"name": "needs-huge", "image": "docker.io/local/busybox:1", "command": ["sleep", "3600"],
                                           "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]}}))
    wait_for(lambda: "pod has unbound immediate PersistentVolumeClaims" in events(k, "needs-huge"), 20, what="FailedScheduling")


WATCHED = """
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: "MODE"}
---
apiVersion: v1
kind: Pod
metadata: {name: watcher}
spec:
  nodeName: store-1
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: docker.io/local/busybox:1
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do cat /etc/settings/mode > /out/seen.tmp; mv /out/seen.tmp /out/seen; sleep 0.1; done"]
    volumeMounts:
    - {name: settings, mountPath: /etc/settings}
    - {name: out, mountPath: /out}
  volumes:
  - name: settings
    configMap: {name: settings}
  - name: out
    hostPath: {path: OUT, type: DirectoryOrCreate}
"""


def test_configmap_files_follow_the_cloud(cluster, tmp_path):
    cloud, edge, k = cluster
    out = tmp_path / "watch-out"
    seen = out / "seen"
    k("apply", "-f", "-", input=WATCHED.replace("OUT", str(out)).replace("MODE", "one"))
    k("wait", "--for=condition=Ready", "pod/watcher", "--timeout=60s", timeout=70)
    wait_for(lambda: seen.exists() and seen.read_text() == "one", 20, what="first value seen in the container")
    # kubelet's layout: the visible name is a link through ..data into a timestamped directory.
    vol = next((edge.dir / "pods").glob("*/volumes/configmap/settings"))
    assert (vol / "mode").is_symlink() and str((vol / "mode").readlink()) == "..data/mode"
    assert (vol / "..data").is_symlink() and str((vol / "..data").readlink()).startswith("..20")

    started = time.time()
    k("apply", "-f", "-", input=WATCHED.replace("OUT", str(out)).replace("MODE", "two"))
    wait_for(lambda: seen.read_text() == "two", 10, what="changed value seen in the container")
    took = time.time() - started
    print(f"\nConfigMap change visible in the container {took:.2f}s after kubectl apply")
    assert took < 2.0, took

    # Made while the node is offline: visible within 2 s of the node being back.
    edge.stop()
    k("apply", "-f", "-", input=WATCHED.replace("OUT", str(out)).replace("MODE", "three"))
    assert seen.read_text() == "two"
    edge.start()
    back = time.time()
    wait_for(lambda: seen.read_text() == "three", 20, what="value changed offline seen after reconnect")
    took_back = time.time() - back
    print(f"ConfigMap changed while the node was offline: visible {took_back:.2f}s after the edge restarted")
    # The restart itself (store, runtime, reconnect) is part of this figure.
    assert took_back < 5.0, took_back
    # Old timestamped directories do not pile up.
    assert len([p for p in vol.iterdir() if p.name.startswith("..20")]) == 1, list(vol.iterdir())


ESCAPE = """
apiVersion: v1
kind: Pod
metadata: {name: escape}
spec:
  nodeName: store-1
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  volumes: [{name: scratch, hostPath: {path: SCRATCH}}]
  containers:
  - name: main
    image: docker.io/local/busybox:1
    command: ["sleep", "3600"]
    volumeMounts: [{name: scratch, mountPath: /host, subPath: escape/etc}]
"""


def test_subpath_cannot_leave_its_volume(cluster, tmp_path):
    cloud, edge, k = cluster
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "escape").symlink_to("/")  # what a container could plant in a volume it writes
    k("apply", "-f", "-", input=ESCAPE.replace("SCRATCH", str(scratch)))

    def waiting():
        p = obj(k, "pod", "escape")
        return [(s.get("state", {}).get("waiting") or {}) for s in p.get("status", {}).get("containerStatuses", [])]
    wait_for(lambda: any(w.get("reason") == "CreateContainerConfigError" and "leaves its volume" in w.get("message", "") for w in waiting()),
             60, what="subPath refused", detail=lambda: str(waiting()))
