"""`swiftedge cloud` and `swiftedge edge` processes for end-to-end tests."""
import json
import re
import signal
import sqlite3
import subprocess
import time
import urllib.request

from conftest import BIN, free_port, wait_for


class Cloud:
    def __init__(self, tmp, extra_args=()):
        self.extra_args = list(extra_args)
        self.dir = tmp / "cloud"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.api_port, self.hub_port, self.cert_port, self.metrics_port = free_port(), free_port(), free_port(), free_port()
        self.log = self.dir / "cloud.log"
        self.proc = None

    def start(self, attempts=3):
        """Starts the cloud and waits for CloudHub. A port free_port() handed out can be taken by another
        process before the cloud binds it: when the cloud exits at start, it is retried on fresh ports
        (a restart of a running cloud keeps its ports). A failure shows the end of the cloud's log."""
        for attempt in range(attempts):
            self.logf = open(self.log, "ab")
            starts = self.log.read_text().count("CloudHub listening") if self.log.exists() else 0
            self.proc = subprocess.Popen([str(BIN), "cloud", "--data-dir", str(self.dir), "--port", str(self.api_port),
                                          "--cloudhub-port", str(self.hub_port), "--cert-port", str(self.cert_port),
                                          "--metrics-port", str(self.metrics_port), *self.extra_args],
                                         stdout=self.logf, stderr=subprocess.STDOUT)
            tail = lambda: self.log.read_text()[-3000:]  # noqa: E731
            wait_for(lambda: self.proc.poll() is not None or self.log.read_text().count("CloudHub listening") > starts, 60,
                     what="cloud start", detail=tail)
            if self.proc.poll() is None:
                return self
            self.logf.close()
            if starts or attempt == attempts - 1 or "in use" not in tail().lower():
                raise AssertionError(f"cloud exited {self.proc.returncode} at start:\n{tail()}")
            self.api_port, self.hub_port, self.cert_port, self.metrics_port = free_port(), free_port(), free_port(), free_port()
        return self

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
            if sig == signal.SIGTERM:
                assert self.proc.returncode == 0, f"cloud exited {self.proc.returncode} on SIGTERM:\n" + self.log.read_text()[-2000:]
        self.logf.close()

    @property
    def kubeconfig(self):
        return self.dir / "admin.kubeconfig"

    def token(self):
        return subprocess.run([str(BIN), "gettoken", "--kubeconfig", str(self.kubeconfig)], capture_output=True, text=True,
                              check=True).stdout.strip()

    def metrics(self):
        """Prometheus samples: {(name, frozenset(labels)): value}."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            m = re.match(r'^(\w+)(?:\{(.*)\})? (\S+)$', line)
            if m:
                labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
                out[(m.group(1), labels)] = float(m.group(3))
        return out

    def resyncs(self, node):
        return [dict(re.findall(r"(\w+)=(\S+)", line)) for line in self.log.read_text().splitlines()
                if "resync complete" in line and f"node={node} " in line]


class Edge:
    def __init__(self, tmp, cloud, name, runtime=None):
        """runtime: a containerd socket to run pods with (default: the node runs no pods)."""
        self.dir, self.cloud, self.name, self.runtime = tmp / f"edge-{name}", cloud, name, runtime
        self.log = tmp / f"edge-{name}.log"
        self.proc = None
        self.metaserver_port = free_port()
        self.metrics_port = free_port()

    def args(self, token=None, cert_port=None):
        a = [str(BIN), "edge", "--cloud", "127.0.0.1", "--cloudhub-port", str(self.cloud.hub_port),
             "--cert-port", str(cert_port or self.cloud.cert_port), "--node-name", self.name, "--data-dir", str(self.dir), "--heartbeat", "2",
             "--node-status-interval", "1", "--labels", "site=shop", "--metaserver-port", str(self.metaserver_port),
             "--metrics-port", str(self.metrics_port),
             "--remote-runtime-endpoint", f"unix://{self.runtime}" if self.runtime else "", "--pod-logs-dir", str(self.dir / "logs")]
        return a + (["--token", token] if token else [])

    def metaserver_kubeconfig(self, ca_pem, path, token=None):
        """A kubeconfig for the node's MetaServer (HTTPS, its certificate verified with the cluster
        CA `ca_pem`): as the node itself (its client certificate) or, with `token`, as the token's owner."""
        ca = path.with_name(path.name + ".ca.crt")
        ca.write_text(ca_pem)
        user = {"token": token} if token else {"client-certificate": str(self.dir / "certs" / "server.crt"),
                                               "client-key": str(self.dir / "certs" / "server.key")}
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "m",
            "clusters": [{"name": "m", "cluster": {"server": f"https://127.0.0.1:{self.metaserver_port}", "certificate-authority": str(ca)}}],
            "users": [{"name": "m", "user": user}], "contexts": [{"name": "m", "context": {"cluster": "m", "user": "m"}}]}))
        return path

    def start(self, token=None):
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self.args(token), stdout=self.logf, stderr=subprocess.STDOUT)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.logf.close()

    def store_ready(self):
        """Whether the edge has created its store (file and table): a freshly recovered node has
        not, for a moment. Other database errors raise."""
        path = self.dir / "edge.db"
        if not path.exists():
            return False
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
        try:
            return con.execute("select count(*) from sqlite_master where type = 'table' and name = 'meta'").fetchone()[0] == 1
        except sqlite3.OperationalError as e:
            if "database is locked" in str(e):
                return False
            raise
        finally:
            con.close()

    def stored(self, type_):
        """{key: (rv, object)} of `type_` in the edge's store (see read_store: an empty answer means
        the store really holds none)."""
        rows = read_store(self.dir / "edge.db", "select key, rv, value from meta where type = ?", (type_,), what=type_)
        return {k: (rv, json.loads(v)) for k, rv, v in rows}


def read_store(path, sql, args, what):
    """Rows of `sql` on an edge's store (<data-dir>/edge.db). Any database error raises (a missing
    file, a missing table, a corrupt file); only a busy database (`database is locked`) is tried
    again, for about 10 s."""
    deadline = time.monotonic() + 10
    while True:
        con = None
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
            return con.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            if "database is locked" not in str(e) or time.monotonic() > deadline:
                raise AssertionError(f"reading {what} from {path} failed: {e}") from e
            time.sleep(0.1)
        finally:
            if con is not None:
                con.close()
