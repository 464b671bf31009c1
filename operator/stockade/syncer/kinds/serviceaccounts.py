"""ServiceAccounts: mirrored so super pods may name them; they never mount a super-cluster token."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stockade.syncer.context import TenantContext
from stockade.syncer.kinds.base import Kind
from stockade.syncer.translate import super_metadata


def translate_service_account(obj: Mapping[str, Any], ctx: TenantContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": super_metadata(obj, ctx),
        "automountServiceAccountToken": False,
    }


class ServiceAccounts(Kind):
    kind = "ServiceAccount"

    def translate(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return translate_service_account(obj, self.sides.ctx)
