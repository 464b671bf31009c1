"""The syncer alone in a process, for the benchmark's memory figure: syncer_process.py CONFIG.json"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from stockade.kube import Credentials, KubeClient
from stockade.model import TenantSpec
from stockade.syncer.engine import SyncerPool, TenantSyncer
from stockade.syncer.runner import capacity, tenant_context


async def main(path: str) -> None:
    config = json.loads(Path(path).read_text())  # noqa: ASYNC240 - once, at start-up
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
            super_kube, KubeClient(credentials), credentials.ca_pem, pool,
            capacity=capacity(spec), patrol_seconds=600,
        )  # fmt: skip
        pool.add(syncer)
        syncers.append(syncer)
    tasks = [asyncio.create_task(pool.run()), *(asyncio.create_task(s.run()) for s in syncers)]
    await asyncio.gather(*(s.wait_synced(timeout=300) for s in syncers))
    print("synced", flush=True)
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
