"""The namespace harness of netns.py on its own (no swiftedge binary): three hosts, cloud–a and
cloud–b reachable, a and b not (even with routes through the cloud, which does not forward), a
private containerd inside host a, and nothing left afterwards — no process, no namespace."""
import os
import shutil
import signal
import sys

from conftest import wait_for
from netns import BUSYBOX, PRIVATE_DIRS, Topology, netns_inode, processes

SERVER = ("import socket, sys\n"
          "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen()\n"
          "while True:\n"
          "    c, peer = s.accept(); c.sendall(f'{sys.argv[2]} sees {peer[0]}\\n'.encode()); c.close()\n")


def host_links():
    with open("/proc/net/dev") as f:
        return sorted(line.split(":")[0].strip() for line in f.readlines()[2:])


def test_three_hosts_cloud_reaches_both_nodes_which_do_not_reach_each_other(tmp_path):
    assert os.path.exists(BUSYBOX) and shutil.which("unshare") and shutil.which("nsenter")
    links_before = host_links()
    forward_before = open("/proc/sys/net/ipv4/ip_forward").read()
    with Topology(tmp_path) as t:
        hosts = [t.cloud, t.a, t.b]
        inodes = {h.inode for h in hosts}
        mnt_inodes = {h.mnt_inode for h in hosts}
        assert len(inodes) == 3 and netns_inode() not in inodes
        assert t.a.ip == "10.200.1.2" and t.a.cloud_ip == "10.200.1.1"
        assert t.b.ip == "10.200.2.2" and t.b.cloud_ip == "10.200.2.1"
        assert t.cloud.sysctl("net.ipv4.ip_forward") == "0"
        assert "127.0.0.1" in t.a.run("ip", "-4", "addr", "show", "lo").stdout

        # ICMP both ways on each link.
        for n in ("a", "b"):
            node = t.hosts[n]
            assert t.cloud.ping(node.ip), n
            assert node.ping(node.cloud_ip), n
        # TCP: servers on each node and the cloud, addresses as each side sees the other.
        for h in hosts:
            h.popen([sys.executable, "-c", SERVER, 9000, h.name], log=tmp_path / f"server-{h.name}.log")
        wait_for(lambda: t.cloud.connect(t.a.ip, 9000), 10, interval=0.2, what="server on a")
        wait_for(lambda: t.cloud.connect(t.b.ip, 9000), 10, interval=0.2, what="server on b")
        wait_for(lambda: t.a.connect("127.0.0.1", 9000), 10, interval=0.2, what="server on cloud")
        assert t.cloud.connect(t.a.ip, 9000) == "a sees 10.200.1.1"
        assert t.cloud.connect(t.b.ip, 9000) == "b sees 10.200.2.1"
        assert t.a.connect(t.a.cloud_ip, 9000) == "cloud sees 10.200.1.2"
        assert t.b.connect(t.b.cloud_ip, 9000) == "cloud sees 10.200.2.2"
        # a and b: no route to each other.
        assert not t.a.ping(t.b.ip) and not t.b.ping(t.a.ip)
        assert t.a.connect(t.b.ip, 9000) is None and t.b.connect(t.a.ip, 9000) is None
        assert "unreachable" in t.a.run(BUSYBOX, "ping", "-c1", "-W1", t.b.ip, check=False).stderr.lower()
        # Not even through the cloud: it does not forward.
        t.a.run("ip", "route", "add", "10.200.2.0/24", "via", t.a.cloud_ip)
        t.b.run("ip", "route", "add", "10.200.1.0/24", "via", t.b.cloud_ip)
        assert not t.a.ping(t.b.ip) and not t.b.ping(t.a.ip)
        assert t.a.connect(t.b.ip, 9000, timeout=1) is None
        t.a.run("ip", "route", "del", "10.200.2.0/24")
        t.b.run("ip", "route", "del", "10.200.1.0/24")

        # A process started inside ends with close(), whichever signal it ignores.
        stubborn = t.b.popen(["sh", "-c", "trap '' TERM; while true; do sleep 1; done"])
        # nsenter enters the namespace a moment after it starts: awaited, not assumed.
        wait_for(lambda: netns_inode(stubborn.pid) == t.b.inode, 10, interval=0.05, what="the process inside host b")

        # A private containerd inside host a, without a CNI conflist of its own.
        ctd = t.containerd(t.a, tmp_path / "ctd-a", cni=False)
        assert "Server:" in ctd.version()
        assert os.listdir(ctd.cni_conf_dir) == []
        assert netns_inode(ctd.pid()) == t.a.inode
        assert "docker.io/local/busybox:1" in ctd.ctr("images", "ls", "-q")
        # Its system paths are tmpfs of a's mount namespace, its mounts stay there.
        mounts = {line.split()[4]: line.split(" - ")[1].split()[0] for line in open(f"/proc/{ctd.pid()}/mountinfo")}
        for d in PRIVATE_DIRS:
            assert mounts.get(d) == "tmpfs" or not os.path.isdir(d), (d, mounts.get(d))
        # A container runs (shim, runc) and its output comes back.
        out = ctd.ctr("run", "--rm", "docker.io/local/busybox:1", "netns-selftest", "sh", "-c", "echo hello from a container")
        assert out.strip() == "hello from a container", out
        assert not [line for line in open("/proc/self/mountinfo") if str(tmp_path) in line]
        pid = ctd.pid()
        ctd.stop()
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 10, what="containerd stopped")
        # Started again with its own podnet: the default behaviour is unchanged...
        ctd.cni = True
        ctd.start()
        assert os.listdir(ctd.cni_conf_dir) == ["10-podnet.conflist"]
        ctd.stop()
        # ...and CONTAINERD_CNI=none removes the stale conflist.
        ctd.cni = False
        ctd.start()
        assert os.listdir(ctd.cni_conf_dir) == []
        assert t.a.members(), "containerd is a member of a's namespace"
        holders = [h.pid for h in hosts]

    # Nothing left: no holder, no process in the namespaces or under the work directory, the
    # host's own links and forwarding untouched.
    assert stubborn.returncode == -signal.SIGKILL
    for pid in holders:
        assert not os.path.exists(f"/proc/{pid}"), pid
    assert processes(inodes, [tmp_path], mnt_inodes) == {}
    assert host_links() == links_before
    assert open("/proc/sys/net/ipv4/ip_forward").read() == forward_before
    assert not [line for line in open("/proc/mounts") if str(tmp_path) in line]
