"""Self-check of the independent CSI test plugin (tests/csi/csi_plugin.py); needs no SwiftEdge.

Starts the plugin in a temporary directory and talks to it with a gRPC client built from the same
generated stubs. The bind-mount lifecycle test runs only as root (and where mounting is allowed).
"""
import json
import os
import queue
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
sys.path.insert(0, str(HERE))

import csi_stubs  # noqa: E402

PLUGIN = HERE / "csi_plugin.py"
DRIVER = "pycsi.selfcheck.test"
NODE = "node-a"
TOPOLOGY_KEY = "topology.pycsi.test/node"
START_TIMEOUT = 60
RPC_TIMEOUT = 20

S = csi_stubs.load()
pb = S.csi_pb2
AM = pb.VolumeCapability.AccessMode


def mount_cap(mode=AM.SINGLE_NODE_WRITER):
    return pb.VolumeCapability(mount=pb.VolumeCapability.MountVolume(), access_mode=AM(mode=mode))


def mount_points():
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            p = line.split(" ")[4]
            points.append(p.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\"))
    return points


def unmount_under(base: str):
    """Unmount everything mounted below base (deepest first)."""
    prefix = os.path.realpath(base) + os.sep
    for _ in range(8):
        points = sorted({p for p in mount_points() if p.startswith(prefix)}, key=len, reverse=True)
        if not points:
            return
        for p in points:
            if subprocess.run(["umount", p], capture_output=True, timeout=30).returncode != 0:
                subprocess.run(["umount", "-l", p], capture_output=True, timeout=30)


def code_of(fn, request, **kw):
    try:
        fn(request, timeout=kw.pop("timeout", RPC_TIMEOUT), **kw)
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


class PluginProcess:
    def __init__(self, base: Path, *extra):
        self.base = base
        self.socket = base / "csi.sock"
        self.reg_dir = base / "registry"
        self.state_dir = base / "state"
        self.log = base / "plugin.log.jsonl"
        self.stderr_path = base / "plugin.stderr"
        self.extra = list(extra)
        self.proc = None
        self.channels = []

    def start(self):
        args = [sys.executable, str(PLUGIN), "--driver", DRIVER, "--node-id", NODE, "--socket", str(self.socket),
                "--registration-dir", str(self.reg_dir), "--state-dir", str(self.state_dir),
                "--log", str(self.log), "--topology-key", TOPOLOGY_KEY, "--max-volumes", "7", *self.extra]
        self.stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        lines = queue.Queue()

        def pump(out):
            for line in out:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, args=(self.proc.stdout,), daemon=True).start()
        want = f"csi plugin {DRIVER} listening on {self.socket}"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"plugin did not print {want!r} within {START_TIMEOUT}s:\n{self.stderr_text()}")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(timeout=10)
                raise AssertionError(f"plugin exited ({self.proc.returncode}) before listening:\n{self.stderr_text()}")
            if line.strip() == want:
                break
        ch = grpc.insecure_channel(f"unix:{self.socket}")
        self.channels.append(ch)
        self.identity = S.csi_pb2_grpc.IdentityStub(ch)
        self.controller = S.csi_pb2_grpc.ControllerStub(ch)
        self.node = S.csi_pb2_grpc.NodeStub(ch)
        reg = grpc.insecure_channel(f"unix:{self.reg_dir / (DRIVER + '-reg.sock')}")
        self.channels.append(reg)
        self.registration = S.reg_pb2_grpc.RegistrationStub(reg)
        return self

    def stderr_text(self):
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def stop(self):
        for ch in self.channels:
            ch.close()
        self.channels = []
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        if self.proc:
            self.proc.stdout.close()
            self.stderr.close()
        return self.proc.returncode if self.proc else None

    def entries(self, method=None):
        if not self.log.exists():
            return []
        out = [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]
        return [e for e in out if method is None or e["method"] == method]

    def create(self, name, required=1 << 20, **kw):
        return self.controller.CreateVolume(pb.CreateVolumeRequest(
            name=name, capacity_range=pb.CapacityRange(required_bytes=required),
            volume_capabilities=[mount_cap()], **kw), timeout=RPC_TIMEOUT).volume

    def publish(self, vol, node_id=NODE):
        return self.controller.ControllerPublishVolume(pb.ControllerPublishVolumeRequest(
            volume_id=vol.volume_id, node_id=node_id, volume_capability=mount_cap(),
            volume_context=vol.volume_context), timeout=RPC_TIMEOUT).publish_context


