"""The operator's wiring of the syncer: a provisioned Tenant's own Secrets start its syncer, and
the syncer's health lands on the Tenant as the WorkloadSyncReady condition.

The tenant API server here is a local process started from the Secrets the operator generated
(this tier has no nodes to run the control-plane pods), reached through `tenant_server`."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from stockade import certificates as certs
from stockade import tenant_rbac
from stockade.config import OperatorConfig
from stockade.kube import Credentials, KubeClient
from stockade.model import TenantSpec
from stockade.reconciler import TenantReconciler
from stockade.status import Check
from stockade.syncer.engine import SyncerPool
from stockade.syncer.runner import WORKLOAD_SYNC_READY, run_tenant_syncer
from stockade.syncer.translate import super_name
from stockade_dev.testbed import LocalControlPlane
from tests.helpers import eventually
from tests.integration.conftest import RunningOperator, service_account_kubeconfig
from tests.integration.test_operator import condition, create_tenant, get_tenant, tenant_body, wait_observed
from tests.integration.test_pki_real import bundle_from

pytestmark = pytest.mark.integration
TENANT = "wired"
PAUSE = "registry.k8s.io/pause:3.10"


def test_provisioned_tenant_runs_its_syncer_and_reports_workload_sync(
    super_cluster: LocalControlPlane,
    super_client: client.ApiClient,
    stockade_operator: RunningOperator,
    control_plane_factory: Callable[..., LocalControlPlane],
) -> None:
    create_tenant(super_client, tenant_body(TENANT, {"workloads": {"podSecurity": "baseline"}}))
    wait_observed(super_client, TENANT)
    secrets = stored_secrets_for(super_client)
    plane = control_plane_factory("tenant-wired", control_plane_pki=bundle_from(secrets), controller_manager=True,
                                  scheduler=True)  # fmt: skip
    boot = certs.issue_bootstrap_client(plane.pki.cas[certs.CLUSTER_CA])
    rbac = client.RbacAuthorizationV1Api(config.new_client_from_config_dict(plane.kubeconfig_for(boot, "boot")))
    for obj in tenant_rbac.objects(TenantSpec()):
        (rbac.create_cluster_role_binding if obj["kind"] == "ClusterRoleBinding" else rbac.create_cluster_role)(obj)

    operator_kubeconfig = service_account_kubeconfig(
        super_cluster, super_client, "stockade-system", "stockade-operator"
    )
    credentials = Credentials.from_kubeconfig(yaml.safe_load(operator_kubeconfig.read_text()))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    background: list[asyncio.Task[None]] = []
    kube = KubeClient(credentials)

    async def start() -> asyncio.Task[None]:
        reconciler = TenantReconciler(kube, OperatorConfig())
        pool = SyncerPool(workers=2)
        background.append(asyncio.create_task(pool.run()))

        async def events(kind: str, reason: str, message: str) -> None:
            return None

        async def report(ok: bool, message: str) -> None:
            check = Check(WORKLOAD_SYNC_READY, ok, "Syncing" if ok else "TenantAPIUnreachable", message)
            await reconciler.set_condition(TENANT, check, events)

        tenant = await kube.get("stockade.dev/v1alpha1", "Tenant", TENANT)
        return asyncio.create_task(run_tenant_syncer(kube, pool, tenant, "kata", report, tenant_server=plane.server))

    task = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:

        def synced_condition() -> Any:
            found = condition(get_tenant(super_client, TENANT), WORKLOAD_SYNC_READY)
            return found if found and found["status"] == "True" else None

        assert eventually(synced_condition, 60, what="WorkloadSyncReady=True")["reason"] == "Syncing"
        tenant_core = client.CoreV1Api(config.new_client_from_config_dict(plane.kubeconfig))
        tenant_core.create_namespace({"metadata": {"name": "app"}})
        eventually(lambda: tenant_core.read_namespaced_service_account("default", "app"), 30)
        hello = {"metadata": {"name": "hello"}, "spec": {"containers": [{"name": "c", "image": PAUSE}]}}
        tenant_core.create_namespaced_pod("app", hello)
        workloads = client.CoreV1Api(super_client)
        shadow = eventually(
            lambda: workloads.read_namespaced_pod(super_name("app", "hello"), f"stockade-{TENANT}-workloads"),
            60,
            what="pod synced by the operator-wired syncer",
        )
        assert shadow.spec.runtime_class_name == "kata"
        # The operator's own passes keep the syncer's condition (they own the others).
        wait_observed(super_client, TENANT)
        assert condition(get_tenant(super_client, TENANT), WORKLOAD_SYNC_READY)["status"] == "True"
    finally:

        async def stop() -> None:
            for pending in (task, *background):
                pending.cancel()
            await asyncio.gather(task, *background, return_exceptions=True)
            await kube.close()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def stored_secrets_for(api: client.ApiClient) -> dict[str, Any]:
    core = client.CoreV1Api(api)
    return {
        s.metadata.name: {"data": s.data} for s in core.list_namespaced_secret(f"stockade-{TENANT}-control-plane").items
    }
