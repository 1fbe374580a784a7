"""KubeEdge's router end to end: `swiftedge cloud --router-port` (the REST ingress), one edge node
with a real mosquitto as its broker, KubeEdge's own Rule/RuleEndpoint samples applied unchanged,
then rules the test points at what it runs itself — a REST endpoint (a Python HTTP server) and an
HTTP app on the node:
- eventbus→rest: `mosquitto_pub` on the rule's topic at the edge reaches the REST endpoint;
- rest→eventbus: a POST to the ingress reaches an MQTT subscriber at the edge;
- rest→servicebus: a call through the ingress reaches the node's HTTP app, its answer comes back;
- servicebus→rest: an app on the node calls the cloud's REST endpoint through the servicebus.
Rule status counts what was delivered and what failed; bad input (no rule, a body over the
limit, a rule whose RuleEndpoint is gone) gets a clear answer."""
import http.server
import json
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cloudedge import Cloud, Edge
from conftest import Kubectl, free_port, kubectl_binaries, wait_for
from devices_support import MQTT, Mosquitto

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "kubeedge-crds" / "samples" / "router"
NODE = "router-node"


class Recorder:
    """A plain HTTP server (the REST endpoint in the cloud, or the app on the node): records every
    request and answers 201 with what it got, or `status` when set."""

    def __init__(self, name):
        self.name, self.requests, self.lock = name, [], threading.Lock()
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle_any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with rec.lock:
                    rec.requests.append({"method": self.command, "path": self.path, "body": body.decode(), "headers": dict(self.headers)})
                answer = f"{rec.name}:{self.command} {self.path} {body.decode()}".encode()
                self.send_response(201)
                self.send_header("Content-Type", "text/plain")
                self.send_header("X-Answered-By", rec.name)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PUT = handle_any

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def got(self, pred):
        with self.lock:
            return next((r for r in self.requests if pred(r)), None)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class RouterEdge(Edge):
    def __init__(self, tmp, cloud, name, mqtt_url, servicebus_port):
        super().__init__(tmp, cloud, name)
        self.mqtt_url, self.servicebus_port = mqtt_url, servicebus_port

    def args(self, token=None, cert_port=None):
        return super().args(token, cert_port) + ["--mqtt-server", self.mqtt_url, "--servicebus-port", str(self.servicebus_port)]


