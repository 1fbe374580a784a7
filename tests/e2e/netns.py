"""Simulated hosts for end-to-end tests: each one a Linux network namespace of its own, held by a
process (`unshare --net -- sleep infinity`) and named by /proc/<pid>/ns/net; commands run inside
with `nsenter --net=...` (argument lists, never shell strings). Nothing is written to system
paths (no `ip netns add`, which writes /run/netns) and nothing is created in the host's network
namespace: a veth pair is made from inside one namespace with its peer sent straight into the
other. Sysctls written here are written from inside a created namespace (they are per
namespace); the host's network, routes, sysctls and firewall are never touched. A namespace
vanishes once no process holds it, so closing a Host kills everything it started, then the holder.

Each host also has a mount namespace of its own (same holder) that only its containerd enters:
there, tmpfs covers /run/containerd (shim sockets, runc state) and /var/lib/cni (libcni's result
cache), which containerd 1.6 would otherwise write on the real system whatever its config says,
and the runtime's own mounts (rootfs, /dev/shm, sandbox netns files) never reach the host's
mount table. Files under the work directory are the same in both (one filesystem).

    with Topology(tmp_path) as t:          # hosts cloud, a, b
        t.a.run("ip", "-br", "addr")
        ctd = t.containerd(t.a, tmp_path / "ctd-a", cni=False)   # a private containerd inside host a

Topology: cloud–a is 10.200.1.0/24 (cloud .1, a .2), cloud–b is 10.200.2.0/24 (cloud .1, b .2).
The cloud does not forward (ip_forward 0 in its namespace) and a and b have no route to each
other, so a reaches b only through programs on the cloud (CloudHub, a relay), never by IP.
"""
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, wait_for

