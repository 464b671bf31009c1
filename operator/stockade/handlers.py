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
from collections.abc import Mapping
from typing import Any

import kopf

from stockade import logs, metrics, naming
from stockade.config import OperatorConfig
from stockade.events import post_tenant_event
from stockade.kube import ApiError, Credentials, KubeClient
from stockade.leader import LeaderElector, LostLeadershipError
from stockade.model import API_VERSION, GROUP, KIND, PLURAL, VERSION
from stockade.reconciler import TenantReconciler
from stockade.status import Check
from stockade.syncer.engine import SyncerPool
from stockade.syncer.runner import WORKLOAD_SYNC_READY, run_tenant_syncer

log = logging.getLogger("stockade.handlers")

# The exit code of an operator that lost its Lease.
LOST_LEADERSHIP_EXIT = 70
RESYNC_SECONDS = float(os.environ.get("STOCKADE_RESYNC_SECONDS", "30"))
# How often a running syncer compares the Tenant's workloads spec with the one it started with.
SPEC_POLL_SECONDS = 2.0


def reconciler(memo: kopf.Memo) -> TenantReconciler:
    """The operator's one reconciler, kept in kopf's `memo` (set at start-up)."""
    return memo.reconciler  # type: ignore[no-any-return]


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
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
    memo.reconciler = TenantReconciler(KubeClient(Credentials.from_environment()), OperatorConfig.from_env())
    memo.elector = LeaderElector(memo.reconciler.kube, memo.reconciler.config.operator_namespace)
    # A standby serves too (stockade_leader 0, and live). Once per process: kopf runs this handler
    # again when a try fails (e.g. the Lease could not be read), and the port is taken by then.
    if (port := os.environ.get("STOCKADE_METRICS_PORT")) and memo.get("metrics_server") is None:
        memo.metrics_server = metrics.serve(int(port), lambda: memo.elector.heartbeat)
    # Only the Lease holder goes on: kopf starts no watch, timer or daemon before this returns.
    await memo.elector.acquire()
    metrics.LEADER.set(1)
    memo.leadership = asyncio.create_task(_lead(memo.elector), name="leadership")
    memo.pool = SyncerPool(workers=int(os.environ.get("STOCKADE_SYNC_WORKERS", "8")))
    memo.workers = asyncio.create_task(memo.pool.run(), name="syncer-workers")


async def _lead(elector: LeaderElector) -> None:
    """Keep the Lease; once it is lost, stop at once: another replica may be taking over, and two
    operators must never write at the same time (in a cluster, the pod restarts as a standby)."""
    try:
        await elector.keep()
    except LostLeadershipError as error:
        log.critical("lost the leadership (%s): exiting", error)
        logging.shutdown()
        os._exit(LOST_LEADERSHIP_EXIT)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    if (workers := memo.get("workers")) is not None:
        workers.cancel()
        await asyncio.gather(workers, return_exceptions=True)
    if (leadership := memo.get("leadership")) is not None:
        leadership.cancel()
        await asyncio.gather(leadership, return_exceptions=True)
        await memo.elector.release()
        metrics.LEADER.set(0)
    if (current := memo.get("reconciler")) is not None:
        await current.kube.close()


def _events(body: Mapping[str, Any], memo: kopf.Memo) -> Any:
    """Where the reconciler posts Events about the Tenant `body` (see stockade.events)."""
    current = reconciler(memo)
    meta = dict(body["metadata"])
    tenant = {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta}

    async def post(event_type: str, reason: str, message: str) -> None:
        try:
            await post_tenant_event(current.kube, tenant, event_type, reason, message)
        except ApiError as error:  # an Event lost is no reason to fail the pass
            log.warning("tenant %s: cannot post event %s: %s", meta["name"], reason, error)

    return post


async def _reconcile(body: kopf.Body, memo: kopf.Memo) -> None:
    await reconciler(memo).reconcile(body["metadata"]["name"], _events(body, memo))


