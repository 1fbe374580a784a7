"""An imitation of KubeEdge's cloudcore (v1.23 line) as an edge node sees it: CloudHub's certificate
service (10002-style port) and its WebSocket hub (10000-style port), with just enough of the
edgecontroller and of a Kubernetes API behind it to answer what an edge sends the way cloudcore
answers it. The contract it implements is tests/contract/kubeedge/cloudcore-v1.23.json.

Written from KubeEdge's source (github.com/kubeedge/kubeedge at 16cd8548), not from SwiftEdge's code.
Paths below are relative to the kubeedge repo:
- certificates and token: cloud/pkg/cloudhub/servers/httpserver/{server.go,pre_server.go,
  certificate/certs.go}, pkg/security/certs/{x509_ca.go,x509_certs.go}, pkg/security/token/token.go;
- the hub: cloud/pkg/cloudhub/servers/server.go (mTLS), pkg/viaduct/pkg/server/ws.go (every path,
  ConnectionUse), pkg/viaduct/pkg/conn/ws.go (read loop, OnReadTransportErr),
  cloud/pkg/cloudhub/handler/message_handler.go (HandleConnection), cloud/pkg/cloudhub/session/
  (one session per node_id, keepalive timer, ack/no-ack senders, resend every 5 s),
  cloud/pkg/cloudhub/dispatcher/message_dispatcher.go (DispatchUpstream, noAckRequired, enqueue rules);
- the answers: cloud/pkg/edgecontroller/controller/upstream.go (registerNode, updateNodeStatus,
  patchNode, updateNode, queryInner, updatePodStatus, patchPod, createPod, deletePod,
  createOrUpdateLease, queryLease) and downstream.go (syncPod, syncEdgeNodes).

Everything runs on one asyncio loop in a background thread. Everything is recorded (HTTP requests,
WebSocket connections with their path and headers, every message each way, session events such as
replacements and keepalive timeouts) under one condition variable, so tests wait for events with a
deadline (`wait_for`) instead of sleeping.
"""
import asyncio
import base64
import copy
import datetime
import hashlib
import hmac
import ipaddress
import json
import re
import ssl
import threading
import time
import traceback
import uuid
from pathlib import Path

from aiohttp import WSMsgType, web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_PROJECT_ID = "e632aba927ea4ac2b575ec1603d56f10"
CLOUD_MODULES = ("cloudhub", "cloudStream", "devicecontroller", "edgecontroller", "synccontroller")  # model.cloudModuleArray
EDGE_NODE_LABEL = "node-role.kubernetes.io/edge"  # common/constants EdgeNodeRoleKey; the informer's label selector
SEND_RETRY_INTERVAL = 5.0  # cloud/pkg/cloudhub/session/node_session.go sendRetryInterval
SEND_RETRIES = 4
# crypto/x509 ExtKeyUsage numbering, as the ExtKeyUsages header carries it (JSON array of Go ints)
GO_EXT_KEY_USAGES = {
    0: ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE, 1: ExtendedKeyUsageOID.SERVER_AUTH, 2: ExtendedKeyUsageOID.CLIENT_AUTH,
    3: ExtendedKeyUsageOID.CODE_SIGNING, 4: ExtendedKeyUsageOID.EMAIL_PROTECTION, 8: ExtendedKeyUsageOID.TIME_STAMPING,
    9: ExtendedKeyUsageOID.OCSP_SIGNING,
}
HUB_CIPHERS = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305"


def now_ms():
    return time.time_ns() // 1_000_000  # Go: time.Now().UnixNano() / 1e6


