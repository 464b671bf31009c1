"""PersistentVolumeClaims: the claim is mirrored down; once the super claim is bound, a tenant
PersistentVolume stands for its volume (a record, never mounted), so the tenant's own volume
binder binds the tenant claim and keeps it bound."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stockade import naming
from stockade.kube import ApiError
from stockade.naming import LABEL_NAMESPACE, LABEL_SYNCED
from stockade.syncer import metrics
from stockade.syncer.context import TenantContext
from stockade.syncer.kinds.base import Kind, Sides
from stockade.syncer.translate import Key, super_metadata, super_name

VOLUME_DRIVER = "volumes.stockade.dev"


def translate_pvc(obj: Mapping[str, Any], ctx: TenantContext) -> dict[str, Any]:
    spec = {k: v for k, v in obj["spec"].items() if k in ("accessModes", "resources", "storageClassName", "volumeMode")}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": super_metadata(obj, ctx), "spec": spec}


def tenant_volume_name(namespace: str, name: str) -> str:
    return naming.fit(f"pv-{super_name(namespace, name)}")


def tenant_volume(claim: Mapping[str, Any], super_claim: Mapping[str, Any]) -> dict[str, Any]:
    """A tenant PersistentVolume standing for the super cluster's volume of a bound claim, pre-bound
    to the tenant claim. Its source names a driver no tenant node has: it is a record, never mounted."""
    meta = claim["metadata"]
    status = super_claim.get("status") or {}
    spec: dict[str, Any] = {
        "capacity": status.get("capacity") or claim["spec"].get("resources", {}).get("requests", {}),
        "accessModes": status.get("accessModes") or claim["spec"].get("accessModes") or ["ReadWriteOnce"],
        # The syncer deletes it with its claim; the tenant's controllers must not try to.
        "persistentVolumeReclaimPolicy": "Retain",
        "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                     "name": meta["name"], "uid": meta["uid"]},
        "csi": {"driver": VOLUME_DRIVER, "volumeHandle": super_claim["metadata"]["name"]},
    }  # fmt: skip
    if claim["spec"].get("storageClassName"):
        spec["storageClassName"] = claim["spec"]["storageClassName"]
    if claim["spec"].get("volumeMode"):
        spec["volumeMode"] = claim["spec"]["volumeMode"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": tenant_volume_name(meta["namespace"], meta["name"]),
                     "labels": {LABEL_SYNCED: "true", LABEL_NAMESPACE: meta["namespace"]}},
        "spec": spec,
    }  # fmt: skip


class Volumes(Kind):
    kind = "PersistentVolumeClaim"

    def __init__(self, sides: Sides) -> None:
        super().__init__(sides)
        self._published: dict[str, str] = {}  # tenant PersistentVolumes published -> claim uid

    def translate(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return translate_pvc(obj, self.sides.ctx)

    async def cleanup(self, key: Key, obj: Mapping[str, Any] | None) -> None:
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            # The claim is going: so is the tenant's record of its volume.
            volume = tenant_volume_name(*key)
            if await self.sides.tenant_api.delete("v1", "PersistentVolume", volume):
                self._published.pop(volume, None)

    async def up(self, obj: Mapping[str, Any], shadow: Mapping[str, Any]) -> None:
        if (shadow.get("status") or {}).get("phase") != "Bound":
            return
        volume = tenant_volume(obj, shadow)
        if self._published.get(volume["metadata"]["name"]) == obj["metadata"]["uid"]:
            return
        try:
            await self.sides.tenant_api.create(volume)
            metrics.SYNCED.labels(self.sides.tenant, "PersistentVolume", "up").inc()
        except ApiError as error:
            if error.status != 409:  # anything but "it exists already" is retried with the key
                raise
        self._published[volume["metadata"]["name"]] = obj["metadata"]["uid"]
