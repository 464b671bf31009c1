"""The pool's dispatch of shared super-side informers to tenants by namespace (pure bookkeeping)."""

from __future__ import annotations

from typing import Any, cast

from stockade.kube import KubeClient
from stockade.syncer.engine import SyncerPool, TenantSyncer


class Recorder:
    def __init__(self, tenant: str):
        self.tenant = tenant
        self.ctx = type("Ctx", (), {"namespace": f"stockade-{tenant}-workloads"})()
        self.changes: list[tuple[str, str, tuple[str, str]]] = []

    def super_changed(self, kind: str, event: str, key: tuple[str, str], obj: dict[str, Any]) -> None:
        self.changes.append((kind, event, key))


async def test_one_shared_informer_per_kind_dispatched_by_namespace() -> None:
    pool = SyncerPool(workers=1)
    a, b = Recorder("a"), Recorder("b")
    pool.add(cast(TenantSyncer, a))
    pool.add(cast(TenantSyncer, b))
    kube = cast(KubeClient, object())
    pods = pool.shared("Pod", kube)
    assert pool.shared("Pod", kube) is pods and pool.shared("Secret", kube) is not pods  # one per kind
    pods.on_change("ADDED", ("stockade-b-workloads", "x"), {})
    pods.on_change("ADDED", ("stockade-gone-workloads", "y"), {})  # no syncer for it: dropped
    assert (a.changes, b.changes) == ([], [("Pod", "ADDED", ("stockade-b-workloads", "x"))])
    assert pool.remove("b") is b and pool.remove("b") is None
    pods.on_change("MODIFIED", ("stockade-b-workloads", "x"), {})
    assert b.changes == [("Pod", "ADDED", ("stockade-b-workloads", "x"))]  # removed: told nothing more
    for task in pool._shared_tasks:  # their informers would list a cluster: not here
        task.cancel()
