"""Events (core/v1), built here for both the operator (about Tenants) and the syncer (about
tenant objects, in the tenant's own cluster).

A Tenant is cluster-scoped, so its Events carry no namespace in `involvedObject` - the only shape
`kubectl describe tenant` matches (kopf's own poster writes `default` there, which it never
finds) - and live in `default`, the one namespace the API server accepts for such Events.
Repeats of one (type, reason, message) about one Tenant are one Event whose `count` goes up, as
client-go's recorder does, so a failure retried every few seconds does not flood etcd.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from stockade import naming
from stockade.kube import ApiError, KubeClient
from stockade.status import timestamp

MAX_MESSAGE = 1024
# Where Events about cluster-scoped objects must be.
CLUSTER_EVENTS_NAMESPACE = "default"
OPERATOR_COMPONENT = "stockade-operator"


def reference(obj: Mapping[str, Any]) -> dict[str, str]:
    """The object reference of `obj` (no namespace key for a cluster-scoped object)."""
    meta = obj["metadata"]
    ref = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"], "uid": meta.get("uid", "")}
    if meta.get("namespace"):
        ref["namespace"] = meta["namespace"]
    return {k: v for k, v in ref.items() if v}


def core_event(
    involved: Mapping[str, str],
    event_type: str,
    reason: str,
    message: str,
    component: str,
    *,
    namespace: str,
    name: str | None = None,
) -> dict[str, Any]:
    """A new Event about `involved` (see `reference`): named `name`, else generated."""
    stamp = timestamp()
    metadata = {"namespace": namespace, **({"name": name} if name else {"generateName": f"{involved['name']}."})}
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": metadata,
        "involvedObject": dict(involved),
        "type": event_type,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def tenant_event_name(tenant: Mapping[str, Any], event_type: str, reason: str, message: str) -> str:
    """One name per (Tenant, type, reason, message): repeats land on the same Event."""
    digest = hashlib.sha256(f"{tenant['metadata'].get('uid')}\n{event_type}\n{reason}\n{message}".encode()).hexdigest()
    return naming.fit(f"{tenant['metadata']['name']}.{digest[:16]}", 253)


async def post_tenant_event(
    kube: KubeClient, tenant: Mapping[str, Any], event_type: str, reason: str, message: str
) -> None:
    """Post an Event about `tenant`, or count one more of the same."""
    namespace = CLUSTER_EVENTS_NAMESPACE
    name = tenant_event_name(tenant, event_type, reason, message)
    event = core_event(
        reference(tenant), event_type, reason, message, OPERATOR_COMPONENT, namespace=namespace, name=name
    )
    try:
        await kube.create(event)
    except ApiError as error:
        if error.status != 409:
            raise
        current = await kube.get("v1", "Event", name, namespace)
        patch = {"count": int(current.get("count") or 1) + 1, "lastTimestamp": timestamp()}
        await kube.patch_merge("v1", "Event", name, patch, namespace)