@kopf.on.create(GROUP, VERSION, PLURAL)
async def created(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _reconcile(body, memo)


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def spec_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _reconcile(body, memo)


@kopf.on.update(GROUP, VERSION, PLURAL, field="metadata.annotations")
async def annotations_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The rotation annotations take effect at once, not at the next timer tick."""
    await _reconcile(body, memo)


@kopf.on.resume(GROUP, VERSION, PLURAL)
async def resumed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """After an operator restart: finish whatever a killed operator left half done."""
    await _reconcile(body, memo)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def resync(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Level-based: repairs drift, renews certificates, and follows readiness."""
    await _reconcile(body, memo)


CONTROL_PLANE_LABELS = {naming.LABEL_ROLE: naming.ROLE_CONTROL_PLANE, naming.LABEL_MANAGED_BY: naming.MANAGED_BY}


@kopf.on.event("apps", "v1", "statefulsets", labels=CONTROL_PLANE_LABELS)
@kopf.on.event("apps", "v1", "deployments", labels=CONTROL_PLANE_LABELS)
async def control_plane_changed(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A tenant's control-plane StatefulSet or DNS Deployment changed (its pods became ready, or
    not): reconcile its Tenant now, so readiness is seen at once instead of at the next resync
    tick. Stateless: nothing is written on the workload."""
    if event["type"] not in ("ADDED", "MODIFIED"):
        return
    if tenant := owning_tenant(event["object"]):
        await reconciler(memo).reconcile(tenant["name"], _events({"metadata": tenant}, memo))


def owning_tenant(obj: Mapping[str, Any]) -> dict[str, str] | None:
    """The name and uid of the Tenant that controls `obj`, from its ownerReferences."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("apiVersion") == API_VERSION and ref.get("kind") == KIND and ref.get("controller"):
            return {"name": ref["name"], "uid": ref["uid"]}
    return None


def syncing(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    """The syncer runs from the first time the tenant's API server answered (its version is known)
    until the Tenant is suspended or deleted. Not tied to `Ready`: one slow /readyz or a rolling
    upgrade must not stop it and make it list everything again; its own health (WorkloadSyncReady)
    says how it fares meanwhile."""
    return bool(status.get("version")) and not spec.get("suspended")


def _syncer_inputs(body: kopf.Body) -> Any:
    """What a running syncer was started from: the workloads spec (translation depends on it) and
    the tenant's Service range (its API server's address; it moves once, when a Tenant of an
    earlier release gets a range)."""
    return (body.get("spec") or {}).get("workloads"), (body.get("status") or {}).get("serviceRange")


@kopf.daemon(GROUP, VERSION, PLURAL, when=syncing, cancellation_timeout=10)
async def sync_workloads(body: kopf.Body, name: str, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Runs the Tenant's syncer; restarts it (in place) when the workloads spec changes, since
    translation depends on it (quota, Pod Security level, placement, volume types), or when the
    tenant's Service range (its API server's address) does."""
    events = _events(body, memo)

    async def report(ok: bool, message: str) -> None:
        check = Check(WORKLOAD_SYNC_READY, ok, "Syncing" if ok else "TenantAPIUnreachable", message)
        await reconciler(memo).set_condition(name, check, events)

    config = reconciler(memo).config
    syncer: asyncio.Task[None] | None = None
    try:
        while not stopped:
            inputs = _syncer_inputs(body)  # `body` is kopf's live view
            tenant = {k: dict(body.get(k) or {}) for k in ("metadata", "spec", "status")}
            syncer = asyncio.create_task(
                run_tenant_syncer(
                    reconciler(memo).kube, memo.pool, tenant, config.runtime_class, report,
                    netgate_image=config.netgate_image,
                )
            )  # fmt: skip
            while not syncer.done() and not stopped and _syncer_inputs(body) == inputs:
                await asyncio.wait({syncer}, timeout=SPEC_POLL_SECONDS)
            if syncer.done():
                syncer.result()  # it only ends by raising
                return
            syncer.cancel()
            await asyncio.gather(syncer, return_exceptions=True)
    except (asyncio.CancelledError, kopf.TemporaryError):
        raise
    except Exception as error:
        # kopf restarts a daemon that raises a temporary error: a crashed syncer comes back.
        raise kopf.TemporaryError(f"the syncer stopped: {error}", delay=10) from error
    finally:
        if syncer is not None and not syncer.done():
            syncer.cancel()
            await asyncio.gather(syncer, return_exceptions=True)
        await report(False, "the syncer is stopped: the Tenant is suspended, deleted or not provisioned")


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def deleted(body: kopf.Body, name: str, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Remove everything Stockade created for the tenant, workloads first, then drop the finalizer."""
    patch.status["phase"] = "Deleting"
    waiting = await reconciler(memo).cleanup(name)
    if waiting:
        raise kopf.TemporaryError(waiting, delay=3)
