"""The virtual node."""

from __future__ import annotations

from stockade.syncer.kinds import node
from tests.unit.syncer.helpers import tenant_context

CTX = tenant_context()


def test_the_virtual_node_offers_the_quota_and_names_only_itself() -> None:
    out = node.virtual_node(CTX, {"cpu": "4", "pods": "20"}, "2026-01-01T00:00:00Z", "10.1.2.3")
    assert out["metadata"]["name"] == "stockade-t"
    assert out["status"]["capacity"] == out["status"]["allocatable"] == {"cpu": "4", "pods": "20"}
    assert out["status"]["addresses"] == [{"type": "InternalIP", "address": "10.1.2.3"},
                                          {"type": "Hostname", "address": "stockade-t"}]  # fmt: skip
    assert out["status"]["nodeInfo"]["containerRuntimeVersion"] == "sandbox://kata"
