"""Per-tenant work queues served fairly.

Each tenant has a FIFO of keys; workers take from the tenants in round-robin order, so a tenant
that queued 5,000 pods waits its turn like everyone else and a tenant's single pod is handled
after at most one item of each other busy tenant. A key already waiting is not queued twice, and
a key being handled is never handed to a second worker: queued meanwhile, it waits until the first
worker is `done` with it (client-go's workqueue does the same), so two workers never sync one key
at once (e.g. issue one pod's token twice).
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
        self._busy: dict[str, set[Hashable]] = {}  # being handled by a worker
        self._again: dict[str, set[Hashable]] = {}  # queued while busy: queued once done
        self._turns: deque[str] = deque()  # tenants with work, in serving order
        self._ready = asyncio.Event()  # set while some tenant has work

    def depth(self, tenant: str) -> int:
        return len(self._queues.get(tenant, ()))

    def put(self, tenant: str, key: Hashable) -> None:
        """Queue `key` for `tenant` (never blocks: callable from a watch callback, no task per event)."""
        if key in self._busy.get(tenant, ()):
            self._again.setdefault(tenant, set()).add(key)
            return
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
        """The next key, fairly; the caller must call `done` with it when handled."""
        while not self._turns:
            self._ready.clear()
            await self._ready.wait()
        tenant = self._turns.popleft()
        queue = self._queues[tenant]
        key = queue.popleft()
        self._waiting[tenant].discard(key)
        self._busy.setdefault(tenant, set()).add(key)
        if queue:
            self._turns.append(tenant)  # back of the line
        metrics.QUEUE_DEPTH.labels(tenant).set(len(queue))
        return tenant, key

    def done(self, tenant: str, key: Hashable) -> None:
        """`key` is handled; if it was queued meanwhile, it is queued now."""
        self._busy.get(tenant, set()).discard(key)
        again = self._again.get(tenant)
        if again and key in again:
            again.discard(key)
            self.put(tenant, key)

    def forget(self, tenant: str) -> None:
        """Drop a tenant's pending work (its syncer stopped)."""
        self._queues.pop(tenant, None)
        self._waiting.pop(tenant, None)
        self._busy.pop(tenant, None)
        self._again.pop(tenant, None)
        while tenant in self._turns:
            self._turns.remove(tenant)
