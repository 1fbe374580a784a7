"""Bad input gets the Status error kube-apiserver would give, never a crash or a half-written object."""
import json

import pytest


def user_configmaps(server, ns):
    """The namespace's ConfigMaps but kube-root-ca.crt (every namespace has it, as on kube)."""
    return [c for c in server.http("GET", f"/api/v1/namespaces/{ns}/configmaps").json()["items"]
            if c["metadata"]["name"] != "kube-root-ca.crt"]
import requests


def test_unauthenticated_is_401(server):
    r = requests.get(server.url + "/api/v1/namespaces", verify=server.ca, timeout=10)
    assert r.status_code == 401 and r.json()["reason"] == "Unauthorized"
    r = server.http("GET", "/api/v1/namespaces", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401


@pytest.mark.parametrize("body,ctype,code,needle", [
    (b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"', "application/json", 400, "could not be decoded"),
    (b"a: [1,\n", "application/yaml", 400, "YAML"),
    (b'[1,2]', "application/json", 400, "must be a JSON object"),
    (b'{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}', "application/json", 400, "does not match the expected kind"),
    (b'{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}', "application/json", 400, "does not match the expected API version"),
    (b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"other"}}', "application/json", 400, "does not match the namespace"),
    (b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}', "application/json", 422, "RFC 1123"),
    (b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}', "application/json", 422, "name or generateName is required"),
    (b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","labels":{"a":"!"}}}', "application/json", 422, "valid label"),
])
def test_malformed_creates(server, ns, body, ctype, code, needle):
    r = server.http("POST", f"/api/v1/namespaces/{ns}/configmaps", data=body, headers={"Content-Type": ctype})
    assert r.status_code == code, r.text
    st = r.json()
    assert st["kind"] == "Status" and st["code"] == code and needle in st["message"]
    assert user_configmaps(server, ns) == []


def test_oversized_body_is_413(server, ns):
    big = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"x": "a" * (3 * 1024 * 1024 + 10)}}
    r = server.http("POST", f"/api/v1/namespaces/{ns}/configmaps", data=json.dumps(big), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["reason"] == "RequestEntityTooLarge"
    assert server.http("GET", f"/api/v1/namespaces/{ns}/configmaps/big").status_code == 404


def test_unknown_fields_strict_warn_ignore(server, ns):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "u", "bogus": 1}, "bogusTop": 2}
    r = server.http("POST", f"/api/v1/namespaces/{ns}/configmaps?fieldValidation=Strict", json=body)
    assert r.status_code == 400 and 'strict decoding error: unknown field "bogusTop"' in r.json()["message"]
    r = server.http("POST", f"/api/v1/namespaces/{ns}/configmaps?fieldValidation=Warn", json=body)
    assert r.status_code == 201 and "unknown field" in r.headers.get("Warning", "")
    assert "bogusTop" not in r.json()


def test_unknown_paths_and_methods(server, ns):
    assert server.http("GET", "/apis/nope/v1").status_code == 404
    assert server.http("GET", "/api/v1/namespaces/default/widgets").status_code == 404
    r = server.http("PUT", f"/api/v1/namespaces/{ns}/configmaps")
    assert r.status_code == 405
    r = server.http("PATCH", f"/api/v1/namespaces/{ns}/configmaps/x", data=b"{}", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = server.http("GET", f"/api/v1/namespaces/{ns}/configmaps?labelSelector=a%20in%20b")
    assert r.status_code == 400
    r = server.http("GET", f"/api/v1/namespaces/{ns}/configmaps?continue=%%%")
    assert r.status_code == 400


def test_disconnect_mid_body_loses_nothing(server, ns):
    import socket, ssl
    ctx = ssl.create_default_context(cafile=server.ca)
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall((f"POST /api/v1/namespaces/{ns}/configmaps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
                       "Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"apiVersion\":\"v1\",").encode())
    assert user_configmaps(server, ns) == []
    assert server.http("GET", "/readyz").status_code == 200


def test_unknown_nested_fields_of_builtin_kinds(server, ns):
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "typo"},
           "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "i", "imagee": "typo",
                                             "volumeMounts": [{"name": "v", "mountPath": "/x"}]}],
                             "volumes": [{"name": "v", "configMap": {"name": "cm"}}]}}}}
    r = server.http("POST", f"/apis/apps/v1/namespaces/{ns}/deployments?fieldValidation=Strict", json=dep)
    assert r.status_code == 400, r.text
    assert 'unknown field "spec.template.spec.containers[0].imagee"' in r.json()["message"]
    r = server.http("POST", f"/apis/apps/v1/namespaces/{ns}/deployments?fieldValidation=Warn", json=dep)
    assert r.status_code == 201 and "imagee" in r.headers.get("Warning", "")
    body = r.json()
    assert "imagee" not in body["spec"]["template"]["spec"]["containers"][0]
    # Inline (embedded) fields such as a volume's configMap.name are known.
    assert body["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == "cm"
