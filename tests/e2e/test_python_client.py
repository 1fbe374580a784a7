"""The official Python `kubernetes` client (typed and dynamic) against the server."""
import threading

import pytest
from kubernetes import client, dynamic, watch
from kubernetes.client.rest import ApiException


def cm(name, labels=None, data=None):
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels), data=data or {"k": "v"})


def test_crud_and_errors(api_client, ns):
    core = client.CoreV1Api(api_client)
    created = core.create_namespaced_config_map(ns, cm("a"))
    assert created.metadata.uid and created.metadata.resource_version
    got = core.read_namespaced_config_map("a", ns)
    assert got.data == {"k": "v"}
    got.data["k"] = "w"
    replaced = core.replace_namespaced_config_map("a", ns, got)
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("missing", ns)
    assert e.value.status == 404
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("no-such-ns", cm("a"))
    assert e.value.status == 404 and "namespaces \\\"no-such-ns\\\" not found" in e.value.body
    core.delete_namespaced_config_map("a", ns)
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("a", ns)


def test_conflict_on_stale_update(api_client, ns):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(ns, cm("c"))
    stale = core.read_namespaced_config_map("c", ns)
    fresh = core.read_namespaced_config_map("c", ns)
    fresh.data["k"] = "1"
    core.replace_namespaced_config_map("c", ns, fresh)
    stale.data["k"] = "2"
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("c", ns, stale)
    assert e.value.status == 409 and "Conflict" in e.value.body


def test_patch_types(api_client, ns):
    core = client.CoreV1Api(api_client)
    svc = client.V1Service(metadata=client.V1ObjectMeta(name="s"),
                           spec=client.V1ServiceSpec(selector={"app": "x"}, ports=[client.V1ServicePort(port=80, name="http")]))
    created = core.create_namespaced_service(ns, svc)
    assert created.spec.cluster_ip and created.spec.cluster_ip.startswith("10.")
    # dict body → strategic merge: ports merge by port.
    patched = core.patch_namespaced_service("s", ns, {"spec": {"ports": [{"port": 443, "name": "https"}]}})
    assert sorted(p.port for p in patched.spec.ports) == [80, 443]
    # list body → JSON patch.
    patched = core.patch_namespaced_service("s", ns, [{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}])
    assert patched.metadata.labels == {"a": "b"}
    # A no-op patch does not bump the resourceVersion.
    again = core.patch_namespaced_service("s", ns, {"metadata": {"labels": {"a": "b"}}})
    assert again.metadata.resource_version == patched.metadata.resource_version


def test_watch_events_and_selector_transitions(api_client, ns):
    core = client.CoreV1Api(api_client)
    start_rv = core.list_namespaced_config_map(ns).metadata.resource_version
    events = []
    done = threading.Event()

    def run():
        w = watch.Watch()
        for ev in w.stream(core.list_namespaced_config_map, ns, label_selector="sel=yes",
                           resource_version=start_rv, timeout_seconds=20):
            events.append((ev["type"], ev["object"].metadata.name))
            if ev["type"] == "DELETED" and ev["object"].metadata.name == "w2":
                w.stop()
        done.set()

    t = threading.Thread(target=run)
    t.start()
    core.create_namespaced_config_map(ns, cm("w1", labels={"sel": "yes"}))
    core.create_namespaced_config_map(ns, cm("w2", labels={"sel": "no"}))
    core.patch_namespaced_config_map("w1", ns, {"data": {"k": "2"}})
    core.patch_namespaced_config_map("w2", ns, {"metadata": {"labels": {"sel": "yes"}}})  # starts matching
    core.patch_namespaced_config_map("w1", ns, {"metadata": {"labels": {"sel": "no"}}})  # stops matching
    core.delete_namespaced_config_map("w2", ns)
    assert done.wait(25)
    t.join()
    assert events == [("ADDED", "w1"), ("MODIFIED", "w1"), ("ADDED", "w2"), ("DELETED", "w1"), ("DELETED", "w2")]


def test_watch_bookmarks(api_client, ns):
    core = client.CoreV1Api(api_client)
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    resp = core.list_namespaced_config_map(ns, watch=True, allow_watch_bookmarks=True, resource_version=rv,
                                           timeout_seconds=5, _preload_content=False)
    import json
    for line in resp:
        ev = json.loads(line)
        if ev["type"] == "BOOKMARK":
            assert int(ev["object"]["metadata"]["resourceVersion"]) >= int(rv)
            break
    else:
        pytest.fail("no BOOKMARK within the watch timeout")
    resp.release_conn()


def test_pagination_is_consistent(api_client, ns):
    core = client.CoreV1Api(api_client)
    # What a new namespace already holds (the published kube-root-ca.crt) is listed along, by name.
    seeded = [c.metadata.name for c in core.list_namespaced_config_map(ns).items]
    for i in range(5):
        core.create_namespaced_config_map(ns, cm(f"p{i}"))
    everything = sorted(seeded + [f"p{i}" for i in range(5)])
    page1 = core.list_namespaced_config_map(ns, limit=2)
    assert [c.metadata.name for c in page1.items] == everything[:2]
    assert page1.metadata._continue and page1.metadata.remaining_item_count == len(everything) - 2
    # Changes after the first page do not show in later pages.
    core.create_namespaced_config_map(ns, cm("p10"))
    core.delete_namespaced_config_map("p3", ns)
    pages = [page1]
    while pages[-1].metadata._continue and len(pages) <= len(everything):
        pages.append(core.list_namespaced_config_map(ns, limit=2, _continue=pages[-1].metadata._continue))
    names = [c.metadata.name for page in pages[1:] for c in page.items]
    assert names == everything[2:] and "p3" in names and "p10" not in names
    assert pages[-1].metadata._continue is None
    assert {page.metadata.resource_version for page in pages} == {page1.metadata.resource_version}


