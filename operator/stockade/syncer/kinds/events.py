"""Events up: an Event of the super cluster about a super pod becomes an Event about the tenant pod,
for the reasons a tenant may read; the super scheduler's become one generic placement Event.

Keys here are super Events' own (namespace, name): nothing of the tenant's is mirrored down. A
forward is idempotent by name (a 409 means it was already forwarded), and a failed one is retried
with backoff like any other key. Forwarding is bounded per tenant pod as client-go's event spam
filter bounds a recorder: a burst of 25, then one per 5 minutes; the rest is counted and dropped,
so a pod that floods its super cluster with Events cannot flood its tenant's API server.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from stockade import naming
from stockade.syncer import metrics
from stockade.syncer.kinds.base import Kind, Sides, now_iso
from stockade.syncer.translate import Key, tenant_key

# Events of the super cluster about a super pod that the tenant is shown (as the tenant pod's). Others
# (the super scheduler's: they describe the super cluster's nodes) are not forwarded.
FORWARDED_EVENT_REASONS = frozenset(
    {
        "Pulling", "Pulled", "Created", "Started", "Killing", "BackOff", "Failed", "Unhealthy", "ProbeWarning",
        "FailedMount", "FailedAttachVolume", "FailedCreatePodSandBox", "FailedPostStartHook", "FailedPreStopHook",
        "ExceededGracePeriod", "Preempting", "Evicted", "OOMKilling", "InspectFailed", "ErrImageNeverPull",
    }
)  # fmt: skip
# ... and these become one generic Event: the tenant learns that, not why in super-cluster terms.
PLACEMENT_EVENT_REASONS = frozenset({"FailedScheduling"})
PLACEMENT_MESSAGE = "the super cluster has no room for this pod yet (resources, or the Tenant's placement)"


# client-go's EventSourceObjectSpamFilter: per object, a burst of 25, then one per 5 minutes.
EVENT_BURST = 25
EVENT_REFILL_SECONDS = 300.0


class SpamFilter:
    """A token bucket per key (a tenant pod's uid), for at most `keys` keys (the least recently
    used are forgotten: a forgotten key starts again with a full bucket)."""

    def __init__(
        self,
        burst: int = EVENT_BURST,
        refill_seconds: float = EVENT_REFILL_SECONDS,
        keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst, self.refill_seconds, self.keys, self.clock = burst, refill_seconds, keys, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def allow(self, key: str) -> bool:
        now = self.clock()
        tokens, at = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) / self.refill_seconds)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self.keys:
            self._buckets.popitem(last=False)
        return allowed


class Events(Kind):
    kind = "Event"
    tenant_watched = False
    super_selected = False  # the super cluster's own components write them, unlabelled
    patrolled = False  # each is forwarded once, when it appears

    def __init__(self, sides: Sides) -> None:
        super().__init__(sides)
        self.spam = SpamFilter()

    def key_of_super(self, event: str, obj: Mapping[str, Any]) -> Key | None:
        if event == "ADDED" and obj.get("involvedObject", {}).get("kind") == "Pod":
            return obj["metadata"]["namespace"], obj["metadata"]["name"]
        return None

    async def sync(self, key: Key) -> None:
        s = self.sides
        event = s.super_caches[self.kind].get(key)
        if event is None:
            return
        involved = event["involvedObject"]
        shadow = s.super_caches["Pod"].get((s.ctx.namespace, involved.get("name", "")))
        pod_key = tenant_key(shadow) if shadow else None
        pod = s.in_tenant("Pod", pod_key) if pod_key else None
        reason = event.get("reason", "")
        if pod is None or not (reason in FORWARDED_EVENT_REASONS or reason in PLACEMENT_EVENT_REASONS):
            return
        if not self.spam.allow(pod["metadata"]["uid"]):
            metrics.EVENTS_DROPPED.labels(s.tenant).inc()
            return
        await s.tenant_api.create(forwarded_event(event, pod, s.scrub, s.ctx.virtual_node, shadow))


# (text, tenant namespace, super pod) -> the text a tenant may read: `Sides.scrub`.
Scrub = Callable[[str, str, Mapping[str, Any] | None], str]


def forwarded_event(
    event: Mapping[str, Any], pod: Mapping[str, Any], scrub: Scrub, virtual_node: str, shadow: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The tenant pod's Event for super Event `event` (pure; `scrub` cleans the message)."""
    meta = pod["metadata"]
    reason = event.get("reason", "")
    if reason in PLACEMENT_EVENT_REASONS:
        message = PLACEMENT_MESSAGE
    else:
        message = scrub(event.get("message", ""), meta["namespace"], shadow)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": naming.fit(f"{meta['name']}.{event['metadata']['uid'][:13]}", 253),
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": event.get("type", "Normal"),
        "reason": reason,
        "message": message,
        "count": event.get("count", 1),
        "firstTimestamp": event.get("firstTimestamp") or now_iso(),
        "lastTimestamp": event.get("lastTimestamp") or now_iso(),
        "source": {"component": "stockade-syncer", "host": virtual_node},
    }
