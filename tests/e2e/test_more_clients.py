"""Two more PyPI Kubernetes clients against the server, each through its own documented API:
kr8s (its asyncio API) and lightkube (its sync `Client`, and `AsyncClient` for the watch).
ConfigMap create/get/list with a label selector/paged list/patch/replace/delete, a watch that must
see ADDED and MODIFIED before a deadline, a Deployment scaled through its scale subresource, and
(lightkube) server-side apply."""
import asyncio
import json

import pytest

# Every namespace holds the ConfigMap kube-root-ca.crt, so lists here always filter by a label.
WATCH_DEADLINE = 20  # seconds for each awaited watch event
CALL_DEADLINE = 60  # seconds for a whole async scenario


def cm_dict(name, ns, labels=None, data=None):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}}, "data": data or {"k": "v"}}


def deployment_dict(name, ns, replicas=1):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}}}}


def assert_server_pages(server, ns, selector, limit, total):
    """The server itself splits `selector`'s list into pages of `limit` (so a client that got every
    object back really followed `continue`)."""
    r = server.http("GET", f"/api/v1/namespaces/{ns}/configmaps", params={"labelSelector": selector, "limit": limit})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == min(limit, total), body
    if total > limit:
        assert body["metadata"].get("continue"), f"no continue token for limit={limit} of {total}: {body['metadata']}"


async def collect_events(events: asyncio.Queue, want, what):
    """Wait (deadline WATCH_DEADLINE each) until every (type, name, predicate) in `want` was seen in
    order; any other event is recorded in the failure message. Silence fails the test."""
    seen = []
    for typ, name, pred in want:
        while True:
            try:
                ev_type, obj = await asyncio.wait_for(events.get(), WATCH_DEADLINE)
            except asyncio.TimeoutError:
                raise AssertionError(f"{what}: no {typ} event for {name} within {WATCH_DEADLINE}s; events so far: {seen}") from None
            if isinstance(obj, BaseException):
                raise AssertionError(f"{what}: the watch failed: {obj!r}; events so far: {seen}") from obj
            seen.append((ev_type, obj["metadata"]["name"], obj["metadata"].get("resourceVersion")))
            if ev_type == typ and obj["metadata"]["name"] == name and pred(obj):
                break
    return seen


# ---------------------------------------------------------------------------------------------
# kr8s (https://docs.kr8s.org): the asyncio API, kr8s.asyncio.api() and kr8s.asyncio.objects.


def run_async(coro):
    async def bounded():
        async with asyncio.timeout(CALL_DEADLINE):
            return await coro

    return asyncio.run(bounded())


async def kr8s_api(server):
    import kr8s.asyncio

    return await kr8s.asyncio.api(kubeconfig=str(server.kubeconfig))


