"""Syncer benchmark: N tenants x M pods through the syncer, next to the same pods created directly
on the super cluster, in one run, against real API servers (the test-bed binaries).

    .venv/bin/python bench/syncer_bench.py --tenants 20 --pods 250 --out bench/results/syncer.json

Measures down-sync latency (tenant pod created → super pod exists), up-sync latency (super pod
status written → tenant pod shows it), throughput, and the syncer process's memory per synced pod
(its RSS growth, read from /proc, divided by the pods it holds). The direct baseline creates the
same number of pods on the super cluster with the same client concurrency. Ratios, not absolute
times, are the figures: this machine is noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from stockade import certificates as certs
from stockade import render, tenant_rbac
from stockade.config import OperatorConfig
from stockade.kube import Credentials, KubeClient
from stockade.model import TenantSpec
from stockade.syncer import translate as tr
from stockade.syncer.informer import Informer
from stockade_dev.testbed import LocalControlPlane

PAUSE = "registry.k8s.io/pause:3.10"
CONCURRENCY = 16
TINY = {"cpu": "10m", "memory": "16Mi"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 0.50) * 1000, 1),
        "p99_ms": round(percentile(values, 0.99) * 1000, 1),
        "mean_ms": round(statistics.fmean(values) * 1000, 1) if values else float("nan"),
        "count": len(values),
    }


async def bounded(coroutines: list[Any], limit: int = CONCURRENCY) -> None:
    semaphore = asyncio.Semaphore(limit)

    async def run(coroutine: Any) -> None:
        async with semaphore:
            await coroutine

    await asyncio.gather(*(run(c) for c in coroutines))


def tenant_spec(pods: int) -> TenantSpec:
    # Quota sized for the benchmark: every pod carries the RuntimeClass overhead (250m, 320Mi).
    return TenantSpec.model_validate(
        {"workloads": {"podSecurity": "baseline", "quota": {"cpu": str(pods), "memory": f"{pods}Gi", "pods": pods * 2}}}
    )


async def provision_super_side(kube: KubeClient, name: str, spec: TenantSpec) -> None:
    inp = render.TenantInput(name, f"uid-{name}", spec, OperatorConfig())
    for obj in render.render_tenant(inp):
        if obj["kind"] in ("Namespace", "ResourceQuota", "LimitRange"):
            obj["metadata"].pop("ownerReferences", None)
            await kube.apply(obj)


async def bootstrap_tenant(plane: LocalControlPlane) -> None:
    boot = certs.issue_bootstrap_client(plane.pki.cas[certs.CLUSTER_CA])
    credentials = Credentials(plane.server, plane.ca_pem, boot.cert_pem, boot.key_pem)
    async with KubeClient(credentials) as kube:
        for obj in tenant_rbac.objects(TenantSpec()):
            await kube.apply(obj)
        await kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})
        # Pods need the namespace's default ServiceAccount, which a controller-manager would create.
        await kube.apply(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "bench"}}
        )


def pod_body(name: str, node: str | None = None, runtime_class: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "containers": [{"name": "app", "image": PAUSE, "resources": {"requests": TINY, "limits": TINY}}],
    }  # fmt: skip
    if node:
        spec["nodeName"] = node  # as the tenant scheduler would bind it
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "bench"}, "spec": spec}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def direct_baseline(super_creds: Credentials, total: int) -> dict[str, Any]:
    """The same number of pods, created directly in the super cluster."""
    async with KubeClient(super_creds) as kube:
        await kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench-direct"}})
        await kube.apply(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "bench-direct"}}
        )
        latencies: list[float] = []

        async def create(i: int) -> None:
            body = pod_body(f"direct-{i}", runtime_class="kata")
            body["metadata"]["namespace"] = "bench-direct"
            started = time.monotonic()
            await kube.create(body)
            latencies.append(time.monotonic() - started)

        started = time.monotonic()
        await bounded([create(i) for i in range(total)])
        elapsed = time.monotonic() - started
        await kube.delete("v1", "Namespace", "bench-direct")
    return {
        "seconds": round(elapsed, 2),
        "pods_per_second": round(total / elapsed, 1),
        "create_latency": summary(latencies),
    }


async def through_syncer(
    super_creds: Credentials, tenants: list[tuple[str, LocalControlPlane]], pods: int, config_path: Path
) -> dict[str, Any]:
    # The syncer runs in its own process, so its memory is measured alone.
    command = [sys.executable, str(Path(__file__).with_name("syncer_process.py")), str(config_path)]
    syncer = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220 - once, before measuring
    assert syncer.stdout is not None
    line = await asyncio.to_thread(syncer.stdout.readline)  # "synced" once its informers are up
    if line.strip() != "synced":
        raise SystemExit(f"syncer process failed to start: {line!r}")
    await asyncio.sleep(2)
    idle_rss = rss_kib(syncer.pid)

    created_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    running_at: dict[str, float] = {}
    status_written_at: dict[str, float] = {}
    super_kube = KubeClient(super_creds)
    tenant_kubes = {name: KubeClient(Credentials.from_kubeconfig(plane.kubeconfig)) for name, plane in tenants}
    watchers: list[Informer] = []

    def on_super(event: str, key: Any, obj: dict[str, Any]) -> None:
        if event == "ADDED" and (k := tr.tenant_key(obj)):
            seen_at.setdefault(f"{obj['metadata']['labels'].get('stockade.dev/tenant')}/{k[1]}", time.monotonic())

    for name, _ in tenants:
        watchers.append(Informer(super_kube, "v1", "Pod", tenant=name, side="super",
                                 namespace=f"stockade-{name}-workloads", on_change=on_super))  # fmt: skip

    def on_tenant(tenant: str) -> Any:
        def changed(event: str, key: Any, obj: dict[str, Any]) -> None:
            if (obj.get("status") or {}).get("phase") == "Running":
                running_at.setdefault(f"{tenant}/{key[1]}", time.monotonic())

        return changed

    for name, _ in tenants:
        watchers.append(Informer(tenant_kubes[name], "v1", "Pod", tenant=name, side="tenant", namespace="bench",
                                 on_change=on_tenant(name)))  # fmt: skip
    tasks = [asyncio.create_task(w.run()) for w in watchers]
    await asyncio.gather(*(w.synced.wait() for w in watchers))
    total = pods * len(tenants)

    async def create(tenant: str, i: int) -> None:
        name = f"p-{i}"
        created_at[f"{tenant}/{name}"] = time.monotonic()
        await tenant_kubes[tenant].create(pod_body(name, node=f"stockade-{tenant}"))

    started = time.monotonic()
    # Interleaved across tenants, as many tenants creating at once would be.
    await bounded([create(t, i) for i in range(pods) for t, _ in tenants])
    tenant_create_elapsed = time.monotonic() - started
    while len(seen_at) < total and time.monotonic() - started < 1800:  # noqa: ASYNC110 - polling a dict
        await asyncio.sleep(0.2)
    down_elapsed = time.monotonic() - started
    await asyncio.sleep(3)
    synced_rss = rss_kib(syncer.pid)

    async def mark_running(tenant: str, i: int) -> None:
        super_pod = tr.super_name("bench", f"p-{i}")
        status = {
            "status": {"phase": "Running", "podIP": "10.244.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
        }
        status_written_at[f"{tenant}/p-{i}"] = time.monotonic()
        await super_kube.patch_merge(
            "v1", "Pod", super_pod, status, f"stockade-{tenant}-workloads", subresource="status"
        )

    up_started = time.monotonic()
    await bounded([mark_running(t, i) for i in range(pods) for t, _ in tenants])
    while len(running_at) < total and time.monotonic() - up_started < 1800:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    up_elapsed = time.monotonic() - up_started

    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    syncer.terminate()
    syncer.wait(10)
    await super_kube.close()
    for kube in tenant_kubes.values():
        await kube.close()
    down = [seen_at[k] - created_at[k] for k in seen_at if k in created_at]
    up = [running_at[k] - status_written_at[k] for k in running_at if k in status_written_at]
    return {
        "tenant_side_create_seconds": round(tenant_create_elapsed, 2),
        "down_sync": {"seconds": round(down_elapsed, 2), "pods_per_second": round(len(down) / down_elapsed, 1),
                      "synced": len(down), "latency": summary(down)},
        "up_sync": {"seconds": round(up_elapsed, 2), "synced": len(up), "latency": summary(up)},
        "syncer_memory": {"idle_rss_kib": idle_rss, "synced_rss_kib": synced_rss,
                          "bytes_per_synced_pod": round((synced_rss - idle_rss) * 1024 / max(1, len(down)))},
    }  # fmt: skip


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--pods", type=int, default=250, help="pods per tenant")
    parser.add_argument("--out", type=Path, default=Path("bench/results/syncer.json"))
    args = parser.parse_args()
    owner = uuid.uuid4().hex
    planes: list[LocalControlPlane] = []
    work = Path(tempfile.mkdtemp(prefix="stockade-bench-"))
    try:
        print(f"starting the super cluster and {args.tenants} tenant control planes …", flush=True)
        super_plane = LocalControlPlane("bench-super", owner=owner, controller_manager=True, root=work).start()
        planes.append(super_plane)
        super_creds = Credentials.from_kubeconfig(super_plane.kubeconfig)
        async with KubeClient(super_creds) as kube:
            overhead = {"podFixed": {"cpu": "250m", "memory": "320Mi"}}
            await kube.apply({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "kata"},
                              "handler": "kata-qemu", "overhead": overhead})  # fmt: skip
        tenants: list[tuple[str, LocalControlPlane]] = []
        spec = tenant_spec(args.pods)
        for i in range(args.tenants):
            name = f"bench{i:02d}"
            plane = LocalControlPlane(f"bench-{name}", owner=owner, root=work).start()
            planes.append(plane)
            await bootstrap_tenant(plane)
            async with KubeClient(super_creds) as kube:
                await provision_super_side(kube, name, spec)
            tenants.append((name, plane))
            print(f"  tenant {name} ready ({i + 1}/{args.tenants})", flush=True)

        config_path = work / "syncer.json"
        config_path.write_text(json.dumps({
            "super": super_plane.kubeconfig,
            "tenants": [{"name": name, "server": plane.server, "ca": plane.ca_pem.decode(),
                         "cert": plane.pki.leaves[certs.SYNCER].cert_pem.decode(),
                         "key": plane.pki.leaves[certs.SYNCER].key_pem.decode(),
                         "spec": spec.wire()} for name, plane in tenants],
        }))  # fmt: skip
        total = args.tenants * args.pods
        print(f"direct baseline: {total} pods on the super cluster …", flush=True)
        direct = await direct_baseline(super_creds, total)
        print(f"  {direct}", flush=True)
        print(f"through the syncer: {args.tenants} tenants x {args.pods} pods …", flush=True)
        synced = await through_syncer(super_creds, tenants, args.pods, config_path)
        print(f"  {synced}", flush=True)
        result = {
            "benchmark": "syncer",
            "tenants": args.tenants,
            "pods_per_tenant": args.pods,
            "machine": {"cpus": os.cpu_count()},
            "direct": direct,
            **synced,
            "ratios": {
                "syncer_vs_direct_time": round(synced["down_sync"]["seconds"] / direct["seconds"], 2),
                "target_time_ratio": 1.25,
                "bytes_per_pod_target": 20 * 1024,
            },
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(json.dumps(result["ratios"]), f"\nwrote {args.out}")
    finally:
        for plane in planes:
            plane.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
