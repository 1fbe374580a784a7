"""Helpers for the devices end-to-end test: a mosquitto broker, an MQTT client that records what
it receives, the Modbus device simulator (modbus_sim.py) and the `swiftedge mapper` process,
and the KubeEdge twin topics."""
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import paho.mqtt.client as paho

from conftest import BIN, free_port, wait_for

MOSQUITTO = "/usr/sbin/mosquitto"
HERE = Path(__file__).resolve().parent


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def stop_process(proc, timeout=20):
    """SIGTERM, then SIGKILL if it lingers; returns the exit code."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode if proc else None


def unix_socket_path(path):
    """A unix socket path must fit sockaddr_un (107 bytes and a NUL)."""
    assert len(str(path).encode()) < 108, f"unix socket path too long ({len(str(path))} bytes): {path}"
    return path


class Mosquitto:
    """The real broker, anonymous, on a free loopback port."""

    def __init__(self, dir_, port):
        self.dir, self.port = Path(dir_), port
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"
        self.proc = None

    def start(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        # log_dest stderr: mosquitto started as root drops to its own user, which could not open a
        # log file in our directory; the file descriptor we hand it is fine.
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                             "log_dest stderr\nlog_type all\n")
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=self.logf, stderr=subprocess.STDOUT)
        wait_for(lambda: self.proc.poll() is not None or listening(self.port), 20, 0.05, "mosquitto listening")
        assert self.proc.poll() is None, "mosquitto exited:\n" + self.log.read_text()[-2000:]
        return self

    @property
    def url(self):
        return f"tcp://127.0.0.1:{self.port}"

    def stop(self):
        stop_process(self.proc)
        self.logf.close()


class Message:
    def __init__(self, topic, payload):
        self.topic, self.payload, self.at = topic, payload, time.time()

    def json(self):
        """The payload as JSON, or None if it is not JSON."""
        try:
            return json.loads(self.payload)
        except ValueError:
            return None

    def __repr__(self):
        return f"<{self.topic} {self.payload[:300]!r}>"


class MQTT:
    """A paho client (1.x or 2.x) that records every message it receives, in order. Use mark()
    before an action and wait(topic, since=mark) after it to see only what the action caused."""

    def __init__(self, port, client_id=None):
        kw = {"client_id": client_id or "e2e-" + uuid.uuid4().hex[:8], "protocol": paho.MQTTv311}
        if hasattr(paho, "CallbackAPIVersion"):  # paho-mqtt 2.x
            kw["callback_api_version"] = paho.CallbackAPIVersion.VERSION2
        self.client = paho.Client(**kw)
        self.lock = threading.Lock()
        self.messages = []
        self.connected = threading.Event()
        self.suback = set()
        self.connack = None
        self.client.on_connect = lambda c, u, flags, rc, *props: self._connected(rc)
        self.client.on_subscribe = lambda c, u, mid, *rest: self._subscribed(mid)
        self.client.on_message = lambda c, u, msg: self._received(msg)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(10), f"MQTT connect to 127.0.0.1:{port} timed out"
        assert self.connack == 0, f"MQTT connect to 127.0.0.1:{port} refused: {self.connack}"

    def _connected(self, rc):
        self.connack = rc  # an int (paho 1.x) or a ReasonCode, which compares equal to its value (2.x)
        self.connected.set()

    def _subscribed(self, mid):
        with self.lock:
            self.suback.add(mid)

    def _received(self, msg):
        with self.lock:
            self.messages.append(Message(msg.topic, msg.payload.decode("utf-8", "replace")))

    def subscribe(self, *topics, qos=1):
        """Subscribes and waits for the broker's SUBACK, so nothing published afterwards is missed."""
        rc, mid = self.client.subscribe([(t, qos) for t in topics])
        assert rc == paho.MQTT_ERR_SUCCESS, f"subscribe failed: {rc}"
        wait_for(lambda: mid in self.suback, 10, 0.01, f"SUBACK for {topics}")

    def publish(self, topic, payload, qos=1):
        if not isinstance(payload, (str, bytes)):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(10)
        assert info.is_published(), f"publish to {topic} not acknowledged"

    def mark(self):
        with self.lock:
            return len(self.messages)

    def received(self, topic=None, since=0):
        with self.lock:
            return [m for m in self.messages[since:] if topic is None or m.topic == topic]

    def wait(self, topic, pred=lambda m: True, since=0, timeout=10, what=None):
        """The first message on topic (from index `since`) that satisfies pred(message)."""
        def find():
            return next((m for m in self.received(topic, since) if pred(m)), None)

        try:
            return wait_for(find, timeout, 0.02, what or f"a message on {topic}")
        except AssertionError as e:
            raise AssertionError(f"{e}; received on {topic} since #{since}: {self.received(topic, since)[-5:]}") from None

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


