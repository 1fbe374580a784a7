"""Authentication and RBAC as a user meets them: client certificates (made with openssl from the
cluster CA, not by SwiftEdge), ServiceAccount tokens (checked and forged with Python's
`cryptography`, an implementation of JWT/ES256 independent of the server's), impersonation,
escalation prevention, and kube-apiserver's 401/403 answers, with real kubectl."""
import base64
import json
import subprocess
import time
import uuid

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from conftest import BIN, Kubectl, Server
from kubectl_support import eventually


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def openssl(*args):
    p = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout


def client_cert(tmp_path, ca_dir, cn, orgs=(), usage="clientAuth"):
    """A key and certificate for CN=cn, O=orgs signed by the CA in ca_dir (openssl, as an admin would)."""
    name = uuid.uuid4().hex[:8]
    key, csr, crt, ext = (tmp_path / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
    subj = f"/CN={cn}" + "".join(f"/O={o}" for o in orgs)
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
            "-subj", subj, "-out", str(csr))
    ext.write_text(f"extendedKeyUsage={usage}\nkeyUsage=critical,digitalSignature\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_dir / "ca.crt"), "-CAkey", str(ca_dir / "ca.key"), "-CAcreateserial",
            "-days", "1", "-extfile", str(ext), "-out", str(crt))
    return crt, key


def user_kubectl(kubectl, server, tmp_path, crt, key):
    kc = tmp_path / f"kc-{uuid.uuid4().hex[:6]}"
    kc.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "u",
        "clusters": [{"name": "c", "cluster": {"server": server.url, "certificate-authority": server.ca}}],
        "users": [{"name": "u", "user": {"client-certificate": str(crt), "client-key": str(key)}}],
        "contexts": [{"name": "u", "context": {"cluster": "c", "user": "u"}}]}))
    return Kubectl(kubectl.binary, kubectl.version, kc, tmp_path)


