"""Starts a Tenant's syncer from what the operator provisioned: its syncer kubeconfig and its
API server's Service, and reports the syncer's health as the `WorkloadSyncReady` condition."""

from __future__ import annotations

import asyncio
import base64
import logging
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
HEALTHY_MESSAGE = "tenant and super API servers are watched"

log = logging.getLogger("stockade.syncer")


class HealthReporter:
    """Carries the syncer's health to the Tenant (`report` writes the WorkloadSyncReady condition).

    Only the latest state matters, so states are coalesced; a failed write (the super API server
    away, a conflict) is retried with backoff with the then-latest state, and never ends the
    forwarding: the condition cannot stick at a state the syncer has left."""

    def __init__(
        self, report: Callable[[bool, str], Awaitable[None]], *, first_retry: float = 1.0, max_retry: float = 30.0
    ) -> None:
        self._report = report
        self._first_retry, self._max_retry = first_retry, max_retry
        self._latest: tuple[bool, str] | None = None
        self._changed = asyncio.Event()

    def put(self, ok: bool, message: str) -> None:
        self._latest = (ok, message or HEALTHY_MESSAGE)
        self._changed.set()

    async def run(self) -> None:
        delay = self._first_retry
        while True:
            await self._changed.wait()
            self._changed.clear()
            assert self._latest is not None
            ok, message = self._latest
            try:
                await self._report(ok, message)
            except Exception as error:
                log.warning("cannot report the syncer's health (retry in %.0fs): %s", delay, error)
                self._changed.set()  # the latest state is still to be written
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_retry)
            else:
                delay = self._first_retry


def tenant_context(
    name: str,
    spec: TenantSpec,
    runtime_class: str,
    apiserver_host: str,
    *,
    apiserver_port: int = naming.APISERVER_PORT,
    netgate: NetGate | None = None,
    service_range: str = "",
) -> TenantContext:
    workloads = spec.workloads
    return TenantContext(
        service_range=service_range,
        dns_servers=(naming.dns_service_ip(service_range),) if service_range else (),
        virtual_node_ip=naming.virtual_node_ip(service_range),
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
    The tenant's Service range comes from its status (`serviceRange`, written by the reconciler).
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
    reporter = HealthReporter(report)

    netgate = None
    if netgate_image:
        tenant_api = f"{cluster_ip}:{naming.APISERVER_PORT}"
        netgate = NetGate(netgate_image, deny=(await super_api_address(super_kube),), allow=(tenant_api,))
    syncer = TenantSyncer(
        tenant_context(
            name,
            spec,
            runtime_class,
            cluster_ip,
            apiserver_port=naming.KUBERNETES_SERVICE_PORT,
            netgate=netgate,
            # None for a Tenant from before the pool (see `TenantReconciler._claim_service_range`).
            service_range=(tenant.get("status") or {}).get("serviceRange") or "",
        ),
        super_kube,
        tenant_kube,
        credentials.ca_pem,
        pool.queue,
        capacity=capacity(spec),
        on_health=reporter.put,
    )

    async def report_first_sync() -> None:
        await syncer.wait_synced(timeout=None)
        reporter.put(True, "")

    pool.syncers[name] = syncer
    helpers = [asyncio.create_task(reporter.run()), asyncio.create_task(report_first_sync())]
    try:
        await syncer.run()
    finally:
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        pool.syncers.pop(name, None)
        await tenant_kube.close()