def test_kr8s_configmap_crud(server, ns):
    from kr8s import NotFoundError, ServerError
    from kr8s.asyncio.objects import ConfigMap

    async def main():
        api = await kr8s_api(server)
        version = await api.version()
        assert version["major"] == "1" and version["gitVersion"].startswith("v1.")

        cm = await ConfigMap(cm_dict("a", ns, labels={"client": "kr8s"}), api=api)
        await cm.create()
        assert cm.metadata.uid and cm.metadata.resourceVersion and cm.data == {"k": "v"}
        other = await ConfigMap(cm_dict("b", ns, labels={"client": "other"}), api=api)
        await other.create()

        got = await ConfigMap.get("a", namespace=ns, api=api)
        assert got.data == {"k": "v"} and got.metadata.uid == cm.metadata.uid

        listed = [o.name async for o in api.get("configmaps", namespace=ns, label_selector={"client": "kr8s"})]
        assert listed == ["a"]
        listed = sorted([o.name async for o in api.get("configmaps", namespace=ns)])
        assert {"a", "b", "kube-root-ca.crt"} <= set(listed)

        # Merge patch (kr8s's default patch type), then a JSON patch.
        rv0 = got.metadata.resourceVersion
        await got.patch({"data": {"k": "w", "m": "1"}, "metadata": {"labels": {"patched": "yes"}}})
        assert got.data == {"k": "w", "m": "1"} and got.labels == {"client": "kr8s", "patched": "yes"}
        assert int(got.metadata.resourceVersion) > int(rv0)
        await got.patch({"data": {"m": None}})  # null removes the key in a merge patch
        assert got.data == {"k": "w"}
        await got.patch([{"op": "add", "path": "/data/j", "value": "x"},
                         {"op": "replace", "path": "/data/k", "value": "z"}], type="json")
        assert got.data == {"j": "x", "k": "z"}
        await got.refresh()
        assert got.data == {"j": "x", "k": "z"}

        # Replace (PUT): kr8s has no replace method, its documented low-level call_api does it.
        body = got.to_dict()
        body["data"] = {"replaced": "1"}
        async with api.call_api("PUT", version="v1", url="configmaps/a", namespace=ns, content=json.dumps(body)) as r:
            replaced = r.json()
        assert replaced["data"] == {"replaced": "1"}
        assert int(replaced["metadata"]["resourceVersion"]) > int(got.metadata.resourceVersion)
        # A stale resourceVersion is a 409 Conflict.
        with pytest.raises(ServerError) as e:
            async with api.call_api("PUT", version="v1", url="configmaps/a", namespace=ns, content=json.dumps(body)):
                pass
        assert e.value.response.status_code == 409, e.value.response.text

        await got.delete()
        assert not await got.exists()
        with pytest.raises(NotFoundError):
            await ConfigMap.get("a", namespace=ns, api=api)
        with pytest.raises(NotFoundError):
            await got.delete()
        assert [o.name async for o in api.get("configmaps", namespace=ns, label_selector="client=kr8s")] == []

    run_async(main())


def test_kr8s_list_pages_through_continue(server, ns):
    """kr8s lists in pages of 100 and follows `continue`: 105 objects come back once each."""
    from kr8s.asyncio.objects import ConfigMap

    total = 105

    async def main():
        api = await kr8s_api(server)
        objs = [await ConfigMap(cm_dict(f"p-{i:03d}", ns, labels={"page": "yes"}), api=api) for i in range(total)]
        await api.create(objs)  # concurrently, in a task group
        assert_server_pages(server, ns, "page=yes", 100, total)
        names = [o.name async for o in api.get("configmaps", namespace=ns, label_selector={"page": "yes"})]
        assert sorted(names) == [f"p-{i:03d}" for i in range(total)], names

    run_async(main())


def test_kr8s_watch_sees_added_and_modified(server, ns):
    from kr8s.asyncio.objects import ConfigMap

    async def main():
        api = await kr8s_api(server)
        async with api.call_api("GET", version="v1", url="configmaps", namespace=ns) as r:
            start_rv = r.json()["metadata"]["resourceVersion"]
        events: asyncio.Queue = asyncio.Queue()

        async def watch():
            try:
                async for typ, obj in api.watch("configmaps", namespace=ns, label_selector={"watched": "kr8s"}, since=start_rv):
                    await events.put((typ, obj.to_dict()))
            except asyncio.CancelledError:
                raise
            except BaseException as e:  # reported by collect_events
                await events.put(("ERROR", e))

        task = asyncio.create_task(watch())
        try:
            await asyncio.sleep(0.5)  # the watch request is on its way; start_rv covers any race
            cm = await ConfigMap(cm_dict("w", ns, labels={"watched": "kr8s"}), api=api)
            await cm.create()
            await cm.patch({"data": {"k": "changed"}})
            seen = await collect_events(events, [
                ("ADDED", "w", lambda o: o["data"] == {"k": "v"}),
                ("MODIFIED", "w", lambda o: o["data"] == {"k": "changed"}),
            ], "kr8s watch")
            assert [s[0] for s in seen] == ["ADDED", "MODIFIED"], seen
            assert seen[-1][2] == cm.metadata.resourceVersion, (seen, cm.metadata.resourceVersion)
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    run_async(main())


