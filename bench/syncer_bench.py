"""Syncer benchmark: the syncer next to a fair baseline, in one run, against real API servers (the
test-bed binaries): N tenant control planes, one super cluster, the syncer in its own process.

    .venv/bin/python bench/syncer_bench.py --tenants 20 --pods 250 --out bench/results/syncer.json

The baseline does the syncer's super-side work by hand: for each tenant pod, the *same* translated
super pod (the syncer's own `translate_pod` of the pod the tenant API server admitted, token volume
and all) created in a namespace provisioned exactly like a tenant's (quota, LimitRange, Pod
Security), then its token Secret written, at the syncer's concurrency (its worker count). Each
phase starts once the previous phase's objects are gone.

Phases, each measured for the baseline and for the syncer:
- steady: a fixed total rate (`--rate` pods/s, spread over the tenants) for `--steady-seconds`;
  latency per pod (p50/p99), for the syncer from the tenant's create response to the super pod
  *and* its token Secret existing (the kubelet needs both);
- burst: N x M pods at once; throughput, latency, the syncer's CPU and memory per pod; then the
  up-sync of every pod's status;
- cold catch-up (syncer only): the syncer stopped, N x M tenant pods created, the syncer started;
  its rate from process start to the last pod in sync, next to the warm burst's rate.
With `--profile FILE`, py-spy samples the syncer during the burst and catch-up and FILE gets where
its CPU goes (self and inclusive time per function).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stockade import certificates as certs
from stockade import naming, render, tenant_rbac
from stockade.config import OperatorConfig
from stockade.kube import Credentials, KubeClient
from stockade.model import TenantSpec
from stockade.syncer import translate as tr
from stockade.syncer.context import TenantContext
from stockade.syncer.informer import Informer
from stockade.syncer.kinds import pod_spec
from stockade.syncer.runner import tenant_context
from stockade_dev.testbed import LocalControlPlane

PAUSE = "registry.k8s.io/pause:3.10"
WORKERS = 8  # the syncer's workers, and so the baseline's concurrency
LOAD_CONCURRENCY = 16  # tenant users creating pods at once in a burst
PHASE_LIMIT = 900.0  # seconds any one wait may take before the benchmark gives up
NAMESPACE = "bench"  # the tenants' namespace
TINY = {"cpu": "10m", "memory": "16Mi"}
TARGETS = {
    "throughput_ratio_max": 1.3,
    "steady_p99_ms_max": 1000,
    "syncer_cpu_ms_per_pod_max": 1.5,
    "syncer_bytes_per_pod_max": 20 * 1024,
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 0.50) * 1000, 1),
        "p99_ms": round(percentile(values, 0.99) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1) if values else float("nan"),
        "mean_ms": round(statistics.fmean(values) * 1000, 1) if values else float("nan"),
        "count": len(values),
    }


async def paced(jobs: list[Callable[[], Awaitable[None]]], *, rate: float | None, limit: int) -> float:
    """Run `jobs`, at most `limit` at once, started `rate` per second (or all at once); seconds taken."""
    semaphore = asyncio.Semaphore(limit)
    started = time.monotonic()

    async def run(i: int, job: Callable[[], Awaitable[None]]) -> None:
        if rate:
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        async with semaphore:
            await job()

    await asyncio.gather(*(run(i, job) for i, job in enumerate(jobs)))
    return time.monotonic() - started


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, all threads


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tenant_spec(pods: int) -> TenantSpec:
    # Quota sized for the benchmark: every pod carries the RuntimeClass overhead (250m, 320Mi).
    room = {"cpu": str(pods), "memory": f"{pods}Gi"}
    quota = {**room, "pods": pods * 2, "limits": room}
    return TenantSpec.model_validate({"workloads": {"podSecurity": "baseline", "quota": quota}})


def tenant_pod(tenant: str, name: str) -> dict[str, Any]:
    """A tenant pod as its scheduler leaves it: bound to the virtual node, mounting its token."""
    spec = {
        "nodeName": naming.virtual_node(tenant),
        "containers": [{"name": "app", "image": PAUSE, "resources": {"requests": TINY, "limits": TINY}}],
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


def pod_name(i: int) -> str:
    return f"p-{i}"


SuperKey = tuple[str, str, str]  # (namespace, super pod, its token Secret)


def super_key(tenant: str, i: int) -> SuperKey:
    """(namespace, super pod, its token Secret) of tenant pod `i`, named as the syncer names them."""
    pod = {"metadata": {"namespace": NAMESPACE, "name": pod_name(i)}}
    return naming.workloads_namespace(tenant), tr.super_name(NAMESPACE, pod_name(i)), pod_spec.token_secret_name(pod)


async def provision_super_side(kube: KubeClient, name: str, spec: TenantSpec) -> None:
    """A tenant's workloads namespace, quota, LimitRange and Pod Security, as the operator renders them."""
    inp = render.TenantInput(name, f"uid-{name}", spec, OperatorConfig())
    for obj in render.render_tenant(inp):
        if obj["kind"] in ("Namespace", "ResourceQuota", "LimitRange"):
            obj["metadata"].pop("ownerReferences", None)
            await kube.apply(obj)


