"""ConfigMaps and Secrets: the same data under the super name, within the tenant's byte budget."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stockade.naming import TOKEN_EXPIRES_ANNOTATION
from stockade.syncer.context import TenantContext
from stockade.syncer.kinds.base import Kind
from stockade.syncer.kinds.pod_spec import token_secret_name
from stockade.syncer.translate import Key, super_metadata, super_name, tenant_key


def translate_config(obj: Mapping[str, Any], ctx: TenantContext) -> dict[str, Any]:
    """ConfigMaps and Secrets: same data under the super name."""
    out: dict[str, Any] = {"apiVersion": "v1", "kind": obj["kind"], "metadata": super_metadata(obj, ctx)}
    for key in ("data", "binaryData", "stringData", "type", "immutable"):
        if key in obj:
            out[key] = obj[key]
    return out


def config_bytes(obj: Mapping[str, Any]) -> int:
    """What a ConfigMap or Secret weighs in etcd, roughly: its keys and values."""
    return sum(
        len(k) + len(str(v)) for part in ("data", "binaryData", "stringData") for k, v in (obj.get(part) or {}).items()
    )


class _Config(Kind):
    def translate(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return translate_config(obj, self.sides.ctx)

    def refusal(self, obj: Mapping[str, Any]) -> str | None:
        """The tenant's ConfigMaps and Secrets share a byte budget in the super cluster's etcd."""
        s = self.sides
        own = (s.ctx.namespace, super_name(obj["metadata"]["namespace"], obj["metadata"]["name"]))
        used = sum(
            config_bytes(item)
            for kind in (ConfigMaps.kind, Secrets.kind)
            for key, item in s.super_objects(kind)
            if key != own and TOKEN_EXPIRES_ANNOTATION not in (item["metadata"].get("annotations") or {})
        )
        size = config_bytes(obj)
        if used + size > s.ctx.config_bytes:
            return (
                f"data: {self.kind} of {size} bytes would take the tenant's synced ConfigMaps and Secrets to "
                f"{used + size} bytes, over the budget of {s.ctx.config_bytes} (spec.workloads.quota.configBytes)"
            )
        return None


class ConfigMaps(_Config):
    kind = "ConfigMap"

    def mirrored(self, obj: Mapping[str, Any]) -> bool:
        # Every namespace has one, made by the tenant's own controller-manager.
        return super().mirrored(obj) and obj["metadata"]["name"] != "kube-root-ca.crt"


class Secrets(_Config):
    kind = "Secret"

    def mirrored(self, obj: Mapping[str, Any]) -> bool:
        # Tokens of the tenant's service accounts stay in the tenant (pods get theirs from the syncer).
        return super().mirrored(obj) and obj.get("type") != "kubernetes.io/service-account-token"

    async def cleanup(self, key: Key, obj: Mapping[str, Any] | None) -> None:
        """A super pod's token Secret is queued under its tenant pod's key: one whose tenant pod is
        gone (made before tokens were owned from birth) is deleted."""
        if self.sides.in_tenant("Pod", key) is not None:
            return
        name = token_secret_name({"metadata": {"namespace": key[0], "name": key[1]}})
        secret = self.sides.super_caches[self.kind].get((self.sides.ctx.namespace, name))
        if secret is not None and tenant_key(secret) == key:
            await self.sides.delete_super(self.kind, secret)
