"""A one-tenant operator of an earlier Stockade release, for the migration test.

Run with PYTHONPATH=<that release's operator/> so that `stockade` is that release (see
`test_migration.py`; the release is pinned there). Reconciles one Tenant every 2 s and, once its API
server has answered, runs its syncer; it stops on SIGTERM or after `deadline` seconds. Only that
release's public pieces are used (the reconciler and the syncer), as its kopf handlers would.
Usage: python legacy_operator.py TENANT DEADLINE_SECONDS
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from stockade.config import OperatorConfig
from stockade.kube import Credentials, KubeClient
from stockade.model import API_VERSION, KIND
from stockade.reconciler import TenantReconciler
from stockade.syncer.engine import SyncerPool
from stockade.syncer.runner import run_tenant_syncer


async def say(*parts: Any) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


async def main(name: str, deadline: float) -> None:
    kube = KubeClient(Credentials.from_environment())
    config = OperatorConfig.from_env()
    reconciler = TenantReconciler(kube, config)
    pool = SyncerPool(workers=4)
    workers = asyncio.create_task(pool.run())
    syncer: asyncio.Task[None] | None = None
    stop_at = time.monotonic() + deadline
    try:
        while time.monotonic() < stop_at:
            try:  # a failed pass is retried, as kopf would
                status = await reconciler.reconcile(name, lambda kind, reason, message: say(kind, reason, message))
            except Exception as error:
                await say("pass failed:", error)
                await asyncio.sleep(2)
                continue
            if syncer is None and status is not None and status.version:
                body = await kube.get(API_VERSION, KIND, name)
                tenant = {"metadata": body["metadata"], "spec": body["spec"]}
                syncer = asyncio.create_task(
                    run_tenant_syncer(kube, pool, tenant, config.runtime_class, lambda ok, m: say("sync", ok, m),
                                      netgate_image=config.netgate_image)
                )  # fmt: skip
                await say("syncer started")
            if syncer is not None and syncer.done():
                syncer.result()
            await asyncio.sleep(2)
    finally:
        for task in (syncer, workers):
            if task is not None:
                task.cancel()
        await kube.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