def rfc3339(t=None):
    return datetime.datetime.fromtimestamp(time.time() if t is None else t, tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(s):
    try:
        return datetime.datetime.strptime(s[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc).timestamp()
    except (TypeError, ValueError):
        return None


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def go_json(value) -> str:
    """encoding/json as gorilla's WriteJSON produces it: compact, <>& and U+2028/9 escaped, with the
    trailing newline of json.Encoder.Encode."""
    s = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        s = s.replace(ch, esc)
    return s + "\n"


def go_field(obj, name, default=None):
    """A struct field as encoding/json finds it: the exact key first, else a case-insensitive match."""
    if not isinstance(obj, dict):
        return default
    if name in obj:
        return obj[name]
    for k, v in obj.items():
        if k.lower() == name.lower():
            return v
    return default


class GoDecodeError(ValueError):
    pass


_HEADER_FIELDS = {"msg_id": str, "parent_msg_id": str, "timestamp": int, "resourceversion": str, "sync": bool, "type": str}
_ROUTE_FIELDS = {"source": str, "destination": str, "group": str, "operation": str, "resource": str}


def go_decode_message(text):
    """json.Unmarshal into beehive's model.Message (staging/.../beehive/pkg/core/model/message.go), as
    gorilla's ReadJSON does it: keys are matched case-insensitively, unknown keys are ignored, null
    leaves the zero value, a value of the wrong JSON type is an error (which ends the connection: the
    read loop in pkg/viaduct/pkg/conn/ws.go handleMessage treats any read error as fatal). Returns the
    message with every header/route field present (Go zero values filled in)."""
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise GoDecodeError(f"invalid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise GoDecodeError(f"json: cannot unmarshal {type(raw).__name__} into Go value of type model.Message")
    out = {"header": {"msg_id": "", "parent_msg_id": "", "timestamp": 0, "resourceversion": "", "sync": False, "type": ""},
           "route": {"source": "", "destination": "", "group": "", "operation": "", "resource": ""}, "content": None}
    for part, fields in (("header", _HEADER_FIELDS), ("route", _ROUTE_FIELDS)):
        val = go_field(raw, part)
        if val is None:
            continue
        if not isinstance(val, dict):
            raise GoDecodeError(f"json: cannot unmarshal {type(val).__name__} into Go struct field Message.{part}")
        for name, typ in fields.items():
            v = go_field(val, name)
            if v is None:
                continue
            if typ is int:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()) \
                        or not -2**63 <= v < 2**63:
                    raise GoDecodeError(f"json: cannot unmarshal {json.dumps(v)} into Go struct field {part}.{name} of type int64")
                v = int(v)
            elif not isinstance(v, typ) or (typ is not bool and isinstance(v, bool)):
                raise GoDecodeError(f"json: cannot unmarshal {json.dumps(v)[:40]} into Go struct field {part}.{name} of type {typ.__name__}")
            out[part][name] = v
    out["content"] = go_field(raw, "content")
    return out


def new_message(parent="", source="", group="", resource="", operation="", content=None, rv=""):
    """model.NewMessage(parent).SetResourceVersion(rv).BuildRouter(source, group, resource, operation).FillBody(content)."""
    return {"header": {"msg_id": str(uuid.uuid4()), "parent_msg_id": parent, "timestamp": now_ms(), "resourceversion": rv,
                       "sync": False, "type": ""},
            "route": {"source": source, "destination": "", "group": group, "operation": operation, "resource": resource},
            "content": content}


def wire_form(msg):
    """The JSON Go writes for a model.Message: omitempty header/route fields left out."""
    h, r = msg["header"], msg["route"]
    header = {"msg_id": h["msg_id"]}
    if h.get("parent_msg_id"):
        header["parent_msg_id"] = h["parent_msg_id"]
    header["timestamp"] = h["timestamp"]
    for k in ("resourceversion", "sync", "type"):
        if h.get(k):
            header[k] = h[k]
    route = {k: r[k] for k in ("source", "destination", "group", "operation", "resource") if r.get(k)}
    return {"header": header, "route": route, "content": msg.get("content")}


def status_error(code, reason, message, details=None):
    """A *errors.StatusError as encoding/json writes it inside ObjectResp.Err or as a message content."""
    st = {"metadata": {}, "status": "Failure", "message": message, "reason": reason}
    if details:
        st["details"] = details
    st["code"] = code
    return {"ErrStatus": st}


def not_found(resource, name, group=""):
    qual = f"{resource}.{group}" if group else resource
    d = {"name": name, "kind": resource}
    if group:
        d["group"] = group
    return status_error(404, "NotFound", f'{qual} "{name}" not found', d)


def already_exists(resource, name, group=""):
    qual = f"{resource}.{group}" if group else resource
    d = {"name": name, "kind": resource}
    if group:
        d["group"] = group
    return status_error(409, "AlreadyExists", f'{qual} "{name}" already exists', d)


# ---------------------------------------------------------------------------------------------
# certificates and the token


class Pki:
    """cloudcore's CA, its CloudHub serving certificate and the join token, made the way
    pre_server.go / pkg/security/certs make them."""

    def __init__(self, workdir, advertise_address=("127.0.0.1",), dns_names=()):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc)
        year100 = datetime.timedelta(days=364 * 100)
        # x509_ca.go NewSelfSigned: ECDSA P-256, serial 1024, CN=KubeEdge (no O), ~100 years, IsCA,
        # KeyUsage certSign|digitalSignature|keyEncipherment, ExtKeyUsage serverAuth+clientAuth.
        # crypto/x509 adds a SubjectKeyId to a CA and no AuthorityKeyId to a self-signed certificate.
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "KubeEdge")])
        self.ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
                        .public_key(self.ca_key.public_key()).serial_number(1024)
                        .not_valid_before(now).not_valid_after(now + year100)
                        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                        .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()), critical=False)
                        .sign(self.ca_key, hashes.SHA256()))
        self.ca_der = self.ca_cert.public_bytes(serialization.Encoding.DER)
        self.ca_pem = self.ca_cert.public_bytes(serialization.Encoding.PEM)
        # The HMAC key of the token is the CA key as x509.MarshalECPrivateKey writes it (SEC 1 DER).
        self.ca_key_der = self.ca_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                                                    serialization.NoEncryption())
        # createCertsToSecret: CN=KubeEdge, O=KubeEdge, ExtKeyUsage serverAuth, SANs = advertiseAddress
        # IPs + dnsNames, ~100 years, signed by the CA.
        self.server_key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.IPAddress(ipaddress.ip_address(a)) for a in advertise_address] + [x509.DNSName(d) for d in dns_names if d]
        self.server_cert = self._sign(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "KubeEdge"),
                                                 x509.NameAttribute(NameOID.ORGANIZATION_NAME, "KubeEdge")]),
                                      self.server_key.public_key(), [ExtendedKeyUsageOID.SERVER_AUTH], year100, sans)
        self.ca_file, self.cert_file, self.key_file = self.dir / "rootCA.crt", self.dir / "server.crt", self.dir / "server.key"
        self.ca_file.write_bytes(self.ca_pem)
        self.cert_file.write_bytes(self.server_cert.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(self.server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                                serialization.NoEncryption()))

    def _sign(self, subject, public_key, usages, lifetime, sans=()):
        """x509_certs.go SignCerts: subject = CN + O only, random serial < MaxInt64, KeyUsage
        keyEncipherment|digitalSignature, the given ExtKeyUsages, SANs; not a CA."""
        now = datetime.datetime.now(datetime.timezone.utc)
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.ca_cert.subject).public_key(public_key)
             .serial_number(int.from_bytes(hashlib.sha256(uuid.uuid4().bytes).digest()[:8], "big") & (2**63 - 1) or 1)
             .not_valid_before(now).not_valid_after(now + lifetime)
             .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                                          encipher_only=False, decipher_only=False), critical=True)
             .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), critical=False))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        return b.sign(self.ca_key, hashes.SHA256())

    # token.go
    def token(self, refresh_hours=12):
        """Create: <hex sha256 of the CA DER>.<JWT HS256 signed with the CA key DER, claims {exp: now + 2 x
        tokenRefreshDuration}> -- four dot-separated parts in all."""
        header = b64url(go_json({"alg": "HS256", "typ": "JWT"}).strip().encode())
        claims = b64url(go_json({"exp": int(time.time() + 2 * refresh_hours * 3600)}).strip().encode())
        sig = b64url(hmac.new(self.ca_key_der, f"{header}.{claims}".encode(), hashlib.sha256).digest())
        return f"{hashlib.sha256(self.ca_der).hexdigest()}.{header}.{claims}.{sig}"

    def verify_jwt(self, jwt):
        """token.Verify (golang-jwt v5 Parse with an HMAC key): three parts, an HMAC alg, a valid
        signature, exp (if present) in the future. Returns None or the error text."""
        parts = jwt.split(".")
        if len(parts) != 3:
            return "token is malformed: token contains an invalid number of segments"
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            sig = b64url_decode(parts[2])
        except (ValueError, TypeError):
            return "token is malformed: could not base64 decode or JSON-decode a segment"
        alg = header.get("alg") if isinstance(header, dict) else None
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}.get(alg)
        if digest is None:
            return f"token is unverifiable: error while executing keyfunc: invalid token method type, want *jwt.SigningMethodHMAC, alg {alg!r}"
        if not hmac.compare_digest(hmac.new(self.ca_key_der, f"{parts[0]}.{parts[1]}".encode(), digest).digest(), sig):
            return "token signature is invalid: signature is invalid"
        exp = claims.get("exp") if isinstance(claims, dict) else None
        if exp is not None and (not isinstance(exp, (int, float)) or exp <= time.time()):
            return "token has invalid claims: token is expired"
        return None

    def sign_csr(self, csr_der, usages_header, lifetime_days=365):
        """certificate/certs.go signEdgeCert: the CSR (DER, x509.ParseCertificateRequest) gives CN, O, DNS
        and IP SANs and the public key; the ExtKeyUsages header (JSON array of Go ExtKeyUsage values)
        defaults to clientAuth; valid for edgeCertSigningDuration (365 days)."""
        if usages_header:
            try:
                usages = [GO_EXT_KEY_USAGES[int(u)] for u in json.loads(usages_header)]
            except (ValueError, TypeError, KeyError) as e:
                raise ValueError(f"unmarshal http header ExtKeyUsages fail, err: {e}") from None
        else:
            usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        try:
            csr = x509.load_der_x509_csr(csr_der)
        except ValueError as e:
            raise ValueError(f"fail to signCerts, err: failed to parse csr, err: {e}") from None
        if not csr.is_signature_valid:
            raise ValueError("fail to signCerts, err: failed to parse csr, err: x509: ECDSA verification failure")
        cn = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        orgs = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        if not cn or not cn[0]:
            raise ValueError("fail to signCerts, err: must specify a CommonName")
        if not usages:
            raise ValueError("fail to signCerts, err: must specify at least one ExtKeyUsage")
        try:
            alt = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = [x509.DNSName(d) for d in alt.get_values_for_type(x509.DNSName)] + \
                   [x509.IPAddress(i) for i in alt.get_values_for_type(x509.IPAddress)]
        except x509.ExtensionNotFound:
            sans = []
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn[0])] + [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs])
        cert = self._sign(subject, csr.public_key(), usages, datetime.timedelta(days=lifetime_days), sans)
        return cert.public_bytes(serialization.Encoding.DER), csr

    def verify_client_cert(self, der, node_name):
        """certificate/certs.go verifyCert + verifyCertSubject (certificate renewal): chains to the CA with
        clientAuth, and O=system:nodes + CN=system:node:<NodeName> (or the legacy O=KubeEdge, CN=kubeedge.io)."""
        cert = x509.load_der_x509_certificate(der)
        try:
            self.ca_key.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        except Exception:
            return "failed to verify edge certificate: x509: certificate signed by unknown authority"
        try:
            ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            if ExtendedKeyUsageOID.CLIENT_AUTH not in ekus and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in ekus:
                return "failed to verify edge certificate: x509: certificate specifies an incompatible key usage"
        except x509.ExtensionNotFound:
            pass
        cn = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        if not orgs:
            return "runtime error: index out of range [0] with length 0"  # cert.Subject.Organization[0]
        if (orgs[0] == "KubeEdge" and cn == ["kubeedge.io"]) or (orgs[0] == "system:nodes" and cn == [f"system:node:{node_name}"]):
            return None
        return "request node name is not match with the certificate"

    def hub_ssl_context(self):
        """createTLSConfig (cloud/pkg/cloudhub/servers/server.go): RequireAndVerifyClientCert against the CA,
        TLS >= 1.2, the ECDSA AEAD suites (TLS 1.3 suites are not configurable in Go)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        ctx.load_verify_locations(cafile=str(self.ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_ciphers(HUB_CIPHERS)
        return ctx

    def cert_ssl_context(self):
        """httpserver/server.go StartHTTPServer: ClientAuth RequestClientCert, TLS >= 1.2. (Go requests a
        certificate without verifying it in the handshake; OpenSSL's CERT_OPTIONAL verifies one that is
        presented, which only matters for a certificate not issued by this CA.)"""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        ctx.load_verify_locations(cafile=str(self.ca_file))
        ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    def issue_client_cert(self, node):
        """A node certificate as the cert service would issue it (for clients the tests drive themselves)."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._sign(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}"),
                                     x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes")]),
                          key.public_key(), [ExtendedKeyUsageOID.CLIENT_AUTH], datetime.timedelta(days=365))
        cert_file, key_file = self.dir / f"client-{node}.crt", self.dir / f"client-{node}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return cert_file, key_file


