#!/usr/bin/env python3
"""An independent CSI v1.9.0 plugin for SwiftEdge's tests, written from the spec (csi.proto).

It serves Identity, Controller and Node on one unix socket and, with --registration-dir, kubelet's
plugin-registration service on `<dir>/<driver>-reg.sock`. Volumes are directories under
`<state-dir>/volumes/<volume_id>`; NodeStageVolume bind mounts that directory onto the staging
path and NodePublishVolume bind mounts the staging path onto the target. All bookkeeping
(volumes, attachments, stagings, publications) lives in `<state-dir>/state.json`, replaced
atomically after every change, so a restarted plugin carries on where it stopped.

Every RPC appends one JSON object to --log, e.g.
  {"time": 1700000000.1, "pid": 42, "method": "NodeStageVolume", "volume_id": "pyvol-…",
   "staging_target_path": "/…", "publish_context": {"devicePath": "/dev/pycsi/pyvol-…"}, …,
   "code": "OK"}
with "code" the gRPC status code name and "message" its detail when it is not OK.

Run: python3 tests/csi/csi_plugin.py --driver NAME --node-id ID --state-dir DIR --log FILE \
         [--socket PATH] [--registration-dir DIR] [--topology-key KEY] [--max-volumes N] \
         [--max-volume-bytes N] [--hang METHOD]... [--fail METHOD=CODE[:COUNT]]...
"""
import argparse
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import traceback
import uuid
from concurrent import futures

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

import csi_stubs  # noqa: E402

VENDOR_VERSION = "0.1.0"
DEFAULT_CAPACITY = 1 << 30  # 1 GiB when the CO gives no capacity range
DEVICE_PREFIX = "/dev/pycsi/"
CONTEXT_NAME_KEY = "pycsi/volume-name"
CONTEXT_NODE_KEY = "pycsi/provisioned-on"
VOLUME_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# U+0000-U+0008, U+000B, U+000C, U+000E-U+001F, U+007F-U+009F are banned in CreateVolume names.
BANNED_NAME_CHARS = re.compile("[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]")
MAP_FIELDS = ("publish_context", "volume_context", "parameters")
LOG_FIELDS = ("name", "volume_id", "node_id", "staging_target_path", "target_path", "volume_path",
              "readonly", "publish_context", "volume_context", "parameters", "plugin_registered", "error")


class CsiError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(msg):
    return CsiError(grpc.StatusCode.INVALID_ARGUMENT, msg)


def not_found(msg):
    return CsiError(grpc.StatusCode.NOT_FOUND, msg)


def precondition(msg):
    return CsiError(grpc.StatusCode.FAILED_PRECONDITION, msg)


def internal(msg):
    return CsiError(grpc.StatusCode.INTERNAL, msg)


# --- mounts -----------------------------------------------------------------------------------

