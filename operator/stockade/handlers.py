"""kopf handlers: when to reconcile a Tenant. Run with `kopf run -m stockade.handlers`.

One concern per handler. Every trigger (creation, a change, operator start-up, a periodic timer)
runs the same level-based `TenantReconciler.reconcile`, so a missed event costs at most one timer
interval. Handler progress lives in `status.kopf`, never in the Tenant's metadata or spec, so a
GitOps tool sees no drift.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from stockade import naming
from stockade.config import OperatorConfig
from stockade.kube import Credentials, KubeClient
from stockade.model import GROUP, PLURAL, VERSION
from stockade.reconciler import TenantReconciler

RESYNC_SECONDS = float(os.environ.get("STOCKADE_RESYNC_SECONDS", "30"))
_state: dict[str, TenantReconciler] = {}


def reconciler() -> TenantReconciler:
    return _state["reconciler"]


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
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


@kopf.on.cleanup()
async def close(**_: Any) -> None:
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


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def deleted(body: kopf.Body, name: str, patch: kopf.Patch, **_: Any) -> None:
    """Remove everything Stockade created for the tenant, workloads first, then drop the finalizer."""
    patch.status["phase"] = "Deleting"
    waiting = await reconciler().cleanup(name)
    if waiting:
        raise kopf.TemporaryError(waiting, delay=3)
