"""Starts a Tenant's syncer from what the operator provisioned: its syncer kubeconfig and its
API server's Service, and reports the syncer's health as the `WorkloadSyncReady` condition."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

import yaml

from stockade import certificates as certs
from stockade import naming
from stockade.kube import Credentials, KubeClient
from stockade.model import TenantSpec
from stockade.syncer.context import NetGate, TenantContext, parse_bytes
from stockade.syncer.engine import SyncerPool, TenantSyncer

WORKLOAD_SYNC_READY = "WorkloadSyncReady"


def tenant_context(
    name: str,
    spec: TenantSpec,
    runtime_class: str,
    apiserver_host: str,
    *,
    apiserver_port: int = naming.APISERVER_PORT,
    netgate: NetGate | None = None,
) -> TenantContext:
    workloads = spec.workloads
    return TenantContext(
        tenant=name,
        runtime_class=spec.runtime_classes(runtime_class)[1],
        pod_security=workloads.pod_security.value,
        apiserver_host=apiserver_host,
        apiserver_port=apiserver_port,
        default_requests=workloads.container_defaults.requests.wire(),
        default_limits=workloads.container_defaults.limits.wire(),
        virtual_node=naming.virtual_node(name),
        volume_types=workloads.allowed_volume_types,
        node_selector=dict(workloads.placement.node_selector),
        tolerations=tuple(t.wire() for t in workloads.placement.tolerations),
        netgate=netgate,
        config_bytes=parse_bytes(workloads.quota.config_bytes),
    )


async def super_api_address(super_kube: KubeClient) -> str:
    """host:port of the super cluster's own API server Service: what a tenant pod must never reach
    (the network gate's canary)."""
    service = await super_kube.get("v1", "Service", "kubernetes", "default")
    port = next(p["port"] for p in service["spec"]["ports"] if p.get("name", "https") == "https")
    return f"{service['spec']['clusterIP']}:{port}"


def capacity(spec: TenantSpec) -> dict[str, str]:
    """The virtual node offers what the tenant's quota allows."""
    quota = spec.workloads.quota
    return {"cpu": quota.cpu, "memory": quota.memory, "pods": str(quota.pods), **quota.extended}


async def run_tenant_syncer(
    super_kube: KubeClient,
    pool: SyncerPool,
    tenant: dict[str, Any],
    runtime_class: str,
    report: Callable[[bool, str], Awaitable[None]],
    *,
    tenant_server: str | None = None,
    netgate_image: str | None = None,
) -> None:
    """Runs until cancelled (kopf stops the daemon when the Tenant is no longer Ready).

    `tenant_server` overrides where the tenant API server is reached (by default its Service
    ClusterIP, like the reconciler: no cluster DNS needed); tests point it at a local process.
    With `netgate_image`, every super pod starts behind the network gate (see `translate.NetGate`).
    """
    name = tenant["metadata"]["name"]
    spec = TenantSpec.model_validate(tenant.get("spec") or {})
    namespace = naming.control_plane_namespace(name)
    service = await super_kube.get("v1", "Service", naming.APISERVER, namespace)
    secret = await super_kube.get("v1", "Secret", naming.kubeconfig_secret(certs.SYNCER), namespace)
    kubeconfig = yaml.safe_load(base64.b64decode(secret["data"]["kubeconfig"]))
    cluster_ip = service["spec"]["clusterIP"]
    # Like the reconciler, reach the tenant through its Service ClusterIP (no cluster DNS needed).
    kubeconfig["clusters"][0]["cluster"]["server"] = tenant_server or f"https://{cluster_ip}:{naming.APISERVER_PORT}"
    credentials = Credentials.from_kubeconfig(kubeconfig)
    tenant_kube = KubeClient(credentials)
    reports: asyncio.Queue[tuple[bool, str]] = asyncio.Queue()

    netgate = None
    if netgate_image:
        tenant_api = f"{cluster_ip}:{naming.APISERVER_PORT}"
        netgate = NetGate(netgate_image, deny=(await super_api_address(super_kube),), allow=(tenant_api,))
    syncer = TenantSyncer(
        tenant_context(name, spec, runtime_class, cluster_ip, netgate=netgate),
        super_kube,
        tenant_kube,
        credentials.ca_pem,
        pool.queue,
        capacity=capacity(spec),
        on_health=lambda ok, message: reports.put_nowait((ok, message)),
    )

    async def forward_reports() -> None:
        while True:
            ok, message = await reports.get()
            await report(ok, message or "tenant and super API servers are watched")

    async def report_first_sync() -> None:
        await syncer.wait_synced(timeout=3600)
        await report(True, "tenant and super API servers are watched")

    pool.syncers[name] = syncer
    helpers = [asyncio.create_task(forward_reports()), asyncio.create_task(report_first_sync())]
    try:
        await syncer.run()
    finally:
        for helper in helpers:
            helper.cancel()
        pool.syncers.pop(name, None)
        await tenant_kube.close()