class Twin:
    """KubeEdge's device twin topics for one device: $hw/events/device/<ns>/<name>/twin/..."""

    def __init__(self, mqtt, namespace, name):
        self.mqtt = mqtt
        self.base = f"$hw/events/device/{namespace}/{name}/twin"

    def topic(self, suffix=""):
        return self.base + (f"/{suffix}" if suffix else "")

    @staticmethod
    def now_ms():
        return int(time.time() * 1000)

    def get(self, timeout=5):
        """Publishes twin/get and returns the JSON of the get/result answering it."""
        mark = self.mqtt.mark()
        self.mqtt.publish(self.topic("get"), {"event_id": "", "timestamp": self.now_ms()})
        return self.mqtt.wait(self.topic("get/result"), since=mark, timeout=timeout).json()

    def update(self, twins, event_id=""):
        """Publishes a KubeEdge twin update, e.g. {"label": {"actual": {"value": "x"}}}."""
        self.mqtt.publish(self.topic("update"), {"event_id": event_id, "timestamp": self.now_ms(), "twin": twins})

    @staticmethod
    def actual(result, prop):
        """twin.<prop>.actual.value of a get/result (None when absent)."""
        return ((((result or {}).get("twin") or {}).get(prop) or {}).get("actual") or {}).get("value")

    @staticmethod
    def expected(result, prop):
        return ((((result or {}).get("twin") or {}).get(prop) or {}).get("expected") or {}).get("value")

    @staticmethod
    def is_error(result):
        """A KubeEdge error result: {"event_id", "timestamp", "code": 4xx/5xx, "reason": "..."}."""
        if not isinstance(result, dict):
            return False
        code = result.get("code")
        if isinstance(code, int) and code >= 400:
            return True
        return any(result.get(k) for k in ("reason", "err", "error"))


class ModbusSim:
    """modbus_sim.py as a process, with its HTTP control port. Restartable on the same ports."""

    def __init__(self, dir_, port=None, control_port=None):
        self.dir = Path(dir_)
        self.port, self.control_port = port or free_port(), control_port or free_port()
        self.log = self.dir / "modbus_sim.log"
        self.proc = None

    def start(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, str(HERE / "modbus_sim.py"), "--port", str(self.port),
                                      "--control-port", str(self.control_port)],
                                     stdout=subprocess.PIPE, stderr=self.logf, text=True)
        line = self.proc.stdout.readline()  # prints only `ready`, or exits
        assert line.strip() == "ready", f"modbus_sim did not start ({line!r}):\n" + self.log.read_text()[-2000:]
        return self

    def stop(self):
        rc = stop_process(self.proc)
        if self.proc:
            self.proc.stdout.close()
            self.logf.close()
        return rc

    def _http(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.control_port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def get(self, table, addr):
        """table: holding, input, coil or discrete."""
        return self._http("GET", f"/{table}/{addr}")["value"]

    def set(self, table, addr, value):
        return self._http("PUT", f"/{table}/{addr}", {"value": value})["value"]

    def stats(self):
        """{"requests", "reads", "writes", "idle_seconds"} of Modbus requests since this process started."""
        return self._http("GET", "/stats")


class Mapper:
    """`swiftedge mapper modbus`, registered with the edge over its DMI socket."""

    def __init__(self, dir_, dmi_sock, protocol="modbus"):
        self.dir = Path(dir_)
        self.dmi_sock, self.protocol = dmi_sock, protocol
        self.socket = unix_socket_path(self.dir / f"{protocol}.sock")
        self.log = self.dir / f"mapper-{protocol}.log"
        self.proc = None

    def start(self):
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen([str(BIN), "mapper", self.protocol, "--dmi-sock", str(self.dmi_sock),
                                      "--socket", str(self.socket)], stdout=self.logf, stderr=subprocess.STDOUT)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        stop_process(self.proc)
        if self.proc:
            self.logf.close()
