"""Spec conformance of SwiftEdge's built-in CSI driver `local-path` (in the spirit of csi-sanity).

Starts `swiftedge csi local-path` in a short temporary directory under /tmp (unix socket paths are
limited to 107 bytes) and talks to it over its socket with stubs generated from the repo's CSI
v1.9.0 and kubelet plugin-registration protos (csi_stubs.py). Every expectation below comes from the
CSI specification (csi.proto comments and spec.md: "Error Scheme" and the per-RPC error tables),
not from the driver's source; where the spec leaves a choice open the test accepts every allowed
answer. The tests that bind-mount volumes run only as root and where `mount --bind` is permitted.

Nothing here builds SwiftEdge: the binary is SWIFTEDGE_BIN or .build/debug/swiftedge.
"""
import errno
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import csi_stubs  # noqa: E402

BIN = Path(os.environ.get("SWIFTEDGE_BIN", REPO / ".build" / "debug" / "swiftedge"))
NODE = "sanity-node-1"
OTHER_NODE = "sanity-node-2"
DRIVER = "sanity.local-path.csi.test"
LISTENING = "local-path CSI driver listening"
START_TIMEOUT = 60
STOP_TIMEOUT = 20
RPC_TIMEOUT = 20
MIB = 1 << 20

S = csi_stubs.load()
pb = S.csi_pb2
AM = pb.VolumeCapability.AccessMode
C = grpc.StatusCode
SVC = pb.PluginCapability.Service
CRPC = pb.ControllerServiceCapability.RPC
NRPC = pb.NodeServiceCapability.RPC
UNIT = pb.VolumeUsage.Unit

# GetPluginInfoResponse.name: "domain name notation ... 63 characters or less, beginning and
# ending with an alphanumeric character ([a-z0-9A-Z]) with dashes (-), dots (.), and
# alphanumerics between."
PLUGIN_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$")
# Topology keys: "[prefix/]name"; the name 63 characters or less, alphanumeric at both ends with
# -_. between; the prefix lower-case domain notation of 63 characters or less. Values: 63
# characters or less, alphanumeric at both ends with -_. between.
TOPOLOGY_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
TOPOLOGY_PREFIX = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
TOPOLOGY_VALUE = TOPOLOGY_NAME


# ---------------------------------------------------------------------------------------------
# helpers


def mount_cap(mode=AM.SINGLE_NODE_WRITER):
    return pb.VolumeCapability(mount=pb.VolumeCapability.MountVolume(), access_mode=AM(mode=mode))


def block_cap(mode=AM.SINGLE_NODE_WRITER):
    return pb.VolumeCapability(block=pb.VolumeCapability.BlockVolume(), access_mode=AM(mode=mode))


def code_of(fn, request):
    """The gRPC status code of one call (OK when it succeeds)."""
    try:
        fn(request, timeout=RPC_TIMEOUT)
    except grpc.RpcError as e:
        return e.code()
    return C.OK


def call_error(fn, request):
    """(code, details) of one call; (OK, response) when it succeeds."""
    try:
        return C.OK, fn(request, timeout=RPC_TIMEOUT)
    except grpc.RpcError as e:
        return e.code(), e.details()


