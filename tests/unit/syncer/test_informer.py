"""The informer's namespace index and one tenant's view of a shared informer (pure bookkeeping)."""

from __future__ import annotations

from typing import Any, cast

from stockade.kube import KubeClient
from stockade.syncer.informer import Informer, NamespaceView


def obj(namespace: str, name: str, version: str = "1") -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name, "resourceVersion": version}}


def informer(seen: list[tuple[str, tuple[str, str]]]) -> Informer:
    return Informer(cast(KubeClient, None), "v1", "Pod", tenant="*", side="super",
                    on_change=lambda event, key, o: seen.append((event, key)))  # fmt: skip


def test_a_view_sees_its_namespace_only_and_follows_changes() -> None:
    shared = informer([])
    mine, theirs = NamespaceView(shared, "stockade-a-workloads"), NamespaceView(shared, "stockade-b-workloads")
    shared._put(("stockade-a-workloads", "p1"), obj("stockade-a-workloads", "p1"))
    shared._put(("stockade-b-workloads", "p1"), obj("stockade-b-workloads", "p1"))
    assert list(mine.cache) == [("stockade-a-workloads", "p1")]
    assert mine.get(("stockade-a-workloads", "p1")) is not None
    assert mine.get(("stockade-b-workloads", "p1")) is None  # another tenant's, by any key
    assert theirs.get(("stockade-b-workloads", "p1")) is not None
    shared._drop(("stockade-a-workloads", "p1"))
    assert mine.cache == {} and "stockade-a-workloads" not in shared.by_namespace
    assert mine.synced is shared.synced and mine.kind == "Pod"


async def test_a_relist_keeps_the_index_and_reports_what_changed() -> None:
    seen: list[tuple[str, tuple[str, str]]] = []
    shared = informer(seen)
    shared._put(("a", "gone"), obj("a", "gone"))
    shared._put(("a", "same"), obj("a", "same"))

    class Lister:
        async def list_with_version(self, *args: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], str]:
            return [obj("a", "same"), obj("b", "new")], "42"

    shared.kube = cast(KubeClient, Lister())
    await shared._relist()
    assert sorted(seen) == [("ADDED", ("b", "new")), ("DELETED", ("a", "gone"))]  # "same" unchanged: quiet
    assert {ns: sorted(objs) for ns, objs in shared.by_namespace.items()} == {"a": [("a", "same")], "b": [("b", "new")]}
    assert shared.synced.is_set() and shared.resource_version == "42"