CONTAINERD_SH = REPO / "scripts" / "containerd.sh"
BUSYBOX = "/bin/busybox"
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """preexec_fn: SIGKILL when the test process dies (a killed pytest leaves no namespace holder
    behind; the signal comes when the forking thread exits: start hosts from the main thread)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# Where containerd writes outside its configured directories (hidden in the host's mount namespace).
PRIVATE_DIRS = ("/run/containerd", "/var/lib/cni")


def netns_inode(pid="self", kind="net"):
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def processes(netns_inodes=(), paths=(), mntns_inodes=()):
    """{pid: command line} of the processes (other than this one) in one of the network namespaces
    `netns_inodes` or mount namespaces `mntns_inodes`, or whose command line, root directory (a
    container's rootfs) or working directory lies under one of `paths`."""
    paths = [str(p) for p in paths]
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            if not cmdline:  # kernel threads, zombies
                continue
            mine = netns_inode(entry) in netns_inodes or (mntns_inodes and netns_inode(entry, "mnt") in mntns_inodes)
            if not mine and paths:
                where = [cmdline]
                for link in ("root", "cwd"):
                    try:
                        where.append(os.readlink(f"/proc/{entry}/{link}"))
                    except OSError:
                        pass
                mine = any(p in w for p in paths for w in where)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if mine:
            out[int(entry)] = cmdline
    return out


def _kill(pid, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class Host:
    """A network namespace with loopback up (and a mount namespace for its containerd), held by
    its own process."""

    def __init__(self, name, workdir):
        self.name = name
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ip = None          # this host's address as the cloud sees it (set by Topology)
        self.cloud_ip = None    # the cloud's address as this host sees it (set by Topology)
        self.procs = []         # Popen objects of the processes started inside with popen()
        self._logs = []
        self.inode = self.mnt_inode = None
        own = netns_inode(), netns_inode(kind="mnt")
        self.holder = subprocess.Popen(["unshare", "--net", "--mount", "--propagation", "private", "--", "sleep", "infinity"],
                                       stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                                       preexec_fn=_die_with_parent)
        self.pid = self.holder.pid
        try:
            # Popen returns once unshare runs; the namespace exists only after its unshare() call.
            def ready():
                if self.holder.poll() is not None:
                    raise AssertionError(f"namespace holder of {name} exited {self.holder.returncode}: {self.holder.stderr.read().decode()}")
                try:
                    return (netns_inode(self.pid) != own[0] and netns_inode(self.pid, "mnt") != own[1]
                            and Path(f"/proc/{self.pid}/comm").read_text().strip() == "sleep")
                except FileNotFoundError:
                    return False
            wait_for(ready, 10, interval=0.01, what=f"network namespace of {name}")
            self.netns = f"/proc/{self.pid}/ns/net"
            self.mntns = f"/proc/{self.pid}/ns/mnt"
            self.inode = netns_inode(self.pid)
            self.mnt_inode = netns_inode(self.pid, "mnt")
            assert self.mnt_inode != own[1], f"{name} has no mount namespace of its own"
            self.run("ip", "link", "set", "lo", "up")
            for d in PRIVATE_DIRS:
                if os.path.isdir(d):
                    self.run("mount", "-t", "tmpfs", "-o", "mode=0700,size=64m", f"netns-{name}", d, mount=True)
        except BaseException:
            self.close()
            raise

    def __repr__(self):
        return f"Host({self.name}, pid {self.pid})"

    def command(self, args, mount=False):
        return ["nsenter", f"--net={self.netns}", *([f"--mount={self.mntns}"] if mount else []), "--", *map(str, args)]

    def run(self, *args, check=True, timeout=60, input=None, env=None, mount=False):
        """Runs a command inside (nsenter execs it: a timeout kills the command itself). Text output;
        check: an AssertionError showing stdout and stderr when it exits non-zero. mount: in the
        host's mount namespace too (where its containerd runs)."""
        p = subprocess.run(self.command(args, mount), input=input, capture_output=True, text=True, timeout=timeout, env=env,
                           stdin=None if input is not None else subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise AssertionError(f"[{self.name}] {' '.join(map(str, args))} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
        return p

    def popen(self, args, log=None, **kw):
        """Starts a process inside, in a session of its own (close() signals its process group).
        log: a path its stdout and stderr are appended to (default: whatever kw says)."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("start_new_session", True)
        if log is not None:
            f = open(log, "ab")
            self._logs.append(f)
            kw["stdout"], kw["stderr"] = f, subprocess.STDOUT
        p = subprocess.Popen(self.command(args), **kw)
        self.procs.append(p)
        return p

    def stop(self, proc, sig=signal.SIGTERM, timeout=20):
        """Signals one process started with popen() and waits for it (SIGKILL after `timeout`);
        returns its exit code."""
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return proc.returncode

    def sysctl(self, key, value=None):
        """Reads (or, with value, writes) a sysctl of this namespace, e.g. net.ipv4.ip_forward."""
        path = "/proc/sys/" + key.replace(".", "/")
        if value is not None:
            self.run("sysctl", "-qw", f"{key}={value}")
        return self.run("cat", path).stdout.strip()

    def ping(self, ip):
        return self.run(BUSYBOX, "ping", "-c1", "-W1", ip, check=False, timeout=10).returncode == 0

    def connect(self, ip, port, timeout=2):
        """The first line a TCP server at ip:port sends, or None when no connection is made."""
        code = ("import socket, sys\n"
                "try:\n"
                "    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))\n"
                "except OSError as e:\n"
                "    print('error', e); sys.exit(1)\n"
                "print(s.makefile().readline().strip())\n")
        p = self.run(sys.executable, "-c", code, ip, port, timeout, check=False, timeout=timeout + 10)
        return p.stdout.strip() if p.returncode == 0 else None

    def members(self):
        """{pid: command line} of the processes in this host's namespaces other than its holder."""
        return {pid: cmd for pid, cmd in processes({self.inode}, mntns_inodes={self.mnt_inode}).items() if pid != self.pid}

    def stop_all(self, grace=10):
        """Ends every process started with popen() (their process groups: SIGTERM, then SIGKILL
        after `grace` seconds)."""
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + grace
        for p in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)

    def close(self):
        """Ends every process started inside (stop_all), then any other process still in the
        namespaces, then the holder; the namespaces go with it."""
        self.stop_all()
        if self.inode is not None:
            for pid in self.members():
                _kill(pid)
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.wait(timeout=10)
        self.holder.stderr.close()
        for f in self._logs:
            f.close()
        self._logs = []


class Containerd:
    """A private containerd (scripts/containerd.sh) running inside a host's namespace: the
    sandboxes' CNI runs there, so pod interfaces and bridges are that host's. cni=False starts it
    with CONTAINERD_CNI=none: DIR/cni is left empty for the edge agent to fill."""

    def __init__(self, host, dir, cni=True):
        self.host, self.dir, self.cni = host, Path(dir), cni
        self.sock = None

    @property
    def cni_conf_dir(self):
        return self.dir / "cni"

    def start(self):
        env = dict(os.environ)
        env.pop("CONTAINERD_CNI", None)
        if not self.cni:
            env["CONTAINERD_CNI"] = "none"
        p = self.host.run("bash", CONTAINERD_SH, "start", self.dir, env=env, timeout=300, mount=True)
        self.sock = Path(p.stdout.strip().splitlines()[-1])
        pid = self.pid()
        assert pid and netns_inode(pid) == self.host.inode, f"containerd {pid} is not in {self.host.name}'s namespace"
        assert netns_inode(pid, "mnt") == self.host.mnt_inode, f"containerd {pid} is not in {self.host.name}'s mount namespace"
        return self

    def pid(self):
        f = self.dir / "pid"
        return int(f.read_text()) if f.exists() else None

    def ctr(self, *args, check=True):
        """ctr in the k8s.io namespace, run in the host's mount namespace too (`ctr run` makes its
        stdio fifos client-side under /run/containerd/fifo, which only containerd's view has)."""
        return self.host.run("ctr", "-a", self.sock, "-n", "k8s.io", *args, check=check, timeout=60, mount=True).stdout

    def version(self):
        return self.host.run("ctr", "-a", self.sock, "version", timeout=30, mount=True).stdout

    def stop(self):
        self.host.run("bash", CONTAINERD_SH, "stop", self.dir, timeout=120, mount=True)


class Topology:
    """Hosts `cloud`, `a` and `b`; cloud–a and cloud–b veth links, nothing between a and b.
    node_ip[n]: node n's address as the cloud sees it; cloud_ip[n]: the cloud's address on n's link."""

    NODES = ("a", "b")

    def __init__(self, workdir):
        self.dir = Path(workdir)
        self.node_ip = {"a": "10.200.1.2", "b": "10.200.2.2"}
        self.cloud_ip = {"a": "10.200.1.1", "b": "10.200.2.1"}
        self.hosts = {}
        self.containerds = []
        self.inodes = set()
        self.mnt_inodes = set()

    def __enter__(self):
        try:
            self.build()
        except BaseException:
            self.close(raise_leftovers=False)
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(raise_leftovers=exc_type is None)
        return False

    @property
    def cloud(self):
        return self.hosts["cloud"]

    @property
    def a(self):
        return self.hosts["a"]

    @property
    def b(self):
        return self.hosts["b"]

    def build(self):
        for name in ("cloud", *self.NODES):
            self.hosts[name] = Host(name, self.dir)
            self.inodes.add(self.hosts[name].inode)
            self.mnt_inodes.add(self.hosts[name].mnt_inode)
        cloud = self.cloud
        # Not a router: whatever a node sends to the other node's subnet is dropped here.
        assert cloud.sysctl("net.ipv4.ip_forward", "0") == "0"
        for i, n in enumerate(self.NODES, 1):
            node = self.hosts[n]
            node.ip, node.cloud_ip = self.node_ip[n], self.cloud_ip[n]
            # Both ends made from inside the cloud's namespace, the peer sent straight into the node's.
            cloud.run("ip", "link", "add", f"to-{n}", "type", "veth", "peer", "name", "eth0", "netns", node.pid)
            cloud.run("ip", "addr", "add", f"{self.cloud_ip[n]}/24", "dev", f"to-{n}")
            cloud.run("ip", "link", "set", f"to-{n}", "up")
            node.run("ip", "addr", "add", f"{self.node_ip[n]}/24", "dev", "eth0")
            node.run("ip", "link", "set", "eth0", "up")
        for n in self.NODES:
            wait_for(lambda: self.cloud.ping(self.node_ip[n]), 10, interval=0.1, what=f"cloud–{n} link up")

    def containerd(self, host, dir, cni=True):
        """Starts a private containerd inside `host` (stopped by close())."""
        c = Containerd(host, dir, cni)
        self.containerds.append(c)
        return c.start()

    def leftovers(self):
        """Processes still in one of the namespaces, or running from under the work directory."""
        return processes(self.inodes, [self.dir], self.mnt_inodes)

    def close(self, raise_leftovers=True):
        """Stops the containerds (their pods first), every process started in a host, the holders;
        then kills any process still in a namespace or running under the work directory, unmounts
        what is still mounted under it, and checks that no process is left."""
        problems = []
        # The processes started in the hosts first (an edge agent would restart the pods that
        # containerd.sh stop kills), then the runtimes, then whatever is left and the holders.
        for h in reversed(list(self.hosts.values())):
            try:
                h.stop_all()
            except Exception as e:
                problems.append(f"stopping the processes of {h.name}: {e}")
        for c in reversed(self.containerds):
            try:
                c.stop()
            except Exception as e:  # the rest is cleaned up all the same
                problems.append(f"containerd.sh stop {c.dir}: {e}")
        for h in reversed(list(self.hosts.values())):
            try:
                h.close()
            except Exception as e:
                problems.append(f"closing {h.name}: {e}")
        for pid in self.leftovers():
            _kill(pid)
        try:
            wait_for(lambda: not self.leftovers(), 10, interval=0.1, what="no process left")
        except AssertionError:
            problems.append(f"processes left: {self.leftovers()}")
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(self.dir) + "/")]
        for m in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", m], check=False, capture_output=True)
        if problems:
            message = "topology cleanup: " + "; ".join(problems)
            if raise_leftovers:
                raise AssertionError(message)
            print(message, file=sys.stderr)
