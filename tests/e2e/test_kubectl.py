"""Real kubectl (1.32 and 1.37) against a freshly started SwiftEdge API server."""
import json
import time
from pathlib import Path

import pytest
import yaml

from conftest import client_version, kubectl_binaries

SHARED = Path(__file__).resolve().parents[3] / "shared" / "kubeedge-crds"


def test_both_kubectl_versions_present():
    binaries = kubectl_binaries()  # raises when a binary reports another version than its key
    assert set(binaries) == {"1.32", "1.37"}, binaries
    assert {v: client_version(b)[0] for v, b in binaries.items()} == {"1.32": "1.32", "1.37": "1.37"}, binaries


def deployment(name, replicas=3, image="nginx:1.25"):
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: app
        image: {image}
        ports:
        - containerPort: 80
      - name: sidecar
        image: busybox:1.36
"""


def test_version_and_discovery(kubectl):
    out = kubectl("version", "-o", "json")
    assert json.loads(out)["serverVersion"]["minor"] == "32"
    res = kubectl("api-resources", "--no-headers")
    for needle in ["deployments", "leases", "endpointslices", "customresourcedefinitions", "clusterroles"]:
        assert needle in res
    assert "pods" in kubectl("api-resources", "--api-group=", "-o", "name")


def test_get_namespaces_table(kubectl):
    out = kubectl("get", "namespaces")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "AGE"]
    names = {l.split()[0]: l.split()[1] for l in lines[1:]}
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"]:
        assert names[ns] == "Active"
    # Every seeded namespace has its `default` ServiceAccount.
    sas = kubectl("get", "serviceaccounts", "-n", "kube-system", "-o", "name").split()
    assert "serviceaccount/default" in sas, sas


def test_create_get_list_delete(kubectl, ns):
    out = kubectl("create", "configmap", "c1", "--from-literal=a=1", "-n", ns)
    assert "configmap/c1 created" in out
    obj = json.loads(kubectl("get", "cm", "c1", "-n", ns, "-o", "json"))
    md = obj["metadata"]
    assert obj["data"] == {"a": "1"}
    assert len(md["uid"]) == 36 and md["creationTimestamp"].endswith("Z") and int(md["resourceVersion"]) > 0
    out = kubectl("get", "cm", "-n", ns)
    assert out.splitlines()[0].split() == ["NAME", "DATA", "AGE"]
    assert out.splitlines()[1].split()[:2] == ["c1", "1"]
    p = kubectl.run("create", "configmap", "c1", "-n", ns, check=False)
    assert p.returncode != 0 and "already exists" in p.stderr
    assert 'configmap "c1" deleted' in kubectl("delete", "cm", "c1", "-n", ns)
    p = kubectl.run("get", "cm", "c1", "-n", ns, check=False)
    assert p.returncode != 0 and 'configmaps "c1" not found' in p.stderr


def test_apply_client_side(kubectl, ns, tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text(deployment("web"))
    assert "deployment.apps/web created" in kubectl("apply", "-n", ns, "-f", str(f))
    assert "deployment.apps/web unchanged" in kubectl("apply", "-n", ns, "-f", str(f))
    f.write_text(deployment("web", replicas=2, image="nginx:1.26"))
    assert "deployment.apps/web configured" in kubectl("apply", "-n", ns, "-f", str(f))
    obj = json.loads(kubectl("get", "deploy", "web", "-n", ns, "-o", "json"))
    assert obj["spec"]["replicas"] == 2
    containers = obj["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["app", "sidecar"]
    assert containers[0]["image"] == "nginx:1.26"
    assert obj["metadata"]["generation"] == 2
    assert "kubectl.kubernetes.io/last-applied-configuration" in obj["metadata"]["annotations"]
    # Defaults a real apiserver fills in.
    assert obj["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == "25%"
    assert containers[0]["ports"][0]["protocol"] == "TCP"
    wide = kubectl("get", "deploy", "-n", ns, "-o", "wide").splitlines()
    assert wide[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert "app,sidecar" in wide[1] and "app=web" in wide[1]


def test_apply_server_side(kubectl, ns, tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text(deployment("ssa"))
    assert "serverside-applied" in kubectl("apply", "--server-side", "-n", ns, "-f", str(f))
    obj = json.loads(kubectl("get", "deploy", "ssa", "-n", ns, "-o", "json", "--show-managed-fields"))
    mf = obj["metadata"]["managedFields"]
    assert any(m["manager"] == "kubectl" and m["operation"] == "Apply" for m in mf)
    f.write_text(deployment("ssa", replicas=5))
    assert "serverside-applied" in kubectl("apply", "--server-side", "-n", ns, "-f", str(f))
    assert kubectl("get", "deploy", "ssa", "-n", ns, "-o", "jsonpath={.spec.replicas}") == "5"


def test_patch_types_and_scale(kubectl, ns, tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text(deployment("p"))
    kubectl("apply", "-n", ns, "-f", str(f))
    kubectl("patch", "deploy", "p", "-n", ns, "-p", '{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"nginx:2"}]}}}}')
    obj = json.loads(kubectl("get", "deploy", "p", "-n", ns, "-o", "json"))
    assert [(c["name"], c["image"]) for c in obj["spec"]["template"]["spec"]["containers"]] == [("app", "nginx:2"), ("sidecar", "busybox:1.36")]
    kubectl("patch", "deploy", "p", "-n", ns, "--type=merge", "-p", '{"metadata":{"labels":{"x":"y"}}}')
    kubectl("patch", "deploy", "p", "-n", ns, "--type=json", "-p", '[{"op":"replace","path":"/spec/replicas","value":4}]')
    obj = json.loads(kubectl("get", "deploy", "p", "-n", ns, "-o", "json"))
    assert obj["metadata"]["labels"]["x"] == "y" and obj["spec"]["replicas"] == 4
    assert "deployment.apps/p scaled" in kubectl("scale", "deploy", "p", "-n", ns, "--replicas=7")
    assert kubectl("get", "deploy", "p", "-n", ns, "-o", "jsonpath={.spec.replicas}") == "7"
    scale = json.loads(kubectl("get", "deploy", "p", "-n", ns, "--subresource=scale", "-o", "json"))
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 7 and scale["status"]["selector"] == "app=p"
    p = kubectl.run("patch", "deploy", "p", "-n", ns, "--type=json", "-p", '[{"op":"test","path":"/spec/replicas","value":1}]', check=False)
    assert p.returncode != 0


def test_conflict_on_stale_resource_version(kubectl, ns, tmp_path):
    kubectl("create", "configmap", "cc", "--from-literal=a=1", "-n", ns)
    stale = json.loads(kubectl("get", "cm", "cc", "-n", ns, "-o", "json"))
    kubectl("patch", "cm", "cc", "-n", ns, "-p", '{"data":{"a":"2"}}')
    stale["data"]["a"] = "3"
    f = tmp_path / "stale.json"
    f.write_text(json.dumps(stale))
    p = kubectl.run("replace", "-f", str(f), check=False)
    assert p.returncode != 0
    assert "the object has been modified" in p.stderr and "Conflict" in p.stderr


def test_selectors_and_pagination(kubectl, ns):
    for i in range(7):
        kubectl("create", "configmap", f"m{i}", f"--from-literal=i={i}", "-n", ns)
        kubectl("label", "cm", f"m{i}", f"parity={'even' if i % 2 == 0 else 'odd'}", "-n", ns)
    names = kubectl("get", "cm", "-n", ns, "-l", "parity=even", "-o", "name").split()
    assert names == [f"configmap/m{i}" for i in (0, 2, 4, 6)]
    names = kubectl("get", "cm", "-n", ns, "-l", "parity in (odd),parity!=even", "-o", "name").split()
    assert names == [f"configmap/m{i}" for i in (1, 3, 5)]
    names = kubectl("get", "cm", "-n", ns, "--field-selector", "metadata.name=m3", "-o", "name").split()
    assert names == ["configmap/m3"]
    # kubectl follows continue tokens page by page.
    names = kubectl("get", "cm", "-n", ns, "--chunk-size=2", "-o", "name", "-l", "parity").split()
    assert names == [f"configmap/m{i}" for i in range(7)]
    p = kubectl.run("get", "cm", "-n", ns, "--field-selector", "spec.bogus=1", check=False)
    assert p.returncode != 0 and "field label not supported" in p.stderr


def test_pod_field_selectors_and_table(kubectl, ns, tmp_path):
    for name, node in [("a", "n1"), ("b", "n2"), ("c", "")]:
        spec = {"containers": [{"name": "c", "image": "busybox"}]}
        if node:
            spec["nodeName"] = node
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}))
        kubectl("create", "-n", ns, "-f", str(f))
    assert kubectl("get", "pods", "-n", ns, "--field-selector", "spec.nodeName=n1", "-o", "name").split() == ["pod/a"]
    assert kubectl("get", "pods", "-n", ns, "--field-selector", "status.phase=Pending,spec.nodeName!=n1", "-o", "name").split() == ["pod/b", "pod/c"]
    out = kubectl("get", "pods", "-n", ns, "-o", "wide").splitlines()
    assert out[0].split()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert "NODE" in out[0]
    row = [l for l in out if l.startswith("a ")][0].split()
    assert row[1:3] == ["0/1", "Pending"] and "n1" in row
    all_ns = kubectl("get", "pods", "-A").splitlines()
    assert all_ns[0].split()[0] == "NAMESPACE" and any(l.startswith(ns) for l in all_ns)


def test_finalizers_keep_object_until_removed(kubectl, ns, tmp_path):
    f = tmp_path / "f.json"
    f.write_text(json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fin", "finalizers": ["example.com/hold"]}}))
    kubectl("create", "-n", ns, "-f", str(f))
    kubectl("delete", "cm", "fin", "-n", ns, "--wait=false")
    obj = json.loads(kubectl("get", "cm", "fin", "-n", ns, "-o", "json"))
    assert obj["metadata"]["deletionTimestamp"]
    p = kubectl.run("patch", "cm", "fin", "-n", ns, "--type=json", "-p", '[{"op":"add","path":"/metadata/finalizers/-","value":"new"}]', check=False)
    assert p.returncode != 0 and "no new finalizers" in p.stderr
    kubectl("patch", "cm", "fin", "-n", ns, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    p = kubectl.run("get", "cm", "fin", "-n", ns, check=False)
    assert p.returncode != 0 and "NotFound" in p.stderr


def test_graceful_pod_delete(kubectl, ns, tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "g"},
                             "spec": {"nodeName": "edge-1", "containers": [{"name": "c", "image": "busybox"}]}}))
    kubectl("create", "-n", ns, "-f", str(f))
    kubectl("delete", "pod", "g", "-n", ns, "--wait=false")
    obj = json.loads(kubectl("get", "pod", "g", "-n", ns, "-o", "json"))
    assert obj["metadata"]["deletionGracePeriodSeconds"] == 30 and obj["metadata"]["deletionTimestamp"]
    assert "Terminating" in kubectl("get", "pod", "g", "-n", ns)
    # What the node agent does once the containers are gone.
    kubectl("delete", "pod", "g", "-n", ns, "--grace-period=0", "--force")
    assert kubectl.run("get", "pod", "g", "-n", ns, check=False).returncode != 0


def test_get_watch_sees_changes(kubectl, ns):
    w = kubectl.popen("get", "cm", "-n", ns, "-w", "--request-timeout=20s")
    try:
        kubectl("create", "configmap", "w1", "-n", ns)
        seen = []
        for line in w.stdout:
            seen.append(line.split()[0])
            if seen.count("w1") == 1:
                kubectl("label", "cm", "w1", "-n", ns, "k=v")
            if seen.count("w1") >= 2:
                break
        assert seen[0] == "NAME" and seen.count("w1") >= 2
    finally:
        w.kill()


CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    additionalPrinterColumns:
    - {name: Size, type: string, jsonPath: .spec.size}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: string, enum: [small, large]}
              replicas: {type: integer, minimum: 0, default: 1}
              color: {type: string, default: blue}
          status:
            type: object
            properties:
              replicas: {type: integer}
"""


