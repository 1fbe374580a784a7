"""Python stubs for the CSI v1.9.0 and kubelet plugin-registration protos, generated at run time.

`load()` runs `grpc_tools.protoc` (as a module) on the repo's proto files into a fresh temporary
directory, puts that directory on `sys.path` and imports the generated modules. Nothing is written
into the repository. The result is cached per process, so the plugin and the tests that import
this module share one set of message classes (and one descriptor-pool registration).

The registration proto is copied under the name `pluginregistration_v1.proto` so that its
generated module is `pluginregistration_v1_pb2` rather than the generic `api_pb2`; the wire names
(`/pluginregistration.Registration/GetInfo`) depend only on its package and service, not on the
file name.
"""
import atexit
import importlib
import os
import shutil
import sys
import tempfile
import threading
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CSI_PROTO = REPO / "protos" / "csi-v1.9.0" / "csi.proto"
REGISTRATION_PROTO = REPO / "protos" / "pluginregistration-v1" / "api.proto"
REGISTRATION_NAME = "pluginregistration_v1"

_lock = threading.Lock()
_stubs = None


def _protoc_include_dir() -> str:
    """grpc_tools' own copy of google/protobuf/*.proto (descriptor, timestamp, wrappers)."""
    import grpc_tools

    inc = Path(grpc_tools.__file__).resolve().parent / "_proto"
    if not (inc / "google" / "protobuf" / "descriptor.proto").exists():
        raise RuntimeError(f"grpc_tools has no google/protobuf protos under {inc}")
    return str(inc)


def generate(out_dir: str) -> None:
    """Run protoc on both protos, writing *_pb2.py and *_pb2_grpc.py into out_dir."""
    from grpc_tools import protoc

    src = Path(out_dir) / "proto-src"
    src.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CSI_PROTO, src / "csi.proto")
    shutil.copyfile(REGISTRATION_PROTO, src / f"{REGISTRATION_NAME}.proto")
    args = [
        "grpc_tools.protoc",
        f"-I{src}",
        f"-I{_protoc_include_dir()}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(src / "csi.proto"),
        str(src / f"{REGISTRATION_NAME}.proto"),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"grpc_tools.protoc failed with exit code {rc} (arguments: {args[1:]})")


def load() -> types.SimpleNamespace:
    """The generated modules: csi_pb2, csi_pb2_grpc, reg_pb2, reg_pb2_grpc (cached per process)."""
    global _stubs
    with _lock:
        if _stubs is not None:
            return _stubs
        out_dir = tempfile.mkdtemp(prefix="pycsi-stubs-")
        atexit.register(shutil.rmtree, out_dir, True)
        generate(out_dir)
        sys.path.insert(0, out_dir)
        importlib.invalidate_caches()
        _stubs = types.SimpleNamespace(
            dir=out_dir,
            csi_pb2=importlib.import_module("csi_pb2"),
            csi_pb2_grpc=importlib.import_module("csi_pb2_grpc"),
            reg_pb2=importlib.import_module(f"{REGISTRATION_NAME}_pb2"),
            reg_pb2_grpc=importlib.import_module(f"{REGISTRATION_NAME}_pb2_grpc"),
        )
        for name in ("csi_pb2", "csi_pb2_grpc", f"{REGISTRATION_NAME}_pb2", f"{REGISTRATION_NAME}_pb2_grpc"):
            mod_file = getattr(sys.modules[name], "__file__", "") or ""
            if not os.path.realpath(mod_file).startswith(os.path.realpath(out_dir) + os.sep):
                raise RuntimeError(f"imported {name} from {mod_file}, not from the freshly generated {out_dir}")
        return _stubs