def test_too_old_resource_version_gives_410_then_relist(api_client, ns):
    core = client.CoreV1Api(api_client)
    old_rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, cm("churn"))
    for i in range(320):  # the test server keeps 300 events of history
        core.patch_namespaced_config_map("churn", ns, {"data": {"i": str(i)}})
    with pytest.raises(ApiException) as e:
        for _ in watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=old_rv, timeout_seconds=5):
            pass
    assert e.value.status == 410
    # A relist and a watch from its resourceVersion work.
    lst = core.list_namespaced_config_map(ns)
    assert [c.metadata.name for c in lst.items if c.metadata.name != "kube-root-ca.crt"] == ["churn"]
    core.patch_namespaced_config_map("churn", ns, {"data": {"i": "final"}})
    # The watch must deliver exactly that change: a stream that ends (server timeout 10 s, socket
    # timeout 15 s) without it fails instead of passing on no event.
    events = []
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=lst.metadata.resource_version,
                       timeout_seconds=10, _request_timeout=15):
        events.append((ev["type"], ev["object"].metadata.name, (ev["object"].data or {}).get("i")))
        if events[-1][2] == "final":
            w.stop()
    assert events == [("MODIFIED", "churn", "final")], events


def test_apps_and_scale(api_client, ns):
    apps = client.AppsV1Api(api_client)
    dep = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="d"),
        spec=client.V1DeploymentSpec(
            replicas=2, selector=client.V1LabelSelector(match_labels={"app": "d"}),
            template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels={"app": "d"}),
                                              spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]))))
    apps.create_namespaced_deployment(ns, dep)
    scale = apps.read_namespaced_deployment_scale("d", ns)
    assert scale.spec.replicas == 2 and scale.status.selector == "app=d"
    apps.patch_namespaced_deployment_scale("d", ns, {"spec": {"replicas": 6}})
    assert apps.read_namespaced_deployment("d", ns).spec.replicas == 6
    st = apps.read_namespaced_deployment_status("d", ns)
    st.status = client.V1DeploymentStatus(replicas=6, ready_replicas=3, observed_generation=st.metadata.generation)
    apps.replace_namespaced_deployment_status("d", ns, st)
    assert apps.read_namespaced_deployment("d", ns).status.ready_replicas == 3
    bad = client.V1Deployment(metadata=client.V1ObjectMeta(name="bad"), spec=client.V1DeploymentSpec(
        selector=client.V1LabelSelector(match_labels={"app": "x"}),
        template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels={"app": "y"}),
                                          spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="i")]))))
    with pytest.raises(ApiException) as e:
        apps.create_namespaced_deployment(ns, bad)
    assert e.value.status == 422 and "does not match template" in e.value.body


def test_binding_and_leases(api_client, ns):
    core = client.CoreV1Api(api_client)
    pod = client.V1Pod(metadata=client.V1ObjectMeta(name="b"), spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="i")]))
    core.create_namespaced_pod(ns, pod)
    body = client.V1Binding(metadata=client.V1ObjectMeta(name="b"), target=client.V1ObjectReference(kind="Node", name="n1", api_version="v1"))
    core.create_namespaced_binding(ns, body, _preload_content=False)
    p = core.read_namespaced_pod("b", ns)
    assert p.spec.node_name == "n1" and any(c.type == "PodScheduled" for c in p.status.conditions)
    with pytest.raises(ApiException) as e:
        core.create_namespaced_binding(ns, body, _preload_content=False)
    assert e.value.status == 409
    coord = client.CoordinationV1Api(api_client)
    lease = client.V1Lease(metadata=client.V1ObjectMeta(name="n1"), spec=client.V1LeaseSpec(holder_identity="n1", lease_duration_seconds=40))
    created = coord.create_namespaced_lease("kube-node-lease", lease)
    created.spec.renew_time = "2026-11-25T06:13:15.123456Z"
    renewed = coord.replace_namespaced_lease("n1", "kube-node-lease", created)
    assert renewed.spec.renew_time.microsecond == 123456
    with pytest.raises(ApiException) as e:
        coord.replace_namespaced_lease("n1", "kube-node-lease", created)  # stale resourceVersion
    assert e.value.status == 409


def test_dynamic_client_discovery(api_client, ns):
    dyn = dynamic.DynamicClient(api_client)
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    assert deployments.namespaced
    leases = dyn.resources.get(api_version="coordination.k8s.io/v1", kind="Lease")
    leases.create(namespace=ns, body={"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}, "spec": {}})
    assert leases.get(namespace=ns, name="l").metadata.name == "l"


def test_secret_string_data_and_immutable_configmaps(api_client, ns):
    import base64
    core = client.CoreV1Api(api_client)
    s = core.create_namespaced_secret(ns, client.V1Secret(metadata=client.V1ObjectMeta(name="s"), string_data={"user": "admin"}))
    assert base64.b64decode(s.data["user"]) == b"admin" and s.string_data is None and s.type == "Opaque"
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="frozen"), data={"a": "1"}, immutable=True))
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_config_map("frozen", ns, {"data": {"a": "2"}})
    assert e.value.status == 422 and "immutable" in e.value.body
    core.patch_namespaced_config_map("frozen", ns, {"metadata": {"labels": {"ok": "yes"}}})