def test_crd_lifecycle(kubectl, ns, tmp_path):
    f = tmp_path / "crd.yaml"
    f.write_text(CRD)
    kubectl("apply", "-f", str(f))
    kubectl("wait", "--for=condition=established", "crd/widgets.example.com", "--timeout=20s")
    w = tmp_path / "w.yaml"
    w.write_text("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: small}\n")
    assert "widget.example.com/w1 created" in kubectl("apply", "-n", ns, "-f", str(w))
    out = kubectl("get", "widgets", "-n", ns).splitlines()
    assert out[0].split() == ["NAME", "SIZE", "REPLICAS"] and out[1].split() == ["w1", "small", "1"]
    obj = json.loads(kubectl("get", "wd", "w1", "-n", ns, "-o", "json"))
    assert obj["spec"]["color"] == "blue"  # defaulted
    w.write_text("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: large}\n")
    assert "configured" in kubectl("apply", "-n", ns, "-f", str(w))
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w2}\nspec: {size: small, bogus: 1}\n")
    p = kubectl.run("apply", "-n", ns, "-f", str(bad), check=False)
    assert p.returncode != 0 and 'unknown field "spec.bogus"' in p.stderr
    bad.write_text("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w3}\nspec: {size: huge}\n")
    p = kubectl.run("apply", "-n", ns, "-f", str(bad), check=False)
    assert p.returncode != 0 and "Unsupported value" in p.stderr
    kubectl("scale", "widget", "w1", "-n", ns, "--replicas=3")
    assert kubectl("get", "widget", "w1", "-n", ns, "-o", "jsonpath={.spec.replicas}") == "3"
    kubectl("delete", "crd", "widgets.example.com")
    p = kubectl.run("get", "widgets", "-n", ns, check=False)
    assert p.returncode != 0


