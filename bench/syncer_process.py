"""The syncer alone in a process, for the benchmark's memory figure: syncer_process.py CONFIG.json

It also times the interpreter's garbage-collector pauses (they stop the event loop) and, when
terminated, writes their summary to CONFIG.json's `gc_out`."""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import sys
import time
from pathlib import Path

from stockade.kube import Credentials, KubeClient
from stockade.model import TenantSpec
from stockade.syncer.engine import SyncerPool, TenantSyncer
from stockade.syncer.runner import capacity, tenant_context

PAUSES: list[float] = []
_started = [0.0]


def _gc_timer(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        PAUSES.append(time.perf_counter() - _started[0])


def _write_gc(out: str) -> None:
    ordered = sorted(PAUSES)
    summary = {"collections": len(ordered), "total_seconds": round(sum(ordered), 3),
               "max_ms": round(ordered[-1] * 1000, 1) if ordered else 0.0,
               "over_100ms": sum(p > 0.1 for p in ordered)}  # fmt: skip
    Path(out).write_text(json.dumps(summary))


async def main(path: str) -> None:
    config = json.loads(Path(path).read_text())  # noqa: ASYNC240 - once, at start-up
    if out := config.get("gc_out"):
        gc.callbacks.append(_gc_timer)

        def terminated(*_: object) -> None:
            _write_gc(out)
            sys.exit(0)

        signal.signal(signal.SIGTERM, terminated)
    pool = SyncerPool(workers=config.get("workers", 8))
    super_kube = KubeClient(Credentials.from_kubeconfig(config["super"]))
    syncers = []
    for tenant in config["tenants"]:
        spec = TenantSpec.model_validate(tenant["spec"])
        credentials = Credentials(
            tenant["server"], tenant["ca"].encode(), tenant["cert"].encode(), tenant["key"].encode()
        )
        syncer = TenantSyncer(
            tenant_context(tenant["name"], spec, "kata", "127.0.0.1"),
            super_kube, KubeClient(credentials), credentials.ca_pem, pool.queue,
            capacity=capacity(spec), patrol_seconds=600,
        )  # fmt: skip
        pool.syncers[tenant["name"]] = syncer
        syncers.append(syncer)
    tasks = [asyncio.create_task(pool.run()), *(asyncio.create_task(s.run()) for s in syncers)]
    await asyncio.gather(*(s.wait_synced(timeout=300) for s in syncers))
    print("synced", flush=True)
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
