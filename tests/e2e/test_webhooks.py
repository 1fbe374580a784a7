"""Admission webhooks called by the embedded API server as kube-apiserver calls them: the test's
own webhook (Python, TLS with its own CA given as caBundle) validates Deployments, mutates Pods
by JSONPatch, and misbehaves on purpose (down, slow, garbage, a patch that renames the object),
driven with real kubectl."""
import base64
import http.server
import json
import ssl
import subprocess
import threading
import time
import uuid

import pytest

from conftest import Kubectl, free_port, kubectl_binaries
from kubectl_support import eventually


def openssl(*args):
    p = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout


class Webhook:
    """An HTTPS admission webhook on 127.0.0.1 recording every AdmissionReview it gets."""

    def __init__(self, tmp_path):
        ca_key, ca_crt, key, csr, crt, ext = (tmp_path / n for n in ("ca.key", "ca.crt", "wh.key", "wh.csr", "wh.crt", "wh.ext"))
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(ca_key),
                "-out", str(ca_crt), "-subj", "/CN=webhook-ca", "-days", "1")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
                "-subj", "/CN=webhook", "-out", str(csr))
        ext.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "1",
                "-extfile", str(ext), "-out", str(crt))
        self.ca_bundle = base64.b64encode(ca_crt.read_bytes()).decode()
        self.reviews = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.reviews.append((self.path, review))
                req = review["request"]
                resp = {"uid": req["uid"], "allowed": True}
                obj = req.get("object") or {}
                if self.path == "/validate":
                    if "team" not in (obj.get("metadata", {}).get("labels") or {}):
                        resp = {"uid": req["uid"], "allowed": False, "status": {"code": 403, "message": "deployments must carry a team label"}}
                    else:
                        resp["warnings"] = ["checked by the test webhook"]
                elif self.path == "/mutate":
                    ops = [{"op": "add", "path": "/metadata/annotations", "value": {}}] if not obj["metadata"].get("annotations") else []
                    ops.append({"op": "add", "path": "/metadata/annotations/webhook.example.com~1seen", "value": req["operation"]})
                    resp.update(patchType="JSONPatch", patch=base64.b64encode(json.dumps(ops).encode()).decode())
                elif self.path == "/rename":
                    ops = [{"op": "replace", "path": "/metadata/name", "value": "renamed"}]
                    resp.update(patchType="JSONPatch", patch=base64.b64encode(json.dumps(ops).encode()).decode())
                elif self.path == "/slow":
                    time.sleep(3)
                elif self.path == "/garbage":
                    body = b"this is not json"
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(crt), str(key))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"https://127.0.0.1:{self.port}{path}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def webhook(tmp_path):
    w = Webhook(tmp_path)
    yield w
    w.stop()


def configuration(kind, name, ns, hooks):
    """A webhook configuration limited to namespace `ns` (the suite's server is shared)."""
    for h in hooks:
        h.setdefault("sideEffects", "None")
        h.setdefault("admissionReviewVersions", ["v1"])
        h["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": ns}}
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": name}, "webhooks": hooks}


def rules(group, version, resource, ops=("CREATE", "UPDATE")):
    return [{"operations": list(ops), "apiGroups": [group], "apiVersions": [version], "resources": [resource]}]


def apply_config(kubectl, config):
    kubectl("create", "-f", "-", input=json.dumps(config))