def test_kubeedge_crds_and_samples_apply_unchanged(kubectl):
    crds = sorted((SHARED / "crds").rglob("*.yaml"))
    assert len(crds) >= 10
    for f in crds:
        out = kubectl("apply", "-f", str(f))
        assert "created" in out or "unchanged" in out or "configured" in out, out
    for f in crds:
        doc = yaml.safe_load(f.read_text())
        kubectl("wait", "--for=condition=established", f"crd/{doc['metadata']['name']}", "--timeout=20s")
    # RuleEndpoints before the Rules that name them: KubeEdge's admission (in the embedded server)
    # refuses a Rule whose endpoints do not exist yet, as on KubeEdge.
    samples = sorted((SHARED / "samples").rglob("*.yaml"), key=lambda f: ("ruleEndpoint" not in f.name, str(f)))
    for f in samples:
        kubectl("apply", "-f", str(f))
    for f in samples:
        doc = yaml.safe_load(f.read_text())
        kind = doc["kind"].lower()
        out = kubectl("get", kind, doc["metadata"]["name"], *(["-n", doc["metadata"].get("namespace", "default")]))
        assert doc["metadata"]["name"] in out
    for kind in ["devices", "devicemodels", "devicestatuses", "objectsyncs", "clusterobjectsyncs", "nodegroups",
                 "edgeapplications", "rules", "ruleendpoints", "nodeupgradejobs", "imageprepulljobs"]:
        kubectl("get", kind, "-A")


