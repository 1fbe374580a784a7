"""A small imitation of KubeEdge's edgecore (v1.23 line) on the wire, driven by the contract data in
tests/contract/kubeedge/edgecore-v1.23.json.

It does what edgecore does, written from KubeEdge's source and independent of SwiftEdge's code:
- certificate bootstrap (edge/pkg/edgehub/certificate/certmanager.go): `GET /ca.crt` without
  verification, the CA checked against the token's hash, an ECDSA P-256 key and a CSR
  (CN=system:node:<node>, O=system:nodes), `GET /edge.crt` with the CSR DER as body and headers
  `Authorization: Bearer <jwt>` and `NodeName`, the CA verifying the server;
- the WebSocket session (edge/pkg/edgehub/clients/wsclient/websocket.go): wss://<cloud>:<hub>/
  <project>/<node>/events with headers node_id, project_id, ConnectionUse: msg and the node
  certificate; one JSON message per text frame; a keepalive right after connecting and then every
  heartbeat;
- metamanager's acks (edge/pkg/metamanager/process.go): every cloud-initiated insert/update/delete
  in group resource/func is acked with the route copied, operation `response`, content "OK",
  parent_msg_id = the received msg_id; answers to remote requests are acked when the contract says so.

`Replayer.run(step_id, ...)` renders a contract step (placeholders, captures), sends it, waits for
the answer with a deadline and checks it against the step's `expect`. Every wait has a timeout;
nothing sleeps to synchronise.
"""
import copy
import datetime
import hashlib
import json
import re
import ssl
import threading
import time
import uuid
import warnings
from pathlib import Path

import requests
import urllib3
import websocket
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CONTRACT_PATH = Path(__file__).resolve().parents[1] / "contract" / "kubeedge" / "edgecore-v1.23.json"
DEFAULT_PROJECT_ID = "e632aba927ea4ac2b575ec1603d56f10"
MISSING = object()


class ContractError(AssertionError):
    """An answer (or its absence) that breaks the contract."""


# ---------------------------------------------------------------------------------------------
# contract data, placeholders and paths


def load_contract(path=CONTRACT_PATH):
    data = json.loads(Path(path).read_text())
    data["_by_id"] = {s["id"]: s for s in data["steps"]}
    return data


_SEL = re.compile(r"^(?P<name>[^\[]*)\[(?P<key>[^=\]]+)=(?P<value>[^\]]*)\]$")


def _split_path(path):
    """Split on dots that are not inside [...] selectors."""
    out, cur, depth = [], "", 0
    for ch in path:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "." and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def get_path(obj, path):
    """The value at a dot path (contract `conventions.paths`), or MISSING. In a dict, the longest run of
    segments that is a key wins, so label keys such as kubernetes.io/hostname and data keys such as
    app.conf are found as single keys."""
    segs = _split_path(path) if isinstance(path, str) else list(path)
    return _get(obj, segs)


def _get(obj, segs):
    if not segs:
        return obj
    if isinstance(obj, dict):
        for j in range(len(segs), 0, -1):
            key = ".".join(segs[:j])
            m = _SEL.match(key) if j == 1 else None
            if m:
                lst = obj.get(m.group("name"), MISSING) if m.group("name") else obj
                if not isinstance(lst, list):
                    return MISSING
                for el in lst:
                    if isinstance(el, dict) and str(el.get(m.group("key"))) == m.group("value"):
                        return _get(el, segs[1:])
                return MISSING
            if key in obj:
                v = _get(obj[key], segs[j:])
                if v is not MISSING:
                    return v
        return MISSING
    return MISSING


def set_path(obj, path, value):
    segs = _split_path(path)
    for s in segs[:-1]:
        obj = obj.setdefault(s, {})
    obj[segs[-1]] = value


_PH = re.compile(r"\{\{([^{}]+)\}\}")