@pytest.fixture
def base():
    # Short path: unix socket addresses are limited to 107 bytes.
    d = tempfile.mkdtemp(prefix="pycsi-")
    try:
        yield Path(d)
    finally:
        if os.geteuid() == 0:
            unmount_under(d)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def plugin(base):
    p = PluginProcess(base).start()
    try:
        yield p
    finally:
        p.stop()


def test_identity_node_info_and_registration(plugin):
    info = plugin.identity.GetPluginInfo(pb.GetPluginInfoRequest(), timeout=RPC_TIMEOUT)
    assert (info.name, info.vendor_version) == (DRIVER, "0.1.0")
    caps = plugin.identity.GetPluginCapabilities(pb.GetPluginCapabilitiesRequest(), timeout=RPC_TIMEOUT)
    Svc = pb.PluginCapability.Service
    assert {c.service.type for c in caps.capabilities} == {Svc.CONTROLLER_SERVICE, Svc.VOLUME_ACCESSIBILITY_CONSTRAINTS}
    probe = plugin.identity.Probe(pb.ProbeRequest(), timeout=RPC_TIMEOUT)
    assert probe.HasField("ready") and probe.ready.value

    RPC = pb.ControllerServiceCapability.RPC
    ccaps = plugin.controller.ControllerGetCapabilities(pb.ControllerGetCapabilitiesRequest(), timeout=RPC_TIMEOUT)
    assert {c.rpc.type for c in ccaps.capabilities} == {RPC.CREATE_DELETE_VOLUME, RPC.PUBLISH_UNPUBLISH_VOLUME}
    NRPC = pb.NodeServiceCapability.RPC
    ncaps = plugin.node.NodeGetCapabilities(pb.NodeGetCapabilitiesRequest(), timeout=RPC_TIMEOUT)
    assert {c.rpc.type for c in ncaps.capabilities} == {NRPC.STAGE_UNSTAGE_VOLUME, NRPC.GET_VOLUME_STATS}
    ninfo = plugin.node.NodeGetInfo(pb.NodeGetInfoRequest(), timeout=RPC_TIMEOUT)
    assert ninfo.node_id == NODE and ninfo.max_volumes_per_node == 7
    assert dict(ninfo.accessible_topology.segments) == {TOPOLOGY_KEY: NODE}
    assert code_of(plugin.node.NodeExpandVolume, pb.NodeExpandVolumeRequest()) == grpc.StatusCode.UNIMPLEMENTED
    assert code_of(plugin.controller.ListVolumes, pb.ListVolumesRequest()) == grpc.StatusCode.UNIMPLEMENTED

    reg = plugin.registration.GetInfo(S.reg_pb2.InfoRequest(), timeout=RPC_TIMEOUT)
    assert (reg.type, reg.name, reg.endpoint, list(reg.supported_versions)) == \
        ("CSIPlugin", DRIVER, str(plugin.socket), ["1.0.0"])
    plugin.registration.NotifyRegistrationStatus(S.reg_pb2.RegistrationStatus(plugin_registered=True),
                                                 timeout=RPC_TIMEOUT)
    [note] = plugin.entries("NotifyRegistrationStatus")
    assert note["plugin_registered"] is True and note["code"] == "OK"
    assert [e["code"] for e in plugin.entries("NodeExpandVolume")] == ["UNIMPLEMENTED"]


