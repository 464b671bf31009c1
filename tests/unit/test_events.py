from __future__ import annotations

from stockade import events

TENANT = {"apiVersion": "stockade.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "acme", "uid": "u-1"}}


def test_a_tenants_events_name_no_namespace_so_describe_finds_them() -> None:
    event = events.core_event(events.reference(TENANT), "Warning", "ApplyRefused", "x" * 2000, "stockade-operator",
                              namespace="default", name="acme.1")  # fmt: skip
    assert event["involvedObject"] == {"apiVersion": "stockade.dev/v1alpha1", "kind": "Tenant", "name": "acme",
                                       "uid": "u-1"}  # fmt: skip
    assert event["metadata"] == {"namespace": "default", "name": "acme.1"}
    assert len(event["message"]) == events.MAX_MESSAGE and event["count"] == 1
    # A namespaced object keeps its namespace; without a name, the API server generates one.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop", "uid": "u-2"}}
    event = events.core_event(events.reference(pod), "Normal", "R", "m", "stockade-syncer", namespace="shop")
    assert event["involvedObject"]["namespace"] == "shop" and event["metadata"]["generateName"] == "web."


def test_one_event_name_per_tenant_type_reason_and_message() -> None:
    name = events.tenant_event_name(TENANT, "Warning", "ApplyRefused", "quota")
    assert name == events.tenant_event_name(TENANT, "Warning", "ApplyRefused", "quota")  # repeats: counted on one
    assert name.startswith("acme.")
    others = [
        events.tenant_event_name(TENANT, "Warning", "ApplyRefused", "other message"),
        events.tenant_event_name(TENANT, "Normal", "ApplyRefused", "quota"),
        events.tenant_event_name({**TENANT, "metadata": {"name": "acme", "uid": "u-9"}}, "Warning", "ApplyRefused",
                                 "quota"),  # a re-created Tenant of the same name
    ]  # fmt: skip
    assert name not in others and len(set(others)) == 3
