"""Devices as a KubeEdge user runs them: `swiftedge cloud` (KubeEdge's v1beta1 device CRDs
installed), `swiftedge edge` with the real mosquitto as its MQTT broker and a DMI socket,
`swiftedge mapper modbus` registered over DMI, and a Modbus TCP device (modbus_sim.py).
A DeviceModel and a Device applied with kubectl: the device's values reach its DeviceStatus;
a desired value set in the cloud is written to the device; the twin is read and updated over
MQTT with KubeEdge's $hw topics and messages (a malformed one refused); the device going away
shows as offline, and back as online; with the cloud away the edge still answers from its twin
and the cloud catches up when it returns; deleting the Device stops the polling."""
import json
import os
import subprocess

import pytest

from cloudedge import Cloud, Edge
from conftest import Kubectl, free_port, kubectl_binaries, wait_for
from devices_support import MOSQUITTO, MQTT, Mapper, ModbusSim, Mosquitto, Twin, listening, stop_process, unix_socket_path

pytestmark = pytest.mark.skipif(not os.path.exists(MOSQUITTO),
                                reason=f"{MOSQUITTO} is not installed (apt-get install mosquitto mosquitto-clients)")

NODE, NAMESPACE, DEVICE = "shop-1", "default", "thermo-1"
# collectCycle/reportCycle/stateReport.reportCycle, read by SwiftEdge as milliseconds.
CYCLE_MS = 500

MANIFESTS = """
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {name: thermostat, namespace: default}
spec:
  protocol: modbus
  properties:
  - {name: temperature, description: room temperature, type: INT, accessMode: ReadOnly}
  - {name: setpoint, description: target temperature, type: INT, accessMode: ReadWrite}
  - {name: label, description: set over MQTT only; the mapper has no visitor for it, type: STRING, accessMode: ReadWrite}
  - {name: broken, description: a register the device does not have (it answers with an exception), type: INT, accessMode: ReadOnly}
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: thermo-1, namespace: default}
spec:
  deviceModelRef: {name: thermostat}
  nodeName: NODE
  protocol:
    protocolName: modbus
    configData: {communicateMode: TCP, ip: 127.0.0.1, port: SIMPORT, slaveID: 1}
  stateReport: {reportCycle: CYCLE, reportToCloud: true}
  properties:
  - name: temperature
    collectCycle: CYCLE
    reportCycle: CYCLE
    reportToCloud: true
    visitors:
      protocolName: modbus
      configData: {dataType: int, register: InputRegister, offset: 0, limit: 1, scale: 1}
  - name: setpoint
    desired: {value: "20"}
    collectCycle: CYCLE
    reportCycle: CYCLE
    reportToCloud: true
    visitors:
      protocolName: modbus
      configData: {dataType: int, register: HoldingRegister, offset: 1, limit: 1, scale: 1}
  - name: label
    reportToCloud: true
  - name: broken
    collectCycle: CYCLE
    reportCycle: CYCLE
    visitors:
      protocolName: modbus
      configData: {dataType: int, register: HoldingRegister, offset: 5000, limit: 1}
"""


def device_events(k):
    """Reasons of the Events about the device."""
    out = k.run("get", "events", "-n", NAMESPACE, "--field-selector", f"involvedObject.name={DEVICE}", "-o", "json", check=False)
    return [e.get("reason") for e in json.loads(out.stdout or '{"items": []}').get("items", [])] if out.returncode == 0 else []


def manifests(sim_port):
    return MANIFESTS.replace("NODE", NODE).replace("SIMPORT", str(sim_port)).replace("CYCLE", str(CYCLE_MS))


class DeviceEdge(Edge):
    """An edge node with an MQTT broker (the EventBus) and a DMI socket for mappers."""

    def __init__(self, tmp, cloud, name, mqtt_url, mqtt_args=()):
        super().__init__(tmp, cloud, name)
        self.mqtt_url, self.mqtt_args = mqtt_url, list(mqtt_args)
        self.dmi_sock = unix_socket_path(self.dir / "dmi.sock")

    def args(self, token=None, cert_port=None):
        return super().args(token, cert_port) + ["--mqtt-server", self.mqtt_url, "--dmi-sock", str(self.dmi_sock), *self.mqtt_args]


@pytest.fixture
def cloud(tmp_path):
    c = Cloud(tmp_path).start()
    yield c
    c.stop()


@pytest.fixture
def mosquitto(tmp_path):
    m = Mosquitto(tmp_path / "mosquitto", free_port()).start()
    yield m
    m.stop()


@pytest.fixture
def sim(tmp_path):
    s = ModbusSim(tmp_path).start()
    yield s
    s.stop()


@pytest.fixture
def edge(tmp_path, cloud, mosquitto):
    e = DeviceEdge(tmp_path, cloud, NODE, mosquitto.url).start(cloud.token())
    yield e
    e.stop()


