"""Per-tenant work queues served fairly.

Each tenant has a FIFO of keys; workers take from the tenants in round-robin order, so a tenant
that queued 5,000 pods waits its turn like everyone else and a tenant's single pod is handled
after at most one item of each other busy tenant. A key already waiting is not queued twice.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable

from stockade.syncer import metrics


class FairQueue:
    def __init__(self) -> None:
        self._queues: dict[str, deque[Hashable]] = {}
        self._waiting: dict[str, set[Hashable]] = {}
        self._turns: deque[str] = deque()  # tenants with work, in serving order
        self._ready = asyncio.Event()  # set while some tenant has work

    def depth(self, tenant: str) -> int:
        return len(self._queues.get(tenant, ()))

    def put(self, tenant: str, key: Hashable) -> None:
        """Queue `key` for `tenant` (never blocks: callable from a watch callback, no task per event)."""
        waiting = self._waiting.setdefault(tenant, set())
        if key in waiting:
            return
        waiting.add(key)
        queue = self._queues.setdefault(tenant, deque())
        if not queue:
            self._turns.append(tenant)
        queue.append(key)
        metrics.QUEUE_DEPTH.labels(tenant).set(len(queue))
        self._ready.set()

    async def get(self) -> tuple[str, Hashable]:
        while not self._turns:
            self._ready.clear()
            await self._ready.wait()
        tenant = self._turns.popleft()
        queue = self._queues[tenant]
        key = queue.popleft()
        self._waiting[tenant].discard(key)
        if queue:
            self._turns.append(tenant)  # back of the line
        metrics.QUEUE_DEPTH.labels(tenant).set(len(queue))
        return tenant, key

    def forget(self, tenant: str) -> None:
        """Drop a tenant's pending work (its syncer stopped)."""
        self._queues.pop(tenant, None)
        self._waiting.pop(tenant, None)
        while tenant in self._turns:
            self._turns.remove(tenant)