def _rfc3339(t, micro=False):
    d = datetime.datetime.fromtimestamp(t, tz=datetime.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if micro else d.strftime("%Y-%m-%dT%H:%M:%SZ")


class Context:
    """Values for placeholders: fixed ones (node, ports, token parts), per-step ones (ns, pod, ...),
    captures from earlier steps, the request/answer of the current step, and per-message fresh
    values (msg_id, times)."""

    def __init__(self, fixed, captures):
        self.fixed, self.captures = fixed, captures
        self.step_vars, self.request, self.answer = {}, None, None
        self.fresh = {}

    def new_message(self):
        t = time.time()
        self.fresh = {"msg_id": str(uuid.uuid4()), "now_ms": int(t * 1000), "now": _rfc3339(t),
                      "earlier": _rfc3339(t - 60), "now_micro": _rfc3339(t, micro=True)}

    def lookup(self, name):
        name = name.strip()
        for scope in (self.fresh, self.step_vars, self.fixed):
            if name in scope:
                return scope[name]
        if name.startswith("capture:"):
            key = name[len("capture:"):]
            if key not in self.captures:
                raise ContractError(f"placeholder {{{{{name}}}}}: nothing captured as {key!r} yet (captured: {sorted(self.captures)})")
            return copy.deepcopy(self.captures[key])
        for prefix, msg in (("request.", self.request), ("answer.", self.answer)):
            if name.startswith(prefix):
                if msg is None:
                    raise ContractError(f"placeholder {{{{{name}}}}} used with no {prefix[:-1]} yet")
                rest = name[len(prefix):]
                v = get_path(msg, rest)
                if v is MISSING and "." not in rest:  # {{answer.source}}: route fields by bare name
                    v = get_path(msg, "header." + rest) if rest in ("msg_id", "parent_msg_id", "resourceversion") else get_path(msg, "route." + rest)
                if v is MISSING:
                    raise ContractError(f"placeholder {{{{{name}}}}}: {rest} is missing in the {prefix[:-1]}")
                return v
        raise ContractError(f"unknown placeholder {{{{{name}}}}}")

    def render(self, value):
        if isinstance(value, str):
            m = _PH.fullmatch(value)
            if m:
                return self.lookup(m.group(1))
            return _PH.sub(lambda mm: str(self.lookup(mm.group(1))), value)
        if isinstance(value, list):
            return [self.render(v) for v in value]
        if isinstance(value, dict):
            return {self.render(k): self.render(v) for k, v in value.items()}
        return value


def _brief(msg, limit=1500):
    s = json.dumps(msg, sort_keys=True)
    return s if len(s) <= limit else s[:limit] + f"... ({len(s)} chars)"


# ---------------------------------------------------------------------------------------------
# the edge


class KubeEdgeEdge:
    def __init__(self, workdir, node, host, hub_port, cert_port, token, project_id=DEFAULT_PROJECT_ID, heartbeat=15.0):
        self.dir = Path(workdir) / f"kubeedge-{node}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.node, self.host, self.hub_port, self.cert_port = node, host, hub_port, cert_port
        self.token, self.project_id, self.heartbeat = token, project_id, heartbeat
        self.ca_file, self.cert_file, self.key_file = self.dir / "rootCA.crt", self.dir / "server.crt", self.dir / "server.key"
        self.ws = None
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self.received = []          # every message the cloud sent, in order
        self.sent = []              # every message this edge sent, in order
        self.closed = None          # why the connection ended (None while open)
        self._stop = threading.Event()
        self._threads = []

    # --- join: certificates (steps get-ca, get-edge-cert) ---------------------------------------

    @property
    def ca_hash(self):
        return self.token.split(".")[0]

    @property
    def jwt(self):
        parts = self.token.split(".")
        if len(parts) != 4:
            raise ContractError(f"the token has {len(parts)} dot-separated parts, edgecore needs 4 (<ca hash>.<jwt>): {self.token!r}")
        return ".".join(parts[1:])

    def get_ca(self, timeout=30):
        url = f"https://{self.host}:{self.cert_port}/ca.crt"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            r = requests.get(url, verify=False, timeout=timeout)
        if r.status_code != 200:
            raise ContractError(f"GET {url}: HTTP {r.status_code} {r.text[:300]!r}")
        body = r.content
        try:
            ca = x509.load_der_x509_certificate(body)
        except ValueError as e:
            raise ContractError(f"GET /ca.crt: the body is not a DER certificate ({e}); starts {body[:40]!r}") from e
        got = hashlib.sha256(body).hexdigest()
        if got != self.ca_hash:
            raise ContractError(f"GET /ca.crt: sha256 of the CA is {got}, the token says {self.ca_hash}")
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        return ca

    def make_csr(self):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Zhejiang"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Hangzhou"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{self.node}"),
        ])
        csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
        return key, csr

    def get_edge_cert(self, ca, timeout=30):
        key, csr = self.make_csr()
        url = f"https://{self.host}:{self.cert_port}/edge.crt"
        headers = {"Authorization": f"Bearer {self.jwt}", "NodeName": self.node}
        try:
            r = requests.get(url, data=csr.public_bytes(serialization.Encoding.DER), headers=headers,
                             verify=str(self.ca_file), timeout=timeout)
        except requests.exceptions.SSLError as e:
            raise ContractError(f"GET {url}: the certificate service does not verify against its CA for {self.host} "
                                f"(edgecore checks it): {e}") from e
        if r.status_code != 200:
            raise ContractError(f"GET {url}: HTTP {r.status_code} {r.text[:300]!r}")
        try:
            cert = x509.load_der_x509_certificate(r.content)
        except ValueError as e:
            raise ContractError(f"GET /edge.crt: the body is not a DER certificate ({e}); starts {r.content[:40]!r}") from e
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not cn or cn[0].value != f"system:node:{self.node}":
            raise ContractError(f"GET /edge.crt: certificate subject is {cert.subject.rfc4514_string()}, want CN=system:node:{self.node}")
        if cert.public_key().public_numbers() != key.public_key().public_numbers():
            raise ContractError("GET /edge.crt: the certificate is not for the CSR's key")
        try:
            cert.verify_directly_issued_by(ca)
        except Exception as e:  # noqa: BLE001 - any failure is a contract break
            raise ContractError(f"GET /edge.crt: the certificate is not signed by /ca.crt: {e}") from e
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                                    serialization.NoEncryption()))
        return cert

    def obtain_certificate(self):
        self.get_edge_cert(self.get_ca())
        return self

    # --- join: the WebSocket (steps connect, keepalive-at-connect) ------------------------------

    @property
    def url(self):
        return f"wss://{self.host}:{self.hub_port}/{self.project_id}/{self.node}/events"

    def connect(self, timeout=30, keepalive=True):
        headers = [f"node_id: {self.node}", f"project_id: {self.project_id}", "ConnectionUse: msg"]
        sslopt = {"certfile": str(self.cert_file), "keyfile": str(self.key_file), "ca_certs": str(self.ca_file),
                  "cert_reqs": ssl.CERT_REQUIRED, "check_hostname": True}
        try:
            self.ws = websocket.create_connection(self.url, header=headers, sslopt=sslopt, timeout=timeout,
                                                  enable_multithread=True)
        except Exception as e:  # noqa: BLE001
            raise ContractError(f"WebSocket {self.url}: {type(e).__name__}: {e}") from e
        self.ws.settimeout(None)
        t = threading.Thread(target=self._read_loop, name=f"ke-read-{self.node}", daemon=True)
        t.start()
        self._threads.append(t)
        if keepalive:
            self.send_keepalive()  # EdgeHub.keepalive: the first one right after connecting
            k = threading.Thread(target=self._keepalive_loop, name=f"ke-keepalive-{self.node}", daemon=True)
            k.start()
            self._threads.append(k)
        return self

    def join(self):
        return self.obtain_certificate().connect()

    def close(self):
        self._stop.set()
        if self.ws is not None:
            try:
                self.ws.close(timeout=2)
            except Exception:  # noqa: BLE001
                pass
        for t in self._threads:
            t.join(timeout=5)

    def is_open(self):
        with self._cond:
            return self.closed is None

    # --- wire ------------------------------------------------------------------------------------

    def send(self, msg):
        if not self.is_open():
            raise ContractError(f"cannot send {msg['route'].get('operation')} {msg['route'].get('resource')}: connection closed ({self.closed})")
        data = json.dumps(msg)
        with self._send_lock:
            self.ws.send(data)  # a text frame, like gorilla WriteJSON
        with self._cond:
            self.sent.append(msg)

    def send_keepalive(self):
        self.send({"header": {"msg_id": str(uuid.uuid4()), "timestamp": int(time.time() * 1000)},
                   "route": {"source": "websocket", "group": "resource", "operation": "keepalive", "resource": "node"},
                   "content": "ping"})

    def keepalives_sent(self):
        with self._cond:
            return sum(1 for m in self.sent if m["route"].get("operation") == "keepalive")

    def ack(self, received):
        """metamanager's ack: NewRespByMessage(received, "OK")."""
        r = received.get("route", {})
        route = {k: r[k] for k in ("source", "group", "resource") if r.get(k)}
        route["operation"] = "response"
        self.send({"header": {"msg_id": str(uuid.uuid4()), "parent_msg_id": received["header"]["msg_id"],
                              "timestamp": int(time.time() * 1000)},
                   "route": route, "content": "OK"})

    def _keepalive_loop(self):
        while not self._stop.wait(self.heartbeat):
            if not self.is_open():
                return
            try:
                self.send_keepalive()
            except Exception:  # noqa: BLE001 - the reader records why the connection ended
                return

    def _read_loop(self):
        reason = None
        try:
            while not self._stop.is_set():
                opcode, data = self.ws.recv_data(control_frame=False)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                    reason = f"closed by the cloud (code {code}, {data[2:].decode(errors='replace')!r})"
                    break
                if opcode not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                    continue
                try:
                    msg = json.loads(data)
                except ValueError:
                    msg = {"_undecodable": data[:500].decode(errors="replace")}
                self._auto_ack(msg)  # acked before anyone waiting sees it, so a test finds the ack in self.sent
                with self._cond:
                    self.received.append(msg)
                    self._cond.notify_all()
        except websocket.WebSocketConnectionClosedException as e:
            reason = f"connection closed: {e}"
        except Exception as e:  # noqa: BLE001
            reason = f"read failed: {type(e).__name__}: {e}"
        with self._cond:
            self.closed = reason or ("closed by this edge" if self._stop.is_set() else "reader stopped")
            self._cond.notify_all()

    def _auto_ack(self, msg):
        """edgecore's metamanager stores and acks every cloud-initiated insert/update/delete that EdgeHub
        hands it (groups resource/func, no parent_msg_id)."""
        h, r = msg.get("header") or {}, msg.get("route") or {}
        if h.get("parent_msg_id") or r.get("group") not in ("resource", "func"):
            return
        if r.get("operation") in ("insert", "update", "delete") and h.get("msg_id"):
            try:
                self.ack(msg)
            except Exception:  # noqa: BLE001
                pass

    def wait_message(self, pred, timeout, what):
        """The first received message for which pred(msg) holds (looking at everything received so far)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.received:
                    if pred(m):
                        return m
                if self.closed is not None:
                    raise ContractError(f"{what}: connection ended ({self.closed}) before it arrived; received: {self._recent()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ContractError(f"{what}: nothing within {timeout:g} s (connection open); received: {self._recent()}")
                self._cond.wait(left)

    def wait_answer(self, msg_id, timeout, what):
        return self.wait_message(lambda m: (m.get("header") or {}).get("parent_msg_id") == msg_id, timeout, what)

    def _recent(self, n=6):
        tail = self.received[-n:]
        return "[" + ", ".join(
            f"{(m.get('route') or {}).get('operation')} {(m.get('route') or {}).get('resource')} (group {(m.get('route') or {}).get('group')}, "
            f"parent {(m.get('header') or {}).get('parent_msg_id')})" for m in tail) + f"] of {len(self.received)}"


# ---------------------------------------------------------------------------------------------
# replaying the contract


class Replayer:
    """Replays contract steps over a connected KubeEdgeEdge and checks the answers."""

    def __init__(self, edge, contract=None, answer_timeout=15.0, api=None):
        self.edge = edge
        self.contract = contract or load_contract()
        self.answer_timeout = answer_timeout
        self.api = api  # callable(method, path, json=None) -> requests.Response, for api_effect checks
        self.captures = {}
        self.requests = {}  # step id -> the last request sent for it (content decoded)
        fixed = {"node": edge.node, "project_id": edge.project_id, "cloud": edge.host, "hub_port": edge.hub_port,
                 "cert_port": edge.cert_port, "token": edge.token, "ca_hash": edge.ca_hash}
        try:
            fixed["jwt"] = edge.jwt
        except ContractError:
            pass
        self.fixed = fixed

    def step(self, step_id):
        try:
            return self.contract["_by_id"][step_id]
        except KeyError:
            raise KeyError(f"no step {step_id!r} in {CONTRACT_PATH.name}") from None

    def _ctx(self, vars):
        ctx = Context(self.fixed, self.captures)
        ctx.step_vars = dict(vars)
        return ctx

    def build(self, step_id, variant=None, vars=None):
        """The message a `send`/`request` step sends, rendered. Returns (ctx, wire message, decoded content)."""
        step = self.step(step_id)
        send = step["send"]
        if "same_as" in send:
            send = self.step(send["same_as"])["send"]
            step = dict(step, variants=self.step(step["send"]["same_as"]).get("variants", {}))
        ctx = self._ctx(vars or {})
        ctx.new_message()
        msg = {"header": ctx.render(send["header"]), "route": ctx.render(send["route"])}
        content = ctx.render(send.get("content"))
        for path, v in (send.get("content_set") or {}).items():
            set_path(content, path, ctx.render(v))
        if variant:
            for path, v in step["variants"][variant].items():
                set_path(msg, path, ctx.render(v))
        wire = dict(msg, content=json.dumps(content, separators=(",", ":")) if send.get("content_encoding") == "json-string" else content)
        ctx.request = dict(msg, content=content)
        return ctx, wire, content

    def run(self, step_id, variant=None, timeout=None, **vars):
        """Sends the step's message; for expect.answer == response, waits for the answer and checks it.
        Returns the answer (None for steps without one)."""
        step = self.step(step_id)
        ctx, wire, _ = self.build(step_id, variant, vars)
        self.requests[step_id] = ctx.request
        self.edge.send(wire)
        expect = step["expect"]
        if expect.get("answer") == "none":
            return None
        what = f"step {step_id}: answer to {wire['route']['operation']} {wire['route']['resource']} (msg_id {wire['header']['msg_id']})"
        answer = self.edge.wait_answer(wire["header"]["msg_id"], timeout or self.answer_timeout, what)
        ctx.answer = answer
        if step.get("edge_reply") == "ack":
            self.edge.ack(answer)
        self.check(step_id, ctx, expect, answer)
        self._capture(step, answer)
        return answer

    def expect_downstream(self, step_id, timeout=None, **vars):
        """Waits for the cloud-initiated message a `downstream` step describes and checks it. The edge acks
        it (automatically, as metamanager does). Returns it."""
        step = self.step(step_id)
        ctx = self._ctx(vars)
        expect = step["expect"]
        route = ctx.render(expect["route"])

        def matches(m):
            h, r = m.get("header") or {}, m.get("route") or {}
            return not h.get("parent_msg_id") and r.get("resource") == route["resource"] and r.get("operation") == route["operation"]

        what = f"step {step_id}: {route['operation']} {route['resource']} from the cloud"
        try:
            msg = self.edge.wait_message(matches, timeout or self.answer_timeout, what)
        except ContractError as e:
            same = [m for m in self.edge.received if (m.get("route") or {}).get("resource") == route["resource"]]
            if same:
                raise ContractError(f"{e}; messages for that resource had operations "
                                    f"{[(m.get('route') or {}).get('operation') for m in same]}") from None
            raise
        ctx.answer = msg
        self.check(step_id, ctx, expect, msg)
        self._capture(step, msg)
        return msg

    def create_given(self, step_id, key="given", **vars):
        """POSTs the API objects of a step's `given`/`trigger` through self.api; returns the created objects."""
        step = self.step(step_id)
        ctx = self._ctx(vars)
        out = []
        for item in step[key]["api_create"]:
            r = self.api("POST", ctx.render(item["path"]), json=ctx.render(item["body"]))
            assert r.status_code in (200, 201), f"step {step_id}: POST {item['path']}: {r.status_code} {r.text[:500]}"
            out.append(r.json())
        return out

    def check_api_effect(self, step_id, answer=None, timeout=10.0, **vars):
        """Polls (with a deadline) the API reads of the step's `api_effect` until their fields match."""
        step = self.step(step_id)
        ctx = self._ctx(vars)
        ctx.request = self.requests.get(step_id)
        ctx.answer = answer
        for get, spec in (step.get("api_effect") or {}).items():
            path = ctx.render(get.split(" ", 1)[1])
            fields = ctx.render(spec.get("fields") or {})
            deadline, last = time.monotonic() + timeout, None
            while True:
                r = self.api("GET", path)
                problems = []
                if r.status_code != 200:
                    problems.append(f"HTTP {r.status_code}: {r.text[:300]}")
                else:
                    obj = r.json()
                    for p, want in fields.items():
                        got = get_path(obj, p)
                        if got != want:
                            problems.append(f"{p} = {'<missing>' if got is MISSING else json.dumps(got)}, want {json.dumps(want)}")
                if not problems:
                    break
                last = problems
                if time.monotonic() > deadline:
                    raise ContractError(f"step {step_id}: GET {path} after {timeout:g} s: " + "; ".join(last))
                time.sleep(0.1)  # polling the API for an eventually visible write, bounded by the deadline

    def _capture(self, step, msg):
        for name, path in (step.get("captures") or {}).items():
            v = get_path(msg, path)
            if v is not MISSING:
                self.captures[name] = copy.deepcopy(v)

    # --- checks ----------------------------------------------------------------------------------

    def check(self, step_id, ctx, expect, msg):
        problems = []

        def want_eq(path, want, base=msg, label=None):
            got = get_path(base, path)
            if got != want:
                problems.append(f"{label or path} = {'<missing>' if got is MISSING else json.dumps(got)[:300]}, want {json.dumps(want)}")

        for k, v in ctx.render(expect.get("header") or {}).items():
            want_eq("header." + k, v)
        for k in expect.get("header_present") or []:
            if get_path(msg, "header." + k) in (MISSING, None, ""):
                problems.append(f"header.{k} missing or empty")
        for k in expect.get("header_absent") or []:
            if get_path(msg, "header." + k) not in (MISSING, None, ""):
                problems.append(f"header.{k} = {get_path(msg, 'header.' + k)!r}, want none")
        for k, v in ctx.render(expect.get("route") or {}).items():
            want_eq("route." + k, v)
        for a, b in expect.get("equal") or []:
            va, vb = get_path(msg, a), get_path(msg, b)
            if va is MISSING or va != vb:
                problems.append(f"{a} ({'<missing>' if va is MISSING else va!r}) != {b} ({'<missing>' if vb is MISSING else vb!r})")

        specs = expect.get("content_one_of")
        if specs:
            alternatives = []
            for alt in specs:
                sub = []
                self._content_checks(ctx, alt, msg, sub)
                if not sub:
                    break
                alternatives.append("; ".join(sub))
            else:
                problems.append("content matches none of the accepted forms: " + " | OR | ".join(alternatives))
        if expect.get("content"):
            self._content_checks(ctx, expect["content"], msg, problems)
        if problems:
            raise ContractError(f"step {step_id}: answer breaks the contract:\n  - " + "\n  - ".join(problems) + f"\n  answer: {_brief(msg)}")

    def _content_checks(self, ctx, spec, msg, problems):
        def want_eq(path, want, base, label):
            got = get_path(base, path)
            if got != want:
                problems.append(f"{label} = {'<missing>' if got is MISSING else json.dumps(got)[:300]}, want {json.dumps(want)}")

        if spec:
            content = msg.get("content", MISSING)
            form = spec.get("form")
            if form == "ObjectResp":
                if not isinstance(content, dict) or "Object" not in content or "Err" not in content:
                    problems.append(f"content is not an ObjectResp {{\"Object\": ..., \"Err\": ...}}: {json.dumps(content)[:400] if content is not MISSING else '<missing>'}")
                else:
                    err = content["Err"]
                    if spec.get("err", MISSING) is None:
                        if err is not None:
                            problems.append(f"Err = {json.dumps(err)[:400]}, want null")
                    elif isinstance(spec.get("err"), dict):
                        if not isinstance(err, dict):
                            problems.append(f"Err = {json.dumps(err)[:300]}, want {json.dumps(spec['err'])}")
                        else:
                            for p, v in ctx.render(spec["err"]).items():
                                want_eq(p, v, base=err, label=f"Err.{p}")
                    obj = content["Object"]
                    if spec.get("err", MISSING) is None or spec.get("object_fields"):
                        self._object_checks(ctx, spec, obj, "Object.", problems, prefix="object_")
            elif form == "object":
                if not isinstance(content, dict):
                    problems.append(f"content is not an object: {json.dumps(content)[:400] if content is not MISSING else '<missing>'}")
                else:
                    self._object_checks(ctx, spec, content, "", problems, prefix="")
                    for k in spec.get("absent") or []:
                        if k in content:
                            problems.append(f"content has key {k!r} (want the bare object, not an ObjectResp)")
            elif form == "string":
                if not isinstance(content, str):
                    problems.append(f"content is not a string: {json.dumps(content)[:300]}")

    def _object_checks(self, ctx, spec, obj, label, problems, prefix):
        if not isinstance(obj, dict):
            problems.append(f"{label or 'content'} is {json.dumps(obj)[:200]}, want an object")
            return
        for p, v in ctx.render(spec.get(prefix + "fields") or {}).items():
            got = get_path(obj, p)
            if got != v:
                problems.append(f"{label}{p} = {'<missing>' if got is MISSING else json.dumps(got)[:300]}, want {json.dumps(v)}")
        for p in spec.get(prefix + "present") or []:
            if get_path(obj, p) in (MISSING, None, ""):
                problems.append(f"{label}{p} missing")
        for p, v in ctx.render(spec.get(prefix + "differs") or {}).items():
            if get_path(obj, p) == v:
                problems.append(f"{label}{p} = {v!r}, want a new value")