def test_kr8s_deployment_scale(server, ns):
    from kr8s.asyncio.objects import Deployment

    async def main():
        api = await kr8s_api(server)
        d = await Deployment(deployment_dict("web", ns, replicas=1), api=api)
        await d.create()
        assert d.replicas == 1 and d.metadata.uid
        await d.scale(3)  # kr8s's scale(): patches spec.replicas and waits until it reads back
        await d.refresh()
        assert d.replicas == 3

        # The scale subresource itself: merge patch on .../deployments/web/scale, then GET it.
        # (kr8s stores the Scale it gets back in the object, keeping its own kind and apiVersion.)
        await d.patch({"spec": {"replicas": 2}}, subresource="scale")
        assert d.raw["spec"] == {"replicas": 2}, d.raw
        async with api.call_api("GET", version="apps/v1", url="deployments/web/scale", namespace=ns) as r:
            scale = r.json()
        assert scale["kind"] == "Scale" and scale["metadata"]["name"] == "web" and scale["spec"]["replicas"] == 2, scale
        assert scale["status"]["selector"] == "app=web", scale
        fresh = await Deployment.get("web", namespace=ns, api=api)
        assert fresh.replicas == 2
        await fresh.delete()

    run_async(main())


# ---------------------------------------------------------------------------------------------
# lightkube (https://lightkube.readthedocs.io): Client / AsyncClient with typed resources.


@pytest.fixture
def lk(server):
    from lightkube import Client, KubeConfig

    c = Client(config=KubeConfig.from_file(str(server.kubeconfig)))
    yield c
    c.close()


def lk_cm(name, ns, labels=None, data=None):
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import ConfigMap

    return ConfigMap(metadata=ObjectMeta(name=name, namespace=ns, labels=labels), data=data or {"k": "v"})


def test_lightkube_configmap_crud_and_patch_types(lk, ns):
    from lightkube import ApiError
    from lightkube.resources.core_v1 import ConfigMap
    from lightkube.types import PatchType

    created = lk.create(lk_cm("a", ns, labels={"client": "lightkube"}))
    assert created.metadata.uid and created.metadata.resourceVersion and created.data == {"k": "v"}
    lk.create(lk_cm("b", ns, labels={"client": "other"}))
    with pytest.raises(ApiError) as e:
        lk.create(lk_cm("a", ns))
    assert e.value.status.code == 409 and e.value.status.reason == "AlreadyExists"

    got = lk.get(ConfigMap, "a", namespace=ns)
    assert got.data == {"k": "v"} and got.metadata.uid == created.metadata.uid

    assert [o.metadata.name for o in lk.list(ConfigMap, namespace=ns, labels={"client": "lightkube"})] == ["a"]
    assert {"a", "b", "kube-root-ca.crt"} <= {o.metadata.name for o in lk.list(ConfigMap, namespace=ns)}

    merged = lk.patch(ConfigMap, "a", {"data": {"k": "w", "m": "1"}}, namespace=ns, patch_type=PatchType.MERGE)
    assert merged.data == {"k": "w", "m": "1"}
    assert int(merged.metadata.resourceVersion) > int(created.metadata.resourceVersion)
    merged = lk.patch(ConfigMap, "a", {"data": {"m": None}}, namespace=ns, patch_type=PatchType.MERGE)
    assert merged.data == {"k": "w"}
    jsonp = lk.patch(ConfigMap, "a", [{"op": "add", "path": "/metadata/labels/extra", "value": "1"},
                                      {"op": "test", "path": "/data/k", "value": "w"},
                                      {"op": "remove", "path": "/data/k"},
                                      {"op": "add", "path": "/data/j", "value": "x"}],
                     namespace=ns, patch_type=PatchType.JSON)
    assert jsonp.data == {"j": "x"} and jsonp.metadata.labels == {"client": "lightkube", "extra": "1"}
    with pytest.raises(ApiError) as e:  # a failing "test" op leaves the object alone
        lk.patch(ConfigMap, "a", [{"op": "test", "path": "/data/j", "value": "nope"}], namespace=ns, patch_type=PatchType.JSON)
    assert e.value.status.code == 422, e.value.status
    strategic = lk.patch(ConfigMap, "a", {"data": {"s": "1"}}, namespace=ns)  # lightkube's default: strategic
    assert strategic.data == {"j": "x", "s": "1"}

    strategic.data = {"replaced": "1"}
    replaced = lk.replace(strategic)
    assert replaced.data == {"replaced": "1"}
    assert lk.get(ConfigMap, "a", namespace=ns).data == {"replaced": "1"}
    with pytest.raises(ApiError) as e:  # stale resourceVersion
        lk.replace(strategic)
    assert e.value.status.code == 409, e.value.status

    lk.delete(ConfigMap, "a", namespace=ns)
    with pytest.raises(ApiError) as e:
        lk.get(ConfigMap, "a", namespace=ns)
    assert e.value.status.code == 404 and e.value.status.reason == "NotFound"
    assert list(lk.list(ConfigMap, namespace=ns, labels={"client": "lightkube"})) == []