def test_create_volume_idempotency_and_errors(plugin):
    C = grpc.StatusCode
    vol = plugin.create("pvc-one")
    assert vol.volume_id.startswith("pyvol-") and "/" not in vol.volume_id
    assert vol.capacity_bytes == 1 << 20
    assert [dict(t.segments) for t in vol.accessible_topology] == [{TOPOLOGY_KEY: NODE}]
    assert (plugin.state_dir / "volumes" / vol.volume_id).is_dir()
    again = plugin.create("pvc-one")
    assert again.volume_id == vol.volume_id
    # A compatible range (the existing 1 MiB lies in [0.5 MiB, 2 MiB]) is the same volume too.
    ranged = plugin.controller.CreateVolume(pb.CreateVolumeRequest(
        name="pvc-one", capacity_range=pb.CapacityRange(required_bytes=1 << 19, limit_bytes=1 << 21),
        volume_capabilities=[mount_cap()]), timeout=RPC_TIMEOUT).volume
    assert ranged.volume_id == vol.volume_id
    with pytest.raises(grpc.RpcError) as e:
        plugin.create("pvc-one", required=2 << 20)
    assert e.value.code() == C.ALREADY_EXISTS

    create = plugin.controller.CreateVolume
    assert code_of(create, pb.CreateVolumeRequest(volume_capabilities=[mount_cap()])) == C.INVALID_ARGUMENT
    assert code_of(create, pb.CreateVolumeRequest(name="pvc-nocaps")) == C.INVALID_ARGUMENT
    block = pb.VolumeCapability(block=pb.VolumeCapability.BlockVolume(), access_mode=AM(mode=AM.SINGLE_NODE_WRITER))
    assert code_of(create, pb.CreateVolumeRequest(name="pvc-block", volume_capabilities=[block])) == C.INVALID_ARGUMENT
    huge = pb.CreateVolumeRequest(name="pvc-huge", capacity_range=pb.CapacityRange(required_bytes=1 << 50),
                                  volume_capabilities=[mount_cap()])
    assert code_of(create, huge) == C.OUT_OF_RANGE
    preferred = plugin.controller.CreateVolume(pb.CreateVolumeRequest(
        name="pvc-topo", volume_capabilities=[mount_cap()],
        accessibility_requirements=pb.TopologyRequirement(
            requisite=[pb.Topology(segments={TOPOLOGY_KEY: "node-b"}), pb.Topology(segments={TOPOLOGY_KEY: NODE})],
            preferred=[pb.Topology(segments={TOPOLOGY_KEY: NODE})])), timeout=RPC_TIMEOUT).volume
    assert [dict(t.segments) for t in preferred.accessible_topology] == [{TOPOLOGY_KEY: NODE}]

    validate = plugin.controller.ValidateVolumeCapabilities(pb.ValidateVolumeCapabilitiesRequest(
        volume_id=vol.volume_id, volume_context=vol.volume_context, volume_capabilities=[mount_cap()]),
        timeout=RPC_TIMEOUT)
    assert validate.HasField("confirmed")
    assert code_of(plugin.controller.ValidateVolumeCapabilities, pb.ValidateVolumeCapabilitiesRequest(
        volume_id="pyvol-unknown", volume_capabilities=[mount_cap()])) == C.NOT_FOUND

    delete = plugin.controller.DeleteVolume
    assert code_of(delete, pb.DeleteVolumeRequest(volume_id="pyvol-never-created")) == C.OK
    assert code_of(delete, pb.DeleteVolumeRequest()) == C.INVALID_ARGUMENT
    for bad in ("../state.json", "a/b", ".."):
        assert code_of(delete, pb.DeleteVolumeRequest(volume_id=bad)) == C.INVALID_ARGUMENT
    assert (plugin.state_dir / "state.json").exists()
    assert code_of(delete, pb.DeleteVolumeRequest(volume_id=vol.volume_id)) == C.OK
    assert not (plugin.state_dir / "volumes" / vol.volume_id).exists()
    assert code_of(delete, pb.DeleteVolumeRequest(volume_id=vol.volume_id)) == C.OK

    codes = [(e["code"], e.get("name")) for e in plugin.entries("CreateVolume")]
    assert codes[:4] == [("OK", "pvc-one")] * 3 + [("ALREADY_EXISTS", "pvc-one")]
    assert ("INVALID_ARGUMENT", "") in codes