def test_validating_and_mutating_webhooks(kubectl, ns, webhook):
    v = kubectl.version.replace(".", "")
    vname, mname = f"validate-{v}-{ns}", f"mutate-{v}-{ns}"
    apply_config(kubectl, configuration("ValidatingWebhookConfiguration", vname, ns, [{
        "name": "team-label.example.com", "failurePolicy": "Fail", "rules": rules("apps", "v1", "deployments"),
        "clientConfig": {"url": webhook.url("/validate"), "caBundle": webhook.ca_bundle}}]))
    apply_config(kubectl, configuration("MutatingWebhookConfiguration", mname, ns, [{
        "name": "seen.example.com", "failurePolicy": "Fail", "rules": rules("", "v1", "pods"),
        "clientConfig": {"url": webhook.url("/mutate"), "caBundle": webhook.ca_bundle}}]))
    try:
        assert kubectl("get", "validatingwebhookconfigurations", vname, "-o", "name") == f"validatingwebhookconfiguration.admissionregistration.k8s.io/{vname}\n"
        # In effect within moments (the configuration cache follows the store).
        p = eventually(lambda: kubectl.run("create", "deployment", "web", "--image=busybox", "-n", ns, check=False), 10,
                       "the validating webhook in effect", check=lambda p: p.returncode != 0)
        assert 'admission webhook "team-label.example.com" denied the request: deployments must carry a team label' in p.stderr, p.stderr
        assert "deployment.apps" not in kubectl("get", "deployments", "-n", ns, "-o", "name")
        path, review = webhook.reviews[-1]
        req = review["request"]
        assert path == "/validate" and review["apiVersion"] == "admission.k8s.io/v1" and review["kind"] == "AdmissionReview", review
        assert req["operation"] == "CREATE" and req["kind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}, req
        assert req["resource"] == {"group": "apps", "version": "v1", "resource": "deployments"} and req["namespace"] == ns, req
        assert req["userInfo"]["username"] == "kubernetes-admin" and req["object"]["metadata"]["name"] == "web", req
        # Labelled: admitted, with the webhook's warning shown by kubectl.
        dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"team": "a"}},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
        p = kubectl.run("create", "-n", ns, "-f", "-", input=json.dumps(dep))
        assert "deployment.apps/web created" in p.stdout and "checked by the test webhook" in p.stderr, p
        # An update is checked too: removing the label is refused, nothing changes.
        p = kubectl.run("label", "deployment", "web", "team-", "-n", ns, check=False)
        assert p.returncode != 0 and "deployments must carry a team label" in p.stderr, p.stderr
        assert json.loads(kubectl("get", "deployment", "web", "-n", ns, "-o", "json"))["metadata"]["labels"] == {"team": "a"}
        assert webhook.reviews[-1][1]["request"]["operation"] == "UPDATE" and webhook.reviews[-1][1]["request"]["oldObject"]["metadata"]["labels"] == {"team": "a"}
        # The mutating webhook's patch is applied to pods, on create and on update.
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"nodeName": "nowhere", "containers": [{"name": "c", "image": "busybox"}]}}
        kubectl("create", "-n", ns, "-f", "-", input=json.dumps(pod))
        anns = json.loads(kubectl("get", "pod", "p", "-n", ns, "-o", "json"))["metadata"]["annotations"]
        assert anns == {"webhook.example.com/seen": "CREATE"}, anns
        kubectl("label", "pod", "p", "x=y", "-n", ns)
        assert json.loads(kubectl("get", "pod", "p", "-n", ns, "-o", "json"))["metadata"]["annotations"]["webhook.example.com/seen"] == "UPDATE"
        # Other namespaces are not this configuration's business.
        assert "configmap/free created" in kubectl("create", "configmap", "free", "-n", ns)
    finally:
        kubectl("delete", "validatingwebhookconfiguration", vname, "--ignore-not-found")
        kubectl("delete", "mutatingwebhookconfiguration", mname, "--ignore-not-found")


@pytest.mark.parametrize("path, policy, expect", [
    ("/down", "Fail", "failed calling webhook"),
    ("/down", "Ignore", None),
    ("/slow", "Fail", "failed calling webhook"),
    ("/slow", "Ignore", None),
    ("/garbage", "Fail", "failed calling webhook"),
    ("/rename", "Fail", "returned an invalid patch"),
])
def test_webhook_failures_follow_failure_policy(server, ns, webhook, path, policy, expect, tmp_path):
    """A webhook that is down, too slow (timeoutSeconds 1) or answers garbage: Fail refuses the
    request (500, kube's "failed calling webhook"), Ignore lets it through; a patch that renames
    the object is refused either way. Nothing half-written."""
    # One kubectl is enough here: the behaviour under test is the server's.
    kubectl = Kubectl(kubectl_binaries()["1.37"], "1.37", server.kubeconfig, tmp_path)
    url = webhook.url(path)
    if path == "/down":
        url = f"https://127.0.0.1:{free_port()}/validate"  # nothing listens there
    kind = "MutatingWebhookConfiguration" if path == "/rename" else "ValidatingWebhookConfiguration"
    name = f"policy-{uuid.uuid4().hex[:6]}"
    hooks = [{"name": "flaky.example.com", "failurePolicy": policy, "timeoutSeconds": 1, "rules": rules("", "v1", "configmaps"),
              "clientConfig": {"url": url, "caBundle": webhook.ca_bundle}}]
    if policy == "Ignore":
        # A healthy webhook next to it shows when the configuration is in effect.
        hooks.append({"name": "team-label.example.com", "failurePolicy": "Fail", "rules": rules("", "v1", "configmaps"),
                      "clientConfig": {"url": webhook.url("/validate"), "caBundle": webhook.ca_bundle}})
    apply_config(kubectl, configuration(kind, name, ns, hooks))

    def create(cm_name, labels=None):
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": cm_name, "labels": labels or {}}}
        return kubectl.run("create", "-n", ns, "-f", "-", input=json.dumps(cm), check=False)

    try:
        if expect:
            names = []

            def attempt():
                names.append(f"c-{uuid.uuid4().hex[:6]}")
                return create(names[-1])
            p = eventually(attempt, 10, "the webhook in effect", check=lambda p: p.returncode != 0)
            assert expect in p.stderr and "flaky.example.com" in p.stderr, p.stderr
            assert kubectl.run("get", "configmap", names[-1], "-n", ns, check=False).returncode != 0, "nothing stored"
        else:
            p = eventually(lambda: create(f"c-{uuid.uuid4().hex[:6]}"), 10, "the webhooks in effect", check=lambda p: p.returncode != 0)
            assert "deployments must carry a team label" in p.stderr, p.stderr
            # Ignore: admitted although the flaky webhook failed (down) or timed out (slow).
            t0 = time.time()
            assert "configmap/ok created" in create("ok", {"team": "a"}).stdout
            assert time.time() - t0 < 10
            if path == "/slow":
                assert any(p == "/slow" for p, _ in webhook.reviews), "the slow webhook was called"
    finally:
        kubectl("delete", kind.lower(), name, "--ignore-not-found")