# ---------------------------------------------------------------------------------------------
# a small Kubernetes API behind the edgecontroller


_MERGE_KEYS = {"conditions": "type", "addresses": "type", "containerStatuses": "name", "initContainerStatuses": "name",
               "ephemeralContainerStatuses": "name", "podIPs": "ip", "hostIPs": "ip", "volumesAttached": "name",
               "containers": "name", "initContainers": "name", "tolerations": None, "images": None}


def strategic_merge(orig, patch):
    """A strategic merge patch for the lists of node and pod status (merge keys as in k8s.io/api
    core/v1 patchMergeKey tags), with the $setElementOrder, $patch: delete/replace and null-deletes
    directives; enough for what kubelets send on nodes/status and pods/status."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    out = copy.deepcopy(orig) if isinstance(orig, dict) else {}
    orders = {k[len("$setElementOrder/"):]: v for k, v in patch.items() if k.startswith("$setElementOrder/")}
    for k, v in patch.items():
        if k.startswith("$"):
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            out[k] = strategic_merge(out.get(k), v)
        elif isinstance(v, list) and _MERGE_KEYS.get(k) and all(isinstance(e, dict) for e in v):
            key = _MERGE_KEYS[k]
            cur = [copy.deepcopy(e) for e in out.get(k) or [] if isinstance(e, dict)]
            for e in v:
                idx = next((i for i, c in enumerate(cur) if c.get(key) == e.get(key)), None)
                if e.get("$patch") == "delete":
                    if idx is not None:
                        cur.pop(idx)
                elif idx is None:
                    cur.append({kk: vv for kk, vv in e.items() if not kk.startswith("$")})
                else:
                    cur[idx] = strategic_merge(cur[idx], e)
            out[k] = cur
        else:
            out[k] = copy.deepcopy(v)
    for k, order in orders.items():
        key = _MERGE_KEYS.get(k)
        if key and isinstance(out.get(k), list) and isinstance(order, list):
            pos = {o.get(key): i for i, o in enumerate(order) if isinstance(o, dict)}
            out[k] = sorted(out[k], key=lambda e: pos.get(e.get(key), len(pos)))
    return out


class Cluster:
    """Nodes, Pods, Leases, ConfigMaps, Secrets with uids and a shared resourceVersion counter, and
    watch callbacks (Added / Modified / Deleted). Objects are stored and returned without kind/apiVersion,
    as client-go's typed clients hand them to cloudcore."""

    def __init__(self):
        self._rv = 100
        self.objects = {"nodes": {}, "pods": {}, "leases": {}, "configmaps": {}, "secrets": {}}
        self.watchers = []

    def _next_rv(self):
        self._rv += 1
        return str(self._rv)

    @staticmethod
    def _key(resource, ns, name):
        return name if resource == "nodes" else (ns, name)

    def get(self, resource, ns, name):
        obj = self.objects[resource].get(self._key(resource, ns, name))
        return copy.deepcopy(obj) if obj is not None else None

    def _emit(self, resource, event, obj):
        for w in list(self.watchers):
            w(resource, event, copy.deepcopy(obj))

    def create(self, resource, ns, obj):
        obj = copy.deepcopy(obj)
        obj.pop("kind", None)
        obj.pop("apiVersion", None)
        md = obj.setdefault("metadata", {})
        name = md.get("name", "")
        if not name:
            return None, status_error(422, "Invalid", f"{resource} \"\" is invalid: metadata.name: Required value: name or generateName is required")
        key = self._key(resource, ns, name)
        if key in self.objects[resource]:
            return None, already_exists(resource, name, "coordination.k8s.io" if resource == "leases" else "")
        if resource != "nodes":
            md["namespace"] = ns
        md["uid"] = str(uuid.uuid4())
        md["resourceVersion"] = self._next_rv()
        md["creationTimestamp"] = rfc3339()
        md.pop("deletionTimestamp", None)
        if resource == "pods":
            self._default_pod(obj)
        self.objects[resource][key] = obj
        self._emit(resource, "Added", obj)
        return copy.deepcopy(obj), None

    def replace(self, resource, ns, obj, check_rv=True, allow_create=False, unconditional=True):
        """PUT semantics: optimistic concurrency on metadata.resourceVersion."""
        md = obj.get("metadata") or {}
        name = md.get("name", "")
        cur = self.objects[resource].get(self._key(resource, ns, name))
        group = "coordination.k8s.io" if resource == "leases" else ""
        if cur is None:
            if allow_create:
                return self.create(resource, ns, obj)
            return None, not_found(resource, name, group)
        rv = md.get("resourceVersion") or ""
        if check_rv:
            if not rv and not unconditional:
                kind = {"leases": "Lease.coordination.k8s.io"}.get(resource, resource)
                return None, status_error(422, "Invalid", f'{kind} "{name}" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update',
                                          {"name": name, "group": group, "kind": kind.split(".")[0],
                                           "causes": [{"reason": "FieldValueInvalid", "message": "Invalid value: 0x0: must be specified for an update",
                                                       "field": "metadata.resourceVersion"}]})
            if rv and rv != cur["metadata"]["resourceVersion"]:
                qual = f"{resource}.{group}" if group else resource
                return None, status_error(409, "Conflict", f'Operation cannot be fulfilled on {qual} "{name}": the object has been modified; please apply your changes to the latest version and try again',
                                          {"name": name, "group": group, "kind": resource} if group else {"name": name, "kind": resource})
        new = copy.deepcopy(obj)
        new.pop("kind", None)
        new.pop("apiVersion", None)
        for f in ("uid", "creationTimestamp", "namespace"):
            if f in cur["metadata"]:
                new.setdefault("metadata", {})[f] = cur["metadata"][f]
        return self._store_if_changed(resource, ns, cur, new)

    def _store_if_changed(self, resource, ns, cur, new):
        cmp_cur = copy.deepcopy(cur)
        cmp_new = copy.deepcopy(new)
        cmp_cur["metadata"].pop("resourceVersion", None)
        cmp_new.setdefault("metadata", {}).pop("resourceVersion", None)
        if cmp_cur == cmp_new:  # the API server does not write (nor bump the resourceVersion) for a no-op
            return copy.deepcopy(cur), None
        new["metadata"]["resourceVersion"] = self._next_rv()
        self.objects[resource][self._key(resource, ns, new["metadata"]["name"])] = new
        self._emit(resource, "Modified", new)
        return copy.deepcopy(new), None

    def update_status(self, resource, ns, name, status):
        cur = self.objects[resource].get(self._key(resource, ns, name))
        if cur is None:
            return None, not_found(resource, name)
        new = copy.deepcopy(cur)
        new["status"] = copy.deepcopy(status)
        return self._store_if_changed(resource, ns, cur, new)

    def patch(self, resource, ns, name, patch, subresource=None):
        cur = self.objects[resource].get(self._key(resource, ns, name))
        if cur is None:
            return None, not_found(resource, name)
        if not isinstance(patch, dict):
            return None, status_error(400, "BadRequest", "the body of the request was in an unknown format - accepted media types include: application/strategic-merge-patch+json")
        uid = (patch.get("metadata") or {}).get("uid")
        if uid and uid != cur["metadata"]["uid"]:
            return None, status_error(409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}": Precondition failed: UID in precondition: {uid}, UID in object meta: {cur["metadata"]["uid"]}',
                                      {"name": name, "kind": resource})
        new = strategic_merge(cur, patch)
        if subresource == "status":  # the status strategies keep spec and metadata
            new["spec"], new["metadata"] = copy.deepcopy(cur.get("spec")), copy.deepcopy(cur["metadata"])
        return self._store_if_changed(resource, ns, cur, new)

    def delete(self, resource, ns, name, uid_precondition=None):
        key = self._key(resource, ns, name)
        cur = self.objects[resource].get(key)
        if cur is None:
            return None, not_found(resource, name)
        if uid_precondition and uid_precondition != cur["metadata"]["uid"]:
            return None, status_error(409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}": Precondition failed: UID in precondition: {uid_precondition}, UID in object meta: {cur["metadata"]["uid"]}. The object might have been deleted and then recreated',
                                      {"name": name, "kind": resource})
        del self.objects[resource][key]
        cur = copy.deepcopy(cur)
        cur["metadata"]["resourceVersion"] = self._next_rv()
        self._emit(resource, "Deleted", cur)
        return cur, None

    @staticmethod
    def _default_pod(pod):
        """The defaults the API server fills into a Pod (pkg/apis/core/v1/defaults.go), the ones an edge sees."""
        spec = pod.setdefault("spec", {})
        for c in spec.get("containers") or []:
            c.setdefault("resources", {})
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            image = c.get("image", "")
            c.setdefault("imagePullPolicy", "Always" if image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1] else "IfNotPresent")
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("securityContext", {})
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("tolerations", [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}])
        spec.setdefault("priority", 0)
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        pod.setdefault("status", {"phase": "Pending", "qosClass": "BestEffort"})