@pytest.fixture
def mapper(tmp_path, edge):
    wait_for(lambda: edge.dmi_sock.exists() or edge.proc.poll() is not None, 30, what="the edge's DMI socket")
    assert edge.proc.poll() is None, "edge exited:\n" + edge.log.read_text()[-3000:]
    m = Mapper(tmp_path, edge.dmi_sock).start()
    yield m
    m.stop()


@pytest.fixture
def mqtt(mosquitto):
    c = MQTT(mosquitto.port)
    yield c
    c.close()


class Scene:
    """The processes of one test, and what it reads from them; a timeout shows the last state
    seen and the tails of the logs."""

    def __init__(self, k, edge, mapper, sim, twin):
        self.k, self.edge, self.mapper, self.sim, self.twin = k, edge, mapper, sim, twin
        self.last = None

    def status(self):
        """The DeviceStatus as {"state": ..., "twins": {property: reported value}}, or None."""
        r = self.k.run("get", "devicestatus", DEVICE, "-n", NAMESPACE, "-o", "json", check=False)
        if r.returncode != 0:
            self.last = r.stderr.strip()
            return None
        st = json.loads(r.stdout).get("status") or {}
        self.last = {"state": st.get("state"),
                     "twins": {t.get("propertyName"): (t.get("reported") or {}).get("value") for t in st.get("twins") or []}}
        return self.last

    def logs(self):
        tail = lambda p: p.read_text()[-2500:] if p.exists() else "(no log)"  # noqa: E731
        return (f"\n--- edge log\n{tail(self.edge.log)}\n--- mapper log (alive={self.mapper.alive()})\n{tail(self.mapper.log)}"
                f"\n--- simulator log\n{tail(self.sim.log)}")

    def wait(self, pred, timeout, what):
        try:
            return wait_for(pred, timeout, 0.2, what)
        except AssertionError as e:
            raise AssertionError(f"{e}; last DeviceStatus seen: {self.last}{self.logs()}") from None

    def wait_status(self, pred, timeout, what):
        return self.wait(lambda: (lambda s: s if s and pred(s) else None)(self.status()), timeout, what)

    def wait_reported(self, values, timeout, what=None):
        """Waits until every property in `values` is reported with that value (a string)."""
        return self.wait_status(lambda s: all(s["twins"].get(p) == v for p, v in values.items()), timeout,
                                what or f"DeviceStatus reporting {values}")

    def wait_twin(self, pred, timeout, what):
        """Asks twin/get over MQTT until the get/result satisfies pred."""
        def ask():
            try:
                self.last = self.twin.get(timeout=2)
            except AssertionError as e:  # no answer (yet): e.g. the edge is still starting
                self.last = str(e)
                return None
            return self.last if pred(self.last) else None
        return self.wait(ask, timeout, what)