def test_namespace_deletion_drains(kubectl):
    kubectl("create", "namespace", "doomed-" + kubectl.version.replace(".", ""))
    name = "doomed-" + kubectl.version.replace(".", "")
    kubectl("create", "configmap", "x", "-n", name)
    kubectl("create", "secret", "generic", "s", "--from-literal=a=b", "-n", name)
    out = kubectl("delete", "namespace", name, "--timeout=30s")
    assert f'namespace "{name}" deleted' in out
    assert kubectl.run("get", "namespace", name, check=False).returncode != 0
    p = kubectl.run("delete", "namespace", "default", check=False)
    assert p.returncode != 0 and "Forbidden" in p.stderr


def owned(name, owner_uid, owner_name):
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": owner_name, "uid": owner_uid, "blockOwnerDeletion": True}]}})


@pytest.mark.parametrize("cascade", ["background", "foreground", "orphan"])
def test_garbage_collection(kubectl, ns, tmp_path, cascade):
    kubectl("create", "configmap", "owner", "-n", ns)
    uid = kubectl("get", "cm", "owner", "-n", ns, "-o", "jsonpath={.metadata.uid}")
    f = tmp_path / "dep.json"
    f.write_text(owned("dep", uid, "owner"))
    kubectl("create", "-n", ns, "-f", str(f))
    kubectl("delete", "cm", "owner", "-n", ns, f"--cascade={cascade}", "--timeout=30s")
    if cascade == "orphan":
        dep = json.loads(kubectl("get", "cm", "dep", "-n", ns, "-o", "json"))
        assert "ownerReferences" not in dep["metadata"]
    else:
        kubectl("wait", "--for=delete", "cm/dep", "-n", ns, "--timeout=20s")
        assert kubectl.run("get", "cm", "dep", "-n", ns, check=False).returncode != 0