KINDS = {"nodes": ("v1", "Node"), "pods": ("v1", "Pod"), "leases": ("coordination.k8s.io/v1", "Lease"),
         "configmaps": ("v1", "ConfigMap"), "secrets": ("v1", "Secret")}


def with_type_meta(resource, obj):
    """util.SetMetaType: kind and apiVersion first, as encoding/json writes a typed object."""
    api_version, kind = KINDS[resource]
    out = {"kind": kind, "apiVersion": api_version}
    out.update({k: v for k, v in obj.items() if k not in ("kind", "apiVersion")})
    return out


# ---------------------------------------------------------------------------------------------
# the hub


class Connection:
    """One WebSocket accepted on the hub port (a viaduct WSConnection), as recorded."""

    def __init__(self, cid, request):
        self.id = cid
        self.path = request.path_qs
        self.headers = [(k, v) for k, v in request.headers.items()]
        self.node_id = request.headers.get("node_id", "")
        self.project_id = request.headers.get("project_id", "")
        self.use = request.headers.get("ConnectionUse", "")
        self.peer_cert = None
        sslobj = request.transport.get_extra_info("ssl_object") if request.transport else None
        if sslobj is not None:
            der = sslobj.getpeercert(binary_form=True)
            if der:
                c = x509.load_der_x509_certificate(der)
                self.peer_cert = {"subject": c.subject.rfc4514_string(),
                                  "cn": [a.value for a in c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)],
                                  "o": [a.value for a in c.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]}
            self.tls_version = sslobj.version()
            self.cipher = sslobj.cipher()
        self.opened_at = time.monotonic()
        self.closed_at = None
        self.close_reason = None
        self.ws = None
        self.request = request

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def summary(self):
        return {"id": self.id, "path": self.path, "tls": getattr(self, "tls_version", None), "node_id": self.node_id, "project_id": self.project_id, "use": self.use,
                "peer_cert": self.peer_cert, "open_for_s": round((self.closed_at or time.monotonic()) - self.opened_at, 2),
                "closed": self.closed_at is not None, "close_reason": self.close_reason}


class NodeSession:
    """cloud/pkg/cloudhub/session/node_session.go: keepalive check, an ack-required sender (one message
    in flight at a time, resent every 5 s, 4 times) and a no-ack sender."""

    def __init__(self, hub, conn):
        self.hub, self.conn, self.node_id = hub, conn, conn.node_id
        self.done = asyncio.Event()
        self.keepalive_event = asyncio.Event()
        self.ack_queue = asyncio.Queue()
        self.ack_store = {}  # uid -> message waiting to be sent
        self.ack_waiters = {}  # msg_id -> asyncio.Event
        self.noack_queue = asyncio.Queue()
        self.tasks = []
        self.terminated_by = None

    def start(self):
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._keepalive_check()), loop.create_task(self._send_ack()), loop.create_task(self._send_noack())]

    def terminating(self, why):
        """NodeSession.Terminating: cancel, shut the queues down, close the connection (no close frame)."""
        if self.done.is_set():
            return
        self.done.set()
        self.terminated_by = why
        for t in self.tasks:
            if t is not asyncio.current_task():
                t.cancel()
        self.hub.note_close(self.conn, why)
        tr = self.conn.request.transport
        if tr is not None:
            tr.close()

    def keepalive(self):
        self.keepalive_event.set()

    async def _keepalive_check(self):
        while not self.done.is_set():
            self.keepalive_event.clear()
            try:
                await asyncio.wait_for(self.keepalive_event.wait(), self.hub.keepalive_interval)
            except asyncio.TimeoutError:
                self.hub.log("timeout to receive keepalive for node", node=self.node_id, conn=self.conn.id)
                self.terminating("keepalive timeout")
                return

    async def _write(self, msg):
        wire = wire_form(msg)
        wire["header"].pop("sync", None)  # WriteMessageAsync sets Sync = false
        await self.conn.ws.send_str(go_json(wire))
        self.hub.record("down", self.conn, wire)

    async def _send_noack(self):
        while True:
            msg = await self.noack_queue.get()
            try:
                await self._write(trim_message(copy.deepcopy(msg)))
            except Exception as e:
                self.hub.log("send message to edge node err", node=self.node_id, err=repr(e))
                self.terminating("write error")
                return

    async def _send_ack(self):
        while True:
            uid = await self.ack_queue.get()
            msg = self.ack_store.pop(uid, None)
            if msg is None:
                continue
            sent = trim_message(copy.deepcopy(msg))
            ev = asyncio.Event()
            self.ack_waiters[sent["header"]["msg_id"]] = ev
            try:
                acked = False
                for attempt in range(SEND_RETRIES + 1):
                    await self._write(sent)
                    try:
                        await asyncio.wait_for(ev.wait(), SEND_RETRY_INTERVAL)
                        acked = True
                        break
                    except asyncio.TimeoutError:
                        if attempt < SEND_RETRIES:
                            self.hub.log("no ack, resending", node=self.node_id, msg_id=sent["header"]["msg_id"], attempt=attempt + 1)
                if acked:
                    self.hub.save_success_point(self.node_id, msg)
                else:
                    self.hub.log("send message to node err: timeout waiting for ack; requeued", node=self.node_id,
                                 resource=msg["route"]["resource"], msg_id=sent["header"]["msg_id"])
                    if uid not in self.ack_store:
                        self.ack_store[uid] = msg
                        asyncio.get_running_loop().call_later(0.005, self.ack_queue.put_nowait, uid)
            except Exception as e:
                self.hub.log("send message to edge node err", node=self.node_id, err=repr(e))
                self.terminating("write error")
                return
            finally:
                self.ack_waiters.pop(sent["header"]["msg_id"], None)

    def receive_ack(self, parent_id):
        ev = self.ack_waiters.get(parent_id)
        if ev is not None:
            ev.set()


def trim_message(msg):
    """common.TrimMessage: drop `node/<id>/` from a resource that starts with `node`."""
    res = msg["route"]["resource"]
    if res.startswith("node"):
        tokens = res.split("/")
        if len(tokens) >= 3:
            msg["route"]["resource"] = "/".join(tokens[2:])
    return msg


def res_token(resource, i):
    """messagelayer getElementByIndex on the cloud-internal resource node/<id>/<ns>/<type>/<name>."""
    t = resource.split("/")
    return t[i] if len(t) > i else ""


def content_uid(msg):
    c = msg.get("content")
    return ((c.get("metadata") or {}).get("uid") or "") if isinstance(c, dict) else ""


def no_ack_required(msg):
    """dispatcher noAckRequired."""
    res, op, src = msg["route"]["resource"], msg["route"]["operation"], msg["route"]["source"]
    if any(s in res for s in ("podlist", "membership", "twin/cloud_updated", "serviceaccounttoken", "k8s/ca.crt")):
        return True
    if op in ("createvolume", "deletevolume", "controllerpublishvolume", "controllerunpublishvolume", "applicationResponse"):
        return True
    if msg["route"]["group"] == "user" or src in ("taskmanager", "nodeupgradejobcontroller"):
        return True
    if op == "response":
        c = msg.get("content")
        if c == "OK" or (isinstance(c, dict) and set(c) == {"ErrStatus"}):  # "OK", or an error value
            return True
    if src == "edgecontroller":
        rtype = res_token(res, 3)
        if (rtype == "node" and op != "update") or rtype in ("lease", "nodepatch", "podpatch", "podstatus", "certificatesigningrequest") \
                or (rtype == "pod" and op == "response"):
            return True
    return False


