"""The syncer's engine: informers on both sides, a fair queue, workers, retries and health.

It knows no kind: each kind in `stockade.syncer.kinds.KINDS` says which sides it is watched on and
syncs one key at a time (see `kinds.base`). A change on either side queues the tenant object's key;
a worker calls the kind's `sync(key)`. A worker never waits: a key whose tenant has not listed yet,
or whose sync failed, is queued again after a per-key backoff (client-go's rate-limited workqueue),
so one tenant whose API server never answers costs the others nothing.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from stockade import naming
from stockade.kube import ApiError, KubeClient
from stockade.logs import about
from stockade.syncer import metrics
from stockade.syncer.context import TenantContext
from stockade.syncer.informer import Informer
from stockade.syncer.kinds import KINDS, LOOPS, Kind, Sides
from stockade.syncer.queue import FairQueue
from stockade.syncer.translate import Key

log = logging.getLogger("stockade.syncer")

# Per-key retry backoff: a key that keeps failing (a refusal by the super cluster, an API server
# away) is retried after 0.5 s, 1 s, 2 s … up to 5 minutes, without a worker waiting for it.
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 300.0
# A key queued before its tenant's informers have listed is looked at again after 0.5 s, 1 s … 5 s.
NOT_SYNCED_MAX_SECONDS = 5.0

# The garbage collector sees only what was made in the last 10 s (see `collect_garbage`); once an
# hour, everything.
GC_FREEZE_SECONDS = 10.0
GC_FULL_SECONDS = 3600.0

Item = tuple[str, Key]  # (kind, tenant key)


@dataclass
class Health:
    ok: bool = True
    message: str = ""


class TenantSyncer:
    def __init__(
        self,
        ctx: TenantContext,
        super_kube: KubeClient,
        tenant_kube: KubeClient,
        tenant_ca_pem: bytes,
        queue: FairQueue,
        *,
        capacity: Mapping[str, str],
        patrol_seconds: float = 60.0,
        heartbeat_seconds: float = 10.0,
        on_health: Callable[[bool, str], None] = lambda ok, message: None,
    ):
        self.ctx = ctx
        self.tenant = ctx.tenant
        self.super = super_kube
        self.tenant_api = tenant_kube
        self.queue = queue
        self.patrol_seconds = patrol_seconds
        self.health = Health()
        self._on_health = on_health
        self.sides = Sides(
            ctx, super_kube, tenant_kube, tenant_ca_pem, capacity=capacity, heartbeat_seconds=heartbeat_seconds
        )
        self.kinds: dict[str, Kind] = {cls.kind: cls(self.sides) for cls in KINDS}
        self.sides.kinds = self.kinds
        selector = f"{naming.LABEL_TENANT}={ctx.tenant},{naming.LABEL_SYNCED}=true"
        for name, kind in self.kinds.items():
            if kind.tenant_watched:
                self.sides.tenant_caches[name] = Informer(
                    tenant_kube, kind.api_version, name, tenant=self.tenant, side="tenant",
                    on_change=self._tenant_changed(name), on_health=self._health,
                )  # fmt: skip
            self.sides.super_caches[name] = Informer(
                super_kube, kind.api_version, name, tenant=self.tenant, side="super", namespace=ctx.namespace,
                label_selector=selector if kind.super_selected else None, on_change=self._super_changed(kind),
            )  # fmt: skip
        self.loops = [cls(self.sides) for cls in LOOPS]
        self._waits: dict[Item, int] = {}  # times an item found its tenant not listed yet
        self._retries: dict[Item, asyncio.TimerHandle] = {}

    @property
    def informers(self) -> list[Informer]:
        return [*self.sides.tenant_caches.values(), *self.sides.super_caches.values()]

    # -- health ----------------------------------------------------------------------------------

    def _health(self, ok: bool, message: str) -> None:
        if ok == self.health.ok and message == self.health.message:
            return
        if ok and not all(i.synced.is_set() for i in self.sides.tenant_caches.values()):
            return
        self.health = Health(ok, message)
        self._on_health(ok, message)

    # -- change notifications → queue ------------------------------------------------------------

    def _enqueue(self, kind: str, key: Key) -> None:
        self.queue.put(self.tenant, (kind, key))

    def _retry_later(self, item: Item, *, failed: bool = True) -> float:
        """Queue `item` again after its backoff; a worker never sleeps on it."""
        counts, cap = (self.sides.failures, RETRY_MAX_SECONDS) if failed else (self._waits, NOT_SYNCED_MAX_SECONDS)
        times = counts.get(item, 0)
        counts[item] = times + 1
        delay = min(RETRY_FIRST_SECONDS * 2**times, cap)
        if item not in self._retries:

            def due() -> None:
                self._retries.pop(item, None)
                self._enqueue(*item)

            self._retries[item] = asyncio.get_running_loop().call_later(delay, due)
        return float(delay)

    def _tenant_changed(self, kind: str) -> Callable[[str, Key, dict[str, Any]], None]:
        def changed(event: str, key: Key, obj: dict[str, Any]) -> None:
            if event == "DELETED":  # what it was told is forgotten with it
                self.sides.settled(obj.get("metadata", {}).get("uid", ""))
            self._enqueue(kind, key)

        return changed

    def _super_changed(self, kind: Kind) -> Callable[[str, Key, dict[str, Any]], None]:
        def changed(event: str, key: Key, obj: dict[str, Any]) -> None:
            if (queued := kind.key_of_super(event, obj)) is not None:
                self._enqueue(kind.kind, queued)

        return changed

    # -- running ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Runs until cancelled."""
        tasks = [asyncio.create_task(i.run(), name=f"{self.tenant}-{i.side}-{i.kind}") for i in self.informers]
        tasks += [asyncio.create_task(loop.run(), name=f"{self.tenant}-{type(loop).__name__}") for loop in self.loops]
        tasks.append(asyncio.create_task(self._patrol(), name=f"{self.tenant}-patrol"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for handle in self._retries.values():
                handle.cancel()
            self._retries.clear()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.queue.forget(self.tenant)

    async def wait_synced(self, timeout: float | None = 60) -> None:
        await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in self.informers)), timeout)

    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers)

    async def _patrol(self) -> None:
        """Every key of both sides, periodically: repairs drift and removes orphans."""
        await asyncio.gather(*(i.synced.wait() for i in self.informers))
        while True:
            for name, kind in self.kinds.items():
                if not kind.patrolled:
                    continue
                keys = set(self.sides.tenant_caches[name].cache) if kind.tenant_watched else set()
                for obj in self.sides.super_caches[name].cache.values():
                    if (key := kind.key_of_super("ADDED", obj)) is not None:
                        keys.add(key)
                for key in keys:
                    self.queue.put(self.tenant, (name, key), patrol=True)
                await asyncio.sleep(0)  # let workers in between kinds
            await asyncio.sleep(self.patrol_seconds)

    async def handle(self, item: Item) -> None:
        kind, key = item
        # Judging needs both sides' full picture: before the super informers have listed, a tenant
        # pod would look like it lost its super pod (and be deleted) right after a restart.
        if not self.synced():
            self._retry_later(item, failed=False)
            return
        self._waits.pop(item, None)
        started = time.monotonic()
        try:
            await self.kinds[kind].sync(key)
        except ApiError as error:
            if error.status == 404 or error.status == 409:
                return  # gone or changed meanwhile: the next event brings the key back
            # Every other answer is retried with backoff: a refusal (403 quota, 422) may stop once
            # the tenant frees quota or changes the object, and the tenant has been told why.
            self._failed(item, error)
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            self._failed(item, error)  # the API server is unreachable or restarting
        else:
            self.sides.failures.pop(item, None)
        finally:
            metrics.SYNC_SECONDS.labels(self.tenant, kind).observe(time.monotonic() - started)

    def _failed(self, item: Item, error: Exception) -> None:
        kind, key = item
        metrics.ERRORS.labels(self.tenant, kind).inc()
        delay = self._retry_later(item)
        log.warning(
            "tenant=%s kind=%s key=%s/%s: %s (retry in %.1fs)", self.tenant, kind, *key, error, delay,
            extra=about(self.tenant, kind, *key),
        )  # fmt: skip