def _unescape_mountinfo(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mount_points() -> set:
    points = set()
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            parts = line.split(" ")
            if len(parts) > 4:
                points.add(_unescape_mountinfo(parts[4]))
    return points


def is_mount_point(path: str) -> bool:
    return os.path.realpath(path) in mount_points()


def same_file(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def bound_to(path: str, source: str) -> bool:
    """path is a mount point showing the directory `source` (a bind mount of it, or of a bind of it)."""
    return is_mount_point(path) and same_file(path, source)


def run_mount(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise internal(f"{argv[0]} failed: {e}")
    if p.returncode != 0:
        raise internal(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}")


def unmount_all(path: str, source: str):
    """Unmount `path` while it is a mount point of `source` (also undoes accidentally stacked mounts)."""
    for _ in range(16):
        if not bound_to(path, source):
            return
        run_mount(["umount", path])
    raise internal(f"{path} is still mounted after 16 umounts")


def make_dir(path: str, what: str):
    if os.path.lexists(path) and not os.path.isdir(path):
        raise invalid(f"{what} {path} exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise internal(f"cannot create {what} {path}: {e}")


# --- state ------------------------------------------------------------------------------------

class Store:
    """The plugin's persistent state: {"version": 1, "volumes": {volume_id: record}}."""

    def __init__(self, state_dir: str):
        self.state_dir = os.path.abspath(state_dir)
        self.volume_root = os.path.join(self.state_dir, "volumes")
        self.path = os.path.join(self.state_dir, "state.json")
        os.makedirs(self.volume_root, exist_ok=True)
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                self.data = json.load(f)
        else:
            self.data = {"version": 1, "volumes": {}}
            self.save()

    @property
    def volumes(self) -> dict:
        return self.data["volumes"]

    def by_name(self, name: str):
        for vol in self.volumes.values():
            if vol["name"] == name:
                return vol
        return None

    def volume_dir(self, volume_id: str) -> str:
        path = os.path.join(self.volume_root, volume_id)
        if os.path.dirname(os.path.normpath(path)) != self.volume_root:
            raise invalid(f"volume_id {volume_id!r} is not a safe path component")
        return path

    def save(self):
        tmp = os.path.join(self.state_dir, f".state.json.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.state_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class JsonLog:
    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.f = open(path, "a", encoding="utf-8")
        self.lock = threading.Lock()

    def write(self, entry: dict):
        line = json.dumps({"time": round(time.time(), 6), "pid": os.getpid(), **entry}, sort_keys=False)
        with self.lock:
            self.f.write(line + "\n")
            self.f.flush()


# --- the plugin -------------------------------------------------------------------------------

class Plugin:
    def __init__(self, args, stubs, store: Store, log: JsonLog):
        self.args = args
        self.pb = stubs.csi_pb2
        self.reg = stubs.reg_pb2
        self.store = store
        self.log = log
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.hang_events = set()
        self.hang_lock = threading.Lock()
        self.fail = dict(args.fail)  # method -> [StatusCode, remaining count or None]
        self.fail_lock = threading.Lock()
        AM = self.pb.VolumeCapability.AccessMode
        self.supported_modes = {AM.SINGLE_NODE_WRITER, AM.SINGLE_NODE_READER_ONLY}
        self.reader_only_modes = {AM.SINGLE_NODE_READER_ONLY, AM.MULTI_NODE_READER_ONLY}

    # ---- dispatch ----

    def handlers(self, module):
        """Generic handlers for every service of a generated module, all routed through `call`."""
        out = []
        for svc in module.DESCRIPTOR.services_by_name.values():
            methods = {}
            for m in svc.methods:
                req_cls = getattr(module, m.input_type.name)
                resp_cls = getattr(module, m.output_type.name)
                methods[m.name] = grpc.unary_unary_rpc_method_handler(
                    self._bind(m.name),
                    request_deserializer=req_cls.FromString,
                    response_serializer=resp_cls.SerializeToString)
            out.append(grpc.method_handlers_generic_handler(svc.full_name, methods))
        return out

    def _bind(self, method):
        return lambda request, context: self.call(method, request, context)

    def call(self, method, request, context):
        entry = {"method": method, **self.describe(request)}
        try:
            if method in self.args.hang:
                raise self.hang(context, entry)
            self.injected_failure(method)
            impl = getattr(self, "rpc_" + method, None)
            if impl is None:
                raise CsiError(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented by this plugin")
            with self.lock:
                response = impl(request, entry)
        except CsiError as e:
            entry["code"] = e.code.name
            entry["message"] = e.message
            self.log.write(entry)
            context.abort(e.code, e.message)
        except Exception as e:  # a bug in this plugin: report it as INTERNAL, keep serving
            traceback.print_exc(file=sys.stderr)
            entry["code"] = grpc.StatusCode.INTERNAL.name
            entry["message"] = f"{type(e).__name__}: {e}"
            self.log.write(entry)
            context.abort(grpc.StatusCode.INTERNAL, entry["message"])
        entry["code"] = "OK"
        self.log.write(entry)
        return response

    def hang(self, context, entry) -> CsiError:
        """Never answer: wait until the client cancels (or its deadline passes) or the plugin stops."""
        done = threading.Event()
        with self.hang_lock:
            self.hang_events.add(done)
        try:
            if context.add_callback(done.set) and not self.stopping.is_set():
                done.wait()
        finally:
            with self.hang_lock:
                self.hang_events.discard(done)
        entry["hung"] = True
        if self.stopping.is_set():
            return CsiError(grpc.StatusCode.UNAVAILABLE, "plugin is shutting down")
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return CsiError(grpc.StatusCode.DEADLINE_EXCEEDED, "hung until the deadline passed")
        return CsiError(grpc.StatusCode.CANCELLED, "hung until the client cancelled")

    def injected_failure(self, method):
        with self.fail_lock:
            spec = self.fail.get(method)
            if spec is None:
                return
            code, remaining = spec
            if remaining is not None:
                if remaining <= 0:
                    return
                spec[1] = remaining - 1
        raise CsiError(code, f"injected failure (--fail {method}={code.name})")

    def stop(self):
        self.stopping.set()
        with self.hang_lock:
            for ev in list(self.hang_events):
                ev.set()

    # ---- request helpers ----

    def describe(self, request) -> dict:
        fields = request.DESCRIPTOR.fields_by_name
        d = {}
        for name in LOG_FIELDS:
            if name in fields:
                value = getattr(request, name)
                d[name] = dict(value) if name in MAP_FIELDS else value
        if "capacity_range" in fields and request.HasField("capacity_range"):
            cr = request.capacity_range
            d["capacity_range"] = {"required_bytes": cr.required_bytes, "limit_bytes": cr.limit_bytes}
        if "volume_capability" in fields and request.HasField("volume_capability"):
            d["volume_capability"] = self.cap_summary(request.volume_capability)
        if "volume_capabilities" in fields:
            d["volume_capabilities"] = [self.cap_summary(c) for c in request.volume_capabilities]
        if "accessibility_requirements" in fields and request.HasField("accessibility_requirements"):
            ar = request.accessibility_requirements
            d["accessibility_requirements"] = {"requisite": [dict(t.segments) for t in ar.requisite],
                                               "preferred": [dict(t.segments) for t in ar.preferred]}
        return d

    def cap_summary(self, cap) -> dict:
        AM = self.pb.VolumeCapability.AccessMode
        out = {"access_type": cap.WhichOneof("access_type"),
               "access_mode": AM.Mode.Name(cap.access_mode.mode) if cap.HasField("access_mode") else None}
        if cap.HasField("mount"):
            out["fs_type"] = cap.mount.fs_type  # mount_flags MAY be sensitive: not logged
        return out

    def check_capability(self, cap, what="volume_capability") -> dict:
        """Malformed capability: INVALID_ARGUMENT. Returns its summary."""
        if cap.WhichOneof("access_type") is None:
            raise invalid(f"{what}: one of access_type block or mount is required")
        if not cap.HasField("access_mode") or cap.access_mode.mode == 0:
            raise invalid(f"{what}: access_mode is required")
        if cap.access_mode.mode not in self.pb.VolumeCapability.AccessMode.Mode.values():
            raise invalid(f"{what}: unknown access_mode {cap.access_mode.mode}")
        return self.cap_summary(cap)

    def unsupported_reason(self, cap, vol=None):
        """Why this (well-formed) capability cannot be served, or None."""
        summary = self.cap_summary(cap)
        if summary["access_type"] == "block":
            return "block access is not supported: volumes are directories"
        if cap.access_mode.mode not in self.supported_modes:
            return f"access mode {summary['access_mode']} is not supported (a node-local volume)"
        if vol is not None and summary["access_mode"] not in vol["access_modes"]:
            return (f"access mode {summary['access_mode']} is not one the volume was created with "
                    f"({', '.join(vol['access_modes'])})")
        return None

    def volume_id(self, request) -> str:
        vid = request.volume_id
        if not vid:
            raise invalid("volume_id is required")
        if "/" in vid or ".." in vid or "\x00" in vid or not VOLUME_ID_RE.match(vid):
            raise invalid(f"volume_id {vid!r} is not a valid volume id of this plugin")
        return vid

    def existing(self, request):
        vid = self.volume_id(request)
        vol = self.store.volumes.get(vid)
        if vol is None:
            raise not_found(f"volume {vid} does not exist")
        return vol

    def abs_path(self, value: str, field: str) -> str:
        if not value:
            raise invalid(f"{field} is required")
        if "\x00" in value or not os.path.isabs(value):
            raise invalid(f"{field} must be an absolute path, got {value!r}")
        return os.path.normpath(value)

    def check_context(self, vol, request):
        """The CO MUST pass the volume_context CreateVolume returned (it may add keys of its own)."""
        given = dict(request.volume_context)
        for key, value in vol["volume_context"].items():
            if given.get(key) != value:
                raise invalid(f"volume_context[{key!r}] is {given.get(key)!r}, the volume has {value!r}: "
                              "the CO MUST pass the volume_context returned by CreateVolume")

    def device_path(self, vol) -> str:
        return DEVICE_PREFIX + vol["volume_id"]

    def check_publish_context(self, vol, request, method):
        want = self.device_path(vol)
        got = request.publish_context.get("devicePath")
        if got != want:
            raise precondition(f"{method}: publish_context devicePath is {got!r}, want {want!r} "
                               "(the publish_context ControllerPublishVolume returned)")

    def topology(self, node_id=None):
        return self.pb.Topology(segments={self.args.topology_key: node_id or self.args.node_id})

    # ---- Identity ----

    def rpc_GetPluginInfo(self, req, entry):
        return self.pb.GetPluginInfoResponse(name=self.args.driver, vendor_version=VENDOR_VERSION)

    def rpc_GetPluginCapabilities(self, req, entry):
        Svc = self.pb.PluginCapability.Service
        caps = [self.pb.PluginCapability(service=Svc(type=Svc.CONTROLLER_SERVICE))]
        if self.args.topology_key:
            caps.append(self.pb.PluginCapability(service=Svc(type=Svc.VOLUME_ACCESSIBILITY_CONSTRAINTS)))
        return self.pb.GetPluginCapabilitiesResponse(capabilities=caps)

    def rpc_Probe(self, req, entry):
        from google.protobuf import wrappers_pb2
        return self.pb.ProbeResponse(ready=wrappers_pb2.BoolValue(value=True))

    # ---- Controller ----

    def rpc_ControllerGetCapabilities(self, req, entry):
        RPC = self.pb.ControllerServiceCapability.RPC
        return self.pb.ControllerGetCapabilitiesResponse(capabilities=[
            self.pb.ControllerServiceCapability(rpc=RPC(type=t))
            for t in (RPC.CREATE_DELETE_VOLUME, RPC.PUBLISH_UNPUBLISH_VOLUME)])

    def volume_message(self, vol):
        return self.pb.Volume(
            volume_id=vol["volume_id"], capacity_bytes=vol["capacity_bytes"],
            volume_context=vol["volume_context"],
            accessible_topology=[self.pb.Topology(segments=t) for t in vol["accessible_topology"]])

    def chosen_topology(self, req):
        if not req.HasField("accessibility_requirements"):
            return [dict(self.topology().segments)] if self.args.topology_key else []
        if not self.args.topology_key:
            raise invalid("accessibility_requirements SHALL NOT be specified: this plugin does not have "
                          "the VOLUME_ACCESSIBILITY_CONSTRAINTS capability (no --topology-key)")
        ar = req.accessibility_requirements
        requisite = [dict(t.segments) for t in ar.requisite]
        preferred = [dict(t.segments) for t in ar.preferred]
        if not requisite and not preferred:
            raise invalid("accessibility_requirements: requisite or preferred or both MUST be specified")
        for t in requisite + preferred:
            if self.args.topology_key not in t:
                raise invalid(f"topology {t} lacks this plugin's topology key {self.args.topology_key!r}")
        if requisite:
            for t in preferred:
                if t not in requisite:
                    raise invalid(f"preferred topology {t} is not in the requisite list")
        return [preferred[0] if preferred else requisite[0]]

    def rpc_CreateVolume(self, req, entry):
        name = req.name
        if not name:
            raise invalid("name is required")
        if BANNED_NAME_CHARS.search(name):
            raise invalid("name contains a banned control character")
        if not req.volume_capabilities:
            raise invalid("volume_capabilities is required")
        modes = []
        for i, cap in enumerate(req.volume_capabilities):
            summary = self.check_capability(cap, f"volume_capabilities[{i}]")
            reason = self.unsupported_reason(cap)
            if reason:
                raise invalid(f"volume_capabilities[{i}]: {reason}")
            if summary["access_mode"] not in modes:
                modes.append(summary["access_mode"])
        if req.HasField("volume_content_source"):
            raise invalid("volume_content_source is not supported (no CLONE_VOLUME or CREATE_DELETE_SNAPSHOT)")
        if req.mutable_parameters:
            raise invalid("mutable_parameters SHALL NOT be specified: no MODIFY_VOLUME capability")
        required = req.capacity_range.required_bytes
        limit = req.capacity_range.limit_bytes
        if required < 0 or limit < 0:
            raise invalid("capacity_range values MUST NOT be negative")
        if required and limit and limit < required:
            raise invalid(f"capacity_range limit_bytes {limit} < required_bytes {required}")
        max_bytes = self.args.max_volume_bytes
        if required > max_bytes:
            raise CsiError(grpc.StatusCode.OUT_OF_RANGE,
                           f"required_bytes {required} exceeds this plugin's maximum volume size {max_bytes}")
        topology = self.chosen_topology(req)
        params = dict(req.parameters)

        vol = self.store.by_name(name)
        if vol is not None:
            cap_bytes = vol["capacity_bytes"]
            problems = []
            if required and cap_bytes < required:
                problems.append(f"capacity {cap_bytes} < required_bytes {required}")
            if limit and cap_bytes > limit:
                problems.append(f"capacity {cap_bytes} > limit_bytes {limit}")
            missing = [m for m in modes if m not in vol["access_modes"]]
            if missing:
                problems.append(f"access modes {missing} not among {vol['access_modes']}")
            if params != vol["parameters"]:
                problems.append(f"parameters {params} differ from {vol['parameters']}")
            if req.HasField("accessibility_requirements") and req.accessibility_requirements.requisite:
                requisite = [dict(t.segments) for t in req.accessibility_requirements.requisite]
                if not any(t in requisite for t in vol["accessible_topology"]):
                    problems.append(f"accessible topology {vol['accessible_topology']} not in requisite {requisite}")
            entry["volume_id"] = vol["volume_id"]
            if problems:
                raise CsiError(grpc.StatusCode.ALREADY_EXISTS,
                               f"volume {name!r} exists as {vol['volume_id']} but is incompatible: " + "; ".join(problems))
            entry["existing"] = True
        else:
            if required:
                size = required
            elif limit:
                size = min(limit, DEFAULT_CAPACITY)
            else:
                size = min(DEFAULT_CAPACITY, max_bytes)
            vid = "pyvol-" + uuid.uuid4().hex
            path = self.store.volume_dir(vid)
            os.makedirs(path)
            os.chmod(path, 0o777)
            vol = {
                "volume_id": vid, "name": name, "capacity_bytes": size, "parameters": params,
                "access_modes": modes, "accessible_topology": topology, "created": time.time(),
                "volume_context": {CONTEXT_NAME_KEY: name, CONTEXT_NODE_KEY: self.args.node_id},
                "attachments": {}, "staged": {}, "published": {},
            }
            self.store.volumes[vid] = vol
            self.store.save()
            entry["volume_id"] = vid
            entry["existing"] = False
        entry["capacity_bytes"] = vol["capacity_bytes"]
        entry["accessible_topology"] = vol["accessible_topology"]
        return self.pb.CreateVolumeResponse(volume=self.volume_message(vol))

    def rpc_DeleteVolume(self, req, entry):
        vid = self.volume_id(req)
        vol = self.store.volumes.get(vid)
        if vol is None:
            entry["existed"] = False
            return self.pb.DeleteVolumeResponse()
        source = self.store.volume_dir(vid)
        # Stagings/publications whose mounts are gone (e.g. after a reboot) do not keep it in use.
        users = ([f"attached to node {n}" for n in vol["attachments"]]
                 + [f"staged at {p}" for p in vol["staged"] if bound_to(p, source)]
                 + [f"published at {p}" for p in vol["published"] if bound_to(p, source)])
        if users:
            raise precondition(f"volume {vid} is in use: {', '.join(users)}")
        shutil.rmtree(source, ignore_errors=True)
        del self.store.volumes[vid]
        self.store.save()
        entry["existed"] = True
        return self.pb.DeleteVolumeResponse()

    def rpc_ControllerPublishVolume(self, req, entry):
        vid = self.volume_id(req)
        if not req.node_id:
            raise invalid("node_id is required")
        if not req.HasField("volume_capability"):
            raise invalid("volume_capability is required")
        summary = self.check_capability(req.volume_capability)
        if req.readonly:
            raise invalid("readonly MUST be false: this plugin does not have the PUBLISH_READONLY capability")
        vol = self.existing(req)
        if req.node_id != self.args.node_id:
            raise not_found(f"node {req.node_id} does not exist (this plugin serves node {self.args.node_id})")
        reason = self.unsupported_reason(req.volume_capability, vol)
        if reason:
            raise precondition(reason)
        self.check_context(vol, req)
        want = {"access_mode": summary["access_mode"], "access_type": summary["access_type"],
                "readonly": req.readonly}
        current = vol["attachments"].get(req.node_id)
        if current is not None:
            if current != want:
                raise CsiError(grpc.StatusCode.ALREADY_EXISTS,
                               f"volume {vid} is already published to node {req.node_id} as {current}, not {want}")
            entry["already"] = True
        else:
            others = [n for n in vol["attachments"] if n != req.node_id]
            if others:
                raise precondition(f"volume {vid} is published to node(s) {others}; its access mode allows one node")
            if self.args.max_volumes:
                count = sum(1 for v in self.store.volumes.values() if req.node_id in v["attachments"])
                if count >= self.args.max_volumes:
                    raise CsiError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"node {req.node_id} already has {count} volumes (max {self.args.max_volumes})")
            vol["attachments"][req.node_id] = want
            self.store.save()
            entry["already"] = False
        context = {"devicePath": self.device_path(vol)}
        entry["publish_context"] = context
        return self.pb.ControllerPublishVolumeResponse(publish_context=context)

    def rpc_ControllerUnpublishVolume(self, req, entry):
        vid = self.volume_id(req)
        vol = self.store.volumes.get(vid)
        if vol is None:
            entry["existed"] = False  # can safely be regarded as unpublished: OK
            return self.pb.ControllerUnpublishVolumeResponse()
        nodes = [req.node_id] if req.node_id else list(vol["attachments"])
        removed = [n for n in nodes if vol["attachments"].pop(n, None) is not None]
        entry["detached_nodes"] = removed
        if vol["staged"] or vol["published"]:
            # The CO should have called NodeUnpublish/NodeUnstage first; recorded for the tests.
            entry["still_in_use_on_node"] = sorted(vol["staged"]) + sorted(vol["published"])
        if removed:
            self.store.save()
        return self.pb.ControllerUnpublishVolumeResponse()

    def rpc_ValidateVolumeCapabilities(self, req, entry):
        self.volume_id(req)
        if not req.volume_capabilities:
            raise invalid("volume_capabilities is required")
        for i, cap in enumerate(req.volume_capabilities):
            self.check_capability(cap, f"volume_capabilities[{i}]")
        vol = self.existing(req)
        self.check_context(vol, req)
        reasons = [r for r in (self.unsupported_reason(c, vol) for c in req.volume_capabilities) if r]
        if req.parameters and dict(req.parameters) != vol["parameters"]:
            reasons.append(f"parameters {dict(req.parameters)} differ from the volume's {vol['parameters']}")
        if reasons:
            entry["confirmed"] = False
            return self.pb.ValidateVolumeCapabilitiesResponse(message="; ".join(reasons))
        entry["confirmed"] = True
        Confirmed = self.pb.ValidateVolumeCapabilitiesResponse.Confirmed
        return self.pb.ValidateVolumeCapabilitiesResponse(confirmed=Confirmed(
            volume_context=req.volume_context, volume_capabilities=req.volume_capabilities,
            parameters=req.parameters))

    # ---- Node ----

    def rpc_NodeGetCapabilities(self, req, entry):
        RPC = self.pb.NodeServiceCapability.RPC
        return self.pb.NodeGetCapabilitiesResponse(capabilities=[
            self.pb.NodeServiceCapability(rpc=RPC(type=t))
            for t in (RPC.STAGE_UNSTAGE_VOLUME, RPC.GET_VOLUME_STATS)])

    def rpc_NodeGetInfo(self, req, entry):
        resp = self.pb.NodeGetInfoResponse(node_id=self.args.node_id, max_volumes_per_node=self.args.max_volumes)
        if self.args.topology_key:
            resp.accessible_topology.CopyFrom(self.topology())
            entry["accessible_topology"] = dict(resp.accessible_topology.segments)
        entry["node_id"] = self.args.node_id
        return resp

    def rpc_NodeStageVolume(self, req, entry):
        vid = self.volume_id(req)
        staging = self.abs_path(req.staging_target_path, "staging_target_path")
        if not req.HasField("volume_capability"):
            raise invalid("volume_capability is required")
        summary = self.check_capability(req.volume_capability)
        vol = self.existing(req)
        reason = self.unsupported_reason(req.volume_capability, vol)
        if reason:
            raise precondition(reason)
        self.check_context(vol, req)
        if self.args.node_id not in vol["attachments"]:
            raise precondition(f"volume {vid} is not ControllerPublished to node {self.args.node_id}")
        self.check_publish_context(vol, req, "NodeStageVolume")
        source = self.store.volume_dir(vid)
        want = {"access_mode": summary["access_mode"], "access_type": summary["access_type"]}
        for path in list(vol["staged"]):
            if path == staging:
                continue
            if bound_to(path, source):
                raise precondition(f"volume {vid} is already staged at {path}; only one staging_target_path per volume")
            del vol["staged"][path]  # a record whose mount is gone (e.g. after a reboot)
        current = vol["staged"].get(staging)
        if current is not None and bound_to(staging, source):
            if current != want:
                raise CsiError(grpc.StatusCode.ALREADY_EXISTS,
                               f"volume {vid} is staged at {staging} as {current}, not {want}")
            entry["already"] = True
            return self.pb.NodeStageVolumeResponse()
        make_dir(staging, "staging_target_path")
        if bound_to(staging, source):
            entry["already"] = True
        else:
            if is_mount_point(staging):
                raise precondition(f"something else is mounted at {staging}")
            run_mount(["mount", "--bind", source, staging])
            entry["already"] = False
        vol["staged"][staging] = want
        self.store.save()
        return self.pb.NodeStageVolumeResponse()

    def rpc_NodeUnstageVolume(self, req, entry):
        vid = self.volume_id(req)
        staging = self.abs_path(req.staging_target_path, "staging_target_path")
        vol = self.existing(req)
        source = self.store.volume_dir(vid)
        users = [t for t, p in vol["published"].items() if p.get("staging_target_path") == staging]
        if users:
            entry["still_published_at"] = users  # the CO should unpublish first; recorded for the tests
        was_mounted = bound_to(staging, source)
        unmount_all(staging, source)
        entry["was_mounted"] = was_mounted
        if vol["staged"].pop(staging, None) is not None:
            self.store.save()
        return self.pb.NodeUnstageVolumeResponse()

    def rpc_NodePublishVolume(self, req, entry):
        vid = self.volume_id(req)
        target = self.abs_path(req.target_path, "target_path")
        if not req.HasField("volume_capability"):
            raise invalid("volume_capability is required")
        if not req.staging_target_path:
            raise precondition("staging_target_path is not set, but this plugin has STAGE_UNSTAGE_VOLUME")
        staging = self.abs_path(req.staging_target_path, "staging_target_path")
        summary = self.check_capability(req.volume_capability)
        vol = self.existing(req)
        reason = self.unsupported_reason(req.volume_capability, vol)
        if reason:
            raise precondition(reason)
        self.check_context(vol, req)
        self.check_publish_context(vol, req, "NodePublishVolume")
        source = self.store.volume_dir(vid)
        if staging not in vol["staged"] or not bound_to(staging, source):
            raise precondition(f"volume {vid} is not staged at {staging}")
        readonly = bool(req.readonly) or req.volume_capability.access_mode.mode in self.reader_only_modes
        want = {"staging_target_path": staging, "readonly": readonly,
                "access_mode": summary["access_mode"], "access_type": summary["access_type"]}
        entry["readonly_effective"] = readonly
        current = vol["published"].get(target)
        if current is not None and bound_to(target, source):
            if current != want:
                raise CsiError(grpc.StatusCode.ALREADY_EXISTS,
                               f"volume {vid} is published at {target} as {current}, not {want}")
            entry["already"] = True
            return self.pb.NodePublishVolumeResponse()
        make_dir(target, "target_path")
        if is_mount_point(target):
            raise precondition(f"something else is mounted at {target}")
        run_mount(["mount", "--bind", staging, target])
        if readonly:
            try:
                run_mount(["mount", "-o", "remount,bind,ro", target])
            except CsiError:
                unmount_all(target, source)
                raise
        entry["already"] = False
        vol["published"][target] = want
        self.store.save()
        return self.pb.NodePublishVolumeResponse()

    def rpc_NodeUnpublishVolume(self, req, entry):
        vid = self.volume_id(req)
        target = self.abs_path(req.target_path, "target_path")
        vol = self.existing(req)
        source = self.store.volume_dir(vid)
        was_mounted = bound_to(target, source)
        unmount_all(target, source)
        entry["was_mounted"] = was_mounted
        removed = False
        if os.path.isdir(target) and not os.path.islink(target) and not is_mount_point(target):
            try:
                os.rmdir(target)
                removed = True
            except OSError as e:
                raise internal(f"cannot remove target_path {target}: {e}")
        entry["removed_target"] = removed
        if vol["published"].pop(target, None) is not None:
            self.store.save()
        return self.pb.NodeUnpublishVolumeResponse()

    def rpc_NodeGetVolumeStats(self, req, entry):
        vid = self.volume_id(req)
        volume_path = self.abs_path(req.volume_path, "volume_path")
        if req.staging_target_path:
            self.abs_path(req.staging_target_path, "staging_target_path")
        vol = self.existing(req)
        source = self.store.volume_dir(vid)
        known = set(vol["published"]) | set(vol["staged"])
        if volume_path not in known or not bound_to(volume_path, source):
            raise not_found(f"volume {vid} is not published or staged at {volume_path}")
        st = os.statvfs(volume_path)
        used_bytes = 0
        used_inodes = 1
        for root, dirs, files in os.walk(volume_path):
            used_inodes += len(dirs) + len(files)
            for fn in files:
                try:
                    s = os.lstat(os.path.join(root, fn))
                except OSError:
                    continue
                if stat.S_ISREG(s.st_mode):
                    used_bytes += s.st_size
        Unit = self.pb.VolumeUsage.Unit
        usage = [
            self.pb.VolumeUsage(unit=Unit.BYTES, total=st.f_blocks * st.f_frsize,
                                available=st.f_bavail * st.f_frsize, used=used_bytes),
            self.pb.VolumeUsage(unit=Unit.INODES, total=st.f_files, available=st.f_favail, used=used_inodes),
        ]
        entry["used_bytes"] = used_bytes
        entry["used_inodes"] = used_inodes
        return self.pb.NodeGetVolumeStatsResponse(usage=usage)

    # ---- kubelet plugin registration ----

    def rpc_GetInfo(self, req, entry):
        return self.reg.PluginInfo(type="CSIPlugin", name=self.args.driver, endpoint=self.args.socket,
                                   supported_versions=["1.0.0"])

    def rpc_NotifyRegistrationStatus(self, req, entry):
        if not req.plugin_registered:
            print(f"csi plugin {self.args.driver}: kubelet did not register it: {req.error}",
                  file=sys.stderr, flush=True)
        return self.reg.RegistrationStatusResponse()


# --- main -------------------------------------------------------------------------------------

def method_names(stubs) -> set:
    names = set()
    for module in (stubs.csi_pb2, stubs.reg_pb2):
        for svc in module.DESCRIPTOR.services_by_name.values():
            names.update(m.name for m in svc.methods)
    return names


def parse_args(argv, known_methods):
    p = argparse.ArgumentParser(description="Independent CSI v1.9.0 test plugin (bind-mounted directories).")
    p.add_argument("--driver", required=True, help="driver name (GetPluginInfo.name)")
    p.add_argument("--node-id", required=True, help="node id (NodeGetInfo.node_id)")
    p.add_argument("--socket", help="CSI endpoint unix socket (default: STATE_DIR/csi.sock)")
    p.add_argument("--registration-dir", help="also serve kubelet plugin registration on DIR/<driver>-reg.sock")
    p.add_argument("--state-dir", required=True, help="volumes and state.json live here")
    p.add_argument("--log", required=True, help="append one JSON line per RPC to this file")
    p.add_argument("--topology-key", help="report topology {KEY: node-id}, VOLUME_ACCESSIBILITY_CONSTRAINTS")
    p.add_argument("--hang", action="append", default=[], metavar="METHOD",
                   help="this RPC never answers until the client cancels (repeatable)")
    p.add_argument("--fail", action="append", default=[], metavar="METHOD=CODE[:COUNT]",
                   help="this RPC fails with this gRPC code (the first COUNT calls only, if given; repeatable)")
    p.add_argument("--max-volumes", type=int, default=0, help="NodeGetInfo max_volumes_per_node (default 0)")
    p.add_argument("--max-volume-bytes", type=int, default=1 << 40,
                   help="largest volume CreateVolume provides; beyond: OUT_OF_RANGE (default 1 TiB)")
    args = p.parse_args(argv)
    if args.max_volumes < 0:
        p.error("--max-volumes must not be negative")
    for m in args.hang:
        if m not in known_methods:
            p.error(f"--hang {m}: unknown RPC (known: {', '.join(sorted(known_methods))})")
    args.hang = set(args.hang)
    fails = {}
    for spec in args.fail:
        m = re.fullmatch(r"([A-Za-z]+)=([A-Z_]+)(?::(\d+))?", spec)
        if not m:
            p.error(f"--fail {spec}: expected METHOD=CODE or METHOD=CODE:COUNT")
        method, code_name, count = m.group(1), m.group(2), m.group(3)
        if method not in known_methods:
            p.error(f"--fail {spec}: unknown RPC {method}")
        code = grpc.StatusCode.__members__.get(code_name)
        if code is None or code == grpc.StatusCode.OK:
            p.error(f"--fail {spec}: {code_name} is not a gRPC error code name")
        fails[method] = [code, int(count) if count is not None else None]
    args.fail = fails
    args.state_dir = os.path.abspath(args.state_dir)
    args.socket = os.path.abspath(args.socket or os.path.join(args.state_dir, "csi.sock"))
    return args


def listen_unix(server, path: str):
    """Bind server to unix socket `path`, removing a stale socket there first."""
    if len(path.encode()) > 107:
        raise SystemExit(f"socket path {path} is longer than a unix socket address allows (107 bytes)")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise SystemExit(f"{path} exists and is not a socket; not removing it")
        os.unlink(path)
    try:
        port = server.add_insecure_port("unix:" + path)
    except RuntimeError as e:
        raise SystemExit(f"cannot listen on {path}: {e}")
    if port == 0:
        raise SystemExit(f"cannot listen on {path}")


def main(argv=None):
    stubs = csi_stubs.load()
    args = parse_args(sys.argv[1:] if argv is None else argv, method_names(stubs))
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    store = Store(args.state_dir)
    log = JsonLog(args.log)
    plugin = Plugin(args, stubs, store, log)

    servers = []  # (server, socket path, (dev, ino) of the socket it created)
    csi_server = grpc.server(futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="csi"),
                             handlers=plugin.handlers(stubs.csi_pb2))
    listen_unix(csi_server, args.socket)
    plan = [(csi_server, args.socket)]
    if args.registration_dir:
        reg_socket = os.path.join(os.path.abspath(args.registration_dir), f"{args.driver}-reg.sock")
        reg_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="reg"),
                                 handlers=plugin.handlers(stubs.reg_pb2))
        listen_unix(reg_server, reg_socket)
        plan.append((reg_server, reg_socket))
    for server, path in plan:
        server.start()
        st = os.stat(path)
        servers.append((server, path, (st.st_dev, st.st_ino)))
    print(f"csi plugin {args.driver} listening on {args.socket}", flush=True)
    if args.registration_dir:
        print(f"csi plugin {args.driver} registration on {plan[-1][1]}", flush=True)

    while not stop.wait(1.0):
        pass

    plugin.stop()
    events = [server.stop(grace=3) for server, _, _ in servers]
    for ev in events:
        ev.wait(10)
    for _, path, ident in servers:
        try:
            st = os.lstat(path)
            if (st.st_dev, st.st_ino) == ident:
                os.unlink(path)
        except FileNotFoundError:
            pass
    print(f"csi plugin {args.driver} stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
