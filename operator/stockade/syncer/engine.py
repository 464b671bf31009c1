"""The syncer's engine: informers on both sides, a fair queue, workers, retries and health.

It knows no kind: each kind in `stockade.syncer.kinds.KINDS` says which sides it is watched on and
syncs one key at a time (see `kinds.base`). A change on either side queues the tenant object's key;
a worker calls the kind's `sync(key)`. A worker never waits: a key whose tenant has not listed yet,
or whose sync failed, is queued again after a per-key backoff (client-go's rate-limited workqueue),
so one tenant whose API server never answers costs the others nothing. On the super side, one
informer per kind serves every tenant of the pool (the syncer's own objects, by label, in every
workloads namespace): each tenant reads it through a view of its namespace, and its changes are
dispatched by namespace — one watch per kind, not one per tenant per kind.
"""

from __future__ import annotations

import asyncio
import functools
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
from stockade.syncer.informer import Cache, Informer, NamespaceView
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
        pool: SyncerPool,
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
        self.queue = pool.queue
        self.patrol_seconds = patrol_seconds
        self.health = Health()
        self._on_health = on_health
        self.sides = Sides(
            ctx, super_kube, tenant_kube, tenant_ca_pem, capacity=capacity, heartbeat_seconds=heartbeat_seconds
        )
        self.kinds: dict[str, Kind] = {cls.kind: cls(self.sides) for cls in KINDS}
        self.sides.kinds = self.kinds
        self.own_informers: list[Informer] = []  # run by this syncer; shared ones are run by the pool
        for name, kind in self.kinds.items():
            if kind.tenant_watched:
                self.sides.tenant_caches[name] = Informer(
                    tenant_kube, "v1", name, tenant=self.tenant, side="tenant",
                    on_change=self._tenant_changed(name), on_health=self._health,
                )  # fmt: skip
                self.own_informers.append(self.sides.tenant_caches[name])
            if kind.super_selected:
                self.sides.super_caches[name] = NamespaceView(pool.shared(name, super_kube), ctx.namespace)
            else:  # written by the super cluster's own components, unlabelled: this namespace only
                informer = Informer(
                    super_kube, "v1", name, tenant=self.tenant, side="super", namespace=ctx.namespace,
                    on_change=functools.partial(self.super_changed, name),
                )  # fmt: skip
                self.sides.super_caches[name] = informer
                self.own_informers.append(informer)
        self.loops = [cls(self.sides) for cls in LOOPS]
        self._waits: dict[Item, int] = {}  # times an item found its tenant not listed yet
        self._retries: dict[Item, asyncio.TimerHandle] = {}

    @property
    def caches(self) -> list[Cache]:
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

    def super_changed(self, kind: str, event: str, key: Key, obj: dict[str, Any]) -> None:
        """A super object of `kind` in this tenant's namespace changed (from its own informer, or
        dispatched by the pool from a shared one)."""
        if (queued := self.kinds[kind].key_of_super(event, obj)) is not None:
            self._enqueue(kind, queued)

    # -- running ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Runs until cancelled."""
        # What a shared informer listed before this tenant joined is news to it: as an initial list
        # would, every super object of its namespace queues its key (later changes are dispatched).
        for name, cache in self.sides.super_caches.items():
            if isinstance(cache, NamespaceView):
                for key, obj in list(cache.cache.items()):
                    self.super_changed(name, "ADDED", key, obj)
        tasks = [asyncio.create_task(i.run(), name=f"{self.tenant}-{i.side}-{i.kind}") for i in self.own_informers]
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
        await asyncio.wait_for(asyncio.gather(*(c.synced.wait() for c in self.caches)), timeout)

    def synced(self) -> bool:
        return all(c.synced.is_set() for c in self.caches)

    async def _patrol(self) -> None:
        """Every key of both sides, periodically: repairs drift and removes orphans."""
        await asyncio.gather(*(c.synced.wait() for c in self.caches))
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


class SyncerPool:
    """Workers serving every tenant's queue fairly, and the super-side informers all tenants share.

    Every tenant of a pool syncs into the same super cluster through the same client (the first
    one a tenant brings): one watch per kind for all tenants, not one per tenant per kind."""

    def __init__(self, workers: int = 8):
        self.queue = FairQueue()
        self.syncers: dict[str, TenantSyncer] = {}
        self.workers = workers
        self._by_namespace: dict[str, TenantSyncer] = {}
        self._shared: dict[str, Informer] = {}
        self._shared_tasks: list[asyncio.Task[None]] = []

    def add(self, syncer: TenantSyncer) -> None:
        self.syncers[syncer.tenant] = syncer
        self._by_namespace[syncer.ctx.namespace] = syncer

    def remove(self, tenant: str) -> TenantSyncer | None:
        syncer = self.syncers.pop(tenant, None)
        if syncer is not None:
            self._by_namespace.pop(syncer.ctx.namespace, None)
        return syncer

    def shared(self, kind: str, super_kube: KubeClient) -> Informer:
        """The super-side informer of `kind` for every tenant: the syncer's own objects (by label),
        in every namespace; started on first use, stopped with the pool's `run`."""
        if kind not in self._shared:
            informer = Informer(
                super_kube, "v1", kind, tenant="*", side="super", label_selector=f"{naming.LABEL_SYNCED}=true",
                on_change=lambda event, key, obj: self._dispatch(kind, event, key, obj),
            )  # fmt: skip
            self._shared[kind] = informer
            self._shared_tasks.append(asyncio.create_task(informer.run(), name=f"shared-super-{kind}"))
        return self._shared[kind]

    def _dispatch(self, kind: str, event: str, key: Key, obj: dict[str, Any]) -> None:
        if (syncer := self._by_namespace.get(key[0])) is not None:  # no syncer: nothing to tell
            syncer.super_changed(kind, event, key, obj)

    async def run(self) -> None:
        try:
            await asyncio.gather(*(self._work() for _ in range(self.workers)))
        finally:
            for task in self._shared_tasks:
                task.cancel()
            await asyncio.gather(*self._shared_tasks, return_exceptions=True)
            self._shared_tasks.clear()
            self._shared.clear()

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