async def bootstrap_tenant(plane: LocalControlPlane) -> None:
    """What the tenant's controller-manager would have made: RBAC, the namespace, its default
    ServiceAccount and root CA ConfigMap (a pod's token volume names both)."""
    boot = certs.issue_bootstrap_client(plane.pki.cas[certs.CLUSTER_CA])
    credentials = Credentials(plane.server, plane.ca_pem, boot.cert_pem, boot.key_pem)
    async with KubeClient(credentials) as kube:
        for obj in tenant_rbac.objects(TenantSpec()):
            await kube.apply(obj)
        await kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        meta = {"namespace": NAMESPACE}
        await kube.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", **meta}})
        await kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt", **meta},
                          "data": {"ca.crt": plane.ca_pem.decode()}})  # fmt: skip


async def delete_collection(kube: KubeClient, kind: str, namespace: str) -> None:
    body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}
    path = f"/api/v1/namespaces/{namespace}/{kind.lower()}s"
    await kube.request("DELETE", path, body=body, params={"labelSelector": f"{naming.LABEL_SYNCED}=true"}, timeout=300)


async def until(condition: Callable[[], bool], what: str, limit: float = PHASE_LIMIT) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > limit:
            raise SystemExit(f"gave up after {limit:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


@dataclass
class SuperWatch:
    """The super side's pods and token Secrets in some namespaces, and when each first appeared."""

    kube: KubeClient
    namespaces: list[str]
    seen: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (kind, ns, name) → when
    informers: list[Informer] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        for namespace in self.namespaces:
            for kind in ("Pod", "Secret"):
                self.informers.append(Informer(self.kube, "v1", kind, tenant=namespace, side="super",
                                               namespace=namespace, label_selector=f"{naming.LABEL_SYNCED}=true",
                                               on_change=self._changed(kind)))  # fmt: skip
        self.tasks = [asyncio.create_task(i.run()) for i in self.informers]
        await asyncio.gather(*(i.synced.wait() for i in self.informers))

    def _changed(self, kind: str) -> Callable[[str, Any, dict[str, Any]], None]:
        def changed(event: str, key: Any, obj: dict[str, Any]) -> None:
            if event != "DELETED":
                self.seen.setdefault((kind, *key), time.monotonic())

        return changed

    def done_at(self, namespace: str, pod_name: str, token_name: str) -> float | None:
        """When both the super pod and its token Secret existed."""
        pod = self.seen.get(("Pod", namespace, pod_name))
        secret = self.seen.get(("Secret", namespace, token_name))
        return max(pod, secret) if pod is not None and secret is not None else None

    async def all_done(self, keys: Collection[SuperKey], what: str) -> float:
        """Waits until every key is done; when the last one was."""
        await until(lambda: all(self.done_at(*k) is not None for k in keys), what)
        return max(self.done_at(*k) or 0.0 for k in keys)

    def live(self) -> int:
        return sum(len(i.cache) for i in self.informers)

    def forget(self) -> None:
        self.seen.clear()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


# -- the baseline: the same super pods and token Secrets, by hand ---------------------------------


@dataclass
class Baseline:
    kube: KubeClient
    contexts: list[TenantContext]  # one per baseline namespace, provisioned like a tenant's
    admitted: dict[str, Any]  # a pod as the tenant API server admitted it
    token: str  # a real tenant token, for its size
    ca_pem: bytes

    async def prepare(self) -> None:
        for ctx in self.contexts:
            # The dependency the syncer mirrors once per namespace: the pod's ServiceAccount.
            name = tr.super_name(NAMESPACE, "default")
            account = {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": ctx.namespace},
            }
            await self.kube.apply(account)

    def job(self, ctx: TenantContext, i: int, latencies: list[float]) -> Callable[[], Awaitable[None]]:
        async def create() -> None:
            started = time.monotonic()
            pod = copy.deepcopy(self.admitted)
            pod["metadata"].update(name=pod_name(i), uid=str(uuid.uuid4()))
            shadow = pod_spec.translate_pod(pod, ctx, pod_spec.token_secret_name(pod))
            created = await self.kube.create(shadow)
            expires = "2099-01-01T00:00:00Z"
            tokens = {"token": self.token}
            await self.kube.apply(pod_spec.token_secret(pod, ctx, tokens, self.ca_pem, expires, created))
            latencies.append(time.monotonic() - started)

        return create

    async def run(self, count: int, rate: float | None) -> dict[str, Any]:
        latencies: list[float] = []
        jobs = [self.job(self.contexts[i % len(self.contexts)], i, latencies) for i in range(count)]
        cpu = cpu_seconds(os.getpid())  # this process does nothing else meanwhile
        seconds = await paced(jobs, rate=rate, limit=WORKERS)
        cpu = cpu_seconds(os.getpid()) - cpu
        await self.cleanup()
        return {"pods": count, "seconds": round(seconds, 2), "pods_per_second": round(count / seconds, 1),
                "latency": summary(latencies), "client_cpu_ms_per_pod": round(cpu * 1000 / count, 2)}  # fmt: skip

    async def cleanup(self) -> None:
        for ctx in self.contexts:
            await delete_collection(self.kube, "Pod", ctx.namespace)
            await delete_collection(self.kube, "Secret", ctx.namespace)

        async def left() -> int:
            total = 0
            for ctx in self.contexts:
                for kind in ("Pod", "Secret"):
                    total += len(
                        await self.kube.list("v1", kind, ctx.namespace, label_selector=f"{naming.LABEL_SYNCED}=true")
                    )
            return total

        started = time.monotonic()
        while await left():
            if time.monotonic() - started > PHASE_LIMIT:
                raise SystemExit("the baseline's pods were not cleaned up")
            await asyncio.sleep(0.5)


# -- through the syncer -----------------------------------------------------------------------------


class SyncerProcess:
    """The syncer alone in a process (bench/syncer_process.py), so its CPU and memory are its own."""

    def __init__(self, config_path: Path):
        self.config_path = config_path
        self.process: subprocess.Popen[str] | None = None
        self.started = 0.0
        self.idle_cpu_per_second = 0.0  # measured by `idle`

    async def start(self) -> None:
        command = [sys.executable, str(Path(__file__).with_name("syncer_process.py")), str(self.config_path)]
        self.started = time.monotonic()
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220
        assert self.process.stdout is not None
        line = await asyncio.to_thread(self.process.stdout.readline)  # "synced" once its informers are up
        if line.strip() != "synced":
            raise SystemExit(f"syncer process failed to start: {line!r}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> dict[str, Any]:
        """Stops it; its garbage-collector pauses over its life."""
        if self.process is None:
            return {}
        self.process.terminate()
        self.process.wait(10)
        self.process = None
        out = Path(json.loads(self.config_path.read_text())["gc_out"])
        return dict(json.loads(out.read_text())) if out.exists() else {}


class Profiler:
    """py-spy sampling the syncer (raw collapsed stacks), stopped with SIGINT."""

    def __init__(self, out: Path | None):
        self.out = out
        self.stacks: Counter[str] = Counter()
        self.process: subprocess.Popen[bytes] | None = None
        self.raw = Path()  # py-spy's output of the current recording

    async def start(self, pid: int) -> None:
        if self.out is None:
            return
        py_spy = Path(sys.executable).with_name("py-spy")
        self.raw = Path(tempfile.mkstemp(prefix="stockade-pyspy-", suffix=".txt")[1])
        command = [str(py_spy), "record", "--pid", str(pid), "--rate", "100", "--nonblocking",
                   "--format", "raw", "--output", str(self.raw)]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
        await asyncio.sleep(1)  # let py-spy attach before the measured work begins

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)
        self.process.wait(60)
        self.process = None
        for line in self.raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                self.stacks[stack] += int(count)
        self.raw.unlink()

    def report(self, top: int = 25) -> dict[str, Any]:
        """Self and inclusive shares per function (line numbers dropped), and self time per layer."""
        total = sum(self.stacks.values()) or 1
        own: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        layers: Counter[str] = Counter()
        for stack, count in self.stacks.items():
            frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
            own[frames[-1]] += count
            layers[layer(frames[-1])] += count
            for frame in set(frames):
                inclusive[frame] += count

        def shares(counter: Counter[str], n: int) -> list[dict[str, Any]]:
            return [{"frame": f, "share": round(c / total, 3)} for f, c in counter.most_common(n)]

        return {"samples": total, "layers": shares(layers, 20), "self": shares(own, top),
                "inclusive": shares(inclusive, top * 2)}  # fmt: skip


LAYERS = (  # (what a frame's file says, the layer its self time is counted in), first match wins
    ("stockade/", "stockade (translation, informers, queue)"),
    ("json/", "JSON encode/decode"),
    ("ssl.py", "TLS"),
    ("sslproto.py", "TLS"),
    ("aiohttp/", "HTTP client (aiohttp)"),
    ("yarl/", "HTTP client (aiohttp)"),
    ("multidict/", "HTTP client (aiohttp)"),
    ("prometheus_client/", "metrics"),
    ("selectors.py", "waiting in epoll (idle)"),
    ("asyncio/", "asyncio event loop"),
    ("logging/", "logging"),
    ("copy.py", "deepcopy"),
)


def layer(frame: str) -> str:
    return next((name for marker, name in LAYERS if marker in frame), "other")


@dataclass
class Tenants:
    names: list[str]
    kubes: dict[str, KubeClient]
    watch: SuperWatch
    gc_pauses: dict[str, Any] = field(default_factory=dict)  # the warm syncer's, over its life

    def creates(
        self, keys: list[tuple[str, int]], responded: dict[SuperKey, float]
    ) -> list[Callable[[], Awaitable[None]]]:
        def job(tenant: str, i: int) -> Callable[[], Awaitable[None]]:
            async def create() -> None:
                await self.kubes[tenant].create(tenant_pod(tenant, pod_name(i)))
                responded[super_key(tenant, i)] = time.monotonic()

            return create

        return [job(t, i) for t, i in keys]

    def pods(self, per_tenant: int, first: int = 0) -> list[tuple[str, int]]:
        """Interleaved across tenants, as many tenants creating at once would be."""
        return [(t, i) for i in range(first, first + per_tenant) for t in self.names]

    def latencies(self, responded: dict[SuperKey, float]) -> list[float]:
        return [max(0.0, (self.watch.done_at(*k) or 0.0) - at) for k, at in responded.items()]

    async def cleanup(self) -> None:
        """Tenant pods deleted at once; the syncer deletes their super pods (their tokens go with them)."""
        for tenant in self.names:
            body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}
            await self.kubes[tenant].request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods", body=body, timeout=300)
        await until(lambda: self.watch.live() == 0, "the super pods to be deleted")
        self.watch.forget()