def test_modbus_device_through_mapper_twin_and_mqtt(tmp_path, cloud, mosquitto, sim, edge, mapper, mqtt):
    binaries = kubectl_binaries()
    k = Kubectl(binaries[max(binaries)], max(binaries), cloud.kubeconfig, tmp_path)
    twin = Twin(mqtt, NAMESPACE, DEVICE)
    mqtt.subscribe(twin.topic("update/document"), twin.topic("update/delta"), twin.topic("update/result"),
                   twin.topic("get/result"))
    scene = Scene(k, edge, mapper, sim, twin)
    wait_for(lambda: edge.proc.poll() is not None or "connected to the cloud" in edge.log.read_text(), 30, what="edge connected")
    assert edge.proc.poll() is None, "edge exited:\n" + edge.log.read_text()[-3000:]
    # The cloud installs KubeEdge's device CRDs itself.
    wait_for(lambda: k.run("get", "devicemodels", "-n", NAMESPACE, check=False).returncode == 0, 30, what="device CRDs served")

    k("apply", "-f", "-", input=manifests(sim.port))
    stored = json.loads(k("get", "device", DEVICE, "-n", NAMESPACE, "-o", "json"))
    # configData is schemaless (x-kubernetes-preserve-unknown-fields): kept as given, not pruned.
    assert stored["spec"]["protocol"]["configData"] == {"communicateMode": "TCP", "ip": "127.0.0.1", "port": sim.port, "slaveID": 1}
    assert stored["spec"]["properties"][1]["visitors"]["configData"]["register"] == "HoldingRegister"

    # a. The mapper polls the device; its values and state reach the DeviceStatus (as strings).
    scene.wait_status(lambda s: s["twins"].get("temperature") == "215" and s["twins"].get("setpoint") == "20"
                      and s["state"] == "online", 30, "temperature 215, setpoint 20, online")
    # The register the device does not have is answered with a Modbus exception: no value for
    # that property, the others unaffected, the device still online.
    assert scene.status()["twins"].get("broken") is None

    # b. The device's value changes: the DeviceStatus follows.
    sim.set("input", 0, 230)
    scene.wait_reported({"temperature": "230"}, 10)

    # c. A desired value set in the cloud is written to the device (Modbus function 6), and then
    # reported back; the edge announces the new expected value on twin/update/delta.
    mark = mqtt.mark()
    props = [p["name"] for p in json.loads(k("get", "device", DEVICE, "-n", NAMESPACE, "-o", "json"))["spec"]["properties"]]
    k("patch", "device", DEVICE, "-n", NAMESPACE, "--type=json", "-p",
      json.dumps([{"op": "replace", "path": f"/spec/properties/{props.index('setpoint')}/desired/value", "value": "42"}]))
    scene.wait(lambda: sim.get("holding", 1) == 42, 10, "holding register 1 written with 42")
    scene.wait_reported({"setpoint": "42"}, 10)

    def delta_has_42(m):
        d = m.json() or {}
        return (d.get("delta") or {}).get("setpoint") == "42" or Twin.expected(d, "setpoint") == "42"
    mqtt.wait(twin.topic("update/delta"), delta_has_42, since=mark, timeout=10, what="a delta with setpoint 42")

    # d. MQTT: twin/get answers with the twin, KubeEdge's format: twin.<property>.actual/expected.
    got = scene.wait_twin(lambda r: Twin.actual(r, "temperature") == "230" and Twin.actual(r, "setpoint") == "42", 10,
                          "get/result with temperature 230 and setpoint 42")
    assert Twin.expected(got, "setpoint") == "42", got
    # A twin update from a device app (to a property no mapper polls): result, document, cloud.
    # (Its result is told from any other on the topic by the echoed event_id or the twin it names.)
    mark = mqtt.mark()
    twin.update({"label": {"actual": {"value": "from-mqtt"}}}, event_id="e2e-label-1")
    result = mqtt.wait(twin.topic("update/result"),
                       lambda m: (lambda d: isinstance(d, dict) and (d.get("event_id") == "e2e-label-1"
                                                                     or "label" in (d.get("twin") or {})))(m.json()),
                       since=mark, what="update/result for label").json()
    assert not Twin.is_error(result), result
    document = mqtt.wait(twin.topic("update/document"), lambda m: "label" in ((m.json() or {}).get("twin") or {}),
                         since=mark, what="update/document for label").json()
    assert "from-mqtt" in json.dumps(document["twin"]["label"]), document
    scene.wait_reported({"label": "from-mqtt"}, 10)
    assert Twin.actual(twin.get(), "label") == "from-mqtt"
    # A malformed update is refused with an error result; the twin is unchanged.
    mark = mqtt.mark()
    mqtt.publish(twin.topic("update"), "not json")
    refused = mqtt.wait(twin.topic("update/result"), lambda m: Twin.is_error(m.json()), since=mark,
                        what="an error update/result for a malformed update").json()
    after = twin.get()
    assert Twin.actual(after, "label") == "from-mqtt" and Twin.actual(after, "temperature") == "230", after
    assert scene.status()["twins"]["label"] == "from-mqtt"

    # e. The device goes away: offline; it returns on the same port: online again.
    sim.stop()
    scene.wait_status(lambda s: s["state"] == "offline", 15, "state offline")
    scene.wait(lambda: "DeviceOffline" in device_events(k), 10, "a DeviceOffline event")
    sim.start()
    scene.wait_status(lambda s: s["state"] == "online", 15, "state online again")
    # The restarted device lost its registers: the mapper writes the desired value again.
    scene.wait(lambda: sim.get("holding", 1) == 42, 10, "holding register 1 written again after the device returned")

    # f. Without the cloud the edge keeps polling and answers over MQTT from its twin.
    cloud.stop()
    sim.set("input", 0, 250)
    got = scene.wait_twin(lambda r: Twin.actual(r, "temperature") == "250", 10, "get/result with temperature 250, cloud away")
    assert Twin.expected(got, "setpoint") == "42" and Twin.actual(got, "label") == "from-mqtt", got
    # The edge restarts while the cloud is away (the mapper stopped too): the twin comes back
    # from the node's database; the mapper registers again and polling resumes, all offline.
    mapper.stop()
    edge.stop()
    edge.start()
    scene.wait_twin(lambda r: Twin.actual(r, "temperature") == "250" and Twin.actual(r, "label") == "from-mqtt"
                    and Twin.expected(r, "setpoint") == "42", 20, "the twin restored after an offline restart of the edge")
    mapper.start()
    sim.set("input", 0, 260)
    scene.wait_twin(lambda r: Twin.actual(r, "temperature") == "260", 20, "polling resumed with the restarted edge")
    # The cloud returns: the DeviceStatus catches up.
    cloud.start()
    scene.wait_reported({"temperature": "260", "label": "from-mqtt"}, 30)

    # The broker restarts: the edge connects again and subscribes again (a new test client too).
    mosquitto.stop()
    mosquitto.start()
    mqtt = MQTT(mosquitto.port)
    twin = Twin(mqtt, NAMESPACE, DEVICE)
    mqtt.subscribe(twin.topic("get/result"))
    scene.twin = twin
    scene.wait_twin(lambda r: Twin.actual(r, "temperature") == "260", 30, "twin/get answered after the broker restarted")

    # A desired value of the wrong type is refused at the edge with an Event in the cloud and
    # never written to the device.
    k("patch", "device", DEVICE, "-n", NAMESPACE, "--type=json", "-p",
      json.dumps([{"op": "replace", "path": f"/spec/properties/{props.index('setpoint')}/desired/value", "value": "warm"}]))
    scene.wait(lambda: "InvalidDesiredValue" in device_events(k), 15, "an InvalidDesiredValue event")
    assert sim.get("holding", 1) == 42
    assert scene.status()["twins"]["setpoint"] == "42"

    # g. The Device is deleted: the mapper stops polling it (no Modbus request for 3 s, i.e. six
    # cycles), stays up, and the edge no longer answers with its twin.
    k("delete", "device", DEVICE, "-n", NAMESPACE)
    scene.wait(lambda: sim.stats()["idle_seconds"] >= 3, 30, "no more Modbus requests")
    assert mapper.alive(), "the mapper exited:\n" + mapper.log.read_text()[-3000:]
    mark = mqtt.mark()
    mqtt.publish(twin.topic("get"), {"event_id": "", "timestamp": Twin.now_ms()})
    try:
        answer = mqtt.wait(twin.topic("get/result"), since=mark, timeout=5).json()
    except AssertionError:
        answer = None  # not answering for a device it no longer has is fine too
    assert answer is None or Twin.is_error(answer) or Twin.actual(answer, "temperature") is None, answer