def test_lightkube_list_chunks(lk, server, ns):
    """chunk_size=2 over 5 objects: lightkube follows `continue` and yields each once."""
    from lightkube.resources.core_v1 import ConfigMap

    for i in range(5):
        lk.create(lk_cm(f"c-{i}", ns, labels={"chunk": "yes"}))
    assert_server_pages(server, ns, "chunk=yes", 2, 5)
    it = lk.list(ConfigMap, namespace=ns, labels={"chunk": "yes"}, chunk_size=2)
    names = [o.metadata.name for o in it]
    assert names == [f"c-{i}" for i in range(5)], names
    assert int(it.resourceVersion) > 0


def test_lightkube_watch_sees_added_and_modified(server, ns):
    from lightkube import AsyncClient, KubeConfig
    from lightkube.resources.core_v1 import ConfigMap
    from lightkube.types import PatchType

    async def main():
        client = AsyncClient(config=KubeConfig.from_file(str(server.kubeconfig)))
        try:
            listing = client.list(ConfigMap, namespace=ns)
            _ = [o async for o in listing]
            start_rv = listing.resourceVersion
            events: asyncio.Queue = asyncio.Queue()

            async def watch():
                try:
                    async for typ, obj in client.watch(ConfigMap, namespace=ns, labels={"watched": "lightkube"},
                                                       resource_version=start_rv):
                        await events.put((typ, obj.to_dict()))
                except asyncio.CancelledError:
                    raise
                except BaseException as e:  # reported by collect_events
                    await events.put(("ERROR", e))

            task = asyncio.create_task(watch())
            try:
                await asyncio.sleep(0.5)
                await client.create(lk_cm("w", ns, labels={"watched": "lightkube"}))
                modified = await client.patch(ConfigMap, "w", {"data": {"k": "changed"}}, namespace=ns,
                                              patch_type=PatchType.MERGE)
                seen = await collect_events(events, [
                    ("ADDED", "w", lambda o: o["data"] == {"k": "v"}),
                    ("MODIFIED", "w", lambda o: o["data"] == {"k": "changed"}),
                ], "lightkube watch")
                assert [s[0] for s in seen] == ["ADDED", "MODIFIED"], seen
                assert seen[-1][2] == modified.metadata.resourceVersion, seen
            finally:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        finally:
            await client.close()

    run_async(main())


def test_lightkube_deployment_strategic_patch_and_scale_subresource(lk, ns):
    from lightkube.models.autoscaling_v1 import ScaleSpec
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.apps_v1 import Deployment
    from lightkube.types import PatchType

    created = lk.create(Deployment.from_dict(deployment_dict("web", ns, replicas=1)))
    assert created.spec.replicas == 1

    # Strategic merge: containers merge by name (a new one is added, the old one keeps its image).
    patched = lk.patch(Deployment, "web", {"spec": {"template": {"spec": {"containers": [
        {"name": "sidecar", "image": "busybox:1.36"}, {"name": "c", "env": [{"name": "A", "value": "1"}]}]}}}},
        namespace=ns, patch_type=PatchType.STRATEGIC)
    containers = {c.name: c for c in patched.spec.template.spec.containers}
    assert set(containers) == {"c", "sidecar"}, containers
    assert containers["c"].image == "nginx:1.25" and [(e.name, e.value) for e in containers["c"].env] == [("A", "1")]

    scale = lk.get(Deployment.Scale, "web", namespace=ns)
    assert scale.kind == "Scale" and scale.spec.replicas == 1 and scale.metadata.name == "web"
    replaced = lk.replace(Deployment.Scale(metadata=ObjectMeta(name="web", namespace=ns), spec=ScaleSpec(replicas=3)),
                          "web", namespace=ns)
    assert replaced.spec.replicas == 3
    assert lk.get(Deployment, "web", namespace=ns).spec.replicas == 3
    patched_scale = lk.patch(Deployment.Scale, "web", {"spec": {"replicas": 4}}, namespace=ns, patch_type=PatchType.MERGE)
    assert patched_scale.spec.replicas == 4
    assert lk.get(Deployment, "web", namespace=ns).spec.replicas == 4
    assert lk.get(Deployment.Scale, "web", namespace=ns).spec.replicas == 4
    lk.delete(Deployment, "web", namespace=ns)