async def idle(syncer: SyncerProcess, seconds: float) -> dict[str, Any]:
    """What the syncer costs with nothing to do (leases, watches): subtracted from the per-pod CPU."""
    cpu, started = cpu_seconds(syncer.pid), time.monotonic()
    await asyncio.sleep(seconds)
    syncer.idle_cpu_per_second = (cpu_seconds(syncer.pid) - cpu) / (time.monotonic() - started)
    return {
        "seconds": seconds,
        "cpu_percent": round(syncer.idle_cpu_per_second * 100, 2),
        "rss_kib": rss_kib(syncer.pid),
    }


async def syncer_phase(
    tenants: Tenants, syncer: SyncerProcess, keys: list[tuple[str, int]], *, rate: float | None
) -> dict[str, Any]:
    responded: dict[SuperKey, float] = {}
    expected = {super_key(t, i) for t, i in keys}
    cpu_before, rss_before = cpu_seconds(syncer.pid), rss_kib(syncer.pid)
    started = time.monotonic()
    create_seconds = await paced(
        tenants.creates(keys, responded), rate=rate, limit=LOAD_CONCURRENCY * 4 if rate else LOAD_CONCURRENCY
    )
    seconds = await tenants.watch.all_done(expected, "the syncer to catch up") - started
    cpu = cpu_seconds(syncer.pid) - cpu_before
    busy = cpu - syncer.idle_cpu_per_second * (time.monotonic() - started)
    await asyncio.sleep(2)
    rss = rss_kib(syncer.pid)
    return {
        "pods": len(keys),
        "tenant_create_seconds": round(create_seconds, 2),
        "seconds": round(seconds, 2),
        "pods_per_second": round(len(keys) / seconds, 1),
        "latency": summary(tenants.latencies(responded)),
        "syncer_cpu_ms_per_pod": round(cpu * 1000 / len(keys), 2),
        "syncer_cpu_ms_per_pod_above_idle": round(busy * 1000 / len(keys), 2),
        "syncer_rss_kib": {"before": rss_before, "after": rss},
    }


