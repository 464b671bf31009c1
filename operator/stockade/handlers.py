"""kopf handlers: when to reconcile a Tenant. Run with `kopf run -m stockade.handlers`.

One concern per handler. Every trigger (creation, a change, operator start-up, a periodic timer)
runs the same level-based `TenantReconciler.reconcile`, so a missed event costs at most one timer
interval. Handler progress lives in `status.kopf`, never in the Tenant's metadata or spec, so a
GitOps tool sees no drift.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf
import prometheus_client

from stockade import logs, naming
from stockade.config import OperatorConfig
from stockade.kube import Credentials, KubeClient
from stockade.model import API_VERSION, GROUP, KIND, PLURAL, VERSION
from stockade.reconciler import TenantReconciler
from stockade.status import Check
from stockade.syncer.engine import SyncerPool
from stockade.syncer.runner import WORKLOAD_SYNC_READY, run_tenant_syncer

RESYNC_SECONDS = float(os.environ.get("STOCKADE_RESYNC_SECONDS", "30"))
_state: dict[str, Any] = {}
_tasks: list[asyncio.Task[None]] = []


def reconciler() -> TenantReconciler:
    return _state["reconciler"]  # type: ignore[no-any-return]


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    logs.configure(os.environ.get("STOCKADE_LOG_FORMAT", "text"))
    settings.persistence.finalizer = naming.FINALIZER
    # Tenants are the only resource: no need to scan CRDs (and no RBAC to read them).
    settings.scanning.disabled = True
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(field="status.kopf.lastHandledConfiguration")
    # Detect silent watch stalls instead of waiting forever.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.posting.level = logging.INFO
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
    _state["reconciler"] = TenantReconciler(KubeClient(Credentials.from_environment()), OperatorConfig.from_env())
    pool = SyncerPool(workers=int(os.environ.get("STOCKADE_SYNC_WORKERS", "8")))
    _state["pool"] = pool
    _tasks.append(asyncio.create_task(pool.run(), name="syncer-workers"))
    if port := os.environ.get("STOCKADE_METRICS_PORT"):
        prometheus_client.start_http_server(int(port))


@kopf.on.cleanup()
async def close(**_: Any) -> None:
    for task in _tasks:
        task.cancel()
    if "reconciler" in _state:
        await _state.pop("reconciler").kube.close()


def _events(body: kopf.Body) -> Any:
    async def post(event_type: str, reason: str, message: str) -> None:
        kopf.event(body, type=event_type, reason=reason, message=message[:1000])

    return post


async def _reconcile(body: kopf.Body) -> None:
    await reconciler().reconcile(body["metadata"]["name"], _events(body))


@kopf.on.create(GROUP, VERSION, PLURAL)
async def created(body: kopf.Body, **_: Any) -> None:
    await _reconcile(body)


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def spec_changed(body: kopf.Body, **_: Any) -> None:
    await _reconcile(body)


@kopf.on.update(GROUP, VERSION, PLURAL, field="metadata.annotations")
async def annotations_changed(body: kopf.Body, **_: Any) -> None:
    """The rotation annotations take effect at once, not at the next timer tick."""
    await _reconcile(body)


@kopf.on.resume(GROUP, VERSION, PLURAL)
async def resumed(body: kopf.Body, **_: Any) -> None:
    """After an operator restart: finish whatever a killed operator left half done."""
    await _reconcile(body)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def resync(body: kopf.Body, **_: Any) -> None:
    """Level-based: repairs drift, renews certificates, and follows readiness."""
    await _reconcile(body)


def _ready(status: kopf.Status, **_: Any) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


@kopf.daemon(GROUP, VERSION, PLURAL, when=_ready, cancellation_timeout=10)
async def sync_workloads(body: kopf.Body, name: str, **_: Any) -> None:
    """While the Tenant is Ready: its syncer mirrors workloads into the super cluster. kopf stops
    it when the Tenant stops being Ready (suspended, degraded) or is deleted."""
    events = _events(body)

    async def report(ok: bool, message: str) -> None:
        check = Check(WORKLOAD_SYNC_READY, ok, "Syncing" if ok else "TenantAPIUnreachable", message)
        await reconciler().set_condition(name, check, events)

    tenant = await reconciler().kube.get(API_VERSION, KIND, name)
    try:
        config = reconciler().config
        await run_tenant_syncer(
            reconciler().kube, _state_pool(), tenant, config.runtime_class, report, netgate_image=config.netgate_image
        )
    except (asyncio.CancelledError, kopf.TemporaryError):
        raise
    except Exception as error:
        # kopf restarts a daemon that raises a temporary error: a crashed syncer comes back.
        raise kopf.TemporaryError(f"the syncer stopped: {error}", delay=10) from error
    finally:
        await report(False, "the syncer is stopped while the tenant is not Ready")


def _state_pool() -> SyncerPool:
    return _state["pool"]  # type: ignore[no-any-return]


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def deleted(body: kopf.Body, name: str, patch: kopf.Patch, **_: Any) -> None:
    """Remove everything Stockade created for the tenant, workloads first, then drop the finalizer."""
    patch.status["phase"] = "Deleting"
    waiting = await reconciler().cleanup(name)
    if waiting:
        raise kopf.TemporaryError(waiting, delay=3)