def test_lightkube_server_side_apply_creates_and_updates(lk, ns):
    from lightkube.resources.core_v1 import ConfigMap

    applied = lk.apply(lk_cm("ssa", ns, labels={"a": "1"}, data={"owned": "by-lk"}), field_manager="lk-test")
    assert applied.data == {"owned": "by-lk"} and applied.metadata.labels == {"a": "1"}
    managers = {(m.manager, m.operation) for m in applied.metadata.managedFields}
    assert ("lk-test", "Apply") in managers, applied.metadata.managedFields
    again = lk.apply(lk_cm("ssa", ns, labels={"a": "1"}, data={"owned": "v2", "more": "x"}), field_manager="lk-test")
    assert again.data == {"owned": "v2", "more": "x"}
    assert int(again.metadata.resourceVersion) > int(applied.metadata.resourceVersion)
    assert lk.get(ConfigMap, "ssa", namespace=ns).data == {"owned": "v2", "more": "x"}
    # Applying the same configuration again changes nothing.
    same = lk.apply(lk_cm("ssa", ns, labels={"a": "1"}, data={"owned": "v2", "more": "x"}), field_manager="lk-test")
    assert same.metadata.resourceVersion == again.metadata.resourceVersion


def test_lightkube_server_side_apply_removes_fields_the_manager_dropped(lk, ns):
    """A field only this manager applied, left out of its next apply, is removed (and no longer
    listed in the manager's managedFields)."""
    lk.apply(lk_cm("ssa", ns, data={"owned": "v1", "more": "x"}), field_manager="lk-test")
    again = lk.apply(lk_cm("ssa", ns, data={"owned": "v2"}), field_manager="lk-test")
    assert again.data == {"owned": "v2"}, again.data
    mine = [m for m in again.metadata.managedFields if m.manager == "lk-test" and m.operation == "Apply"]
    assert len(mine) == 1 and "f:more" not in json.dumps(mine[0].fieldsV1), again.metadata.managedFields


def test_lightkube_server_side_apply_conflicts_between_managers(lk, ns):
    """Another manager applying a different value for an owned field gets 409 Conflict unless it
    forces, and forcing moves the field to it."""
    from lightkube import ApiError
    from lightkube.resources.core_v1 import ConfigMap

    lk.apply(lk_cm("ssa", ns, data={"owned": "mine", "other": "1"}), field_manager="lk-test")
    with pytest.raises(ApiError) as e:
        lk.apply(lk_cm("ssa", ns, data={"owned": "theirs"}), field_manager="intruder")
    assert e.value.status.code == 409 and e.value.status.reason == "Conflict", e.value.status
    assert lk.get(ConfigMap, "ssa", namespace=ns).data == {"owned": "mine", "other": "1"}
    forced = lk.apply(lk_cm("ssa", ns, data={"owned": "theirs"}), field_manager="intruder", force=True)
    assert forced.data == {"owned": "theirs", "other": "1"}, forced.data
    fields = {m.manager: json.dumps(m.fieldsV1) for m in forced.metadata.managedFields if m.operation == "Apply"}
    assert "f:owned" in fields["intruder"] and "f:owned" not in fields["lk-test"], fields
    assert "f:other" in fields["lk-test"] and "f:other" not in fields["intruder"], fields
