"""A super cluster with two tenant control planes (etcd, API server, controller-manager and
scheduler each, certificates from Stockade's PKI), and the syncer running in a background thread
as the operator's ServiceAccount in the super cluster and as `stockade:syncer` in each tenant."""

from __future__ import annotations

import asyncio
import threading
import zlib
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any

import yaml
from kubernetes import client, config

from stockade import certificates as certs
from stockade import naming, render, tenant_rbac
from stockade.config import OperatorConfig
from stockade.kube import Credentials, KubeClient
from stockade.model import TenantSpec
from stockade.syncer.context import TenantContext
from stockade.syncer.engine import SyncerPool, TenantSyncer
from stockade.syncer.runner import tenant_context
from stockade_dev.testbed import LocalControlPlane


class SyncerThread:
    """An asyncio loop in a thread running a SyncerPool; tenants are added and removed from tests."""

    def __init__(self, super_credentials: Credentials):
        self.super_credentials = super_credentials
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.pool = SyncerPool(workers=4)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.health: dict[str, list[tuple[bool, str]]] = {}
        self.call(self._start_pool())

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout)

    async def _start_pool(self) -> None:
        self._pool_task = asyncio.create_task(self.pool.run())

    def add(self, tenant: TenantUnderTest, **kwargs: Any) -> TenantSyncer:
        return self.start(tenant.context(), tenant.syncer_credentials(), tenant.plane.ca_pem, **kwargs)

    def start(
        self, ctx: TenantContext, credentials: Credentials, ca_pem: bytes, *, wait: bool = True, **kwargs: Any
    ) -> TenantSyncer:
        """A syncer for tenant `ctx.tenant` whose API server is at `credentials.server`."""

        async def start() -> TenantSyncer:
            super_kube = KubeClient(self.super_credentials)
            tenant_kube = KubeClient(credentials)
            self.health.setdefault(ctx.tenant, [])
            syncer = TenantSyncer(
                ctx, super_kube, tenant_kube, ca_pem, self.pool.queue,
                capacity={"cpu": "16", "memory": "32Gi", "pods": "110"},
                on_health=lambda ok, message: self.health[ctx.tenant].append((ok, message)),
                **kwargs,
            )  # fmt: skip
            self.pool.syncers[ctx.tenant] = syncer
            self.tasks[ctx.tenant] = asyncio.create_task(syncer.run())
            if wait:
                await syncer.wait_synced()
            return syncer

        return self.call(start())  # type: ignore[no-any-return]

    def remove(self, name: str) -> None:
        async def stop() -> None:
            task = self.tasks.pop(name)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            syncer = self.pool.syncers.pop(name)
            await syncer.super.close()
            await syncer.tenant_api.close()

        self.call(stop())

    def stop(self) -> None:
        for name in list(self.tasks):
            self.remove(name)

        async def stop_pool() -> None:
            self._pool_task.cancel()
            await asyncio.gather(self._pool_task, return_exceptions=True)

        self.call(stop_pool())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class TenantUnderTest:
    def __init__(
        self, name: str, plane: LocalControlPlane, spec: TenantSpec, super_api: client.ApiClient, service_range: str
    ):
        self.name = name
        self.plane = plane
        self.spec = spec
        self.service_range = service_range
        self.superuser = config.new_client_from_config_dict(plane.kubeconfig)
        # The tenant API server as its pods would reach it: here, the loopback address.
        self.apiserver_host = "127.0.0.1"
        boot = certs.issue_bootstrap_client(plane.pki.cas[certs.CLUSTER_CA])
        bootstrap = config.new_client_from_config_dict(plane.kubeconfig_for(boot, "bootstrap"))
        rbac = client.RbacAuthorizationV1Api(bootstrap)
        for obj in tenant_rbac.objects(spec):
            (rbac.create_cluster_role_binding if obj["kind"] == "ClusterRoleBinding" else rbac.create_cluster_role)(obj)

    def syncer_credentials(self) -> Credentials:
        leaf = self.plane.pki.leaves[certs.SYNCER]
        return Credentials(server=self.plane.server, ca_pem=self.plane.ca_pem, cert_pem=leaf.cert_pem,
                           key_pem=leaf.key_pem)  # fmt: skip

    def context(self) -> TenantContext:
        return tenant_context(
            self.name,
            self.spec,
            "kata",
            self.apiserver_host,
            apiserver_port=self.plane.apiserver_port,
            service_range=self.service_range,
        )

    @property
    def workloads_namespace(self) -> str:
        return naming.workloads_namespace(self.name)


def provision_tenant(
    name: str,
    spec: dict[str, Any],
    factory: Callable[..., LocalControlPlane],
    super_api: client.ApiClient,
) -> TenantUnderTest:
    """The tenant's super-cluster side as the operator renders it (namespaces, quota, limits,
    policies), and its control plane as local processes."""
    tenant_spec = TenantSpec.model_validate(spec)
    operator = OperatorConfig()
    # The operator's Service pool in the super cluster, and a block of it for this tenant (as the
    # operator would claim it; distinct per tenant name here).
    pool = render.service_pool(operator)
    try:
        client.CustomObjectsApi(super_api).create_cluster_custom_object("networking.k8s.io", "v1", "servicecidrs", pool)
    except client.ApiException as error:
        if error.status != 409:
            raise
    blocks = naming.service_ranges(operator.service_pool, operator.service_prefix)
    service_range = blocks[zlib.crc32(name.encode()) % len(blocks)]
    inp = render.TenantInput(name, f"uid-{name}", tenant_spec, operator, service_range=service_range)
    core = client.CoreV1Api(super_api)
    for obj in render.render_tenant(inp):
        obj["metadata"].pop("ownerReferences", None)  # no Tenant object in this tier
        if obj["kind"] == "Namespace":
            core.create_namespace(obj)
        elif obj["kind"] == "ResourceQuota":
            core.create_namespaced_resource_quota(obj["metadata"]["namespace"], obj)
        elif obj["kind"] == "LimitRange":
            core.create_namespaced_limit_range(obj["metadata"]["namespace"], obj)
    plane = factory(
        f"tenant-{name}", controller_manager=True, scheduler=True, allow_privileged=True, service_cidr=service_range
    )
    return TenantUnderTest(name, plane, tenant_spec, super_api, service_range)


def dump(obj: Any) -> str:
    return str(yaml.safe_dump(obj))
