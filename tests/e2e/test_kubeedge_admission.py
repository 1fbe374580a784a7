"""KubeEdge's admission webhook, as users meet it: in the embedded API server (the same rules
in-process) with real kubectl and KubeEdge's own samples, and `swiftedge admission` as a server
of its own, registered into another API server (which calls it over TLS like any webhook) and
asked directly with AdmissionReviews from Python."""
import base64
import json
import subprocess
from pathlib import Path

import requests

from conftest import BIN, Kubectl, Server, free_port
from kubectl_support import eventually

SHARED = Path(__file__).resolve().parents[3] / "shared" / "kubeedge-crds"
SAMPLES = SHARED / "samples"


def install_crds(k):
    """KubeEdge's CRDs (router, operations, devices) as KubeEdge ships them."""
    for f in sorted((SHARED / "crds").rglob("*.yaml")):
        if any(part in f.parts for part in ("router", "operations", "devices")):
            k("apply", "-f", str(f))
    for crd in ["rules.rules.kubeedge.io", "ruleendpoints.rules.kubeedge.io", "nodeupgradejobs.operations.kubeedge.io",
                "devicemodels.devices.kubeedge.io"]:
        k("wait", "--for=condition=established", f"crd/{crd}", "--timeout=20s")


def denied(k, manifest):
    r = k.run("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert r.returncode != 0, r.stdout
    return r.stderr.strip()


def endpoint(name, type_, **props):
    return {"apiVersion": "rules.kubeedge.io/v1", "kind": "RuleEndpoint", "metadata": {"name": name},
            "spec": {"ruleEndpointType": type_, "properties": props}}


def rule(name, source, source_resource, target, target_resource):
    return {"apiVersion": "rules.kubeedge.io/v1", "kind": "Rule", "metadata": {"name": name},
            "spec": {"source": source, "sourceResource": source_resource, "target": target, "targetResource": target_resource}}


def test_embedded_server_runs_kubeedges_admission(kubectl, server, ns, tmp_path):
    # A copy of the shared kubeconfig: its context's namespace is changed below.
    kc = tmp_path / "kubeconfig"
    kc.write_text(kubectl.kubeconfig.read_text())
    k = Kubectl(kubectl.binary, kubectl.version, kc, tmp_path)
    install_crds(k)
    k.run("config", "set-context", "--current", f"--namespace={ns}")
    for f in ["ruleEndpoint-rest.yaml", "ruleEndpoint-eventbus.yaml", "ruleEndpoint-servicebus.yaml", "rule-rest-eventbus.yaml",
              "rule-eventbus-rest.yaml", "rule-rest-servicebus.yaml"]:
        k("apply", "-f", str(SAMPLES / "router" / f))
    assert denied(k, rule("orphan", "nope", {"path": "/x"}, "my-eventbus", {"topic": "t"})).endswith(
        f'admission webhook "validatedrule.kubeedge.io" denied the request: can\'t get source ruleEndpoint {ns}/nope. '
        f'Reason: ruleendpoints.rules.kubeedge.io "nope" not found')
    assert 'denied the request: source properties exist in Rule %s/my-rule. Path: /test' % ns in \
        denied(k, rule("again", "my-rest", {"path": "/test"}, "my-eventbus", {"topic": "t2"}))
    assert "is not validate" in denied(k, rule("bad-pair", "my-eventbus", {"topic": "q", "node_name": "n"}, "my-servicebus", {"path": "/p"}))
    assert 'validatedruleendpoint.kubeedge.io" denied the request: port must be in range 1-65535' in \
        denied(k, endpoint("bus", "servicebus", service_port="70000"))
    # Rules and RuleEndpoints cannot be updated (KubeEdge refuses UPDATE; failurePolicy Fail).
    assert "unsupported webhook operation UPDATE" in k.run("label", "rule", "my-rule", "x=y", check=False).stderr
    # NodeUpgradeJobs: defaults, version and target checks, an immutable spec.
    job = {"apiVersion": "operations.kubeedge.io/v1alpha1", "kind": "NodeUpgradeJob", "metadata": {"name": f"up-{ns}"},
           "spec": {"version": "v1.16.0", "nodeNames": ["edge-1"]}}
    k("apply", "-f", "-", input=json.dumps(job))
    got = json.loads(k("get", "nodeupgradejob", f"up-{ns}", "-o", "json"))
    assert got["spec"]["concurrency"] == 1 and got["spec"]["timeoutSeconds"] == 300, got["spec"]
    assert "invalid version 1.17" in denied(k, {**job, "metadata": {"name": f"v-{ns}"}, "spec": {"version": "1.17", "nodeNames": ["a"]}})
    assert "both NodeNames and LabelSelector are NOT specified" in denied(k, {**job, "metadata": {"name": f"n-{ns}"}, "spec": {"version": "v1.16.0"}})
    assert "spec fields are not allowed to update once it's created" in \
        k.run("patch", "nodeupgradejob", f"up-{ns}", "--type=merge", "-p", '{"spec":{"version":"v1.17.0"}}', check=False).stderr
    k("delete", "nodeupgradejob", f"up-{ns}")
    # Device models with a duplicate property name are refused.
    model = {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel", "metadata": {"name": "twins"},
             "spec": {"protocol": "modbus", "properties": [{"name": "temp", "type": "INT", "accessMode": "ReadOnly"},
                                                           {"name": "temp", "type": "INT", "accessMode": "ReadOnly"}]}}
    assert 'validatedevicemodel.kubeedge.io" denied the request: property names must be unique.' in denied(k, model)
    # Offline autonomy: pods labelled for it tolerate an unreachable node for ever; others are untouched.
    for name, labels in [("stays", {"app-offline.kubeedge.io": "autonomy"}), ("plain", {})]:
        k("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
                                                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
    tolerations = lambda name: json.loads(k("get", "pod", name, "-o", "json"))["spec"].get("tolerations", [])
    assert {"key": "node.kubernetes.io/unreachable", "operator": "Exists"} in tolerations("stays")
    assert not any(t.get("key") == "node.kubernetes.io/unreachable" and "tolerationSeconds" not in t for t in tolerations("plain"))


def test_swiftedge_admission_serves_and_registers_itself(kubectl, tmp_path):
    srv = Server(tmp_path / "cluster").start()
    port = free_port()
    log = open(tmp_path / "admission.log", "wb")
    proc = subprocess.Popen([str(BIN), "admission", "--kubeconfig", str(srv.kubeconfig), "--host", "127.0.0.1", "--port", str(port),
                             "--cert-dir", str(tmp_path / "certs"), "--url", f"https://127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        k = Kubectl(kubectl.binary, kubectl.version, srv.kubeconfig, tmp_path)
        install_crds(k)
        eventually(lambda: "kubeedge-crds-validate-webhook-configuration" in k("get", "validatingwebhookconfigurations", "-o", "name"), 30,
                   what="the webhook configurations registered")
        hooks = json.loads(k("get", "validatingwebhookconfiguration", "kubeedge-crds-validate-webhook-configuration", "-o", "json"))["webhooks"]
        assert {h["name"] for h in hooks} == {"validatedevice.kubeedge.io", "validatedevicemodel.kubeedge.io", "validatedrule.kubeedge.io",
                                              "validatedruleendpoint.kubeedge.io", "validatenodeupgradejob.kubeedge.io"}
        ca = tmp_path / "certs" / "ca.crt"
        assert all(base64.b64decode(h["clientConfig"]["caBundle"]).decode() == ca.read_text() for h in hooks)
        # Asked directly (an AdmissionReview from Python, verified against the admission CA).
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                  "request": {"uid": "abc", "operation": "CREATE", "namespace": "default", "object": endpoint("b", "servicebus", service_port="0")}}
        r = requests.post(f"https://127.0.0.1:{port}/ruleendpoints", json=review, verify=str(ca), timeout=10)
        assert r.status_code == 200 and r.json()["response"] == {"uid": "abc", "allowed": False, "status": {"message": "port must be in range 1-65535"}}
        wrong = requests.post(f"https://127.0.0.1:{port}/ruleendpoints", data="x", headers={"Content-Type": "text/plain"}, verify=str(ca), timeout=10)
        assert wrong.status_code == 415
        # The API server now calls it over TLS for a user's kubectl (the registered configurations
        # replace the server's in-process copy of the same rules): its refusals reach kubectl.
        assert 'validatedruleendpoint.kubeedge.io" denied the request: port should be integer' in denied(k, endpoint("b", "servicebus", service_port="x"))
        k("apply", "-f", str(SAMPLES / "router" / "ruleEndpoint-servicebus.yaml"))
        calls = lambda: (tmp_path / "admission.log").read_text().count("admission refused")
        before = calls()
        # Until the server's webhook cache has seen the registration, its in-process copy may answer.
        eventually(lambda: "service_port" in denied(k, endpoint("c", "servicebus")) and calls() > before, 10,
                   what="the registered server consulted (its refusal logged)")
    finally:
        try:
            proc.terminate()
            proc.wait(timeout=20)
            log.close()
        finally:
            srv.stop()


def test_cloud_against_an_existing_cluster_registers_the_admission(kubectl, tmp_path):
    """`swiftedge cloud --kubeconfig <cluster> --admission-port P` serves KubeEdge's admission and
    registers it in that cluster: the cluster's API server then calls it for kubectl."""
    from cloudedge import Cloud
    srv = Server(tmp_path / "cluster").start()
    port = free_port()
    cloud = Cloud(tmp_path, ["--kubeconfig", str(srv.kubeconfig), "--admission-port", str(port), "--stream-port", "0"]).start()
    try:
        k = Kubectl(kubectl.binary, kubectl.version, srv.kubeconfig, tmp_path)
        install_crds(k)
        eventually(lambda: f"https://127.0.0.1:{port}/ruleendpoints" in k("get", "validatingwebhookconfiguration",
                                                                        "kubeedge-crds-validate-webhook-configuration", "-o", "json", check=False),
                   30, what="the cloud registered its admission webhook")
        # Until the cluster's webhook cache has seen the registration, its in-process copy may answer.
        eventually(lambda: 'denied the request: port must be in range 1-65535' in denied(k, endpoint("bus", "servicebus", service_port="0"))
                   and "admission refused" in cloud.log.read_text(), 10, what="the cloud's admission server consulted (its refusal logged)")
    finally:
        try:
            cloud.stop()
        finally:
            srv.stop()  # also when the cloud's stop fails
