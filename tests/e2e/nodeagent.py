"""A node agent as the control plane sees one: it registers a Node (object + status), renews
its Lease in kube-node-lease, and reports the pods bound to it through pods/status (Running and
Ready, or Succeeded/Failed when the pod's `nodeagent/outcome` annotation asks for it). It
completes graceful deletions the way a kubelet does. Stopping it is a node going dark."""
import datetime
import json
import threading

import requests


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_s():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class NodeAgent:
    _ip_block = 0
    _lock = threading.Lock()

    def __init__(self, server, name, labels=None, cpu="4", memory="8Gi", pods="110", taints=None, edge=False):
        self.server, self.name = server, name
        self.labels = dict(labels or {})
        self.labels.setdefault("kubernetes.io/hostname", name)
        if edge:
            self.labels["node-role.kubernetes.io/edge"] = ""
        self.cpu, self.memory, self.pods, self.taints = cpu, memory, pods, taints or []
        self.stop_event = threading.Event()
        self.ready_overrides = {}  # pod name -> bool
        with NodeAgent._lock:
            NodeAgent._ip_block += 1
            self.block = NodeAgent._ip_block
        self.next_ip = 2
        self.threads = []
        self.watch_resp = None

    # --- API helpers
    def http(self, method, path, **kw):
        return self.server.http(method, path, **kw)

    def register(self):
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": self.labels},
            "spec": {"taints": self.taints} if self.taints else {},
        }
        r = self.http("POST", "/api/v1/nodes", json=node)
        assert r.status_code in (201, 409), r.text
        self.report_status()
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": self.name, "namespace": "kube-node-lease"},
                 "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": now()}}
        r = self.http("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", json=lease)
        assert r.status_code in (201, 409), r.text
        return self

    def report_status(self):
        for _ in range(50):  # the node controller writes taints concurrently: retry on conflict
            if self._report_status():
                return
        raise AssertionError(f"could not report status of {self.name}")

    def _report_status(self):
        r = self.http("GET", f"/api/v1/nodes/{self.name}")
        node = r.json()
        t = now_s()
        res = {"cpu": self.cpu, "memory": self.memory, "pods": self.pods}
        node["status"] = {
            "capacity": res, "allocatable": res,
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "node agent is posting ready status",
                 "lastHeartbeatTime": t, "lastTransitionTime": t},
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "lastHeartbeatTime": t, "lastTransitionTime": t},
            ],
            "addresses": [{"type": "InternalIP", "address": f"192.168.{self.block}.1"}, {"type": "Hostname", "address": self.name}],
            "nodeInfo": {"kubeletVersion": "v1.32.0-swiftedge", "containerRuntimeVersion": "containerd://1.7", "osImage": "Debian",
                         "kernelVersion": "6.1", "operatingSystem": "linux", "architecture": "amd64", "machineID": "", "systemUUID": "",
                         "bootID": "", "kubeProxyVersion": ""},
        }
        r = self.http("PUT", f"/api/v1/nodes/{self.name}/status", json=node)
        if r.status_code == 409:
            return False
        assert r.status_code == 200, r.text
        return True

    def renew_lease(self):
        r = self.http("GET", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}")
        lease = r.json()
        lease["spec"]["renewTime"] = now()
        self.http("PUT", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}", json=lease)

    # --- lifecycle
    def start(self):
        self.register()
        self.stop_event.clear()
        for target in (self._lease_loop, self._pod_loop):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def stop(self):
        """The node goes dark: no lease renewals, no status, no pod reports."""
        self.stop_event.set()
        # The lease thread stops within one period; the pod thread may sit in a watch read (closing
        # it from here would block on the TLS socket), but it reports nothing once stopped and its
        # watch times out on the server within seconds.
        if self.threads:
            self.threads[0].join(timeout=5)
        self.threads = []

    def delete(self):
        self.stop()
        self.http("DELETE", f"/api/v1/nodes/{self.name}")

    def _lease_loop(self):
        while not self.stop_event.wait(0.5):
            try:
                self.renew_lease()
            except requests.RequestException:
                pass

    def _pod_loop(self):
        while not self.stop_event.is_set():
            try:
                lst = self.http("GET", f"/api/v1/pods?fieldSelector=spec.nodeName={self.name}").json()
                for p in lst.get("items", []):
                    self._handle(p)
                rv = lst["metadata"]["resourceVersion"]
                self.watch_resp = requests.get(
                    self.server.url + f"/api/v1/pods?watch=1&timeoutSeconds=5&fieldSelector=spec.nodeName={self.name}&resourceVersion={rv}",
                    headers={"Authorization": f"Bearer {self.server.token}"}, verify=self.server.ca, stream=True, timeout=(5, 60))
                for line in self.watch_resp.iter_lines():
                    if self.stop_event.is_set():
                        return
                    if not line:
                        continue
                    ev = json.loads(line)
                    if ev["type"] in ("ADDED", "MODIFIED"):
                        self._handle(ev["object"])
            except Exception:
                if self.stop_event.wait(0.2):
                    return

    def _handle(self, pod):
        if self.stop_event.is_set():
            return
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        if meta.get("deletionTimestamp"):
            self.http("DELETE", path, json={"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
            return
        status = pod.get("status", {})
        if status.get("phase") in ("Succeeded", "Failed"):
            return
        outcome = meta.get("annotations", {}).get("nodeagent/outcome", "run")
        want_ready = self.ready_overrides.get(meta["name"], True)
        ready_now = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
        if status.get("phase") == "Running" and outcome == "run" and ready_now == want_ready:
            return
        t = now_s()
        ip = status.get("podIP")
        if not ip:
            ip = f"10.244.{self.block}.{self.next_ip}"
            self.next_ip += 1
        containers = pod["spec"]["containers"]
        if outcome in ("succeed", "fail"):
            code = 0 if outcome == "succeed" else 1
            phase = "Succeeded" if code == 0 else "Failed"
            cstat = [{"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0, "started": False,
                      "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                               "startedAt": t, "finishedAt": t}}} for c in containers]
            ready = "False"
        else:
            phase = "Running"
            ready = "True" if want_ready else "False"
            cstat = [{"name": c["name"], "image": c["image"], "imageID": "", "ready": want_ready, "restartCount": 0, "started": True,
                      "state": {"running": {"startedAt": t}}} for c in containers]
        body = {"status": {
            "phase": phase, "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": f"192.168.{self.block}.1", "startTime": status.get("startTime", t),
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": t, "lastProbeTime": None},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": t, "lastProbeTime": None},
                {"type": "Ready", "status": ready, "lastTransitionTime": t, "lastProbeTime": None},
            ],
            "containerStatuses": cstat,
        }}
        self.http("PATCH", path + "/status", data=json.dumps(body),
                  headers={"Content-Type": "application/strategic-merge-patch+json", "Authorization": f"Bearer {self.server.token}"})

    def set_ready(self, pod_namespace, pod_name, ready):
        """Reports a pod's readiness as a failing/passing readiness probe would."""
        self.ready_overrides[pod_name] = ready
        pod = self.http("GET", f"/api/v1/namespaces/{pod_namespace}/pods/{pod_name}").json()
        self._handle(pod)