def test_match_conditions_decide_which_requests_reach_the_webhook(kubectl, ns, webhook):
    """matchConditions (CEL) as kube-apiserver evaluates them: a false condition skips the
    webhook, all true calls it; a condition that fails to evaluate is decided by failurePolicy
    (Fail: the request is refused with the reason; Ignore: the webhook is skipped)."""
    v = kubectl.version.replace(".", "")

    def hook(name, conditions, policy="Fail", path="/validate"):
        return {"name": name, "failurePolicy": policy, "rules": rules("", "v1", "configmaps"), "matchConditions": conditions,
                "clientConfig": {"url": webhook.url(path), "caBundle": webhook.ca_bundle}}
    cfg = configuration("ValidatingWebhookConfiguration", f"conditions-{v}-{ns}", ns, [
        hook("only-checked.example.com", [{"name": "checked", "expression": "has(object.metadata.labels) && object.metadata.labels['check'] == 'yes'"},
                                          {"name": "not-admin", "expression": "!('system:serviceaccounts' in request.userInfo.groups)"}]),
    ])
    apply_config(kubectl, cfg)
    try:
        def create(name, labels):
            cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns, "labels": labels}}
            return kubectl.run("create", "-f", "-", input=json.dumps(cm), check=False)
        # Checked (and refused by the webhook: no team label) only when the condition holds.
        refused = eventually(lambda: create("checked", {"check": "yes"}), 10, "the webhook in effect", check=lambda p: p.returncode != 0)
        assert 'denied the request: deployments must carry a team label' in refused.stderr, refused.stderr
        calls = len(webhook.reviews)
        assert create("unchecked", {"check": "no"}).returncode == 0 and create("plain", {}).returncode == 0
        assert len(webhook.reviews) == calls  # skipped: never called
        # A condition that errors (a missing key): failurePolicy decides.
        cfg2 = configuration("ValidatingWebhookConfiguration", f"conditions-err-{v}-{ns}", ns, [
            hook("fails-closed.example.com", [{"name": "needs-annotation", "expression": "object.metadata.annotations['x'] == 'y'"}], policy="Fail"),
            hook("fails-open.example.com", [{"name": "needs-annotation", "expression": "object.metadata.annotations['x'] == 'y'"}], policy="Ignore",
                 path="/mutate"),
        ])
        apply_config(kubectl, cfg2)
        try:
            err = eventually(lambda: create("errs", {}), 10, "the failing condition in effect", check=lambda p: p.returncode != 0)
            assert 'failed to evaluate the match conditions of webhook "fails-closed.example.com"' in err.stderr and "no such key" in err.stderr, err.stderr
        finally:
            kubectl("delete", "validatingwebhookconfiguration", f"conditions-err-{v}-{ns}")
    finally:
        kubectl("delete", "validatingwebhookconfiguration", f"conditions-{v}-{ns}")
