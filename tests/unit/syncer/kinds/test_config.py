"""ConfigMaps and Secrets, and the byte budget."""

from __future__ import annotations

from typing import Any

from stockade.syncer import context
from stockade.syncer.kinds import config

CTX = context.TenantContext(
    tenant="t", runtime_class="kata", pod_security="baseline", apiserver_host="10.96.0.10", apiserver_port=6443,
    default_requests={"cpu": "100m", "memory": "128Mi"}, default_limits={"cpu": "1", "memory": "512Mi"},
    virtual_node="stockade-t",
)  # fmt: skip


def pod(spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1", **meta},
        "spec": spec or {"containers": [{"name": "c", "image": "i"}]},
    }  # fmt: skip


def test_config_bytes_and_quantities() -> None:
    assert (
        context.parse_bytes("16Mi") == 16 * 2**20
        and context.parse_bytes("1k") == 1000
        and context.parse_bytes("5") == 5
    )
    assert config.config_bytes({"data": {"a": "xyz"}, "binaryData": {"b": "QUJD"}}) == 1 + 3 + 1 + 4