def test_eventbus_over_tls_with_a_password(tmp_path, cloud):
    """The EventBus reaches a broker that requires TLS and a user name/password (mosquitto with
    a private CA): the node answers membership requests through it; a wrong password is
    refused with a message that says so."""
    d = tmp_path / "tls"
    d.mkdir()
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt",
            "-days", "2", "-extfile", "san.ext")
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(d / "passwd"), "edge", "s3cret"], check=True, capture_output=True)
    port = free_port()
    conf = d / "mosquitto.conf"
    # user root: mosquitto started as root would switch to its own user, which cannot read the
    # test's private folder.
    conf.write_text(f"user root\nlistener {port} 127.0.0.1\nallow_anonymous false\npassword_file {d / 'passwd'}\npersistence false\n"
                    f"cafile {d / 'ca.crt'}\ncertfile {d / 'server.crt'}\nkeyfile {d / 'server.key'}\nlog_dest stderr\n")
    log = open(d / "mosquitto.log", "wb")
    broker = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: broker.poll() is not None or listening(port), 20, 0.05, "mosquitto (TLS) listening")
        assert broker.poll() is None, (d / "mosquitto.log").read_text()
        (d / "password").write_text("wrong\n")
        edge = DeviceEdge(tmp_path, cloud, NODE, f"ssl://127.0.0.1:{port}",
                          ["--mqtt-ca-file", str(d / "ca.crt"), "--mqtt-username", "edge", "--mqtt-password-file", str(d / "password")])
        edge.start(cloud.token())
        try:
            wait_for(lambda: "not authorized (check the user name and password)" in edge.log.read_text(), 30, what="the broker's refusal in the edge log")
        finally:
            edge.stop()
        (d / "password").write_text("s3cret\n")
        edge.start()
        try:
            wait_for(lambda: "connected to the MQTT broker" in edge.log.read_text(), 30, what="the edge connected over TLS")
            # A client of the same broker asks for the node's devices and gets the answer.
            sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "--cafile", str(d / "ca.crt"), "-u", "edge",
                                    "-P", "s3cret", "-t", f"$hw/events/node/{NODE}/membership/get/result", "-C", "1", "-W", "20"],
                                   stdout=subprocess.PIPE, text=True)
            def ask():
                subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "--cafile", str(d / "ca.crt"), "-u", "edge", "-P", "s3cret",
                                "-t", f"$hw/events/node/{NODE}/membership/get", "-m", '{"event_id":"tls-1"}'], check=True)
                return sub.poll() is not None
            wait_for(ask, 20, 0.5, "a membership answer over TLS")
            answer = json.loads(sub.stdout.read())
            assert answer["event_id"] == "tls-1" and answer["devices"] == [], answer
        finally:
            edge.stop()
    finally:
        stop_process(broker)
        log.close()
