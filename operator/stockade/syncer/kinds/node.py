"""The tenant's one virtual node: published with the tenant's quota as its capacity, its lease kept
fresh, so the tenant scheduler binds pods to it and the tenant's node lifecycle controller keeps it
Ready. Pods bound here run in the super cluster."""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping
from typing import Any

from stockade import naming
from stockade.kube import ApiError
from stockade.logs import about
from stockade.syncer.context import TenantContext
from stockade.syncer.kinds.base import Sides, now_iso

log = logging.getLogger("stockade.syncer")

LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40


def virtual_node(ctx: TenantContext, capacity: Mapping[str, str], now: str, node_ip: str) -> dict[str, Any]:
    """The tenant's one virtual node: its capacity is the tenant's quota; pods bound to it run
    in the super cluster."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": ctx.virtual_node,
            "labels": {
                "kubernetes.io/hostname": ctx.virtual_node,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "stockade-virtual",
                "type": "virtual-kubelet",
            },
        },
        "status": {
            "capacity": dict(capacity),
            "allocatable": dict(capacity),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "StockadeSyncerReady",
                    "message": "pods bound here run sandboxed in the super cluster",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                },
            ],
            "addresses": [
                {"type": "InternalIP", "address": node_ip},
                {"type": "Hostname", "address": ctx.virtual_node},
            ],
            # Where the tenant's API server sends logs, exec, attach and port-forward (images/kubelet).
            "daemonEndpoints": {"kubeletEndpoint": {"Port": naming.KUBELET_PORT}},
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "stockade",
                "kernelVersion": "",
                "osImage": "",
                "containerRuntimeVersion": f"sandbox://{ctx.runtime_class}",
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }


class VirtualNode:
    """Not a queued kind: a loop the engine runs beside the kinds."""

    def __init__(self, sides: Sides) -> None:
        self.sides = sides

    async def run(self) -> None:
        s = self.sides
        while True:
            try:
                await self.publish()
            except Exception as error:
                log.warning(
                    "tenant=%s: virtual node heartbeat failed: %s", s.tenant, error, extra=about(s.tenant, "Node")
                )
            await asyncio.sleep(s.heartbeat_seconds)

    async def publish(self) -> None:
        s, api = self.sides, self.sides.tenant_api
        name = s.ctx.virtual_node
        node = virtual_node(s.ctx, s.capacity, now_iso(), s.ctx.virtual_node_ip)
        if await api.get_or_none("v1", "Node", name) is None:
            await api.create({k: v for k, v in node.items() if k != "status"})
        await api.patch_merge("v1", "Node", name, {"status": node["status"]}, subresource="status")
        micro = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lease_spec = {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": micro}
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"
        try:
            current = await api.request("GET", f"{path}/{name}")
        except ApiError as error:
            if error.status != 404:
                raise
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
                "spec": lease_spec,
            }
            await api.request("POST", path, body=lease)
            return
        current["spec"] = {**current.get("spec", {}), **lease_spec}
        await api.request("PUT", f"{path}/{name}", body=current)