def test_controller_publish_and_stage_preconditions(plugin):
    C = grpc.StatusCode
    vol = plugin.create("pvc-attach")
    staging = str(plugin.base / "staging" / "pvc-attach")
    stage = plugin.node.NodeStageVolume

    def stage_req(**kw):
        fields = dict(volume_id=vol.volume_id, staging_target_path=staging, volume_capability=mount_cap(),
                      volume_context=vol.volume_context)
        fields.update(kw)
        return pb.NodeStageVolumeRequest(**fields)

    # Not ControllerPublished yet.
    assert code_of(stage, stage_req(publish_context={"devicePath": f"/dev/pycsi/{vol.volume_id}"})) == \
        C.FAILED_PRECONDITION

    ctx = plugin.publish(vol)
    assert dict(ctx) == {"devicePath": f"/dev/pycsi/{vol.volume_id}"}
    assert dict(plugin.publish(vol)) == dict(ctx)  # repeated with the same arguments: OK, same context
    publish = plugin.controller.ControllerPublishVolume
    assert code_of(publish, pb.ControllerPublishVolumeRequest(
        volume_id=vol.volume_id, node_id="node-elsewhere", volume_capability=mount_cap(),
        volume_context=vol.volume_context)) == C.NOT_FOUND
    assert code_of(publish, pb.ControllerPublishVolumeRequest(
        volume_id="pyvol-unknown", node_id=NODE, volume_capability=mount_cap())) == C.NOT_FOUND
    assert code_of(publish, pb.ControllerPublishVolumeRequest(
        volume_id=vol.volume_id, volume_capability=mount_cap())) == C.INVALID_ARGUMENT

    assert code_of(stage, stage_req()) == C.FAILED_PRECONDITION  # no publish_context
    assert code_of(stage, stage_req(publish_context={"devicePath": "/dev/other"})) == C.FAILED_PRECONDITION
    assert code_of(stage, stage_req(staging_target_path="", publish_context=ctx)) == C.INVALID_ARGUMENT
    assert code_of(stage, stage_req(volume_id="", publish_context=ctx)) == C.INVALID_ARGUMENT
    assert code_of(stage, stage_req(volume_id="pyvol-unknown", publish_context=ctx)) == C.NOT_FOUND
    assert code_of(stage, stage_req(volume_context={}, publish_context=ctx)) == C.INVALID_ARGUMENT
    assert not os.path.exists(staging)

    delete = plugin.controller.DeleteVolume
    assert code_of(delete, pb.DeleteVolumeRequest(volume_id=vol.volume_id)) == C.FAILED_PRECONDITION
    unpublish = plugin.controller.ControllerUnpublishVolume
    assert code_of(unpublish, pb.ControllerUnpublishVolumeRequest(volume_id=vol.volume_id, node_id=NODE)) == C.OK
    assert code_of(unpublish, pb.ControllerUnpublishVolumeRequest(volume_id=vol.volume_id, node_id=NODE)) == C.OK
    assert code_of(delete, pb.DeleteVolumeRequest(volume_id=vol.volume_id)) == C.OK
    assert code_of(unpublish, pb.ControllerUnpublishVolumeRequest(volume_id=vol.volume_id, node_id=NODE)) == C.OK

    stages = plugin.entries("NodeStageVolume")
    assert [e["code"] for e in stages] == ["FAILED_PRECONDITION"] * 3 + ["INVALID_ARGUMENT"] * 2 + \
        ["NOT_FOUND", "INVALID_ARGUMENT"]
    assert stages[1]["publish_context"] == {} and stages[0]["staging_target_path"] == staging
    pubs = plugin.entries("ControllerPublishVolume")
    assert pubs[0]["code"] == "OK" and pubs[0]["node_id"] == NODE and pubs[0]["publish_context"] == dict(ctx)


