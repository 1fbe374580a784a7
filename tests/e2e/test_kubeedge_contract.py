"""KubeEdge's edgecore (v1.23 line) against `swiftedge cloud`: the contract of
tests/contract/kubeedge/edgecore-v1.23.json, written from KubeEdge's source, replayed by a Python
imitation of edgecore (kubeedge_edge.py) over the real certificate service and WebSocket, with the
effects checked through the cloud's API. The imitation joins exactly as edgecore does (token, CA
hash, CSR DER, mTLS WebSocket with node_id/project_id/ConnectionUse) and acks what edgecore acks."""
import base64
import uuid

import pytest
import requests
import yaml

from cloudedge import Cloud
from kubeedge_edge import KubeEdgeEdge, Replayer, load_contract


@pytest.fixture
def cloud(tmp_path):
    c = Cloud(tmp_path).start()
    yield c
    c.stop()


class Api:
    """The cloud's API server, as the admin kubeconfig describes it."""

    def __init__(self, cloud, tmp_path):
        cfg = yaml.safe_load(cloud.kubeconfig.read_text())
        cluster = cfg["clusters"][0]["cluster"]
        self.server = cluster["server"]
        self.ca = tmp_path / "api-ca.crt"
        self.ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        # The admin's client certificate (what the kubeconfig carries).
        user = cfg["users"][0]["user"]
        self.cert = (tmp_path / "api-admin.crt", tmp_path / "api-admin.key")
        self.cert[0].write_bytes(base64.b64decode(user["client-certificate-data"]))
        self.cert[1].write_bytes(base64.b64decode(user["client-key-data"]))

    def __call__(self, method, path, json=None):
        return requests.request(method, self.server + path, json=json, cert=tuple(map(str, self.cert)), verify=str(self.ca), timeout=30)

    def namespace(self):
        name = "ke-" + uuid.uuid4().hex[:8]
        r = self("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        assert r.status_code == 201, r.text
        return name


@pytest.fixture
def api(cloud, tmp_path):
    return Api(cloud, tmp_path)


@pytest.fixture
def join(cloud, api, tmp_path):
    """join(node) -> a Replayer over a KubeEdgeEdge that obtained its certificate and connected."""
    edges = []
    contract = load_contract()

    def _join(node):
        edge = KubeEdgeEdge(tmp_path, node, "127.0.0.1", cloud.hub_port, cloud.cert_port, cloud.token()).join()
        edges.append(edge)
        return Replayer(edge, contract, api=api)

    yield _join
    for e in edges:
        e.close()


def variant(ns):
    return None if ns == "null" else "v1.22-and-older"


@pytest.mark.parametrize("node_ns", ["null", "default"])
def test_join_and_register_node(join, api, node_ns):
    """(a) join, then `insert <ns>/node/<node>` is answered with ObjectResp{Object: Node, Err: null}; the
    Node is in the API with the kubelet's labels and annotations."""
    node = f"ke-reg-{node_ns}"
    rp = join(node)
    assert rp.edge.is_open() and rp.edge.keepalives_sent() == 1
    answer = rp.run("register-node", variant=variant(node_ns))
    assert answer["route"]["resource"] == f"{node_ns}/node/{node}"
    r = api("GET", f"/api/v1/nodes/{node}")
    assert r.status_code == 200, f"Node {node} not in the API after its registration was answered: {r.status_code} {r.text[:300]}"
    assert r.json()["metadata"]["uid"] == rp.captures["node_uid"], "the answer's Node is not the API's Node"
    rp.check_api_effect("register-node")
    assert rp.edge.is_open(), rp.edge.closed


def test_reregistration_answers_already_exists(join):
    """A restarted edgecore registers again; the answer carries Err.ErrStatus reason AlreadyExists (the
    kubelet then reads the existing Node)."""
    rp = join("ke-rereg")
    rp.run("register-node")
    rp.run("register-node-again")


@pytest.mark.parametrize("node_ns", ["null", "default"])
def test_nodepatch_heartbeat_turns_node_ready(join, api, node_ns):
    """(b) `patch <ns>/nodepatch/<node>` (a strategic merge patch as a JSON string) is applied to the
    node status: Ready=True in the API, conditions merged by type, the answer carries the updated Node."""
    node = f"ke-hb-{node_ns}"
    rp = join(node)
    rp.run("register-node", variant=variant(node_ns))
    before = api("GET", f"/api/v1/nodes/{node}").json()
    ready = {c["type"]: c for c in before["status"].get("conditions", [])}.get("Ready", {})
    assert ready.get("status") != "True", f"precondition: the registered node is not Ready yet, got {ready}"
    rp.run("node-heartbeat", variant=variant(node_ns))
    rp.check_api_effect("node-heartbeat")


def test_lease_query_insert_update(join, api):
    """(c) lease query -> ObjectResp with Err.ErrStatus NotFound; insert -> the Lease; update with the
    returned resourceVersion -> the renewed Lease; a query of the existing Lease returns it."""
    node = "ke-lease"
    rp = join(node)
    rp.run("register-node")
    rp.run("lease-query")
    rp.run("lease-create")
    rp.run("lease-renew")
    rp.check_api_effect("lease-renew")
    rp.run("lease-renew")  # again with the resourceVersion the first renewal returned
    rp.run("lease-query-existing")  # what a restarted edgecore gets; its resourceVersion works for the next renewal
    rp.run("lease-renew")


def test_pod_sync_ack_and_podpatch(join, api):
    """(d) a pod bound to the node arrives as `insert <ns>/pod/<name>` with kind/apiVersion and a
    resourceversion header; the edge acks it; its podpatch (status Running) is applied and visible."""
    node = "ke-pod"
    rp = join(node)
    rp.run("register-node")
    ns, pod = api.namespace(), "web"
    rp.create_given("pod-insert", key="trigger", ns=ns, pod=pod)
    insert = rp.expect_downstream("pod-insert", ns=ns, pod=pod)
    acks = [m for m in rp.edge.sent if m["header"].get("parent_msg_id") == insert["header"]["msg_id"]]
    assert len(acks) == 1 and acks[0]["content"] == "OK" and acks[0]["route"]["resource"] == f"{ns}/pod/{pod}", acks
    rp.run("pod-status-patch", ns=ns, pod=pod)
    rp.check_api_effect("pod-status-patch", ns=ns, pod=pod)


def test_configmap_query(join, api):
    """(e) `query <ns>/configmap/<name>` for a ConfigMap a pod on the node uses is answered with the
    bare ConfigMap (kind/apiVersion, resourceversion header), not an ObjectResp."""
    node = "ke-cm"
    rp = join(node)
    rp.run("register-node")
    ns = api.namespace()
    names = dict(ns=ns, configmap="app-config", cm_pod="uses-config")
    rp.create_given("configmap-query", **names)
    rp.expect_downstream("pod-insert", ns=ns, pod=names["cm_pod"])  # the node learns of the pod first, as edgecore does
    rp.run("configmap-query", **names)


def test_keepalive_keeps_session(join):
    """(f) keepalives (source websocket, resource node, content "ping") get no answer and keep the session:
    the next request is still answered on the same connection."""
    rp = join("ke-keepalive")
    assert rp.edge.keepalives_sent() == 1  # right after connecting
    rp.run("register-node")
    rp.run("keepalive")
    rp.run("lease-query")
    assert rp.edge.is_open(), rp.edge.closed
    assert not any(m["header"].get("parent_msg_id") in {k["header"]["msg_id"] for k in rp.edge.sent if k["route"].get("operation") == "keepalive"}
                   for m in rp.edge.received), "a keepalive was answered; cloudcore answers none"


def test_unknown_operation_keeps_connection(join):
    """(g) an operation outside the beehive constants (taskmanager's UpdateNodeActionStatus) is dropped,
    not fatal: the next request is answered on the same connection."""
    rp = join("ke-unknown")
    rp.run("register-node")
    rp.run("unknown-operation", job="upgrade-1")
    rp.run("node-heartbeat")
    assert rp.edge.is_open(), rp.edge.closed