async def up_sync(super_kube: KubeClient, tenants: Tenants, keys: list[tuple[str, int]]) -> dict[str, Any]:
    """Every super pod marked Running, as a kubelet would; until every tenant pod shows it."""
    running_at: dict[tuple[str, str], float] = {}
    written_at: dict[tuple[str, str], float] = {}

    def on_tenant(tenant: str) -> Callable[[str, Any, dict[str, Any]], None]:
        def changed(event: str, key: Any, obj: dict[str, Any]) -> None:
            if (obj.get("status") or {}).get("phase") == "Running":
                running_at.setdefault((tenant, key[1]), time.monotonic())

        return changed

    watchers = [Informer(tenants.kubes[t], "v1", "Pod", tenant=t, side="tenant", namespace=NAMESPACE,
                         on_change=on_tenant(t)) for t in tenants.names]  # fmt: skip
    tasks = [asyncio.create_task(w.run()) for w in watchers]
    await asyncio.gather(*(w.synced.wait() for w in watchers))
    status = {
        "status": {"phase": "Running", "podIP": "10.244.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
    }

    def job(tenant: str, i: int) -> Callable[[], Awaitable[None]]:
        async def mark() -> None:
            namespace, name, _ = super_key(tenant, i)
            written_at[(tenant, pod_name(i))] = time.monotonic()
            await super_kube.patch_merge("v1", "Pod", name, status, namespace, subresource="status")

        return mark

    started = time.monotonic()
    await paced([job(t, i) for t, i in keys], rate=None, limit=LOAD_CONCURRENCY)
    await until(lambda: len(running_at.keys() & written_at.keys()) == len(keys), "the tenant pods to show Running")
    seconds = time.monotonic() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [running_at[k] - written_at[k] for k in written_at]
    return {"pods": len(keys), "seconds": round(seconds, 2), "latency": summary(latencies)}


async def catch_up(
    tenants: Tenants, syncer: SyncerProcess, keys: list[tuple[str, int]], profiler: Profiler
) -> dict[str, Any]:
    """The syncer stopped, the pods created, the syncer started: how fast it catches up, cold."""
    tenants.gc_pauses = syncer.stop()
    responded: dict[SuperKey, float] = {}
    await paced(tenants.creates(keys, responded), rate=None, limit=LOAD_CONCURRENCY)
    await syncer.start()  # "synced" comes after its informers listed
    await profiler.start(syncer.pid)
    seconds = await tenants.watch.all_done(list(responded), "the cold catch-up") - syncer.started
    cpu = cpu_seconds(syncer.pid)
    profiler.stop()
    return {
        "pods": len(keys),
        "seconds_from_process_start": round(seconds, 2),
        "pods_per_second": round(len(keys) / seconds, 1),
        "syncer_cpu_ms_per_pod": round(cpu * 1000 / len(keys), 2),  # its start-up included
        "syncer_rss_kib": rss_kib(syncer.pid),
    }


def ratios(result: dict[str, Any]) -> dict[str, Any]:
    base, syn = result["baseline"], result["syncer"]
    burst_ratio = syn["burst"]["seconds"] / base["burst"]["seconds"]
    catch_up_ratio = syn["catch_up"]["seconds_from_process_start"] / base["burst"]["seconds"]
    idle = syn["burst"]["syncer_rss_kib"]["before"]
    held = syn["burst"]["syncer_rss_kib"]["after"] - idle
    bytes_per_pod = round(held * 1024 / syn["burst"]["pods"])
    cpu = syn["burst"]["syncer_cpu_ms_per_pod_above_idle"]
    steady_p99 = syn["steady"]["latency"]["p99_ms"]
    return {
        "burst_time_vs_baseline": round(burst_ratio, 2),
        "catch_up_time_vs_baseline": round(catch_up_ratio, 2),
        "catch_up_rate_vs_warm_burst": round(syn["catch_up"]["pods_per_second"] / syn["burst"]["pods_per_second"], 2),
        "steady_p99_ms": steady_p99,
        "baseline_steady_p99_ms": base["steady"]["latency"]["p99_ms"],
        "syncer_cpu_ms_per_pod_above_idle": cpu,
        "syncer_idle_cpu_percent": syn["idle"]["cpu_percent"],
        "baseline_client_cpu_ms_per_pod": base["burst"]["client_cpu_ms_per_pod"],
        "syncer_bytes_per_pod": bytes_per_pod,
        "targets": TARGETS,
        "met": {
            "throughput (burst)": burst_ratio <= TARGETS["throughput_ratio_max"],
            "throughput (catch-up)": catch_up_ratio <= TARGETS["throughput_ratio_max"],
            "steady p99": steady_p99 <= TARGETS["steady_p99_ms_max"],
            "cpu per pod": cpu <= TARGETS["syncer_cpu_ms_per_pod_max"],
            "memory per pod": bytes_per_pod <= TARGETS["syncer_bytes_per_pod_max"],
        },
    }


async def admitted_pod(kube: KubeClient, tenant: str) -> dict[str, Any]:
    """A pod as the tenant API server admits it (defaults, token volume), by a dry-run create."""
    path = f"/api/v1/namespaces/{NAMESPACE}/pods"
    admitted: dict[str, Any] = await kube.request(
        "POST", path, body=tenant_pod(tenant, "sample"), params={"dryRun": "All"}
    )
    return admitted


async def a_token(kube: KubeClient) -> str:
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}
    path = f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default/token"
    response = await kube.request("POST", path, body=request)
    return str(response["status"]["token"])