class CloudCoreImitation:
    """Start with .start(); .token() gives a join token; .wait_for(pred, timeout, what) waits on the records."""

    def __init__(self, workdir, host="127.0.0.1", hub_port=0, cert_port=0, keepalive_interval=30.0, node_limit=500,
                 project_id=DEFAULT_PROJECT_ID, cloudcore_ip="127.0.0.1"):
        self.dir = Path(workdir)
        self.host, self.hub_port, self.cert_port = host, hub_port, cert_port
        self.keepalive_interval, self.node_limit, self.project_id = keepalive_interval, node_limit, project_id
        self.cloudcore_ip = cloudcore_ip  # the `cloudcore: <ip>` annotation (kubeedgeutil.GetLocalIP)
        self.pki = Pki(self.dir / "pki", advertise_address=(host,))
        self.cluster = Cluster()
        self.cluster.watchers.append(self._on_cluster_event)
        self.cond = threading.Condition()
        self.http_requests = []    # cert port: {method, path, headers, body, client_cert, status, body_out}
        self.connections = []      # Connection, in accept order
        self.messages = []         # {"dir": "up"|"down", "conn": id, "t": monotonic, "msg": ..., "raw": text (up)}
        self.events = []           # cloudcore-style log lines: (t, text, fields)
        self.sessions = {}         # node_id -> NodeSession (SessionManager.NodeSessions)
        self.synced = {}           # (node, uid) -> acked resourceVersion ((Cluster)ObjectSync status)
        self.edge_nodes = set()    # LocationCache.EdgeNodes
        self._loop = None
        self._thread = None
        self._runners = []
        self._cid = 0

    # ---- records and waiting

    def _notify(self):
        with self.cond:
            self.cond.notify_all()

    def log(self, text, **fields):
        with self.cond:
            self.events.append((time.monotonic(), text, fields))
            self.cond.notify_all()

    def record(self, direction, conn, msg, raw=None):
        with self.cond:
            self.messages.append({"dir": direction, "conn": conn.id, "t": time.monotonic(), "msg": copy.deepcopy(msg), "raw": raw})
            self.cond.notify_all()

    def note_close(self, conn, why):
        with self.cond:
            if conn.closed_at is None:
                conn.closed_at = time.monotonic()
                conn.close_reason = why
            self.cond.notify_all()

    def wait_for(self, pred, timeout, what="condition"):
        """Wait until pred() (called under the records' lock) is truthy; its value is returned. Raises
        AssertionError with `what` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = pred()
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
                self.cond.wait(min(left, 0.5))

    def holds_for(self, pred, duration):
        """True if pred() stays falsy for `duration` seconds (woken on every record); else the first truthy value."""
        deadline = time.monotonic() + duration
        with self.cond:
            while True:
                v = pred()
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(min(left, 0.5))

    def up(self, conn=None, **route):
        """Upstream messages (Go view), optionally of one connection, whose route fields equal `route`."""
        return [m["msg"] for m in self.messages if m["dir"] == "up" and (conn is None or m["conn"] == conn)
                and all(m["msg"]["route"].get(k) == v for k, v in route.items())]

    def down(self, conn=None, **route):
        return [m["msg"] for m in self.messages if m["dir"] == "down" and (conn is None or m["conn"] == conn)
                and all(m["msg"]["route"].get(k) == v for k, v in route.items())]

    def answers_to(self, msg_id):
        return [m["msg"] for m in self.messages if m["dir"] == "down" and m["msg"]["header"].get("parent_msg_id") == msg_id]

    def acks_of(self, msg_id):
        return [m["msg"] for m in self.messages if m["dir"] == "up" and m["msg"]["header"].get("parent_msg_id") == msg_id]

    def event_lines(self, text):
        return [e for e in self.events if text in e[1]]

    def transcript(self, limit=60):
        """A readable tail of what happened, for assertion messages."""
        with self.cond:
            lines = [f"connections: {[c.summary() for c in self.connections]}"]
            items = [(m["t"], f"{m['dir']:>4} c{m['conn']} {json.dumps(m['msg'], sort_keys=True)[:400]}") for m in self.messages]
            items += [(t, f" log {text} {fields}") for t, text, fields in self.events]
            lines += [s for _, s in sorted(items)[-limit:]]
            return "\n".join(lines)

    # ---- lifecycle

    def start(self):
        ready = threading.Event()
        errors = []

        def run():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._start_servers())
            except Exception as e:  # pragma: no cover - reported to start()
                errors.append(e)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="cloudcore-imitation", daemon=True)
        self._thread.start()
        if not ready.wait(30) or errors:
            raise RuntimeError(f"cloudcore imitation did not start: {errors}")
        return self

    async def _start_servers(self):
        cert_app = web.Application(client_max_size=2 << 20)
        cert_app.router.add_route("*", "/{tail:.*}", self._http_handler)
        hub_app = web.Application()
        hub_app.router.add_route("*", "/{tail:.*}", self._ws_handler)  # http.HandleFunc("/"): every path
        hub_app.on_response_prepare.append(self._gorilla_upgrade_headers)
        for app, port_attr, ctx in ((cert_app, "cert_port", self.pki.cert_ssl_context()), (hub_app, "hub_port", self.pki.hub_ssl_context())):
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, self.host, getattr(self, port_attr), ssl_context=ctx, reuse_address=True)
            await site.start()
            setattr(self, port_attr, site._server.sockets[0].getsockname()[1])
            self._runners.append(runner)

    @staticmethod
    async def _gorilla_upgrade_headers(request, response):
        """gorilla's Upgrader writes only Upgrade, Connection and Sec-WebSocket-Accept on a 101 (no Date, no
        Server): drop what aiohttp adds, so nothing in the answer tells the edge what kind of cloud this is."""
        if response.status == 101:
            for h in ("Date", "Server"):
                response.headers.pop(h, None)

    def stop(self):
        if self._loop is None:
            return

        async def shutdown():
            for s in list(self.sessions.values()):
                s.terminating("cloudcore stopped")
            for r in self._runners:
                await r.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(15)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def call(self, fn, *args, timeout=10):
        """Run fn(*args) on the imitation's loop (a coroutine function or a plain one) and return its result."""
        async def wrapper():
            r = fn(*args)
            if asyncio.iscoroutine(r):
                r = await r
            return r
        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout)

    def token(self):
        return self.pki.token()

    # ---- the certificate service (httpserver/server.go routes, go-restful)

    async def _http_handler(self, request):
        body = await request.read()
        der = None
        sslobj = request.transport.get_extra_info("ssl_object") if request.transport else None
        if sslobj is not None:
            der = sslobj.getpeercert(binary_form=True)
        rec = {"method": request.method, "path": request.path_qs, "headers": dict(request.headers), "body": body,
               "client_cert": der is not None, "t": time.monotonic()}
        status, out = self._route_http(request, body, der)
        rec.update(status=status, body_out=out)
        with self.cond:
            self.http_requests.append(rec)
            self.cond.notify_all()
        return web.Response(status=status, body=out, content_type="application/octet-stream" if status == 200 else "text/plain")

    def _route_http(self, request, body, peer_der):
        path, method = request.path, request.method
        routes = {"/ca.crt": "GET", "/edge.crt": "GET", "/nodeupgrade": "POST"}
        if path.startswith("/node/") and path.count("/") == 2:
            if method != "GET":
                return 405, b"405: Method Not Allowed"
            name = path.split("/")[2]
            if not name:
                return 400, b"nodename parameter is required"
            return (200, b"Node found") if self.cluster.get("nodes", None, name) else (404, b"Node not found")
        if re.fullmatch(r"/task/[^/]+/name/[^/]+/node/[^/]+/status", path):
            return (200, b"") if method == "POST" else (405, b"405: Method Not Allowed")
        if path not in routes:
            return 404, b"404: Page Not Found"
        if routes[path] != method:
            return 405, b"405: Method Not Allowed"
        if path == "/ca.crt":
            return 200, self.pki.ca_der  # GetCA: the CA's DER
        if path == "/nodeupgrade":
            return 200, b""
        # EdgeCoreClientCert
        node_name = request.headers.get("NodeName", "")
        if peer_der:
            err = self.pki.verify_client_cert(peer_der, node_name)
            if err:
                return 401, f"failed to verify the certificate for edgenode: {node_name}, err: {err}".encode()
        else:
            authorization = request.headers.get("Authorization", "")
            if authorization == "":
                return 401, b"token validation failure, token is empty"
            parts = authorization.split(" ")
            if len(parts) != 2:
                return 401, b"token validation failure, token cannot be split"
            err = self.pki.verify_jwt(parts[1])
            if err:
                return 401, f"token validation failure, err: {err}".encode()
        if len(body) > 1 << 20:
            return 500, f"failed to sign certs for edgenode {node_name}, err: http: request body too large".encode()
        try:
            cert_der, csr = self.pki.sign_csr(body, request.headers.get("ExtKeyUsages", ""))
        except ValueError as e:
            return 500, f"failed to sign certs for edgenode {node_name}, err: {e}".encode()
        return 200, cert_der

    # ---- the hub (viaduct WSServer + messageHandler)

    async def _ws_handler(self, request):
        origin = request.headers.get("Origin")
        if origin and re.sub(r"^[a-z]+://", "", origin).lower() != (request.host or "").lower():  # gorilla checkSameOrigin
            return web.Response(status=403, text="Forbidden")
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="Bad Request")  # "failed to upgrade to websocket"
        await ws.prepare(request)
        self._cid += 1
        conn = Connection(self._cid, request)
        conn.ws = ws
        with self.cond:
            self.connections.append(conn)
            self.cond.notify_all()
        self.log("connection accepted", conn=conn.id, path=conn.path, node_id=conn.node_id, use=conn.use)
        session = self._handle_connection(conn)
        if session is None:
            await ws.close()
            self.note_close(conn, "rejected")
            return ws
        try:
            if conn.use == "msg":          # ServeConn: UseTypeMessage -> handleMessage
                await self._read_loop(conn, session)
            elif conn.use == "str":        # UseTypeStream -> raw data to a consumer (none in cloudhub)
                async for _ in ws:
                    pass
                self._on_read_transport_err(conn)
            else:                          # no ConnectionUse: nothing ever reads the connection
                self.log("connection is never read (no ConnectionUse: msg)", conn=conn.id, use=conn.use)
                await session.done.wait()
        except asyncio.CancelledError:
            pass
        finally:
            session.terminating(session.terminated_by or "handler ended")
            self._delete_session(session)
        return ws

    def _handle_connection(self, conn):
        """messageHandler.HandleConnection (authorization disabled, cloudcore's default)."""
        if sum(1 for s in self.sessions.values() if not s.done.is_set()) >= self.node_limit:
            self.log("Fail to serve node, reach node limit", node=conn.node_id)
            return None
        self.log("edge node connected", node=conn.node_id, project=conn.project_id, conn=conn.id)  # OnEdgeNodeConnect
        session = NodeSession(self, conn)
        old = self.sessions.pop(conn.node_id, None)  # SessionManager.AddSession
        if old is not None:
            self.log(f"session exists for {conn.node_id}, close old session", old_conn=old.conn.id, new_conn=conn.id)
            old.terminating(f"replaced by connection {conn.id} (same node_id)")
        self.sessions[conn.node_id] = session
        session.start()
        self._update_annotation(conn.node_id)
        return session

    def _delete_session(self, session):
        if self.sessions.get(session.node_id) is session:
            del self.sessions[session.node_id]
            self.log("edge node disconnected", node=session.node_id, conn=session.conn.id)
        else:
            self.log(f"the session {session.node_id} already deleted", conn=session.conn.id)

    def _on_read_transport_err(self, conn):
        """messageHandler.OnReadTransportErr: terminates whatever session is *current* for the node_id."""
        self.log(f"projectID {conn.project_id} node {conn.node_id} read message err", conn=conn.id)
        self.note_close(conn, conn.close_reason or "read error")
        s = self.sessions.get(conn.node_id)
        if s is None:
            self.log(f"session not found for node {conn.node_id}")
            return
        s.terminating(f"read error on connection {conn.id}")

    async def _read_loop(self, conn, session):
        ws = conn.ws
        while True:
            m = await ws.receive()
            if m.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                text = m.data if m.type == WSMsgType.TEXT else m.data.decode("utf-8", "replace")
                try:
                    msg = go_decode_message(text)
                except GoDecodeError as e:
                    self.log("failed to read message", conn=conn.id, err=str(e), raw=text[:300])
                    with self.cond:
                        self.messages.append({"dir": "up", "conn": conn.id, "t": time.monotonic(), "msg": None, "raw": text, "error": str(e)})
                    self.note_close(conn, f"undecodable message: {e}")
                    self._on_read_transport_err(conn)
                    return
                self.record("up", conn, msg, raw=text if m.type == WSMsgType.TEXT else ("binary:" + text))
                if session.done.is_set():
                    continue
                try:
                    self._filter_and_dispatch(conn, session, msg)
                except Exception:
                    self.log("imitation error while handling a message", err=traceback.format_exc())
            elif m.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                self.note_close(conn, "closed by the edge" if m.type != WSMsgType.ERROR else f"error {ws.exception()!r}")
                self._on_read_transport_err(conn)
                return

    def _filter_and_dispatch(self, conn, session, msg):
        op = msg["route"]["operation"]
        if op in ("config", "ping", "pong"):  # viaduct filterControlMessage: answered with "ack"
            resp = new_message(msg["header"]["msg_id"], msg["route"]["source"], msg["route"]["group"], msg["route"]["resource"], "response", "ack")
            session.noack_queue.put_nowait(resp)
            return
        self.dispatch_upstream(conn.node_id, session, msg)

    # ---- dispatcher

    def dispatch_upstream(self, node_id, session, msg):
        """messageDispatcher.DispatchUpstream."""
        r = msg["route"]
        op, res = r["operation"], r["resource"]
        if op == "keepalive":
            s = self.sessions.get(node_id)
            if s is None:
                self.log(f"node {node_id} receive keep alive message err: session not found")
            else:
                s.keepalive()
            return
        if re.match(r"^\w[-\w.+]*/volume/\w[-\w.+]*", res):
            self.log("volume response (CSI) received", resource=res)
            return
        if op == "response":
            s = self.sessions.get(node_id)
            if s is not None:
                s.receive_ack(msg["header"]["parent_msg_id"])
            return
        if op == "error":
            self.log(f"node {node_id} receive message {msg['header']['msg_id']} error response", content=msg["content"])
            return
        if op == "upload" and r["group"] == "user":
            self.log("to router", resource=res)
            return
        if op in ("prepull", "upgrade", "UpdateNodeActionStatus"):
            self.log("to taskmanager", operation=op, resource=res)
            return
        if res == "k8s/ca.crt":
            self.dispatch_downstream(node_id, new_message(msg["header"]["msg_id"], "cloudhub", "resource", f"node/{node_id}/{res}", "response",
                                                          self.pki.ca_pem.decode()))
            return
        # PubToController
        msg = copy.deepcopy(msg)
        msg["route"]["resource"] = f"node/{node_id}/{res}"
        if r["source"] in CLOUD_MODULES:
            self.log("message dropped: its source is a cloud module (IsFromEdge false)", source=r["source"], resource=res)
            return
        self.edgecontroller_upstream(msg)

    def dispatch_downstream(self, node_id, msg):
        """messageDispatcher.DispatchDownstream: a message for a node without a session is lost (its pool
        is replaced when the node connects); otherwise the no-ack queue, or the ack queue with its rules."""
        s = self.sessions.get(node_id)
        if s is None or s.done.is_set():
            self.log("no session: downstream message dropped", node=node_id, resource=msg["route"]["resource"], operation=msg["route"]["operation"])
            return
        if no_ack_required(msg):
            s.noack_queue.put_nowait(msg)
            return
        # enqueueAckMessage
        is_delete = msg["route"]["operation"] == "delete"
        if not msg["header"].get("resourceversion") and not is_delete:
            self.log("ack message without resourceversion dropped", resource=msg["route"]["resource"])
            return
        uid = content_uid(msg) if msg["route"]["group"] == "resource" else ""
        if not uid:
            self.log("fail to get key for message", resource=msg["route"]["resource"])
            return
        if not (is_delete or msg["route"]["operation"] == "response"):
            queued = s.ack_store.get(uid)
            rv = int(msg["header"]["resourceversion"] or 0)
            if queued is not None:
                if queued["route"]["operation"] == "delete" or rv <= int(queued["header"]["resourceversion"] or 0):
                    return
            else:
                synced = self.synced.get((node_id, uid))
                if synced is not None and rv <= int(synced or 0):
                    return
                self.synced.setdefault((node_id, uid), "0")  # a new (Cluster)ObjectSync with status rv "0"
        fresh = uid not in s.ack_store
        s.ack_store[uid] = msg
        if fresh:
            s.ack_queue.put_nowait(uid)

    def save_success_point(self, node_id, msg):
        uid = content_uid(msg)
        if msg["route"]["operation"] == "delete":
            self.synced.pop((node_id, uid), None)
        else:
            self.synced[(node_id, uid)] = msg["header"].get("resourceversion") or "0"
        self.log("acked", node=node_id, resource=msg["route"]["resource"], rv=msg["header"].get("resourceversion"))

    # ---- edgecontroller: downstream (informer events)

    def _on_cluster_event(self, resource, event, obj):
        md = obj.get("metadata") or {}
        if resource == "nodes":
            labels = md.get("labels") or {}
            if EDGE_NODE_LABEL not in labels:  # the node informer only watches edge nodes
                return
            name = md["name"]
            self.edge_nodes.add(name)
            res = f"node/{name}/null/node/{name}"
            if event == "Deleted":
                self.edge_nodes.discard(name)
                m = new_message("", "edgecontroller", "resource", res, "delete")
            else:  # syncEdgeNodes: Added and Modified both go as update
                m = new_message("", "edgecontroller", "resource", res, "update", with_type_meta("nodes", obj), rv=md.get("resourceVersion", ""))
            self._to_cloudhub(name, m)
        elif resource == "pods":
            node = (obj.get("spec") or {}).get("nodeName", "")
            if node not in self.edge_nodes:
                return
            op = {"Added": "insert", "Modified": "update", "Deleted": "delete"}[event]
            m = new_message("", "edgecontroller", "resource", f"node/{node}/{md['namespace']}/pod/{md['name']}", op,
                            with_type_meta("pods", obj), rv=md.get("resourceVersion", ""))
            self._to_cloudhub(node, m)

    def _to_cloudhub(self, node, msg):
        # informer events reach the edgecontroller asynchronously: after the answer the write belonged to
        self._loop.call_soon_threadsafe(self.dispatch_downstream, node, msg)

    def _update_annotation(self, node_id):
        """controller.UpdateAnnotation on connect: set `cloudcore: <ip>` on an existing Node if it differs."""
        node = self.cluster.get("nodes", None, node_id)
        if node is None:
            self.log(f"failed to get node:{node_id},err:nodes \"{node_id}\" not found")
            return
        ann = node["metadata"].setdefault("annotations", {})
        if ann.get("cloudcore") == self.cloudcore_ip:
            return
        ann["cloudcore"] = self.cloudcore_ip
        self.cluster.replace("nodes", None, node)

    # ---- edgecontroller: upstream (UpstreamController.dispatchMessage and its workers)

    def respond(self, request, content, resource=None, rv=""):
        """model.NewMessage(request.id).SetResourceVersion(rv).FillBody(content).BuildRouter(edgecontroller,
        resource, <resource or the request's>, response), through messageLayer.Response -> cloudhub."""
        node_id = res_token(request["route"]["resource"], 1)
        m = new_message(request["header"]["msg_id"], "edgecontroller", "resource", resource or request["route"]["resource"], "response", content, rv=rv)
        self.dispatch_downstream(node_id, m)

    def edgecontroller_upstream(self, msg):
        res, op = msg["route"]["resource"], msg["route"]["operation"]
        rtype = res_token(res, 3)
        if not rtype:
            self.log(f"parse message: {msg['header']['msg_id']} resource type with error, message resource: {res}, err: resource type not found")
            return
        handlers = {
            "nodestatus": self._node_status, "podstatus": self._pod_status, "event": self._event,
            "configmap": lambda m: self._query_inner(m, "configmaps"), "secret": lambda m: self._query_inner(m, "secrets"),
            "serviceaccounttoken": lambda m: self._query_inner(m, None), "persistentvolume": lambda m: self._query_inner(m, None),
            "persistentvolumeclaim": lambda m: self._query_inner(m, None), "volumeattachment": lambda m: self._query_inner(m, None),
            "nodepatch": self._patch_node, "podpatch": self._patch_pod, "rulestatus": self._event,
            "certificatesigningrequest": self._event,
        }
        if rtype == "node":
            h = {"insert": self._register_node, "query": lambda m: self._query_inner(m, "nodes"), "update": self._update_node}.get(op)
            if h is None:
                self.log(f"message: {msg['header']['msg_id']}, operation type: {op} unsupported", resource=res)
                return
        elif rtype == "pod":
            h = {"delete": self._delete_pod, "insert": self._create_pod}.get(op)
            if h is None:
                self.log(f"message: {msg['header']['msg_id']}, operation type: {op} unsupported", resource=res)
                return
        elif rtype == "lease":
            h = {"insert": self._create_or_update_lease, "update": self._create_or_update_lease, "query": self._query_lease}.get(op)
            if h is None:
                return
        else:
            h = handlers.get(rtype)
        if h is None:
            self.log(f"message: {msg['header']['msg_id']}, resource type: {rtype} unsupported", resource=res)
            return
        h(msg)

    @staticmethod
    def _names(msg):
        res = msg["route"]["resource"]
        return res_token(res, 1), res_token(res, 2), res_token(res, 4)

    @staticmethod
    def _content_data(msg):
        """GetContentData then json.Unmarshal: a string content is its bytes, anything else is re-marshalled."""
        c = msg.get("content")
        if isinstance(c, str):
            try:
                return json.loads(c)
            except ValueError:
                raise ValueError("invalid character in string content") from None
        return copy.deepcopy(c)

    def _register_node(self, msg):
        node_id, ns, name = self._names(msg)
        try:
            node = self._content_data(msg)
        except ValueError as e:
            self.respond(msg, f"message: {msg['header']['msg_id']} process failure, unmarshal marshaled message content with error: {e}",
                         resource=f"node/{node_id}/{ns}/node/{name}")
            return
        if not isinstance(node, dict):
            node = {}
        # createNode: *kubernetes.io labels added after creation, annotation cloudcore: <ip>
        labels = (node.get("metadata") or {}).get("labels") or {}
        reserved = {k: v for k, v in labels.items() if len(k.split("/")) == 2 and (k.split("/")[0] == "kubernetes.io" or k.split("/")[0].endswith(".kubernetes.io"))}
        node.setdefault("metadata", {})["name"] = name
        node["metadata"].setdefault("annotations", {})["cloudcore"] = self.cloudcore_ip
        created, err = self.cluster.create("nodes", None, node)
        if err is None:
            resp = created
        else:
            self.log(f"create node {name} error: {err['ErrStatus']['message']} , register node failed")
            resp = {"metadata": {"creationTimestamp": None}, "spec": {}, "status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": 0}}, "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "", "containerRuntimeVersion": "",
                "kubeletVersion": "", "kubeProxyVersion": "", "operatingSystem": "", "architecture": ""}}}
            if reserved:
                resp["metadata"]["labels"] = dict(reserved)  # the deferred re-add of reserved labels on the empty Node client-go returned
        self.respond(msg, {"Object": resp, "Err": err})

    def _node_status(self, msg):
        node_id, ns, name = self._names(msg)
        if not ns or not name:
            self.log(f"message: {msg['header']['msg_id']} process failure, get namespace/name failed")
            return
        try:
            data = self._content_data(msg)
        except ValueError as e:
            self.log(f"message: {msg['header']['msg_id']} process failure, get content data failed with error: {e}")
            return
        node_res = f"node/{node_id}/{ns}/node/{name}"
        op = msg["route"]["operation"]
        if op == "insert":
            if self.cluster.get("nodes", None, name) is not None:
                self.respond(msg, "OK", resource=node_res)
                return
            node = data if isinstance(data, dict) else {}
            node.setdefault("metadata", {})["name"] = name
            node["metadata"].setdefault("annotations", {})["cloudcore"] = self.cloudcore_ip
            _, err = self.cluster.create("nodes", None, node)
            self.respond(msg, "OK" if err is None else f"create node {name} error: {err['ErrStatus']['message']} , register node failed", resource=node_res)
        elif op == "update":
            if not isinstance(data, dict):
                self.log(f"message: {msg['header']['msg_id']} process failure, unmarshal marshaled message content with error")
                return
            status = copy.deepcopy(go_field(data, "Status") or {})
            if not isinstance(status, dict):
                self.log("nodestatus: Status is not an object")
                return
            cur = self.cluster.get("nodes", None, name)
            if cur is None:
                self.log(f"message: {msg['header']['msg_id']} process failure, node {name} not found")  # no answer at all
                return
            for c in status.get("conditions") or []:  # heartbeats older than NodeUpdateFrequency (10 s) are refreshed
                t = parse_rfc3339(c.get("lastHeartbeatTime"))
                if t is None or time.time() - t > 10:
                    c["lastHeartbeatTime"] = rfc3339()
            cur_status = cur.get("status") or {}
            if "volumesAttached" in cur_status:
                status["volumesAttached"] = cur_status["volumesAttached"]
            else:
                status.pop("volumesAttached", None)
            port = (((cur_status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")) or 0
            if port:
                status.setdefault("daemonEndpoints", {}).setdefault("kubeletEndpoint", {})["Port"] = port
            updated, err = self.cluster.update_status("nodes", None, name, status)
            if err is not None:
                self.log(f"message: {msg['header']['msg_id']} process failure, update node failed with error: {err}")
                return
            self.respond(msg, "OK", resource=node_res, rv=updated["metadata"]["resourceVersion"])
        else:
            self.log(f"message: {msg['header']['msg_id']} process failure, node status operation: {op} unsupported")

    def _patch_node(self, msg):
        _, ns, name = self._names(msg)
        if not ns or not name:
            return
        try:
            patch = self._content_data(msg)
        except ValueError as e:
            patch = None
            self.log(f"patch node: {e}")
        node, err = self.cluster.patch("nodes", None, name, patch, subresource="status")
        obj = node if node is not None else {"metadata": {"creationTimestamp": None}, "spec": {}, "status": {}}
        self.respond(msg, {"Object": obj, "Err": err}, rv=(node or {}).get("metadata", {}).get("resourceVersion", ""))

    def _update_node(self, msg):
        node_id, ns, name = self._names(msg)
        try:
            req = self._content_data(msg)
        except ValueError:
            return
        cur = self.cluster.get("nodes", None, name)
        if cur is None or not isinstance(req, dict):
            self.log(f"message: {msg['header']['msg_id']} process failure, node {name} not found")
            return
        md = cur["metadata"]
        md.setdefault("labels", {}).update((req.get("metadata") or {}).get("labels") or {})
        md.setdefault("annotations", {}).update((req.get("metadata") or {}).get("annotations") or {})
        md.pop("resourceVersion", None)
        updated, err = self.cluster.replace("nodes", None, cur, check_rv=False)
        if err is None:
            self.respond(msg, "OK", resource=f"node/{node_id}/{ns}/node/{name}", rv=updated["metadata"]["resourceVersion"])

    def _query_inner(self, msg, resource):
        node_id, ns, name = self._names(msg)
        rtype = res_token(msg["route"]["resource"], 3)
        if not ns or not name:
            return
        out_res = f"node/{node_id}/{ns}/{rtype}/{name}"
        if msg["route"]["operation"] != "query":
            self.log(f"message: {msg['header']['msg_id']} process failure, operation: {msg['route']['operation']} unsupported")
            return
        obj = self.cluster.get(resource, ns, name) if resource else None
        if obj is None:
            self.respond(msg, not_found(rtype, name), resource=out_res)
            return
        self.respond(msg, with_type_meta(resource, obj), resource=out_res, rv=obj["metadata"]["resourceVersion"])

    def _pod_status(self, msg):
        node_id, ns, name = self._names(msg)
        try:
            data = self._content_data(msg)
        except ValueError:
            return
        if msg["route"]["operation"] != "update":
            self.log(f"message: {msg['header']['msg_id']} process failure, pod status operation: {msg['route']['operation']} unsupported")
            return
        reqs = data if (not name and isinstance(data, list)) else [data] if isinstance(data, dict) else []
        for req in reqs:
            pname, puid = go_field(req, "Name") or "", go_field(req, "UID") or ""
            if not pname:
                self.respond(msg, {})  # client-go: "resource name may not be empty" (an errors.New: encodes as {})
                continue
            pod = self.cluster.get("pods", ns, pname)
            if pod is None or pod["metadata"]["uid"] != puid:
                self.respond(msg, "OK")
                gone = {"metadata": {"name": pname, "namespace": ns, "creationTimestamp": None}, "spec": {"containers": None}, "status": {}}
                self.dispatch_downstream(node_id, new_message("", "edgecontroller", "resource", f"node/{node_id}/{ns}/pod/{pname}", "delete", gone))
                continue
            status = copy.deepcopy(go_field(req, "Status") or {})
            old = pod.get("status") or {}
            for ctype in ("Ready", "Initialized"):
                new_c = next((c for c in status.get("conditions") or [] if c.get("type") == ctype), None)
                if new_c is not None:
                    old_c = next((c for c in old.get("conditions") or [] if c.get("type") == ctype), None)
                    new_c["lastTransitionTime"] = old_c["lastTransitionTime"] if old_c and old_c.get("status") == new_c.get("status") and old_c.get("lastTransitionTime") else rfc3339()
            if old.get("startTime"):
                status["startTime"] = old["startTime"]
            elif not status.get("startTime"):
                status["startTime"] = rfc3339()
            _, err = self.cluster.update_status("pods", ns, pname, status)
            self.respond(msg, "OK" if err is None else err)

    def _patch_pod(self, msg):
        _, ns, name = self._names(msg)
        try:
            patch = self._content_data(msg)
        except ValueError:
            patch = None
        pod, err = self.cluster.patch("pods", ns, name, patch, subresource="status")
        obj = pod if pod is not None else {"metadata": {"creationTimestamp": None}, "spec": {"containers": None}, "status": {}}
        self.respond(msg, {"Object": obj, "Err": err}, rv=(pod or {}).get("metadata", {}).get("resourceVersion", ""))

    def _create_pod(self, msg):
        _, ns, name = self._names(msg)
        try:
            pod = self._content_data(msg)
        except ValueError:
            return
        created, err = self.cluster.create("pods", ns, pod if isinstance(pod, dict) else {})
        obj = created if created is not None else {"metadata": {"creationTimestamp": None}, "spec": {"containers": None}, "status": {}}
        self.respond(msg, {"Object": obj, "Err": err}, rv=(created or {}).get("metadata", {}).get("resourceVersion", ""))

    def _delete_pod(self, msg):
        _, ns, name = self._names(msg)
        c = msg.get("content")
        uid = c if isinstance(c, str) else ((go_field(c, "preconditions") or {}).get("uid") if isinstance(c, dict) else None)
        _, err = self.cluster.delete("pods", ns, name, uid_precondition=uid)
        ok = err is None or err["ErrStatus"]["reason"] == "NotFound" or "deleted and then recreated" in err["ErrStatus"]["message"]
        self.respond(msg, "OK" if ok else err)

    def _create_or_update_lease(self, msg):
        _, ns, name = self._names(msg)
        try:
            lease = self._content_data(msg)
        except ValueError as e:
            self.respond(msg, f"message: {msg['header']['msg_id']} process failure, unmarshal message content with error: {e}",
                         resource=f"node/{res_token(msg['route']['resource'], 1)}/{ns}/node/{name}")
            return
        lease = lease if isinstance(lease, dict) else {}
        if msg["route"]["operation"] == "insert":
            obj, err = self.cluster.create("leases", ns, lease)
        else:  # Leases(ns).Update: AllowCreateOnUpdate true, AllowUnconditionalUpdate false
            obj, err = self.cluster.replace("leases", ns, lease, allow_create=True, unconditional=False)
        empty = {"metadata": {"creationTimestamp": None}, "spec": {}}
        self.respond(msg, {"Object": obj if obj is not None else empty, "Err": err})

    def _query_lease(self, msg):
        _, ns, name = self._names(msg)
        obj = self.cluster.get("leases", ns, name)
        if obj is None:
            self.respond(msg, {"Object": None, "Err": not_found("lease", name, "coordination.k8s.io")})
        else:
            self.respond(msg, {"Object": with_type_meta("leases", obj), "Err": None})

    def _event(self, msg):
        self.log("event/rulestatus/csr received (no answer)", resource=msg["route"]["resource"], operation=msg["route"]["operation"])

    # ---- for tests: what cloudcore would push

    def create_pod(self, namespace, name, node, image="docker.io/library/nginx:1.25"):
        """A pod bound to `node` created in the API: edgecontroller syncPod sends it as `insert`."""
        pod = {"metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
               "spec": {"nodeName": node, "containers": [{"name": "c", "image": image}]}}
        return self.call(lambda: self.cluster.create("pods", namespace, pod))

    def push(self, node, msg):
        """Hand a cloud-internal message (resource with the node/<id>/ prefix where cloudcore uses one) to
        CloudHub's downstream dispatcher."""
        self.call(self.dispatch_downstream, node, msg)
        return msg["header"]["msg_id"]
