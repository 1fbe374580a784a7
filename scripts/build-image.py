#!/usr/bin/env python3
"""Builds a busybox-static container image as an OCI image-layout tar, ready for
`ctr -a <sock> -n k8s.io image import <tar>` (there is no registry here).

    build-image.py --name docker.io/local/busybox:1 --out busybox.tar
    build-image.py --name docker.io/local/pause:1 --out pause.tar --pause

The rootfs is /bin/busybox (Debian's busybox-static) with a symlink per applet. `--pause` makes
the entrypoint a sleep loop (a sandbox's pause container). Output is deterministic.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

BUSYBOX = "/bin/busybox"


def applets():
    out = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    return sorted(set(a for a in out if a and a != "bin/busybox"))


def layer_tar():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add_dir(path, mode=0o755):
            ti = tarfile.TarInfo(path)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, mode, 0
            tar.addfile(ti)
        for d in ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "tmp", "proc", "sys", "dev", "var", "root"]:
            add_dir(d, 0o1777 if d == "tmp" else 0o755)
        with open(BUSYBOX, "rb") as f:
            data = f.read()
        ti = tarfile.TarInfo("bin/busybox")
        ti.size, ti.mode, ti.mtime = len(data), 0o755, 0
        tar.addfile(ti, io.BytesIO(data))
        for a in applets():
            ti = tarfile.TarInfo(a)
            ti.type, ti.linkname, ti.mtime = tarfile.SYMTYPE, "/bin/busybox", 0
            tar.addfile(ti)
        for name, text in [("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("etc/group", "root:x:0:\n")]:
            raw = text.encode()
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(raw), 0o644, 0
            tar.addfile(ti, io.BytesIO(raw))
    return buf.getvalue()


def blob(tar, data, media_type):
    digest = hashlib.sha256(data).hexdigest()
    ti = tarfile.TarInfo(f"blobs/sha256/{digest}")
    ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
    tar.addfile(ti, io.BytesIO(data))
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="image reference, e.g. docker.io/local/busybox:1")
    p.add_argument("--out", required=True, help="output tar")
    p.add_argument("--pause", action="store_true", help="entrypoint is a sleep loop (pause image)")
    a = p.parse_args()
    if not os.path.exists(BUSYBOX):
        sys.exit(f"{BUSYBOX} not found: apt-get install busybox-static")
    raw = layer_tar()
    gz = gzip.compress(raw, mtime=0)
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    cmd = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while true; do sleep 3600 & wait $!; done"] if a.pause else ["/bin/sh"]
    config = {"architecture": arch, "os": "linux",
              "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": cmd, "WorkingDir": "/"},
              "rootfs": {"type": "layers", "diff_ids": [diff_id]},
              "history": [{"created_by": "swiftedge scripts/build-image.py"}]}
    with tarfile.open(a.out, "w") as tar:
        layer = blob(tar, gz, "application/vnd.oci.image.layer.v1.tar+gzip")
        cfg = blob(tar, json.dumps(config, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json")
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": cfg, "layers": [layer]}
        m = blob(tar, json.dumps(manifest, sort_keys=True).encode(), "application/vnd.oci.image.manifest.v1+json")
        m["annotations"] = {"io.containerd.image.name": a.name, "org.opencontainers.image.ref.name": a.name.rsplit(":", 1)[-1]}
        m["platform"] = {"architecture": arch, "os": "linux"}
        for name, data in [("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"})),
                           ("index.json", json.dumps({"schemaVersion": 2, "manifests": [m]}, sort_keys=True))]:
            raw_b = data.encode()
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(raw_b), 0o644, 0
            tar.addfile(ti, io.BytesIO(raw_b))


if __name__ == "__main__":
    main()