def http_call(method, url, body=b"", headers=None, timeout=30):
    req = urllib.request.Request(url, data=body if method != "GET" else None, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def kjson(k, *args):
    return json.loads(k(*args, "-o", "json"))


def endpoint(name, type_, props=None):
    return {"apiVersion": "rules.kubeedge.io/v1", "kind": "RuleEndpoint", "metadata": {"name": name},
            "spec": {"ruleEndpointType": type_, "properties": props or {}}}


def rule(name, source, source_resource, target, target_resource):
    return {"apiVersion": "rules.kubeedge.io/v1", "kind": "Rule", "metadata": {"name": name},
            "spec": {"source": source, "sourceResource": source_resource, "target": target, "targetResource": target_resource}}


@pytest.fixture
def scene(tmp_path):
    mosq = Mosquitto(tmp_path / "mosquitto", free_port()).start()
    router_port, sb_port = free_port(), free_port()
    cloud = Cloud(tmp_path, ["--router-port", str(router_port)]).start()
    rest, app = Recorder("rest"), Recorder("app")
    edge = RouterEdge(tmp_path, cloud, NODE, mosq.url, sb_port).start(cloud.token())
    mqtt = MQTT(mosq.port)
    yield cloud, edge, mosq, mqtt, rest, app, router_port, sb_port
    mqtt.close()
    edge.stop()
    cloud.stop()
    rest.close()
    app.close()
    mosq.stop()


def test_rules_move_messages_between_rest_mqtt_and_http_apps(tmp_path, scene):
    cloud, edge, mosq, mqtt, rest, app, router_port, sb_port = scene
    binaries = kubectl_binaries()
    k = Kubectl(binaries[max(binaries)], max(binaries), cloud.kubeconfig, tmp_path)
    ingress = f"http://127.0.0.1:{router_port}"
    wait_for(lambda: "router REST ingress on" in cloud.log.read_text(), 30, what="router ingress listening", detail=lambda: cloud.log.read_text()[-2000:])
    wait_for(lambda: edge.proc.poll() is not None or "connected to the cloud" in edge.log.read_text(), 30, what="edge connected")
    assert edge.proc.poll() is None, edge.log.read_text()[-3000:]

    # KubeEdge's samples apply unchanged (the cloud installed the rules.kubeedge.io CRDs itself).
    for f in ["ruleEndpoint-rest.yaml", "ruleEndpoint-eventbus.yaml", "ruleEndpoint-servicebus.yaml",
              "rule-rest-eventbus.yaml", "rule-eventbus-rest.yaml", "rule-rest-servicebus.yaml"]:
        k("apply", "-f", str(SAMPLES / f))
    assert len(kjson(k, "get", "rules")["items"]) == 3 and len(kjson(k, "get", "ruleendpoints")["items"]) == 3

    # The test's own endpoints and rules.
    rest_url = f"http://127.0.0.1:{rest.port}/in"
    k("apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in [
        endpoint("app", "servicebus", {"service_port": str(app.port)}),
        endpoint("sb", "servicebus", {"service_port": str(sb_port)}),  # KubeEdge's admission wants one on every servicebus endpoint
        rule("from-mqtt", "my-eventbus", {"topic": "sensors", "node_name": NODE}, "my-rest", {"resource": rest_url}),
        rule("to-mqtt", "my-rest", {"path": "/cmd"}, "my-eventbus", {"topic": "edge/cmd"}),
        rule("to-app", "my-rest", {"path": "/svc"}, "app", {"path": "/app"}),
        rule("app-out", "sb", {"target_url": rest_url, "node_name": NODE}, "my-rest", {"resource": rest_url}),
    ]))

    # eventbus→rest: an app at the edge publishes on <namespace>/<topic> (KubeEdge's subscription).
    def published():
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosq.port), "-t", "default/sensors", "-m", '{"t": 21.5}'], check=True, timeout=10)
        return rest.got(lambda r: r["path"] == "/in" and r["body"] == '{"t": 21.5}')
    got = wait_for(published, 30, interval=0.5, what="the MQTT message at the REST endpoint", detail=lambda: edge.log.read_text()[-2000:])
    assert got["method"] == "POST"

    # rest→eventbus: a POST to the ingress reaches an MQTT subscriber at the edge.
    mqtt.subscribe("edge/cmd")
    mark = mqtt.mark()
    status, body, _ = http_call("POST", f"{ingress}/{NODE}/default/cmd", b'{"open": true}', {"Content-Type": "application/json"})
    assert (status, body) == (200, "message delivered"), (status, body)
    assert mqtt.wait("edge/cmd", since=mark).payload == '{"open": true}'

    # rest→servicebus: the node's HTTP app answers, its status, headers and body come back;
    # the rest of the path after the rule's follows the target path.
    status, body, headers = http_call("PUT", f"{ingress}/{NODE}/default/svc/valve/3", b"close")
    assert status == 201, (status, body)
    assert body == "app:PUT /app/valve/3 close", body
    assert headers.get("X-Answered-By") == "app", headers

    # servicebus→rest: an app on the node calls the allowed URL through the servicebus.
    def through_servicebus():
        s, b, _ = http_call("POST", f"http://127.0.0.1:{sb_port}/", json.dumps({"targetURL": rest_url, "body": "ping"}).encode())
        return (s, b) if s != 403 else None  # 403 until the cloud's allow-list reached the node
    s, b = wait_for(through_servicebus, 30, interval=0.5, what="the servicebus allowing the rule's URL")
    assert (s, b) == (201, "rest:POST /in ping"), (s, b)
    s, b, _ = http_call("POST", f"http://127.0.0.1:{sb_port}/", json.dumps({"targetURL": "http://127.0.0.1:1/nope"}).encode())
    assert s == 403 and "no rule" in b, (s, b)

    # Bad input: no rule for the path; a body over the limit; the edge's servicebus given nonsense.
    s, b, _ = http_call("POST", f"{ingress}/{NODE}/default/nowhere", b"x")
    assert s == 404 and "no rule" in b, (s, b)
    s, b, _ = http_call("POST", f"{ingress}/{NODE}/default/cmd", b"x" * (4 * 1024 * 1024 + 1))
    assert s == 413, (s, b[:200])
    s, b, _ = http_call("POST", f"http://127.0.0.1:{sb_port}/", b"not json")
    assert s == 400, (s, b)

    # Status: successes counted per rule.
    def counts(name):
        st = kjson(k, "get", "rule", name).get("status", {})
        return st.get("successMessages", 0), st.get("failMessages", 0), st.get("errors", [])
    wait_for(lambda: counts("from-mqtt")[0] >= 1 and counts("to-mqtt")[0] >= 1 and counts("to-app")[0] >= 1 and counts("app-out")[0] >= 1,
             15, interval=0.5, what="successes in the rules' status", detail=lambda: [counts(n) for n in ("from-mqtt", "to-mqtt", "to-app", "app-out")])

    # A REST endpoint that is down: the failure is counted with its error; so is a node that is not connected.
    # (KubeEdge's admission refuses spec updates of Rules: replaced.)
    assert "unsupported webhook operation" in k.run("patch", "rule", "from-mqtt", "--type=merge", "-p",
                                                    json.dumps({"spec": {"targetResource": {"resource": "http://x"}}}), check=False).stderr
    k("delete", "rule", "from-mqtt")
    k("apply", "-f", "-", input=json.dumps(rule("from-mqtt", "my-eventbus", {"topic": "sensors", "node_name": NODE}, "my-rest",
                                                {"resource": "http://127.0.0.1:1/down"})))
    def failed():
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosq.port), "-t", "default/sensors", "-m", "lost"], check=True, timeout=10)
        ok, fail, errors = counts("from-mqtt")
        return errors if fail >= 1 and any("127.0.0.1:1/down" in e for e in errors) else None
    wait_for(failed, 30, interval=1, what="the failed delivery in the rule's status")
    s, b, _ = http_call("POST", f"{ingress}/no-such-node/default/cmd", b"x")
    assert s == 503 and "not connected" in b, (s, b)

    # A rule whose RuleEndpoint is gone says so in its status; its path is no longer routed.
    k("delete", "ruleendpoint", "app")
    wait_for(lambda: any("app not found" in e for e in counts("to-app")[2]), 15, interval=0.5, what="the missing RuleEndpoint in the rule's status",
             detail=lambda: counts("to-app"))
    s, b, _ = http_call("GET", f"{ingress}/{NODE}/default/svc/x")
    assert s == 404, (s, b)