async def run(args: argparse.Namespace, work: Path, planes: list[LocalControlPlane]) -> dict[str, Any]:
    owner = uuid.uuid4().hex
    print(f"starting the super cluster and {args.tenants} tenant control planes …", flush=True)
    super_plane = LocalControlPlane("bench-super", owner=owner, controller_manager=True, root=work).start()
    planes.append(super_plane)
    super_creds = Credentials.from_kubeconfig(super_plane.kubeconfig)
    super_kube = KubeClient(super_creds)
    overhead = {"podFixed": {"cpu": "250m", "memory": "320Mi"}}
    await super_kube.apply({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "kata"},
                            "handler": "kata-qemu", "overhead": overhead})  # fmt: skip
    spec = tenant_spec(max(args.pods, int(args.rate * args.steady_seconds / args.tenants) + 1))
    names = [f"bench{i:02d}" for i in range(args.tenants)]
    base_names = [f"base{i:02d}" for i in range(args.tenants)]
    tenant_planes: dict[str, LocalControlPlane] = {}
    for i, name in enumerate(names):
        plane = LocalControlPlane(f"bench-{name}", owner=owner, root=work).start()
        planes.append(plane)
        tenant_planes[name] = plane
        await bootstrap_tenant(plane)
        await provision_super_side(super_kube, name, spec)
        await provision_super_side(super_kube, base_names[i], spec)
        print(f"  tenant {name} ready ({i + 1}/{args.tenants})", flush=True)

    kubes = {n: KubeClient(Credentials.from_kubeconfig(p.kubeconfig)) for n, p in tenant_planes.items()}
    config_path = work / "syncer.json"
    config_path.write_text(json.dumps({
        "super": super_plane.kubeconfig, "workers": WORKERS, "gc_out": str(work / "gc.json"),
        "tenants": [{"name": name, "server": plane.server, "ca": plane.ca_pem.decode(),
                     "cert": plane.pki.leaves[certs.SYNCER].cert_pem.decode(),
                     "key": plane.pki.leaves[certs.SYNCER].key_pem.decode(),
                     "spec": spec.wire()} for name, plane in tenant_planes.items()],
    }))  # fmt: skip
    first = tenant_planes[names[0]]
    baseline = Baseline(
        super_kube,
        [tenant_context(n, spec, "kata", "127.0.0.1") for n in base_names],
        await admitted_pod(kubes[names[0]], names[0]),
        await a_token(kubes[names[0]]),
        first.ca_pem,
    )
    await baseline.prepare()
    per_tenant = max(1, int(args.rate * args.steady_seconds) // args.tenants)
    steady_count = per_tenant * args.tenants
    burst_count = args.tenants * args.pods
    result: dict[str, Any] = {"benchmark": "syncer", "tenants": args.tenants, "pods_per_tenant": args.pods,
                              "steady": {"rate_per_second": args.rate, "seconds": args.steady_seconds},
                              "workers": WORKERS, "machine": {"cpus": os.cpu_count()}}  # fmt: skip

    print(f"baseline, steady: {args.rate:g} pods/s for {args.steady_seconds:g} s …", flush=True)
    result["baseline"] = {"steady": await baseline.run(steady_count, args.rate)}
    print(f"  {result['baseline']['steady']}\nbaseline, burst: {burst_count} pods …", flush=True)
    result["baseline"]["burst"] = await baseline.run(burst_count, None)
    print(f"  {result['baseline']['burst']}", flush=True)

    watch = SuperWatch(super_kube, [naming.workloads_namespace(n) for n in names])
    await watch.start()
    tenants = Tenants(names, kubes, watch)
    syncer = SyncerProcess(config_path)
    profiler = Profiler(args.profile)
    try:
        await syncer.start()
        await asyncio.sleep(2)  # settle
        result["syncer"] = {"idle": await idle(syncer, args.idle_seconds)}
        print(f"syncer, idle: {result['syncer']['idle']}", flush=True)
        print(f"syncer, steady: {args.rate:g} pods/s for {args.steady_seconds:g} s …", flush=True)
        steady = await syncer_phase(tenants, syncer, tenants.pods(per_tenant), rate=args.rate)
        result["syncer"]["steady"] = steady
        print(f"  {steady}", flush=True)
        await tenants.cleanup()
        print(f"syncer, burst: {burst_count} pods …", flush=True)
        await profiler.start(syncer.pid)
        keys = tenants.pods(args.pods)
        result["syncer"]["burst"] = await syncer_phase(tenants, syncer, keys, rate=None)
        profiler.stop()
        print(f"  {result['syncer']['burst']}\nsyncer, up-sync of {burst_count} pod statuses …", flush=True)
        result["syncer"]["up_sync"] = await up_sync(super_kube, tenants, keys)
        print(f"  {result['syncer']['up_sync']}", flush=True)
        await tenants.cleanup()
        print(f"syncer, cold catch-up of {burst_count} pods …", flush=True)
        result["syncer"]["catch_up"] = await catch_up(tenants, syncer, tenants.pods(args.pods), profiler)
        print(f"  {result['syncer']['catch_up']}", flush=True)
        result["syncer"]["gc_pauses_warm_syncer"] = tenants.gc_pauses
        print(f"syncer, garbage-collector pauses (idle, steady, burst, up-sync): {tenants.gc_pauses}", flush=True)
    finally:
        syncer.stop()
        await watch.stop()
        for kube in kubes.values():
            await kube.close()
        await super_kube.close()
    result["ratios"] = ratios(result)
    if args.profile:
        args.profile.parent.mkdir(parents=True, exist_ok=True)
        args.profile.write_text(json.dumps({"phases": "burst + cold catch-up", **profiler.report()}, indent=2))
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--pods", type=int, default=250, help="pods per tenant in the burst and the catch-up")
    parser.add_argument("--rate", type=float, default=40.0, help="total pods per second of the steady phase")
    parser.add_argument("--steady-seconds", type=float, default=60.0)
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="the syncer's idle cost is measured this long")
    parser.add_argument("--profile", type=Path, default=None, help="write py-spy's profile summary here")
    parser.add_argument("--out", type=Path, default=Path("bench/results/syncer.json"))
    args = parser.parse_args()
    # Stopped by a signal (even as a background job, where SIGINT starts ignored), the control
    # planes are still stopped and their folders removed.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    planes: list[LocalControlPlane] = []
    work = Path(tempfile.mkdtemp(prefix="stockade-bench-"))
    try:
        result = asyncio.run(run(args, work, planes))
    finally:
        for plane in planes:
            plane.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["ratios"], indent=2), f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
