"""The fair queue."""

from __future__ import annotations

from typing import Any

from stockade.syncer import context
from stockade.syncer.queue import FairQueue

CTX = context.TenantContext(
    tenant="t", runtime_class="kata", pod_security="baseline", apiserver_host="10.96.0.10", apiserver_port=6443,
    default_requests={"cpu": "100m", "memory": "128Mi"}, default_limits={"cpu": "1", "memory": "512Mi"},
    virtual_node="stockade-t",
)  # fmt: skip


def pod(spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1", **meta},
        "spec": spec or {"containers": [{"name": "c", "image": "i"}]},
    }  # fmt: skip


async def test_fair_queue_serves_tenants_round_robin() -> None:
    queue = FairQueue()
    for i in range(100):
        await queue.put("greedy", i)
    await queue.put("small", "only")
    await queue.put("greedy", 5)  # already waiting: not queued twice
    first_two = [await queue.get(), await queue.get()]
    assert ("small", "only") in first_two
    assert queue.depth("greedy") == 99