def _can_bind_mount(base: Path) -> bool:
    src, dst = base / "probe-src", base / "probe-dst"
    src.mkdir()
    dst.mkdir()
    ok = subprocess.run(["mount", "--bind", str(src), str(dst)], capture_output=True, timeout=30).returncode == 0
    if ok:
        subprocess.run(["umount", str(dst)], capture_output=True, timeout=30)
    src.rmdir()
    dst.rmdir()
    return ok


def test_stage_publish_stats_unpublish_unstage_with_real_mounts(base):
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root")
    if not _can_bind_mount(base):
        pytest.skip("mount --bind is not permitted here")
    C = grpc.StatusCode
    plugin = PluginProcess(base).start()
    try:
        vol = plugin.create("pvc-mounted")
        ctx = plugin.publish(vol)
        voldir = plugin.state_dir / "volumes" / vol.volume_id
        staging = str(base / "kubelet" / "staging" / vol.volume_id)
        target_rw = str(base / "kubelet" / "pods" / "p1" / "mount")
        target_ro = str(base / "kubelet" / "pods" / "p2" / "mount")
        common = dict(volume_id=vol.volume_id, volume_capability=mount_cap(), volume_context=vol.volume_context,
                      publish_context=ctx)

        stage = pb.NodeStageVolumeRequest(staging_target_path=staging, **common)
        plugin.node.NodeStageVolume(stage, timeout=RPC_TIMEOUT)
        plugin.node.NodeStageVolume(stage, timeout=RPC_TIMEOUT)  # idempotent: no second mount
        assert mount_points().count(staging) == 1

        def publish_req(target, readonly, staging_path=staging):
            return pb.NodePublishVolumeRequest(staging_target_path=staging_path, target_path=target,
                                               readonly=readonly, **common)

        assert code_of(plugin.node.NodePublishVolume, publish_req(target_rw, False, str(base / "not-staged"))) == \
            C.FAILED_PRECONDITION
        assert code_of(plugin.node.NodePublishVolume, publish_req(target_rw, False, "")) == C.FAILED_PRECONDITION
        plugin.node.NodePublishVolume(publish_req(target_rw, False), timeout=RPC_TIMEOUT)
        plugin.node.NodePublishVolume(publish_req(target_rw, False), timeout=RPC_TIMEOUT)
        assert code_of(plugin.node.NodePublishVolume, publish_req(target_rw, True)) == C.ALREADY_EXISTS
        plugin.node.NodePublishVolume(publish_req(target_ro, True), timeout=RPC_TIMEOUT)
        points = mount_points()
        assert points.count(target_rw) == 1 and points.count(target_ro) == 1

        Path(target_rw, "hello.txt").write_bytes(b"x" * 5000)
        assert (voldir / "hello.txt").read_bytes() == b"x" * 5000
        assert Path(target_ro, "hello.txt").exists()
        with pytest.raises(OSError):
            Path(target_ro, "nope.txt").write_text("no")

        stats = plugin.node.NodeGetVolumeStats(pb.NodeGetVolumeStatsRequest(
            volume_id=vol.volume_id, volume_path=target_rw, staging_target_path=staging), timeout=RPC_TIMEOUT)
        usage = {u.unit: u for u in stats.usage}
        Unit = pb.VolumeUsage.Unit
        assert set(usage) == {Unit.BYTES, Unit.INODES}
        assert usage[Unit.BYTES].used == 5000
        assert usage[Unit.BYTES].total > 0 and 0 <= usage[Unit.BYTES].available <= usage[Unit.BYTES].total
        assert usage[Unit.INODES].used == 2 and usage[Unit.INODES].total > 0
        assert code_of(plugin.node.NodeGetVolumeStats, pb.NodeGetVolumeStatsRequest(
            volume_id=vol.volume_id, volume_path=str(base / "nowhere"))) == C.NOT_FOUND

        for target in (target_rw, target_ro):
            unpub = pb.NodeUnpublishVolumeRequest(volume_id=vol.volume_id, target_path=target)
            plugin.node.NodeUnpublishVolume(unpub, timeout=RPC_TIMEOUT)
            plugin.node.NodeUnpublishVolume(unpub, timeout=RPC_TIMEOUT)  # already gone: OK
            assert not os.path.exists(target)
        unstage = pb.NodeUnstageVolumeRequest(volume_id=vol.volume_id, staging_target_path=staging)
        plugin.node.NodeUnstageVolume(unstage, timeout=RPC_TIMEOUT)
        plugin.node.NodeUnstageVolume(unstage, timeout=RPC_TIMEOUT)
        assert not any(p.startswith(str(base) + os.sep) for p in mount_points())
        assert (voldir / "hello.txt").exists()  # the data stays with the volume

        plugin.controller.ControllerUnpublishVolume(pb.ControllerUnpublishVolumeRequest(
            volume_id=vol.volume_id, node_id=NODE), timeout=RPC_TIMEOUT)
        plugin.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id), timeout=RPC_TIMEOUT)
        assert not voldir.exists()

        stages = plugin.entries("NodeStageVolume")
        assert [(e["code"], e["already"]) for e in stages] == [("OK", False), ("OK", True)]
        pub = [e for e in plugin.entries("NodePublishVolume") if e["code"] == "OK"]
        assert [(e["target_path"], e["readonly"], e["already"]) for e in pub] == \
            [(target_rw, False, False), (target_rw, False, True), (target_ro, True, False)]
        unpubs = plugin.entries("NodeUnpublishVolume")
        assert [e["was_mounted"] for e in unpubs] == [True, False, True, False]
    finally:
        plugin.stop()
        unmount_under(str(base))


