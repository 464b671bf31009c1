"""Events up: what of the super cluster's Events a tenant reads."""

from __future__ import annotations

from typing import Any

from stockade.syncer.kinds import events

POD = {"metadata": {"name": "web", "namespace": "shop", "uid": "u1"}}


def scrub(text: str, namespace: str, shadow: Any) -> str:
    return text.replace("stockade-t-workloads", namespace)


def event(reason: str, message: str) -> dict[str, Any]:
    return {"metadata": {"name": "e", "namespace": "stockade-t-workloads", "uid": "0123456789abcdef"},
            "involvedObject": {"kind": "Pod", "name": "web-shop-0123456789"}, "reason": reason, "message": message,
            "type": "Warning", "count": 2}  # fmt: skip


def test_a_forwarded_event_is_about_the_tenant_pod_and_scrubbed() -> None:
    out = events.forwarded_event(event("BackOff", "in stockade-t-workloads: back-off"), POD, scrub, "stockade-t", None)
    assert out["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "name": "web", "namespace": "shop", "uid": "u1"}
    assert out["message"] == "in shop: back-off" and out["count"] == 2
    assert out["metadata"] == {"name": "web.0123456789abc", "namespace": "shop"}  # the same name every time
    assert out["source"] == {"component": "stockade-syncer", "host": "stockade-t"}


def test_the_super_schedulers_words_become_one_generic_message() -> None:
    out = events.forwarded_event(event("FailedScheduling", "0/3 nodes: pool=x"), POD, scrub, "stockade-t", None)
    assert out["message"] == events.PLACEMENT_MESSAGE
    assert "FailedScheduling" in events.PLACEMENT_EVENT_REASONS and "Scheduled" not in events.FORWARDED_EVENT_REASONS


def test_only_new_events_about_pods_are_queued() -> None:
    kind = events.Events.__new__(events.Events)
    assert kind.key_of_super("ADDED", event("Pulled", "")) == ("stockade-t-workloads", "e")
    assert kind.key_of_super("MODIFIED", event("Pulled", "")) is None
    assert kind.key_of_super("ADDED", {**event("Pulled", ""), "involvedObject": {"kind": "Node"}}) is None


def test_forwarding_is_bounded_per_pod_a_burst_then_one_per_refill_period() -> None:
    now = [0.0]
    spam = events.SpamFilter(burst=3, refill_seconds=10, keys=2, clock=lambda: now[0])
    assert [spam.allow("flood") for _ in range(5)] == [True, True, True, False, False]
    assert spam.allow("quiet")  # positive control: another pod has its own budget
    now[0] = 9.0
    assert not spam.allow("flood")  # not a whole token back yet
    now[0] = 10.5
    assert spam.allow("flood") and not spam.allow("flood")  # one per period
    spam.allow("third")  # over `keys`: the least recently used ("quiet") is forgotten
    assert len(spam._buckets) == 2 and "quiet" not in spam._buckets
