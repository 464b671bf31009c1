"""List + watch of one kind on one API server, kept in a local cache.

Watches are short (the server ends them after `watch_seconds`, and they resume from the last
resourceVersion), so a connection that stays silent for `read_timeout` is a stall, not a quiet
resource. Bookmarks keep the resourceVersion fresh; `410 Gone` (the version was compacted away) leads to a
re-list; a connection silent for longer than the read timeout is dropped and re-established;
failures back off exponentially up to 30 s and are reported, so a tenant whose API server is down
degrades alone and recovers by itself.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from stockade.kube import ApiError, KubeClient
from stockade.logs import about
from stockade.syncer import metrics
from stockade.syncer.translate import Key, key_of

log = logging.getLogger("stockade.syncer.informer")
MAX_BACKOFF = 30.0
DELETIONS_REMEMBERED = 4096


class GoneError(Exception):
    """The watch's resourceVersion is too old (HTTP 410): list again."""


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop what the syncer never reads (managedFields are often half an object's size)."""
    obj.get("metadata", {}).pop("managedFields", None)
    return obj


def _version(obj: dict[str, Any]) -> int:
    """An object's resourceVersion as a number (etcd's revision), to tell which of two is newer."""
    version = str(obj.get("metadata", {}).get("resourceVersion", ""))
    return int(version) if version.isdigit() else -1


class Informer:
    def __init__(
        self,
        kube: KubeClient,
        api_version: str,
        kind: str,
        *,
        tenant: str,
        side: str,
        on_change: Callable[[str, Key, dict[str, Any]], None],
        on_health: Callable[[bool, str], None] = lambda ok, message: None,
        namespace: str | None = None,
        label_selector: str | None = None,
        read_timeout: float = 90.0,
        watch_seconds: int = 60,
    ):
        self.kube = kube
        self.api_version = api_version
        self.kind = kind
        self.tenant = tenant
        self.side = side  # "tenant" or "super", for logs and metrics
        self.on_change = on_change
        self.on_health = on_health
        self.namespace = namespace
        self.label_selector = label_selector
        self.read_timeout = read_timeout
        self.watch_seconds = watch_seconds
        self.cache: dict[Key, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self.resource_version = ""
        # The latest deletions watched, with their versions (bounded), so `wrote` never caches an
        # object whose deletion the watch delivered before the write's answer came back.
        self._deleted: collections.OrderedDict[Key, int] = collections.OrderedDict()

    def get(self, key: Key) -> dict[str, Any] | None:
        return self.cache.get(key)

    def wrote(self, obj: dict[str, Any]) -> None:
        """The object a write of ours returned: cached at once, unless the cache already holds a
        newer version (client-go's mutation cache). The next pass on the key then sees its own
        write even before the watch delivers it (no second token for a pod, no create that ends in
        409), and the watch event of exactly that version — the echo of our write — queues nothing:
        a writer calls this only with what the pass that wrote has already acted on."""
        key, version = key_of(obj), _version(obj)
        if self._deleted.get(key, -1) >= version:
            return  # its deletion was watched already: no ghost in the cache
        cached = self.cache.get(key)
        if cached is None or _version(cached) < version:
            self.cache[key] = slim(obj)

    async def _relist(self) -> None:
        items, self.resource_version = await self.kube.list_with_version(
            self.api_version, self.kind, self.namespace, label_selector=self.label_selector
        )
        for item in items:  # list responses leave kind and apiVersion out of the items
            slim(item)
            item.setdefault("kind", self.kind)
            item.setdefault("apiVersion", self.api_version)
        fresh = {key_of(item): item for item in items}
        for key in self.cache.keys() - fresh.keys():
            gone = self.cache.pop(key)
            self.on_change("DELETED", key, gone)
        for key, item in fresh.items():
            old = self.cache.get(key)
            self.cache[key] = item
            if old is None or old["metadata"].get("resourceVersion") != item["metadata"].get("resourceVersion"):
                self.on_change("ADDED" if old is None else "MODIFIED", key, item)
        self.synced.set()

    async def _watch(self) -> None:
        async for event in self.kube.watch(
            self.api_version,
            self.kind,
            self.namespace,
            resource_version=self.resource_version,
            label_selector=self.label_selector,
            timeout_seconds=self.watch_seconds,
            read_timeout=self.read_timeout,
        ):
            kind, obj = event.get("type"), slim(event.get("object") or {})
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise GoneError(obj.get("message", "410 Gone"))
                raise ApiError(int(obj.get("code", 500)), obj, "WATCH", self.kind)
            self.resource_version = obj.get("metadata", {}).get("resourceVersion", self.resource_version)
            if kind == "BOOKMARK":
                continue
            key = key_of(obj)
            if kind != "DELETED" and _version(self.cache.get(key) or {}) == _version(obj) >= 0:
                continue  # the echo of our own write (`wrote`): the pass that wrote it saw it already
            if kind == "DELETED":
                self.cache.pop(key, None)
                self._deleted[key] = _version(obj)
                self._deleted.move_to_end(key)
                if len(self._deleted) > DELETIONS_REMEMBERED:
                    self._deleted.popitem(last=False)
            else:
                self.cache[key] = obj
            self.on_change(str(kind), key, obj)

    async def run(self) -> None:
        """Runs until cancelled."""
        backoff = 0.5
        need_list = True
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                    self.on_health(True, "")
                await self._watch()  # returns when the server ends the watch: resume from resourceVersion
                backoff = 0.5
                self.on_health(True, "")
            except GoneError:
                log.info(
                    "%s %s %s: resourceVersion compacted away (410), listing again",
                    self.tenant, self.side, self.kind, extra=about(self.tenant, self.kind),
                )  # fmt: skip
                metrics.WATCH_RESTARTS.labels(self.tenant, self.kind, "gone").inc()
                need_list = True
            except Exception as error:
                # Connection errors, timeouts, error answers, a line cut off mid-JSON when the server
                # goes away: all end in a retry, never in a dead informer.
                metrics.WATCH_RESTARTS.labels(self.tenant, self.kind, "error").inc()
                message = f"{self.side} API server: {type(error).__name__}: {error}"
                log.warning(
                    "%s %s %s: %s; retrying in %.1fs",
                    self.tenant, self.side, self.kind, message, backoff, extra=about(self.tenant, self.kind),
                )  # fmt: skip
                self.on_health(False, message)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                # A dropped connection resumes the watch where it was (the server replays what was
                # missed, or answers 410 and we list again); an error answer lists again at once.
                dropped = isinstance(error, aiohttp.ClientError | TimeoutError | OSError)
                need_list = need_list or not dropped or not self.resource_version
