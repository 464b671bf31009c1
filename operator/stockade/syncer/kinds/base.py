"""The contract every synced kind meets (`Kind`), and what the engine lends each kind (`Sides`).

A kind is called with one key at a time — the tenant object's (namespace, name) — and makes the
super cluster match the tenant object, or its absence, then shows the tenant what it should see of
the super object (its status). It is level-based: it compares the two caches for that key and
repairs the difference, so a patrol (every key, periodically) and a restart (every key, once)
need nothing else. It never waits: an error goes back to the engine, which retries the key with
backoff. The generic `Kind.sync` is the mirror most kinds need (vcluster's SyncToHost / Sync /
SyncToVirtual in one level-based pass); a kind overrides its hooks, or `sync` as a whole.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from stockade import events
from stockade.kube import ApiError, KubeClient
from stockade.logs import about
from stockade.naming import ANNOTATION_UID
from stockade.syncer import metrics
from stockade.syncer.context import TenantContext
from stockade.syncer.informer import Informer
from stockade.syncer.translate import Key, scrub, super_name, tenant_key

log = logging.getLogger("stockade.syncer")

REJECTED_REASON = "StockadeRejected"
# A refusal by the super cluster is shown to the tenant once it has lasted this many attempts
# (0.5 + 1 + 2 s): one that clears by itself (a ServiceAccount not mirrored yet) stays quiet.
TELL_AFTER_FAILURES = 3
# Namespaces of the tenant's own control plane: nothing in them runs on the virtual node.
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def subset(desired: Any, current: Any) -> bool:
    """Whether everything in `desired` is also in `current` (server defaults may add more)."""
    if isinstance(desired, dict):
        return isinstance(current, dict) and all(k in current and subset(v, current[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(current, list)
            and len(desired) == len(current)
            and all(subset(d, c) for d, c in zip(desired, current, strict=True))
        )
    return bool(desired == current)


def ours(shadow: Mapping[str, Any] | None) -> bool:
    """Whether the syncer made this super object (it carries the tenant UID). Others — e.g. the
    Endpoints the super cluster's own controller keeps for a Service with a selector — are not
    ours to judge or delete."""
    return ANNOTATION_UID in ((shadow or {}).get("metadata", {}).get("annotations") or {})


def stale(shadow: Mapping[str, Any] | None, obj: Mapping[str, Any] | None) -> bool:
    """Whether `shadow` is ours and mirrors no current tenant object: the tenant object is gone, or
    the shadow belongs to an older object of the same name (another uid)."""
    if not ours(shadow):
        return False
    return obj is None or shadow["metadata"]["annotations"][ANNOTATION_UID] != obj["metadata"]["uid"]  # type: ignore[index]


class Sides:
    """One tenant's two clusters as a kind sees them: both clients, both caches of every kind, and
    the shared ways of telling the tenant something. Owned by the engine, lent to every kind."""

    def __init__(
        self,
        ctx: TenantContext,
        super_kube: KubeClient,
        tenant_kube: KubeClient,
        tenant_ca_pem: bytes,
        *,
        capacity: Mapping[str, str],
        heartbeat_seconds: float,
    ) -> None:
        self.ctx = ctx
        self.tenant = ctx.tenant
        self.super = super_kube
        self.tenant_api = tenant_kube
        self.tenant_ca_pem = tenant_ca_pem
        self.capacity = dict(capacity)
        self.heartbeat_seconds = heartbeat_seconds
        self.tenant_caches: dict[str, Informer] = {}
        self.super_caches: dict[str, Informer] = {}
        self.failures: dict[tuple[str, Key], int] = {}  # consecutive failures per (kind, key)
        self._told: dict[str, str] = {}  # tenant uid -> last warning posted
        # Every kind by name (the engine fills it), so one kind can sync what it depends on first.
        self.kinds: dict[str, Kind] = {}

    # -- the caches ------------------------------------------------------------------------------

    def in_tenant(self, kind: str, key: Key) -> dict[str, Any] | None:
        return self.tenant_caches[kind].get(key)

    def shadow(self, kind: str, key: Key) -> dict[str, Any] | None:
        """The super object mirroring tenant object `key` of `kind`, if any."""
        return self.super_caches[kind].get((self.ctx.namespace, super_name(*key)))

    def super_objects(self, kind: str) -> Iterator[tuple[Key, dict[str, Any]]]:
        return iter(list(self.super_caches[kind].cache.items()))

    async def first(self, kind: str, key: Key) -> None:
        """Mirror a dependency now if the tenant has it and the super side does not yet (a pod's
        ServiceAccount, ConfigMaps and Secrets): the dependant is then created after it instead of
        being refused (403 "serviceaccount not found") and retried with backoff."""
        if kind in self.kinds and self.in_tenant(kind, key) is not None and self.shadow(kind, key) is None:
            await self.kinds[kind].sync(key)

    def lasting(self, kind: str, key: Key) -> bool:
        """Whether (kind, key) has failed often enough in a row that the tenant should hear of it."""
        return self.failures.get((kind, key), 0) >= TELL_AFTER_FAILURES

    # -- writing the super side ------------------------------------------------------------------

    async def delete_super(self, kind: str, shadow: Mapping[str, Any], grace: int | None = None) -> None:
        meta = shadow["metadata"]
        if meta.get("deletionTimestamp"):
            return
        api_version = self.kinds[kind].api_version if kind in self.kinds else "v1"
        await self.super.delete(
            api_version, kind, meta["name"], self.ctx.namespace, uid=meta["uid"], grace_seconds=grace
        )
        metrics.SYNCED.labels(self.tenant, kind, "down").inc()

    # -- what the tenant is shown ----------------------------------------------------------------

    def _tenant_name_of(self, name: str) -> str | None:
        """The tenant name of a synced object, from its super name (for messages)."""
        for informer in self.super_caches.values():
            obj = informer.get((self.ctx.namespace, name))
            if obj is not None and (key := tenant_key(obj)):
                return key[1]
        return None

    def scrub(self, text: str, tenant_namespace: str, shadow: Mapping[str, Any] | None = None) -> str:
        hidden = {self.ctx.namespace: tenant_namespace}
        if shadow:
            if node := shadow.get("spec", {}).get("nodeName"):
                hidden[node] = self.ctx.virtual_node
            for ip in (shadow.get("status") or {}).get("hostIPs") or []:
                hidden[ip.get("ip", "")] = self.ctx.virtual_node_ip
        return scrub(text, self._tenant_name_of, hidden)

    def refusal_message(self, error: ApiError, tenant_namespace: str) -> str:
        message = error.body.get("message", "") if isinstance(error.body, dict) else str(error.body)[:300]
        return self.scrub(str(message), tenant_namespace)

    async def tell_once(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        """A Warning Event on the tenant object, not repeated while the message stays the same."""
        uid = obj["metadata"]["uid"]
        if self._told.get(uid) == message:
            return
        await self.tenant_event(obj, "Warning", reason, message)
        self._told[uid] = message

    def settled(self, uid: str) -> None:
        """The object synced (or is gone): a later refusal is news again."""
        self._told.pop(uid, None)

    async def tenant_event(self, obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        involved = events.reference({"apiVersion": "v1", "kind": "Pod", **obj})
        namespace = obj["metadata"]["namespace"]
        event = events.core_event(involved, event_type, reason, message, "stockade-syncer", namespace=namespace)
        try:
            await self.tenant_api.create(event)
        except ApiError as error:
            log.warning("tenant=%s: cannot post event: %s", self.tenant, error, extra=about(self.tenant, "Event"))


class Kind:
    """One synced kind. Subclasses set `kind` and `translate`, and override the hooks they need."""

    kind: ClassVar[str]
    api_version: ClassVar[str] = "v1"
    # Watch the tenant side for this kind (its objects are mirrored down).
    tenant_watched: ClassVar[bool] = True
    # The super side is watched only for objects the syncer made (label selector), if True.
    super_selected: ClassVar[bool] = True
    # The patrol re-queues every key of this kind periodically.
    patrolled: ClassVar[bool] = True

    def __init__(self, sides: Sides) -> None:
        self.sides = sides

    # -- hooks -----------------------------------------------------------------------------------

    def key_of_super(self, event: str, obj: Mapping[str, Any]) -> Key | None:
        """The key a change of super object `obj` is queued under (None: not ours)."""
        return tenant_key(obj)

    def mirrored(self, obj: Mapping[str, Any]) -> bool:
        """Whether this tenant object has a super counterpart at all."""
        return obj["metadata"].get("namespace") not in SYSTEM_NAMESPACES

    def refusal(self, obj: Mapping[str, Any]) -> str | None:
        """Why this tenant object may not be mirrored, naming the field; None if it may."""
        return None

    def translate(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def replaced(self, desired: Mapping[str, Any], shadow: Mapping[str, Any]) -> bool:
        """Whether the shadow differs from `desired` in a field that cannot change: it is deleted,
        and the next pass creates it anew."""
        return False

    async def cleanup(self, key: Key, obj: Mapping[str, Any] | None) -> None:
        """Runs first on every pass: tenant-side records of this kind that outlive their object."""

    async def up(self, obj: Mapping[str, Any], shadow: Mapping[str, Any]) -> None:
        """What the tenant is shown of the super object (its status); both exist."""

    # -- the mirror ------------------------------------------------------------------------------

    async def sync(self, key: Key) -> None:
        s = self.sides
        obj = s.in_tenant(self.kind, key)
        shadow = s.shadow(self.kind, key)
        await self.cleanup(key, obj)
        deleting = obj is not None and bool(obj["metadata"].get("deletionTimestamp"))
        # Only a shadow the syncer made is ever deleted (`ours`).
        own = shadow if ours(shadow) else None
        if own is not None and (stale(own, obj) or deleting):
            await s.delete_super(self.kind, own)  # SyncToVirtual: the tenant object is gone
            return
        if obj is None or deleting:
            return
        if not self.mirrored(obj):
            if own is not None:
                await s.delete_super(self.kind, own)
            return
        if refusal := self.refusal(obj):
            if own is not None:
                await s.delete_super(self.kind, own)
            metrics.REFUSED.labels(s.tenant, self.kind).inc()
            await s.tell_once(obj, REJECTED_REASON, f"not synced to the super cluster: {refusal}")
            return
        desired = self.translate(obj)
        if own is not None and self.replaced(desired, own):
            await s.delete_super(self.kind, own)
            return
        if shadow is None or not subset({k: v for k, v in desired.items() if k not in ("apiVersion", "kind")}, shadow):
            try:
                await s.super.apply(desired)  # SyncToHost, or Sync when the shadow drifted
            except ApiError as error:
                if error.status in (400, 403, 422) and s.lasting(self.kind, key):
                    message = s.refusal_message(error, key[0])
                    await s.tell_once(obj, REJECTED_REASON, f"the super cluster refused it: {message}")
                raise
            metrics.SYNCED.labels(s.tenant, self.kind, "down").inc()
        s.settled(obj["metadata"]["uid"])
        if shadow is not None:
            await self.up(obj, shadow)