def test_dependent_created_after_its_owner_is_collected(kubectl, ns, tmp_path):
    # A controller working from a stale cache can create a dependent after the owner is gone.
    kubectl("create", "configmap", "gone", "-n", ns)
    uid = kubectl("get", "cm", "gone", "-n", ns, "-o", "jsonpath={.metadata.uid}")
    kubectl("delete", "cm", "gone", "-n", ns)
    f = tmp_path / "late.json"
    f.write_text(owned("late", uid, "gone"))
    kubectl("create", "-n", ns, "-f", str(f))
    # Same name, new object: a dependent of the old uid is still dangling.
    kubectl("create", "configmap", "gone", "-n", ns)
    f.write_text(owned("late2", uid, "gone"))
    kubectl("create", "-n", ns, "-f", str(f))
    kubectl("wait", "--for=delete", "cm/late", "cm/late2", "-n", ns, "--timeout=20s")


def test_generate_name_and_dry_run(kubectl, ns, tmp_path):
    f = tmp_path / "g.json"
    f.write_text(json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}}))
    name = kubectl("create", "-n", ns, "-f", str(f), "-o", "name").strip()
    assert name.startswith("configmap/gen-") and len(name) == len("configmap/gen-") + 5
    kubectl("create", "configmap", "dry", "-n", ns, "--dry-run=server")
    assert kubectl.run("get", "cm", "dry", "-n", ns, check=False).returncode != 0


def test_apply_rejects_typos_like_kube_apiserver(kubectl, ns, tmp_path):
    f = tmp_path / "typo.yaml"
    f.write_text(deployment("typo").replace("image: nginx:1.25", "image: nginx:1.25\n        imagePullPolicyy: Always"))
    p = kubectl.run("apply", "-n", ns, "-f", str(f), check=False)
    assert p.returncode != 0
    assert 'unknown field "spec.template.spec.containers[0].imagePullPolicyy"' in p.stderr
    # The same manifest without the typo, plus every common pod field, applies.
    f.write_text(deployment("typo"))
    kubectl("apply", "-n", ns, "-f", str(f))
    kubectl("create", "deployment", "imperative", "--image=nginx", "--replicas=2", "-n", ns)
    kubectl("create", "service", "clusterip", "svc", "--tcp=80:8080", "-n", ns)
    kubectl("create", "job", "once", "--image=busybox", "-n", ns)
    kubectl("create", "secret", "generic", "sec", "--from-literal=k=v", "-n", ns)
    out = kubectl("get", "deploy,svc,job,secret", "-n", ns, "-o", "name")
    for name in ["deployment.apps/imperative", "service/svc", "job.batch/once", "secret/sec"]:
        assert name in out


def test_auth_can_i(kubectl):
    assert kubectl("auth", "can-i", "create", "deployments").strip() == "yes"
