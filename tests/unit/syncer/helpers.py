"""A tenant context for unit tests of the syncer's pure parts."""

from __future__ import annotations

from typing import Any

from stockade.syncer.context import TenantContext


def tenant_context(**overrides: Any) -> TenantContext:
    values: dict[str, Any] = {
        "tenant": "t", "runtime_class": "kata", "pod_security": "restricted", "apiserver_host": "10.112.4.1",
        "apiserver_port": 443, "service_range": "10.112.4.0/22", "dns_servers": ("10.112.4.10",),
        "default_requests": {}, "default_limits": {}, "virtual_node": "stockade-t",
    }  # fmt: skip
    return TenantContext(**{**values, **overrides})


# The baseline-level context most translation tests use.
CTX = tenant_context(
    pod_security="baseline", default_requests={"cpu": "100m", "memory": "128Mi"},
    default_limits={"cpu": "1", "memory": "512Mi"},
)  # fmt: skip


def pod(spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1", **meta},
        "spec": spec or {"containers": [{"name": "c", "image": "i"}]},
    }  # fmt: skip