def test_restart_keeps_volumes_and_removes_sockets(base):
    first = PluginProcess(base).start()
    try:
        vol = first.create("pvc-persistent")
        first.publish(vol)
    finally:
        assert first.stop() == 0
    assert not first.socket.exists()
    assert not (first.reg_dir / f"{DRIVER}-reg.sock").exists()
    state = json.loads((first.state_dir / "state.json").read_text())
    assert state["volumes"][vol.volume_id]["attachments"] == {NODE: {
        "access_mode": "SINGLE_NODE_WRITER", "access_type": "mount", "readonly": False}}

    second = PluginProcess(base).start()
    try:
        assert second.create("pvc-persistent").volume_id == vol.volume_id
        assert code_of(second.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id=vol.volume_id)) == \
            grpc.StatusCode.FAILED_PRECONDITION  # still attached, as recorded before the restart
    finally:
        second.stop()
    pids = {e["pid"] for e in second.entries()}
    assert len(pids) == 2


def test_hang_and_fail_injection(base):
    plugin = PluginProcess(base, "--hang", "NodeGetInfo", "--fail", "Probe=UNAVAILABLE:1",
                           "--fail", "CreateVolume=RESOURCE_EXHAUSTED").start()
    try:
        assert code_of(plugin.identity.Probe, pb.ProbeRequest()) == grpc.StatusCode.UNAVAILABLE
        assert code_of(plugin.identity.Probe, pb.ProbeRequest()) == grpc.StatusCode.OK
        assert code_of(plugin.node.NodeGetInfo, pb.NodeGetInfoRequest(), timeout=0.5) == \
            grpc.StatusCode.DEADLINE_EXCEEDED
        req = pb.CreateVolumeRequest(name="pvc-x", volume_capabilities=[mount_cap()])
        assert code_of(plugin.controller.CreateVolume, req) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert code_of(plugin.controller.CreateVolume, req) == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        assert plugin.stop() == 0
    # The plugin has exited, so every entry is written.
    assert [e["code"] for e in plugin.entries("Probe")] == ["UNAVAILABLE", "OK"]
    [hung] = plugin.entries("NodeGetInfo")
    assert hung["hung"] is True and hung["code"] in ("DEADLINE_EXCEEDED", "CANCELLED")