def _unescape_mountinfo(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_points():
    """Mount points of this process's mount namespace, in mount order (duplicates kept)."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return [_unescape_mountinfo(line.split(" ")[4]) for line in f if line.strip()]


def mounts_under(base) -> list:
    root = os.path.realpath(base)
    return [p for p in mount_points() if p == root or p.startswith(root + os.sep)]


def unmount_under(base):
    """Lazily unmounts everything at or below base, deepest first."""
    for _ in range(10):
        points = sorted(set(mounts_under(base)), key=len, reverse=True)
        if not points:
            return
        for p in points:
            subprocess.run(["umount", "-l", p], capture_output=True, timeout=30)


def tree(path: Path) -> set:
    """Every path below `path` (relative), for before/after comparisons."""
    out = set()
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            out.add(os.path.relpath(os.path.join(root, n), path))
    return out


def check_topology(t):
    assert t.segments, f"a Topology without segments: {t}"
    for key, value in t.segments.items():
        prefix, _, name = key.rpartition("/")
        assert TOPOLOGY_NAME.match(name), f"topology key {key!r}: invalid name segment"
        assert not prefix or TOPOLOGY_PREFIX.match(prefix), f"topology key {key!r}: invalid prefix"
        assert TOPOLOGY_VALUE.match(value), f"topology value {value!r} of {key!r} is not a valid segment"


def wait_for_socket(path: Path, deadline: float, proc, describe):
    """Waits until `path` exists and a gRPC connection to it is ready; returns the channel."""
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"driver exited ({proc.returncode}) before {path} appeared:\n{describe()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {START_TIMEOUT}s:\n{describe()}")
        time.sleep(0.05)  # polling a file system condition under a deadline
    ch = grpc.insecure_channel(f"unix:{path}")
    try:
        grpc.channel_ready_future(ch).result(timeout=max(0.1, deadline - time.monotonic()))
    except grpc.FutureTimeoutError:
        ch.close()
        raise AssertionError(f"no gRPC connection to {path} within {START_TIMEOUT}s:\n{describe()}")
    return ch


class Driver:
    """One `swiftedge csi local-path` process in `base`."""

    def __init__(self, base: Path, driver_name=DRIVER, registration=True):
        self.base = base
        self.storage = base / "storage"
        self.socket = base / "csi.sock"
        self.reg_dir = base / "registry" if registration else None
        self.driver_name = driver_name
        self.proc = None
        self.channels = []
        self.lines = []
        self._lines_lock = threading.Lock()

    @property
    def reg_socket(self):
        return self.reg_dir / f"{self.driver_name}-reg.sock" if self.reg_dir else None

    def output(self) -> str:
        with self._lines_lock:
            return "".join(self.lines)[-6000:]

    def start(self):
        if not BIN.exists():
            pytest.skip(f"no swiftedge binary at {BIN} (set SWIFTEDGE_BIN)")
        assert len(str(self.socket).encode()) < 108
        args = [str(BIN), "csi", "local-path", "--node-id", NODE, "--storage-dir", str(self.storage),
                "--endpoint", str(self.socket)]
        if self.reg_dir:
            args += ["--registration-dir", str(self.reg_dir)]
        if self.driver_name is not None:
            args += ["--driver-name", self.driver_name]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     errors="replace", start_new_session=True)
        seen = queue.Queue()

        def pump(out):
            for line in out:
                with self._lines_lock:
                    self.lines.append(line)
                if LISTENING in line:
                    seen.put(True)
            seen.put(False)

        threading.Thread(target=pump, args=(self.proc.stdout,), daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        try:
            ok = seen.get(timeout=START_TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"driver did not log {LISTENING!r} within {START_TIMEOUT}s:\n{self.output()}")
        if not ok:
            self.proc.wait(timeout=STOP_TIMEOUT)
            raise AssertionError(f"driver exited ({self.proc.returncode}) before listening:\n{self.output()}")

        ch = wait_for_socket(self.socket, deadline, self.proc, self.output)
        self.channels.append(ch)
        self.identity = S.csi_pb2_grpc.IdentityStub(ch)
        self.controller = S.csi_pb2_grpc.ControllerStub(ch)
        self.node = S.csi_pb2_grpc.NodeStub(ch)
        if self.reg_dir:
            reg = wait_for_socket(self.reg_socket, deadline, self.proc, self.output)
            self.channels.append(reg)
            self.registration = S.reg_pb2_grpc.RegistrationStub(reg)
        return self

    def stop(self):
        """SIGTERM; returns the exit code (None: it had to be killed after STOP_TIMEOUT)."""
        for ch in self.channels:
            ch.close()
        self.channels = []
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
                rc = None
        return rc

    # -- requests

    def create(self, name, required=MIB, limit=0, caps=None, **kw):
        return self.controller.CreateVolume(pb.CreateVolumeRequest(
            name=name, capacity_range=pb.CapacityRange(required_bytes=required, limit_bytes=limit),
            volume_capabilities=caps or [mount_cap()], **kw), timeout=RPC_TIMEOUT).volume

    def delete(self, volume_id):
        return code_of(self.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id=volume_id))

    def publish_req(self, vol, target, readonly=False, cap=None, **kw):
        fields = dict(volume_id=vol.volume_id, target_path=str(target), readonly=readonly,
                      volume_capability=cap or mount_cap(), volume_context=vol.volume_context)
        fields.update(kw)
        return pb.NodePublishVolumeRequest(**fields)

    def publish(self, vol, target, readonly=False, cap=None):
        self.node.NodePublishVolume(self.publish_req(vol, target, readonly, cap), timeout=RPC_TIMEOUT)

    def unpublish(self, vol, target):
        return code_of(self.node.NodeUnpublishVolume,
                       pb.NodeUnpublishVolumeRequest(volume_id=vol.volume_id, target_path=str(target)))

    def stats(self, vol, path):
        return self.node.NodeGetVolumeStats(pb.NodeGetVolumeStatsRequest(
            volume_id=vol.volume_id, volume_path=str(path)), timeout=RPC_TIMEOUT)

    def node_topology(self):
        return self.node.NodeGetInfo(pb.NodeGetInfoRequest(), timeout=RPC_TIMEOUT).accessible_topology


def stopped_cleanly(d: Driver):
    rc = d.stop()
    assert rc == 0, f"driver exit code after SIGTERM: {rc} (None: still running after {STOP_TIMEOUT}s)\n{d.output()}"
    assert not d.socket.exists(), f"the CSI socket {d.socket} was left behind"
    if d.reg_socket is not None:
        assert not d.reg_socket.exists(), f"the registration socket {d.reg_socket} was left behind"


@pytest.fixture
def base():
    d = tempfile.mkdtemp(prefix="se-lp-", dir="/tmp")
    try:
        yield Path(d)
    finally:
        if os.geteuid() == 0:
            unmount_under(d)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def driver(base):
    d = Driver(base)
    try:
        d.start()
    except BaseException:
        d.stop()
        raise
    try:
        yield d
    finally:
        stopped_cleanly(d)


def _can_bind_mount(base: Path) -> bool:
    src, dst = base / "probe-src", base / "probe-dst"
    src.mkdir()
    dst.mkdir()
    try:
        ok = subprocess.run(["mount", "--bind", str(src), str(dst)], capture_output=True, timeout=30).returncode == 0
        if ok:
            subprocess.run(["umount", str(dst)], capture_output=True, timeout=30)
        return ok
    finally:
        if not mounts_under(dst):
            src.rmdir()
            dst.rmdir()


@pytest.fixture
def mounting(base):
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root")
    if not _can_bind_mount(base):
        pytest.skip("mount --bind is not permitted here")


# ---------------------------------------------------------------------------------------------
# Identity


def test_identity(driver):
    info = driver.identity.GetPluginInfo(pb.GetPluginInfoRequest(), timeout=RPC_TIMEOUT)
    assert info.name == DRIVER  # --driver-name
    assert PLUGIN_NAME.match(info.name)
    assert info.vendor_version, "vendor_version is REQUIRED"

    caps = driver.identity.GetPluginCapabilities(pb.GetPluginCapabilitiesRequest(), timeout=RPC_TIMEOUT)
    services = {c.service.type for c in caps.capabilities if c.HasField("service")}
    assert SVC.CONTROLLER_SERVICE in services
    assert SVC.UNKNOWN not in services

    # "If not present, the caller SHALL assume that the plugin is in a ready state"; false means
    # still initialising, so give it until the deadline.
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        probe = driver.identity.Probe(pb.ProbeRequest(), timeout=RPC_TIMEOUT)
        if not probe.HasField("ready") or probe.ready.value:
            break
        assert time.monotonic() < deadline, "Probe did not report ready"
        time.sleep(0.1)  # re-probing under a deadline


def test_default_name_without_registration(base):
    d = Driver(base, driver_name=None, registration=False)
    try:
        d.start()
    except BaseException:
        d.stop()
        raise
    try:
        info = d.identity.GetPluginInfo(pb.GetPluginInfoRequest(), timeout=RPC_TIMEOUT)
        assert info.name and PLUGIN_NAME.match(info.name), info.name
        assert info.vendor_version
        assert not [p for p in base.rglob("*-reg.sock")], "registration socket served without --registration-dir"
    finally:
        stopped_cleanly(d)


# ---------------------------------------------------------------------------------------------
# Controller


def test_controller_capabilities_and_no_attach(driver):
    caps = driver.controller.ControllerGetCapabilities(pb.ControllerGetCapabilitiesRequest(), timeout=RPC_TIMEOUT)
    rpcs = {c.rpc.type for c in caps.capabilities if c.HasField("rpc")}
    assert CRPC.CREATE_DELETE_VOLUME in rpcs
    assert CRPC.PUBLISH_UNPUBLISH_VOLUME not in rpcs
    vol = driver.create("sanity-attach")
    # Not advertised, so a CO never calls it; it must not pretend to have attached anything.
    assert code_of(driver.controller.ControllerPublishVolume, pb.ControllerPublishVolumeRequest(
        volume_id=vol.volume_id, node_id=NODE, volume_capability=mount_cap())) == C.UNIMPLEMENTED
    assert code_of(driver.controller.ControllerUnpublishVolume, pb.ControllerUnpublishVolumeRequest(
        volume_id=vol.volume_id, node_id=NODE)) == C.UNIMPLEMENTED
    assert driver.delete(vol.volume_id) == C.OK


def test_create_volume_required_fields_and_capabilities(driver):
    create = driver.controller.CreateVolume
    before = tree(driver.base)
    assert code_of(create, pb.CreateVolumeRequest(volume_capabilities=[mount_cap()])) == C.INVALID_ARGUMENT
    assert code_of(create, pb.CreateVolumeRequest(name="sanity-nocaps")) == C.INVALID_ARGUMENT
    assert code_of(create, pb.CreateVolumeRequest(
        name="sanity-nocaps", capacity_range=pb.CapacityRange(required_bytes=MIB))) == C.INVALID_ARGUMENT
    # "SP MUST provision a volume that will satisfy ALL of the capabilities ... Otherwise SP MUST
    # return the appropriate gRPC error code" (unsupported field: INVALID_ARGUMENT).
    assert code_of(create, pb.CreateVolumeRequest(name="sanity-block", volume_capabilities=[block_cap()])) == \
        C.INVALID_ARGUMENT
    assert code_of(create, pb.CreateVolumeRequest(
        name="sanity-mixed", volume_capabilities=[mount_cap(), block_cap()])) == C.INVALID_ARGUMENT
    assert tree(driver.base) == before, "a failed CreateVolume left something behind"


def test_create_volume_idempotent_capacity_and_topology(driver):
    node_topology = driver.node_topology()
    check_topology(node_topology)

    # An exact size: required_bytes == limit_bytes.
    vol = driver.create("sanity-exact", required=MIB, limit=MIB)
    assert vol.volume_id
    assert vol.capacity_bytes in (0, MIB), f"capacity {vol.capacity_bytes} outside [{MIB}, {MIB}] (0: unknown)"
    again = driver.create("sanity-exact", required=MIB, limit=MIB)
    assert again.volume_id == vol.volume_id
    assert again.capacity_bytes == vol.capacity_bytes
    assert dict(again.volume_context) == dict(vol.volume_context)  # "SHALL always report the same"
    # Same name, incompatible capacity_range (the existing volume is at most 1 MiB).
    with pytest.raises(grpc.RpcError) as e:
        driver.create("sanity-exact", required=2 * MIB, limit=2 * MIB)
    assert e.value.code() == C.ALREADY_EXISTS

    ranged = driver.create("sanity-ranged", required=3 * MIB)
    assert ranged.capacity_bytes == 0 or ranged.capacity_bytes >= 3 * MIB, ranged.capacity_bytes
    assert ranged.volume_id != vol.volume_id

    # accessible_topology: "A plugin that returns this field MUST also set the
    # VOLUME_ACCESSIBILITY_CONSTRAINTS plugin capability." A node-local volume must name its node.
    caps = driver.identity.GetPluginCapabilities(pb.GetPluginCapabilitiesRequest(), timeout=RPC_TIMEOUT)
    services = {c.service.type for c in caps.capabilities if c.HasField("service")}
    assert SVC.VOLUME_ACCESSIBILITY_CONSTRAINTS in services
    for v in (vol, ranged):
        assert v.accessible_topology, "a node-local volume must report where it is accessible"
        for t in v.accessible_topology:
            check_topology(t)
        assert any(NODE in t.segments.values() for t in v.accessible_topology), list(v.accessible_topology)
        # The node (NodeGetInfo's topology) is one the volume is accessible from.
        assert any(all(node_topology.segments.get(k) == val for k, val in t.segments.items())
                   for t in v.accessible_topology), (list(v.accessible_topology), node_topology)

    for v in (vol, ranged):
        assert driver.delete(v.volume_id) == C.OK


def test_create_volume_accessibility_requirements(driver):
    node_topology = driver.node_topology()
    key = next(k for k, v in node_topology.segments.items() if v == NODE)
    here = pb.Topology(segments=dict(node_topology.segments))
    elsewhere = pb.Topology(segments={**node_topology.segments, key: OTHER_NODE})
    before = tree(driver.storage)

    code, details = call_error(driver.controller.CreateVolume, pb.CreateVolumeRequest(
        name="sanity-elsewhere", volume_capabilities=[mount_cap()],
        accessibility_requirements=pb.TopologyRequirement(requisite=[elsewhere], preferred=[elsewhere])))
    # "Unable to provision in accessible_topology | 8 RESOURCE_EXHAUSTED | ... although the
    # accessible_topology field is valid, a new volume can not be provisioned with the specified
    # topology constraints."
    assert code == C.RESOURCE_EXHAUSTED, (code, details)
    assert tree(driver.storage) == before, "a refused CreateVolume left a volume behind"

    # x < n: the SP chooses among the requisite topologies; only this node can be chosen.
    vol = driver.controller.CreateVolume(pb.CreateVolumeRequest(
        name="sanity-requisite", volume_capabilities=[mount_cap()],
        accessibility_requirements=pb.TopologyRequirement(requisite=[elsewhere, here], preferred=[here])),
        timeout=RPC_TIMEOUT).volume
    assert vol.accessible_topology
    assert all(dict(t.segments).get(key) == NODE for t in vol.accessible_topology), list(vol.accessible_topology)
    assert driver.delete(vol.volume_id) == C.OK


def test_create_volume_name_cannot_escape_storage_dir(driver):
    tmp_before = set(os.listdir(driver.base.parent))
    marker = f"sanity-escape-{os.getpid()}-{driver.base.name}"
    outside = [driver.base / marker, driver.base.parent / marker]
    names = [f"../{marker}", f"../../{marker}", f"../../../{marker}", f"a/../../{marker}", f"/{marker}", "..", "."]
    vols = []
    for name in names:
        # Any Unicode string without control characters is a valid name; the plugin either
        # creates a volume (somewhere below --storage-dir) or refuses.
        code, got = call_error(driver.controller.CreateVolume, pb.CreateVolumeRequest(
            name=name, capacity_range=pb.CapacityRange(required_bytes=MIB), volume_capabilities=[mount_cap()]))
        assert code in (C.OK, C.INVALID_ARGUMENT), (name, code, got)
        if code == C.OK:
            vols.append((name, got.volume))
    for name, vol in vols:
        data = driver.storage / vol.volume_id
        real = os.path.realpath(data)
        assert real.startswith(os.path.realpath(driver.storage) + os.sep), (name, vol.volume_id, real)
        assert os.path.isdir(real), (name, vol.volume_id)
    for p in outside:
        assert not p.exists(), f"CreateVolume created {p}"
    outside_storage = {p for p in tree(driver.base) if not p.startswith("storage")}
    assert all(marker not in p for p in outside_storage), outside_storage
    assert {n for n in set(os.listdir(driver.base.parent)) - tmp_before if marker in n} == set()
    assert len({v.volume_id for _, v in vols}) == len(vols), "two names share one volume"
    for _, vol in vols:
        assert driver.delete(vol.volume_id) == C.OK
    assert driver.storage.is_dir()


def test_delete_volume(driver):
    delete = driver.controller.DeleteVolume
    assert code_of(delete, pb.DeleteVolumeRequest()) == C.INVALID_ARGUMENT
    # "If a volume corresponding to the specified volume_id does not exist ... the Plugin MUST
    # reply 0 OK."
    assert driver.delete("sanity-never-created") == C.OK

    # An id that points outside --storage-dir is no volume of this plugin: nothing is deleted.
    victim = driver.base / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    for bad in ("../victim", "../../" + driver.base.name + "/victim", str(victim)):
        code = driver.delete(bad)
        assert code in (C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND), (bad, code)
    assert (victim / "keep.txt").read_text() == "keep"
    assert driver.storage.is_dir()

    vol = driver.create("sanity-delete")
    other = driver.create("sanity-delete-neighbour")
    data = driver.storage / vol.volume_id
    assert data.is_dir()
    assert driver.delete(vol.volume_id) == C.OK
    assert not data.exists()
    assert driver.delete(vol.volume_id) == C.OK  # twice: idempotent
    assert (driver.storage / other.volume_id).is_dir()
    # Deleted means gone: validating it now is NOT_FOUND, and the name can be provisioned anew.
    assert code_of(driver.controller.ValidateVolumeCapabilities, pb.ValidateVolumeCapabilitiesRequest(
        volume_id=vol.volume_id, volume_capabilities=[mount_cap()])) == C.NOT_FOUND
    fresh = driver.create("sanity-delete", required=2 * MIB)
    assert fresh.volume_id
    for v in (fresh, other):
        assert driver.delete(v.volume_id) == C.OK


def test_validate_volume_capabilities(driver):
    validate = driver.controller.ValidateVolumeCapabilities
    assert code_of(validate, pb.ValidateVolumeCapabilitiesRequest(
        volume_id="sanity-unknown", volume_capabilities=[mount_cap()])) == C.NOT_FOUND
    assert code_of(validate, pb.ValidateVolumeCapabilitiesRequest(
        volume_id="../victim", volume_capabilities=[mount_cap()])) == C.NOT_FOUND
    vol = driver.create("sanity-validate")
    assert code_of(validate, pb.ValidateVolumeCapabilitiesRequest(volume_capabilities=[mount_cap()])) == \
        C.INVALID_ARGUMENT
    assert code_of(validate, pb.ValidateVolumeCapabilitiesRequest(volume_id=vol.volume_id)) == C.INVALID_ARGUMENT

    r = validate(pb.ValidateVolumeCapabilitiesRequest(
        volume_id=vol.volume_id, volume_context=vol.volume_context, volume_capabilities=[mount_cap()]),
        timeout=RPC_TIMEOUT)
    assert r.HasField("confirmed"), r.message
    assert list(r.confirmed.volume_capabilities) == [mount_cap()]

    # "SHALL return confirmed only if all the volume capabilities specified ... are supported."
    code, r = call_error(validate, pb.ValidateVolumeCapabilitiesRequest(
        volume_id=vol.volume_id, volume_context=vol.volume_context, volume_capabilities=[mount_cap(), block_cap()]))
    assert code != C.OK or not r.HasField("confirmed"), r
    assert driver.delete(vol.volume_id) == C.OK


# ---------------------------------------------------------------------------------------------
# Node


def test_node_capabilities_and_info(driver):
    caps = driver.node.NodeGetCapabilities(pb.NodeGetCapabilitiesRequest(), timeout=RPC_TIMEOUT)
    rpcs = {c.rpc.type for c in caps.capabilities if c.HasField("rpc")}
    # Without STAGE_UNSTAGE_VOLUME the CO does not stage: NodePublishVolume gets no
    # staging_target_path (the publishing tests below rely on that).
    assert NRPC.STAGE_UNSTAGE_VOLUME not in rpcs
    assert NRPC.GET_VOLUME_STATS in rpcs  # NodeGetVolumeStats is tested below
    assert NRPC.UNKNOWN not in rpcs

    info = driver.node.NodeGetInfo(pb.NodeGetInfoRequest(), timeout=RPC_TIMEOUT)
    assert info.node_id == NODE
    assert info.max_volumes_per_node >= 0
    assert info.HasField("accessible_topology")
    check_topology(info.accessible_topology)
    assert NODE in info.accessible_topology.segments.values(), dict(info.accessible_topology.segments)


def test_node_publish_volume_errors(driver):
    vol = driver.create("sanity-publish-errors")
    parent = driver.base / "pods" / "errors"
    parent.mkdir(parents=True)
    target = parent / "mount"
    publish = driver.node.NodePublishVolume
    assert code_of(publish, driver.publish_req(vol, target, volume_id="")) == C.INVALID_ARGUMENT
    assert code_of(publish, driver.publish_req(vol, "")) == C.INVALID_ARGUMENT
    assert code_of(publish, pb.NodePublishVolumeRequest(volume_id=vol.volume_id, target_path=str(target))) == \
        C.INVALID_ARGUMENT
    assert code_of(publish, driver.publish_req(vol, target, volume_id="sanity-unknown")) == C.NOT_FOUND
    victim = driver.base / "victim"
    victim.mkdir()
    assert code_of(publish, driver.publish_req(vol, target, volume_id="../victim")) == C.NOT_FOUND
    assert not mounts_under(driver.base), mounts_under(driver.base)

    unpublish = driver.node.NodeUnpublishVolume
    assert code_of(unpublish, pb.NodeUnpublishVolumeRequest(target_path=str(target))) == C.INVALID_ARGUMENT
    assert code_of(unpublish, pb.NodeUnpublishVolumeRequest(volume_id=vol.volume_id)) == C.INVALID_ARGUMENT
    stats = driver.node.NodeGetVolumeStats
    assert code_of(stats, pb.NodeGetVolumeStatsRequest(volume_path=str(target))) == C.INVALID_ARGUMENT
    assert code_of(stats, pb.NodeGetVolumeStatsRequest(volume_id=vol.volume_id)) == C.INVALID_ARGUMENT
    assert driver.delete(vol.volume_id) == C.OK


def test_publish_stats_unpublish_delete(driver, mounting):
    vol = driver.create("sanity-mounted")
    data = driver.storage / vol.volume_id
    assert data.is_dir()
    # The CO creates the parent; "Creation of target_path is the responsibility of the SP."
    parent = driver.base / "pods" / "p1" / "volumes"
    parent.mkdir(parents=True)
    target = parent / "mount"

    driver.publish(vol, target)  # no staging_target_path: the plugin does not stage
    assert target.is_dir()
    assert mount_points().count(str(target)) == 1

    payload = os.urandom(64 * 1024)
    with open(target / "hello.bin", "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    (target / "sub").mkdir()
    (target / "sub" / "x.txt").write_text("x")
    assert (data / "hello.bin").read_bytes() == payload
    assert (data / "sub" / "x.txt").read_text() == "x"

    # Same volume, same target, same arguments: 0 OK and no second mount stacked on the first.
    driver.publish(vol, target)
    assert mount_points().count(str(target)) == 1

    stats = driver.stats(vol, target)
    usage = {}
    for u in stats.usage:
        assert u.unit not in usage, f"unit {u.unit} reported twice"
        usage[u.unit] = u
    assert set(usage) >= {UNIT.BYTES, UNIT.INODES}, stats
    for unit in (UNIT.BYTES, UNIT.INODES):
        u = usage[unit]
        assert u.total > 0 and u.used > 0 and u.available >= 0, (unit, u)
        assert u.available <= u.total and u.used <= u.total, (unit, u)
    assert usage[UNIT.BYTES].used >= len(payload), usage[UNIT.BYTES]
    assert usage[UNIT.INODES].used >= 3, usage[UNIT.INODES]  # hello.bin, sub, sub/x.txt

    not_published = driver.base / "pods" / "p1" / "not-published"
    not_published.mkdir()
    assert code_of(driver.node.NodeGetVolumeStats, pb.NodeGetVolumeStatsRequest(
        volume_id=vol.volume_id, volume_path=str(not_published))) == C.NOT_FOUND
    assert code_of(driver.node.NodeGetVolumeStats, pb.NodeGetVolumeStatsRequest(
        volume_id=vol.volume_id, volume_path=str(driver.base / "pods" / "nowhere"))) == C.NOT_FOUND

    assert driver.unpublish(vol, target) == C.OK
    assert str(target) not in mount_points()
    assert not target.exists(), "NodeUnpublishVolume: the SP MUST delete the directory it created"
    assert parent.is_dir()
    assert driver.unpublish(vol, target) == C.OK  # idempotent
    assert code_of(driver.node.NodeGetVolumeStats, pb.NodeGetVolumeStatsRequest(
        volume_id=vol.volume_id, volume_path=str(target))) == C.NOT_FOUND
    assert (data / "hello.bin").read_bytes() == payload  # data stays with the volume

    # Read-only publish to a second target. (Done after the first target is unpublished: for a
    # SINGLE_NODE_WRITER volume the spec's table for a second, concurrent NodePublishVolume with
    # another target_path says FAILED_PRECONDITION.)
    parent2 = driver.base / "pods" / "p2" / "volumes"
    parent2.mkdir(parents=True)
    target_ro = parent2 / "mount"
    driver.publish(vol, target_ro, readonly=True)
    driver.publish(vol, target_ro, readonly=True)
    assert mount_points().count(str(target_ro)) == 1
    assert (target_ro / "hello.bin").read_bytes() == payload
    with pytest.raises(OSError) as e:
        (target_ro / "nope.txt").write_text("no")
    assert e.value.errno == errno.EROFS, e.value
    with pytest.raises(OSError) as e:
        (target_ro / "hello.bin").unlink()
    assert e.value.errno == errno.EROFS, e.value
    assert driver.unpublish(vol, target_ro) == C.OK
    assert str(target_ro) not in mount_points() and not target_ro.exists()

    assert driver.delete(vol.volume_id) == C.OK
    assert not data.exists()
    assert not mounts_under(driver.base), mounts_under(driver.base)


def test_publish_same_target_incompatible_arguments(driver, mounting):
    vol = driver.create("sanity-incompatible", caps=[mount_cap(), mount_cap(AM.SINGLE_NODE_READER_ONLY)])
    parent = driver.base / "pods" / "p4" / "volumes"
    parent.mkdir(parents=True)
    target = parent / "mount"
    driver.publish(vol, target)
    try:
        # NodePublishVolume Errors: "Volume published but is incompatible | 6 ALREADY_EXISTS |
        # Indicates that a volume corresponding to the specified volume_id has already been
        # published at the specified target_path but is incompatible with the specified
        # volume_capability or readonly flag."
        code, details = call_error(driver.node.NodePublishVolume, driver.publish_req(vol, target, readonly=True))
        assert code == C.ALREADY_EXISTS, f"re-publish at {target} with readonly=true: {code} {details!r}"
        code, details = call_error(driver.node.NodePublishVolume, driver.publish_req(
            vol, target, cap=mount_cap(AM.SINGLE_NODE_READER_ONLY)))
        # ... and "COs SHOULD NOT call NodePublishVolume a second time with a different
        # volume_capability. If this happens, the Plugin SHOULD return FAILED_PRECONDITION."
        assert code in (C.ALREADY_EXISTS, C.FAILED_PRECONDITION), \
            f"re-publish at {target} as SINGLE_NODE_READER_ONLY: {code} {details!r}"
        assert mount_points().count(str(target)) == 1
    finally:
        assert driver.unpublish(vol, target) == C.OK
    assert driver.delete(vol.volume_id) == C.OK


def test_delete_volume_while_published(driver, mounting):
    vol = driver.create("sanity-in-use")
    data = driver.storage / vol.volume_id
    parent = driver.base / "pods" / "p3" / "volumes"
    parent.mkdir(parents=True)
    target = parent / "mount"
    driver.publish(vol, target)
    try:
        (target / "precious.txt").write_text("still here")
        code, details = call_error(driver.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id=vol.volume_id))
        # DeleteVolume Errors: "Volume in use | 9 FAILED_PRECONDITION | Indicates that the volume
        # corresponding to the specified volume_id could not be deleted because it is in use by
        # another resource".
        assert code == C.FAILED_PRECONDITION, \
            f"DeleteVolume of a volume published at {target}: {code} {details!r}; data dir exists: {data.exists()}"
        assert (data / "precious.txt").read_text() == "still here"
        assert (target / "precious.txt").read_text() == "still here"
    finally:
        assert driver.unpublish(vol, target) == C.OK
    assert not target.exists()
    assert driver.delete(vol.volume_id) == C.OK
    assert not data.exists()


# ---------------------------------------------------------------------------------------------
# kubelet plugin registration


def test_registration(driver):
    info = driver.registration.GetInfo(S.reg_pb2.InfoRequest(), timeout=RPC_TIMEOUT)
    assert info.type == "CSIPlugin"
    assert info.name == DRIVER
    assert info.endpoint == str(driver.socket)
    assert any(re.match(r"^v?1\.\d+(\.\d+)?$", v) for v in info.supported_versions), list(info.supported_versions)
    driver.registration.NotifyRegistrationStatus(S.reg_pb2.RegistrationStatus(plugin_registered=True),
                                                 timeout=RPC_TIMEOUT)
    driver.registration.NotifyRegistrationStatus(S.reg_pb2.RegistrationStatus(
        plugin_registered=False, error="sanity: refused for the test"), timeout=RPC_TIMEOUT)
    # The driver keeps serving after either answer.
    assert driver.identity.GetPluginInfo(pb.GetPluginInfoRequest(), timeout=RPC_TIMEOUT).name == DRIVER
