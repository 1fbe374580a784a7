"""ClusterIPs as kube-apiserver hands them out: from --service-cluster-ip-range (its first address
is the `kubernetes` Service), never twice — also when many Services are created at once —, a
requested address outside the range or already taken refused with kube's message, and a deleted
Service's address free again."""
import ipaddress
from concurrent.futures import ThreadPoolExecutor

from conftest import Server


def svc(name, cluster_ip=None):
    spec = {"ports": [{"port": 80}]}
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def test_cluster_ips_come_from_the_range_and_never_collide(tmp_path):
    server = Server(tmp_path / "api", extra_args=["--service-cluster-ip-range", "10.123.0.0/24"]).start()
    try:
        base = "/api/v1/namespaces/default/services"
        kubernetes = server.http("GET", base + "/kubernetes").json()
        assert kubernetes["spec"]["clusterIP"] == "10.123.0.1", kubernetes["spec"]
        net = ipaddress.ip_network("10.123.0.0/24")
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: server.http("POST", base, json=svc(f"s{i}")), range(60)))
        assert all(r.status_code == 201 for r in answers), [r.text for r in answers if r.status_code != 201][:3]
        ips = [r.json()["spec"]["clusterIP"] for r in answers]
        assert len(set(ips)) == 60 and "10.123.0.1" not in ips, ips
        assert all(ipaddress.ip_address(ip) in net for ip in ips), ips

        r = server.http("POST", base, json=svc("outside", "10.96.0.50"))
        assert r.status_code == 422, r.text
        assert "the provided IP (10.96.0.50) is not in the valid range. The range of valid IPs is 10.123.0.0/24" in r.json()["message"]
        r = server.http("POST", base, json=svc("taken", ips[0]))
        assert r.status_code == 422 and "provided IP is already allocated" in r.json()["message"], r.text
        # The same Service again is AlreadyExists, not a collision with itself.
        assert server.http("POST", base, json=svc("s0", ips[0])).status_code == 409
        # Deleted: its address may be requested again.
        assert server.http("DELETE", base + "/s0").status_code == 200
        r = server.http("POST", base, json=svc("again", ips[0]))
        assert r.status_code == 201 and r.json()["spec"]["clusterIP"] == ips[0], r.text
    finally:
        server.stop()
