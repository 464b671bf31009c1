"""Per-tenant work queues served fairly.

Each tenant has a FIFO of keys; workers take from the tenants in round-robin order, so a tenant
that queued 5,000 pods waits its turn like everyone else and a tenant's single pod is handled
after at most one item of each other busy tenant. A key already waiting is not queued twice, and
a key being handled is never handed to a second worker: queued meanwhile, it waits until the first
worker is `done` with it (client-go's workqueue does the same), so two workers never sync one key
at once (e.g. issue one pod's token twice).

Two lanes: changes (watch events, retries) and the patrol's periodic re-checks. The patrol's keys
are served only while no change waits, so a patrol of every tenant's every object never delays a
new pod (controller-runtime's priority queue does the same for resyncs); a key waiting in the
patrol lane that changes moves to the changes lane.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable

from stockade.syncer import metrics

CHANGES, PATROL = "changes", "patrol"


class _Lane:
    """Per-tenant FIFOs served round-robin. Entries may be stale; the queue checks each it pops."""

    def __init__(self) -> None:
        self.queues: dict[str, deque[Hashable]] = {}
        self.turns: deque[str] = deque()  # tenants with entries, in serving order

    def push(self, tenant: str, key: Hashable) -> None:
        queue = self.queues.setdefault(tenant, deque())
        if not queue:
            self.turns.append(tenant)
        queue.append(key)

    def pop(self) -> tuple[str, Hashable] | None:
        if not self.turns:
            return None
        tenant = self.turns.popleft()
        queue = self.queues[tenant]
        key = queue.popleft()
        if queue:
            self.turns.append(tenant)  # back of the line
        else:
            del self.queues[tenant]
        return tenant, key

    def forget(self, tenant: str) -> None:
        self.queues.pop(tenant, None)
        while tenant in self.turns:
            self.turns.remove(tenant)


class FairQueue:
    def __init__(self) -> None:
        self._lanes = {CHANGES: _Lane(), PATROL: _Lane()}
        self._waiting: dict[str, dict[Hashable, str]] = {}  # tenant -> key -> the lane it waits in
        self._busy: dict[str, set[Hashable]] = {}  # being handled by a worker
        self._again: dict[str, dict[Hashable, str]] = {}  # queued while busy: queued once done
        self._ready = asyncio.Event()  # set while some lane may have work

    def depth(self, tenant: str) -> int:
        return len(self._waiting.get(tenant, ()))

    def put(self, tenant: str, key: Hashable, *, patrol: bool = False) -> None:
        """Queue `key` for `tenant` (never blocks: callable from a watch callback, no task per event)."""
        lane = PATROL if patrol else CHANGES
        if key in self._busy.get(tenant, ()):
            again = self._again.setdefault(tenant, {})
            again[key] = CHANGES if CHANGES in (lane, again.get(key)) else PATROL
            return
        waiting = self._waiting.setdefault(tenant, {})
        if waiting.get(key) == CHANGES or waiting.get(key) == lane:
            return  # waiting already, in this lane or a faster one
        waiting[key] = lane  # new, or promoted from the patrol lane (its old entry is skipped)
        self._lanes[lane].push(tenant, key)
        metrics.QUEUE_DEPTH.labels(tenant).set(len(waiting))
        self._ready.set()

    async def get(self) -> tuple[str, Hashable]:
        """The next key, fairly, changes first; the caller must call `done` with it when handled."""
        while True:
            for name, lane in self._lanes.items():
                while (entry := lane.pop()) is not None:
                    tenant, key = entry
                    waiting = self._waiting.get(tenant, {})
                    if waiting.get(key) != name:
                        continue  # stale: promoted to the changes lane, or its tenant forgotten
                    del waiting[key]
                    self._busy.setdefault(tenant, set()).add(key)
                    metrics.QUEUE_DEPTH.labels(tenant).set(len(waiting))
                    return tenant, key
            self._ready.clear()
            await self._ready.wait()

    def done(self, tenant: str, key: Hashable) -> None:
        """`key` is handled; if it was queued meanwhile, it is queued now."""
        self._busy.get(tenant, set()).discard(key)
        lane = self._again.get(tenant, {}).pop(key, None)
        if lane is not None:
            self.put(tenant, key, patrol=lane == PATROL)

    def forget(self, tenant: str) -> None:
        """Drop a tenant's pending work (its syncer stopped)."""
        for lane in self._lanes.values():
            lane.forget(tenant)
        self._waiting.pop(tenant, None)
        self._busy.pop(tenant, None)
        self._again.pop(tenant, None)