def collect_garbage(*, full: bool) -> None:
    """Python's full collections walk every tracked object, and the caches hold hundreds of
    thousands (one paused the syncer 0.43 s in the benchmark): what survives a collection of the
    objects made since the last one is frozen out of the collector's sight. Frozen objects are
    still freed when unreferenced (the cached objects hold no cycles); `full` unfreezes them first,
    so no cycle among them is kept for ever."""
    if full:
        gc.unfreeze()
    gc.collect()
    gc.freeze()


class SyncerPool:
    """Workers serving every tenant's queue fairly."""

    def __init__(self, workers: int = 8, *, gc_seconds: float = GC_FREEZE_SECONDS):
        self.queue = FairQueue()
        self.syncers: dict[str, TenantSyncer] = {}
        self.workers = workers
        self.gc_seconds = gc_seconds

    async def run(self) -> None:
        await asyncio.gather(self._collect(), *(self._work() for _ in range(self.workers)))

    async def _collect(self) -> None:
        full_every = max(1, round(GC_FULL_SECONDS / self.gc_seconds))
        for round_ in itertools.count(1):
            await asyncio.sleep(self.gc_seconds)
            collect_garbage(full=round_ % full_every == 0)

    async def _work(self) -> None:
        while True:
            tenant, item = await self.queue.get()
            syncer = self.syncers.get(tenant)
            try:
                if syncer is not None:
                    await syncer.handle(item)  # type: ignore[arg-type]
            except Exception:
                # A bug in one handler must not take a worker (and with it every tenant) down.
                log.exception("tenant=%s: unexpected error handling %s", tenant, item, extra=about(tenant))
            finally:
                self.queue.done(tenant, item)