def test_namespaced_role_user_can_do_exactly_what_it_allows(kubectl, server, ns, tmp_path):
    """A user from a client certificate (CN, O) bound to a Role in one namespace: `auth can-i
    --list` shows the Role's rules, allowed verbs work, every other request is 403 in kube's words."""
    user = f"alice-{kubectl.version.replace('.', '')}-{uuid.uuid4().hex[:4]}"
    crt, key = client_cert(tmp_path, server.data_dir / "pki", user, ["team-a"])
    alice = user_kubectl(kubectl, server, tmp_path, crt, key)
    who = json.loads(alice("auth", "whoami", "-o", "json"))["status"]["userInfo"]
    assert who["username"] == user and who["groups"] == ["team-a", "system:authenticated"], who
    # Before any binding: discovery and self-review only.
    p = alice.run("get", "configmaps", "-n", ns, check=False)
    assert p.returncode != 0 and f'configmaps is forbidden: User "{user}" cannot list resource "configmaps" in API group "" in the namespace "{ns}"' in p.stderr, p.stderr
    kubectl("create", "role", "cm-editor", "--verb=get,list,create", "--resource=configmaps", "-n", ns)
    kubectl("create", "role", "pod-getter", "--verb=get", "--resource=pods", "--resource-name=web", "-n", ns)
    kubectl("create", "rolebinding", "alice-cm", "--role=cm-editor", f"--user={user}", "-n", ns)
    kubectl("create", "rolebinding", "team-pods", "--role=pod-getter", "--group=team-a", "-n", ns)
    eventually(lambda: alice.run("auth", "can-i", "list", "configmaps", "-n", ns, check=False).stdout.strip(), 5,
               "the binding in effect", check=lambda v: v == "yes")
    lst = alice("auth", "can-i", "--list", "-n", ns)
    rows = {tuple(line.split()) for line in lst.splitlines()[1:]}
    assert ("configmaps", "[]", "[]", "[get", "list", "create]") in rows, lst
    assert ("pods", "[]", "[web]", "[get]") in rows, lst
    assert ("selfsubjectaccessreviews.authorization.k8s.io", "[]", "[]", "[create]") in rows, lst
    assert not any(r[0] == "secrets" for r in rows), lst
    # Exactly that: configmaps get/list/create in this namespace, pod "web" by name.
    assert "configmap/one created" in alice("create", "configmap", "one", "--from-literal=a=b", "-n", ns)
    assert "one" in alice("get", "configmaps", "-n", ns, "-o", "name")
    p = alice.run("delete", "configmap", "one", "-n", ns, check=False)
    assert p.returncode != 0 and f'configmaps "one" is forbidden: User "{user}" cannot delete resource "configmaps" in API group "" in the namespace "{ns}"' in p.stderr, p.stderr
    p = alice.run("get", "configmaps", "-n", "default", check=False)
    assert p.returncode != 0 and 'in the namespace "default"' in p.stderr, p.stderr
    p = alice.run("get", "secrets", "-n", ns, check=False)
    assert p.returncode != 0 and "cannot list resource \"secrets\"" in p.stderr, p.stderr
    p = alice.run("get", "pods", "-n", ns, check=False)
    assert p.returncode != 0 and "cannot list resource \"pods\"" in p.stderr, p.stderr
    p = alice.run("get", "pod", "web", "-n", ns, check=False)
    assert 'pods "web" not found' in p.stderr, p.stderr  # allowed, and the pod is not there: 404, not 403
    p = alice.run("get", "nodes", check=False)
    assert p.returncode != 0 and f'User "{user}" cannot list resource "nodes" in API group "" at the cluster scope' in p.stderr, p.stderr
    assert alice.run("auth", "can-i", "delete", "configmaps", "-n", ns, check=False).stdout.strip() == "no"
    # The API's own answer to the same question (SubjectAccessReview, asked by the admin).
    sar = json.loads(kubectl("create", "-f", "-", "-o", "json", input=json.dumps({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": ["team-a"], "resourceAttributes": {"namespace": ns, "verb": "get", "resource": "pods", "name": "web"}}})))
    assert sar["status"]["allowed"] is True, sar
    # Impersonation needs its own permission.
    p = alice.run("get", "configmaps", "-n", ns, "--as=bob", check=False)
    assert p.returncode != 0 and f'users "bob" is forbidden: User "{user}" cannot impersonate resource "users" in API group "" at the cluster scope' in p.stderr, p.stderr
    # Removing the binding takes the permission away again.
    kubectl("delete", "rolebinding", "alice-cm", "-n", ns)
    eventually(lambda: alice.run("auth", "can-i", "list", "configmaps", "-n", ns, check=False).stdout.strip(), 5,
               "the binding gone", check=lambda v: v == "no")


def test_escalation_is_refused(kubectl, server, ns, tmp_path):
    """A user allowed to manage Roles in a namespace cannot write a Role, or a binding, granting
    more than the user holds (kube's escalation prevention), but can for what the user holds."""
    user = f"lead-{kubectl.version.replace('.', '')}-{uuid.uuid4().hex[:4]}"
    crt, key = client_cert(tmp_path, server.data_dir / "pki", user)
    lead = user_kubectl(kubectl, server, tmp_path, crt, key)
    kubectl("create", "role", "rbac-admin", "--verb=create,get,list,update,patch,delete", "--resource=roles.rbac.authorization.k8s.io,rolebindings.rbac.authorization.k8s.io",
            "-n", ns)
    kubectl("create", "role", "cm-reader", "--verb=get,list", "--resource=configmaps", "-n", ns)
    kubectl("create", "role", "secret-reader", "--verb=get", "--resource=secrets", "-n", ns)
    kubectl("create", "rolebinding", "lead-rbac", "--role=rbac-admin", f"--user={user}", "-n", ns)
    kubectl("create", "rolebinding", "lead-cm", "--role=cm-reader", f"--user={user}", "-n", ns)
    eventually(lambda: lead.run("auth", "can-i", "create", "roles", "-n", ns, check=False).stdout.strip(), 5,
               "the bindings in effect", check=lambda v: v == "yes")
    eventually(lambda: lead.run("auth", "can-i", "get", "configmaps", "-n", ns, check=False).stdout.strip(), 5,
               "the bindings in effect", check=lambda v: v == "yes")
    assert "role.rbac.authorization.k8s.io/mine created" in lead("create", "role", "mine", "--verb=get", "--resource=configmaps", "-n", ns)
    p = lead.run("create", "role", "more", "--verb=get", "--resource=secrets", "-n", ns, check=False)
    assert p.returncode != 0 and f'roles.rbac.authorization.k8s.io "more" is forbidden: user "{user}"' in p.stderr, p.stderr
    assert "is attempting to grant RBAC permissions not currently held" in p.stderr and 'Resources:["secrets"]' in p.stderr, p.stderr
    assert "more" not in kubectl("get", "roles", "-n", ns, "-o", "name")  # nothing half-written
    p = lead.run("create", "rolebinding", "steal", "--role=secret-reader", f"--user={user}", "-n", ns, check=False)
    assert p.returncode != 0 and "is attempting to grant RBAC permissions not currently held" in p.stderr, p.stderr
    assert "rolebinding.rbac.authorization.k8s.io/share created" in lead("create", "rolebinding", "share", "--role=cm-reader", "--user=someone", "-n", ns)
    # Widening an existing Role by patch is refused the same way.
    p = lead.run("patch", "role", "mine", "-n", ns, "--type=json", "-p", '[{"op":"add","path":"/rules/-","value":{"apiGroups":[""],"resources":["secrets"],"verbs":["get"]}}]',
                 check=False)
    assert p.returncode != 0 and "not currently held" in p.stderr, p.stderr
    assert len(json.loads(kubectl("get", "role", "mine", "-n", ns, "-o", "json"))["rules"]) == 1


def sa_token(server, ns, name, **spec):
    r = server.http("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{name}/token",
                    json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
    assert r.status_code == 201, r.text
    return r.json()


def whoami(server, token):
    return requests.post(server.url + "/apis/authentication.k8s.io/v1/selfsubjectreviews", headers={"Authorization": f"Bearer {token}"},
                         json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}, verify=server.ca, timeout=10)


def sign_es256(key, header, claims):
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def test_service_account_tokens(server, ns):
    """TokenRequest tokens verify against the published JWKS (checked here with `cryptography`),
    authenticate as the ServiceAccount, and stop working when expired, for another audience,
    signed by another key, or once their ServiceAccount or bound pod is gone."""
    assert server.http("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", json={"metadata": {"name": "bot"}}).status_code == 201
    sa_uid = server.http("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/bot").json()["metadata"]["uid"]
    tr = sa_token(server, ns, "bot")
    assert tr["kind"] == "TokenRequest" and tr["spec"]["expirationSeconds"] == 3600, tr
    token = tr["status"]["token"]
    head, payload, sig = token.split(".")
    header, claims = json.loads(unb64url(head)), json.loads(unb64url(payload))
    assert header["alg"] == "ES256" and claims["sub"] == f"system:serviceaccount:{ns}:bot", claims
    assert claims["kubernetes.io"]["serviceaccount"] == {"name": "bot", "uid": sa_uid}, claims
    # OIDC discovery and the JWKS: the signature verifies with the published key.
    disc = server.http("GET", "/.well-known/openid-configuration").json()
    assert disc["issuer"] == claims["iss"] and disc["jwks_uri"].endswith("/openid/v1/jwks"), disc
    jwk = next(k for k in server.http("GET", "/openid/v1/jwks").json()["keys"] if k["kid"] == header["kid"])
    pub = ec.EllipticCurvePublicNumbers(int.from_bytes(unb64url(jwk["x"]), "big"), int.from_bytes(unb64url(jwk["y"]), "big"), ec.SECP256R1()).public_key()
    raw = unb64url(sig)
    pub.verify(encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")), f"{head}.{payload}".encode(),
               ec.ECDSA(hashes.SHA256()))
    r = whoami(server, token)
    assert r.status_code == 201, r.text
    info = r.json()["status"]["userInfo"]
    assert info["username"] == f"system:serviceaccount:{ns}:bot" and info["uid"] == sa_uid, info
    assert {"system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"} <= set(info["groups"]), info
    # The token has no permissions of its own yet: 403 in kube's words.
    r = requests.get(f"{server.url}/api/v1/namespaces/{ns}/pods", headers={"Authorization": f"Bearer {token}"}, verify=server.ca, timeout=10)
    assert r.status_code == 403 and r.json()["reason"] == "Forbidden", r.text
    assert r.json()["message"] == f'pods is forbidden: User "system:serviceaccount:{ns}:bot" cannot list resource "pods" in API group "" in the namespace "{ns}"'
    assert r.json()["details"] == {"kind": "pods"}, r.json()

    # Tokens signed here with the cluster's own key: valid claims pass (the harness is right) ...
    key = serialization.load_pem_private_key((server.data_dir / "pki" / "sa.key").read_bytes(), password=None)
    now = int(time.time())
    good = dict(claims, iat=now - 10, nbf=now - 10, exp=now + 600, jti=uuid.uuid4().hex)
    assert whoami(server, sign_es256(key, header, good)).status_code == 201
    # ... and each defect is a 401 with kube's Status.
    expired = dict(good, iat=now - 4000, nbf=now - 4000, exp=now - 400)
    other_key = ec.generate_private_key(ec.SECP256R1())
    for bad in [sign_es256(key, header, expired),
                sign_es256(key, header, dict(good, aud=["https://elsewhere.example"])),
                sign_es256(key, header, dict(good, iss="https://evil.example")),
                sign_es256(other_key, header, good),
                sign_es256(key, dict(header, alg="none"), good),
                token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"),
                "not-a-token"]:
        r = whoami(server, bad)
        assert r.status_code == 401, (bad, r.text)
        assert r.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized",
                            "reason": "Unauthorized", "code": 401}, r.text
    # Another audience is not this server's.
    other = sa_token(server, ns, "bot", audiences=["https://vault.example"], expirationSeconds=600)["status"]["token"]
    assert json.loads(unb64url(other.split(".")[1]))["aud"] == ["https://vault.example"]
    assert whoami(server, other).status_code == 401
    tr = server.http("POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                     json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}).json()
    assert tr["status"]["authenticated"] is True and tr["status"]["user"]["username"] == f"system:serviceaccount:{ns}:bot", tr
    # Too short a lifetime is refused as kube does.
    r = server.http("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/bot/token", json={"spec": {"expirationSeconds": 60}})
    assert r.status_code == 422 and "may not specify a duration less than 10 minutes" in r.text, r.text
    assert server.http("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/ghost/token", json={"spec": {}}).status_code == 404
    # Bound to a pod: valid while the pod lives.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "holder"}, "spec": {"nodeName": "nowhere", "containers": [{"name": "c", "image": "busybox"}]}}
    assert server.http("POST", f"/api/v1/namespaces/{ns}/pods", json=pod).status_code == 201
    bound = sa_token(server, ns, "bot", boundObjectRef={"kind": "Pod", "apiVersion": "v1", "name": "holder"})["status"]["token"]
    assert json.loads(unb64url(bound.split(".")[1]))["kubernetes.io"]["pod"]["name"] == "holder"
    assert whoami(server, bound).status_code == 201
    server.http("DELETE", f"/api/v1/namespaces/{ns}/pods/holder", params={"gracePeriodSeconds": "0"})
    eventually(lambda: server.http("GET", f"/api/v1/namespaces/{ns}/pods/holder").status_code, 10, "the pod gone", check=lambda c: c == 404)
    assert whoami(server, bound).status_code == 401
    # A deleted ServiceAccount's tokens stop working.
    assert server.http("DELETE", f"/api/v1/namespaces/{ns}/serviceaccounts/bot").status_code == 200
    assert whoami(server, token).status_code == 401


def test_client_certificates(server, tmp_path):
    """A certificate from the cluster CA is its subject (CN user, O groups); one from another CA
    fails the TLS handshake; one not made for client authentication is not accepted."""
    crt, key = client_cert(tmp_path, server.data_dir / "pki", "carol", ["ops", "dev"])
    r = requests.post(server.url + "/apis/authentication.k8s.io/v1/selfsubjectreviews", cert=(str(crt), str(key)), verify=server.ca, timeout=10,
                      json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    assert r.status_code == 201 and r.json()["status"]["userInfo"] == {"username": "carol", "groups": ["ops", "dev", "system:authenticated"]}, r.text
    other = tmp_path / "other-ca"
    other.mkdir()
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(other / "ca.key"),
            "-out", str(other / "ca.crt"), "-subj", "/CN=other-ca", "-days", "1")
    crt2, key2 = client_cert(tmp_path, other, "mallory", ["system:masters"])
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(server.url + "/api", cert=(str(crt2), str(key2)), verify=server.ca, timeout=10)
    # Not made for client authentication: refused at the handshake (kube-apiserver answers 401 instead; either way no access).
    crt3, key3 = client_cert(tmp_path, server.data_dir / "pki", "server-only", usage="serverAuth")
    try:
        code = requests.get(server.url + "/api", cert=(str(crt3), str(key3)), verify=server.ca, timeout=10).status_code
    except requests.exceptions.SSLError as e:
        code = str(e)
    assert code == 401 or "unsupported certificate" in str(code), code
    # No credentials at all: 401 (anonymous requests are off).
    assert requests.get(server.url + "/api/v1/namespaces", verify=server.ca, timeout=10).status_code == 401


def test_node_identity_reads_only_what_its_pods_use(server, ns, tmp_path):
    """A node's certificate (CN=system:node:<n>, O=system:nodes, what edge nodes get) reads the
    Secrets and ConfigMaps of pods bound to it and nothing else (kube's Node authorizer)."""
    n1, n2 = f"n1-{ns}", f"n2-{ns}"
    crt, key = client_cert(tmp_path, server.data_dir / "pki", f"system:node:{n1}", ["system:nodes"])

    def as_node(method, path, **kw):
        return requests.request(method, server.url + path, cert=(str(crt), str(key)), verify=server.ca, timeout=10, **kw)

    for kind, name in [("secrets", "s1"), ("secrets", "s2"), ("configmaps", "c1")]:
        body = {"metadata": {"name": name}, "data": {"k": "dg==" if kind == "secrets" else "v"}}
        assert server.http("POST", f"/api/v1/namespaces/{ns}/{kind}", json=body).status_code == 201
    for pod, node, secret in [("p1", n1, "s1"), ("p2", n2, "s2")]:
        spec = {"nodeName": node, "containers": [{"name": "c", "image": "busybox",
                                                  "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}}]}]}
        if pod == "p1":
            spec["volumes"] = [{"name": "v", "configMap": {"name": "c1"}}]
        assert server.http("POST", f"/api/v1/namespaces/{ns}/pods", json={"metadata": {"name": pod}, "spec": spec}).status_code == 201
    assert as_node("GET", f"/api/v1/namespaces/{ns}/secrets/s1").json()["data"] == {"k": "dg=="}
    assert as_node("GET", f"/api/v1/namespaces/{ns}/configmaps/c1").status_code == 200
    r = as_node("GET", f"/api/v1/namespaces/{ns}/secrets/s2")
    assert r.status_code == 403, r.text
    assert r.json()["message"] == (f'secrets "s2" is forbidden: User "system:node:{n1}" cannot get resource "secrets" in API group "" '
                                   f"in the namespace \"{ns}\": no relationship found between node '{n1}' and this object"), r.text
    assert as_node("GET", f"/api/v1/namespaces/{ns}/secrets").status_code == 403
    assert as_node("GET", f"/api/v1/namespaces/{ns}/pods").status_code == 200
    # Its own Node only.
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": n2}}
    assert server.http("POST", "/api/v1/nodes", json=node).status_code == 201
    r = as_node("PATCH", f"/api/v1/nodes/{n2}", data='{"metadata":{"labels":{"x":"y"}}}', headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 403 and f"node '{n1}' cannot modify node '{n2}'" in r.json()["message"], r.text
    # Moving the pod away takes the Secret with it.
    server.http("DELETE", f"/api/v1/namespaces/{ns}/pods/p1", params={"gracePeriodSeconds": "0"})
    eventually(lambda: as_node("GET", f"/api/v1/namespaces/{ns}/secrets/s1").status_code, 10, "the secret no longer readable",
               check=lambda c: c == 403)


AUDIT_POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/version", "/api", "/api/*", "/apis", "/apis/*", "/openapi/*"]
- level: Metadata
  resources: [{group: "", resources: [secrets]}]
- level: RequestResponse
  resources: [{group: "", resources: [configmaps]}]
  verbs: [create, update, patch, delete]
- level: Metadata
"""


def test_audit_log_follows_the_policy(kubectl, tmp_path):
    """kube's audit log with real kubectl: a policy file (audit.k8s.io/v1) decides the level per
    request; events are audit.k8s.io/v1 Event JSON lines with user, verb, objectRef and response
    code; Secrets stay at Metadata (no data), ConfigMap writes carry request and response bodies,
    a 403 is audited with its code; a bad policy stops the server with the reason."""
    policy = tmp_path / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    log = tmp_path / "audit" / "audit.log"
    srv = Server(tmp_path / "srv", extra_args=["--audit-policy-file", str(policy), "--audit-log-path", str(log)]).start()
    try:
        k = Kubectl(kubectl.binary, kubectl.version, srv.kubeconfig, tmp_path)
        k("create", "configmap", "audited", "--from-literal=k=v")
        k("create", "secret", "generic", "hush", "--from-literal=password=s3cr3t")
        k("get", "configmaps")
        r = srv.http("GET", "/api/v1/namespaces/default/secrets", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401

        def events():
            return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        eventually(lambda: any(e["verb"] == "list" and e.get("objectRef", {}).get("resource") == "configmaps" for e in events()),
                   what="the list audited")
        evs = events()
        assert all(e["kind"] == "Event" and e["apiVersion"] == "audit.k8s.io/v1" and e["stage"] == "ResponseComplete" for e in evs), evs[:2]
        assert not any(e["requestURI"].startswith(("/api?", "/apis?", "/version", "/openapi", "/readyz")) or e["requestURI"] in ("/api", "/apis")
                       for e in evs), [e["requestURI"] for e in evs]
        create_cm = next(e for e in evs if e["verb"] == "create" and e.get("objectRef", {}).get("resource") == "configmaps")
        assert create_cm["level"] == "RequestResponse" and create_cm["responseStatus"]["code"] == 201
        assert create_cm["user"]["username"] == "kubernetes-admin" and "system:masters" in create_cm["user"]["groups"]
        assert create_cm["objectRef"] == {"resource": "configmaps", "namespace": "default", "name": "audited", "apiVersion": "v1"}
        assert create_cm["requestObject"]["data"] == {"k": "v"} and create_cm["responseObject"]["metadata"]["name"] == "audited"
        assert create_cm["userAgent"].startswith("kubectl") and create_cm["sourceIPs"] == ["127.0.0.1"]
        assert create_cm["auditID"] and create_cm["requestReceivedTimestamp"] <= create_cm["stageTimestamp"]
        secret = next(e for e in evs if e["verb"] == "create" and e.get("objectRef", {}).get("resource") == "secrets")
        assert secret["level"] == "Metadata" and "requestObject" not in secret and "s3cr3t" not in log.read_text()
        listed = next(e for e in evs if e["verb"] == "list" and e.get("objectRef", {}).get("resource") == "configmaps")
        assert listed["level"] == "Metadata" and "responseObject" not in listed
        refused = next(e for e in evs if e["responseStatus"]["code"] == 401)
        assert refused["user"]["username"] == "system:anonymous" and refused["objectRef"]["resource"] == "secrets"
    finally:
        srv.stop()
    # A policy that does not parse: the server does not start, and says why.
    policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Loud\n")
    bad = subprocess.run([str(BIN), "apiserver", "--data-dir", str(tmp_path / "bad"), "--port", "0", "--audit-policy-file", str(policy),
                          "--audit-log-path", str(log)], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "rules[0].level must be one of None, Metadata, Request, RequestResponse" in bad.stderr, bad.stderr


def test_secrets_encrypted_at_rest_and_keys_rotated(kubectl, tmp_path):
    """kube's encryption at rest with real kubectl: with an EncryptionConfiguration (aesgcm first,
    identity last) Secrets reach the database file encrypted and ConfigMaps do not; kubectl reads
    them back; a restart with a new first key re-encrypts, after which the old key can go; a
    configuration without the key in use stops the server with the reason."""
    import sqlite3

    def configure(providers):
        cfg = tmp_path / "encryption.yaml"
        cfg.write_text("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n"
                       "- resources: [secrets]\n  providers:\n" + "".join(f"  - {p}\n" for p in providers))
        return ["--encryption-provider-config", str(cfg)]

    def key(n):
        return base64.b64encode(bytes([n]) * 32).decode()

    def stored(srv, table_key):
        con = sqlite3.connect(f"file:{srv.data_dir / 'state.db'}?mode=ro", uri=True, timeout=5)
        try:
            return [bytes(v) for (v,) in con.execute("SELECT value FROM objects WHERE key = ? UNION ALL SELECT value FROM events WHERE key = ?",
                                                     (table_key, table_key))]
        finally:
            con.close()

    data = tmp_path / "srv"
    srv = Server(data, extra_args=configure([f"aesgcm: {{keys: [{{name: one, secret: {key(1)}}}]}}", "identity: {}"])).start()
    try:
        k = Kubectl(kubectl.binary, kubectl.version, srv.kubeconfig, tmp_path)
        k("create", "secret", "generic", "vault", "--from-literal=password=hunter2")
        k("create", "configmap", "open", "--from-literal=note=readable")
        assert base64.b64decode(k("get", "secret", "vault", "-o", "jsonpath={.data.password}")) == b"hunter2"
        rows = stored(srv, "/core/secrets/default/vault")
        assert rows and all(r.startswith(b"k8s:enc:aesgcm:v1:one:") and b"hunter2" not in r and base64.b64encode(b"hunter2") not in r
                            for r in rows), rows
        assert all(b"readable" in r for r in stored(srv, "/core/configmaps/default/open"))
    finally:
        srv.stop()
    # Rotation: the new key first; the restart re-encrypts; then the old key goes.
    srv = Server(data, extra_args=configure([f"aesgcm: {{keys: [{{name: two, secret: {key(2)}}}, {{name: one, secret: {key(1)}}}]}}"])).start()
    try:
        assert all(r.startswith(b"k8s:enc:aesgcm:v1:two:") for r in stored(srv, "/core/secrets/default/vault"))
    finally:
        srv.stop()
    srv = Server(data, extra_args=configure([f"aesgcm: {{keys: [{{name: two, secret: {key(2)}}}]}}"])).start()
    try:
        k = Kubectl(kubectl.binary, kubectl.version, srv.kubeconfig, tmp_path)
        assert base64.b64decode(k("get", "secret", "vault", "-o", "jsonpath={.data.password}")) == b"hunter2"
    finally:
        srv.stop()
    # The key in use is missing: the server does not start, and says which key and which object.
    bad = subprocess.run([str(BIN), "apiserver", "--data-dir", str(data), "--port", "0", "--no-controllers",
                          *configure([f"aesgcm: {{keys: [{{name: three, secret: {key(3)}}}]}}"])], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and 'encrypted with key "two"' in bad.stderr + bad.stdout and "/core/secrets/default/vault" in bad.stderr + bad.stdout, \
        bad.stderr + bad.stdout


def test_static_and_bootstrap_tokens(kubectl, tmp_path):
    """kube's --token-auth-file and --enable-bootstrap-token-auth with real kubectl: a static
    token is its user (whoami), a bootstrap token Secret in kube-system makes system:bootstrap:<id>
    in system:bootstrappers; a wrong secret or an expired token is 401."""
    tokens = tmp_path / "tokens.csv"
    tokens.write_text('s3cr3t-alice,alice,u-1,"dev,ops"\n')
    srv = Server(tmp_path / "srv", extra_args=["--token-auth-file", str(tokens), "--enable-bootstrap-token-auth"]).start()
    try:
        k = Kubectl(kubectl.binary, kubectl.version, srv.kubeconfig, tmp_path)

        def whoami(token):
            r = k.run("auth", "whoami", "-o", "json", "--token", token, check=False)
            return json.loads(r.stdout)["status"]["userInfo"] if r.returncode == 0 else r.stderr
        alice = whoami("s3cr3t-alice")
        assert alice["username"] == "alice" and set(alice["groups"]) == {"dev", "ops", "system:authenticated"}, alice
        k("create", "secret", "generic", "bootstrap-token-abcdef", "-n", "kube-system", "--type", "bootstrap.kubernetes.io/token",
          "--from-literal=token-id=abcdef", "--from-literal=token-secret=0123456789abcdef",
          "--from-literal=usage-bootstrap-authentication=true", "--from-literal=auth-extra-groups=system:bootstrappers:kubeadm:default-node-token")
        boot = whoami("abcdef.0123456789abcdef")
        assert boot["username"] == "system:bootstrap:abcdef" and "system:bootstrappers:kubeadm:default-node-token" in boot["groups"], boot
        assert "Unauthorized" in whoami("abcdef.0123456789abcdee")
        k("create", "secret", "generic", "bootstrap-token-zzzzzz", "-n", "kube-system", "--type", "bootstrap.kubernetes.io/token",
          "--from-literal=token-id=zzzzzz", "--from-literal=token-secret=0123456789abcdef",
          "--from-literal=usage-bootstrap-authentication=true", "--from-literal=expiration=2020-01-01T00:00:00Z")
        assert "Unauthorized" in whoami("zzzzzz.0123456789abcdef")
    finally:
        srv.stop()


def test_legacy_service_account_token_secrets(kubectl, server, ns, tmp_path):
    """A `kubernetes.io/service-account-token` Secret (what older tools still create) gets its
    token, CA and namespace; the token (verified here against the published JWKS with
    `cryptography`) authenticates as the ServiceAccount until the Secret is deleted; a Secret
    without the ServiceAccount annotation is refused as kube refuses it."""
    k = Kubectl(kubectl.binary, kubectl.version, kubectl.kubeconfig, kubectl.home)
    k("create", "serviceaccount", "legacy", "-n", ns)
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
              "metadata": {"name": "legacy-token", "namespace": ns, "annotations": {"kubernetes.io/service-account.name": "legacy"}}}
    k("apply", "-f", "-", input=json.dumps(secret))
    got = json.loads(k("get", "secret", "legacy-token", "-n", ns, "-o", "json"))
    token = base64.b64decode(got["data"]["token"]).decode()
    assert base64.b64decode(got["data"]["namespace"]).decode() == ns
    assert base64.b64decode(got["data"]["ca.crt"]).decode() == open(server.ca).read()
    head, payload, sig = token.split(".")
    claims = json.loads(unb64url(payload))
    assert claims["iss"] == "kubernetes/serviceaccount" and claims["kubernetes.io/serviceaccount/secret.name"] == "legacy-token"
    jwk = requests.get(server.url + "/openid/v1/jwks", headers={"Authorization": f"Bearer {server.token}"}, verify=server.ca, timeout=10).json()["keys"][0]
    public = ec.EllipticCurvePublicNumbers(int.from_bytes(unb64url(jwk["x"]), "big"), int.from_bytes(unb64url(jwk["y"]), "big"), ec.SECP256R1()).public_key()
    raw = unb64url(sig)
    public.verify(encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")), f"{head}.{payload}".encode(),
                  ec.ECDSA(hashes.SHA256()))
    r = whoami(server, token)
    assert r.status_code == 201 and r.json()["status"]["userInfo"]["username"] == f"system:serviceaccount:{ns}:legacy", r.text
    k("delete", "secret", "legacy-token", "-n", ns)
    assert whoami(server, token).status_code == 401
    bad = k.run("apply", "-f", "-", input=json.dumps({**secret, "metadata": {"name": "no-sa", "namespace": ns}}), check=False)
    assert bad.returncode != 0 and "metadata.annotations[kubernetes.io/service-account.name]: Required value" in bad.stderr, bad.stderr
