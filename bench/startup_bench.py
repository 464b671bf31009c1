"""Start-up benchmark on a real super cluster (the local one: `e2e/cluster up`; KUBECONFIG names it).

    KUBECONFIG=/var/lib/stockade-local/admin.kubeconfig .venv/bin/python bench/startup_bench.py --runs 3

For each run, in the same session:
- Stockade: `kubectl apply` of a Tenant → Ready, and → the tenant's first pod Running (a pod
  created by the tenant admin as soon as the Tenant is Ready, synced into a sandboxed super pod);
- baseline, without Stockade: the same etcd + kube-apiserver binaries started as plain processes
  until /readyz answers (the test bed), then one sandboxed pod on the super cluster until Running.
Also the super cluster's memory per idle Tenant: the working set of its control-plane pods
(kubelet's summary API) after it has been idle, next to the bare etcd + kube-apiserver processes'
RSS. Ratios are the figures: this machine is noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from stockade import naming
from stockade_dev.localcluster.cluster import NETGATE_IMAGE, WORKLOAD_IMAGE
from stockade_dev.localcluster.cluster import RESTRICTED_SECURITY_CONTEXT as RESTRICTED
from stockade_dev.localcluster.node import NODE_NAME
from stockade_dev.testbed import LocalControlPlane
from stockade_dev.testbed.kubectl import Kubectl
from stockade_dev.testbed.kubectl import wait_until as wait
from stockade_dev.testbed.operator_process import operator_process
from stockade_dev.up import install_for_benchmark

REPO = Path(__file__).resolve().parents[1]


def sleeper(name: str, namespace: str, runtime_class: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {"name": "main", "image": WORKLOAD_IMAGE, "command": ["sleep", "3600"], "securityContext": RESTRICTED}
        ],
    }
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def phase(kubectl: Kubectl, name: str, namespace: str) -> str:
    return str(kubectl.json("get", "pod", name, "-n", namespace).get("status", {}).get("phase"))


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def tenant_working_set(super_kubectl: Kubectl, tenant: str) -> int:
    summary = json.loads(super_kubectl("get", "--raw", f"/api/v1/nodes/{NODE_NAME}/proxy/stats/summary"))
    namespace = naming.control_plane_namespace(tenant)
    return sum(
        int((p.get("memory") or {}).get("workingSetBytes", 0))
        for p in summary.get("pods", [])
        if p["podRef"]["namespace"] == namespace
    )


def baseline(super_kubectl: Kubectl, runtime_class: str, run: int, idle: float) -> dict[str, float]:
    started = time.monotonic()
    plane = LocalControlPlane(f"bench-bare-{run}")
    try:
        plane.start()
        control_plane = time.monotonic() - started
        time.sleep(idle)
        memory = sum(rss_bytes(p.pid) for p in plane.processes if p.pid)
    finally:
        plane.cleanup()
    name = f"bench-bare-pod-{run}"
    super_kubectl("apply", "-f", "-", stdin=yaml.safe_dump(sleeper(name, "default", runtime_class)))
    pod_started = time.monotonic()
    running = wait(lambda: phase(super_kubectl, name, "default") == "Running", 180, f"pod {name} Running")
    super_kubectl("delete", "pod", name, "--wait=false")
    return {
        "control_plane_ready_s": control_plane,
        "pod_running_s": running - pod_started,
        "total_s": control_plane + (running - pod_started),
        "memory_bytes": memory,
    }


def stockade_run(super_kubectl: Kubectl, folder: Path, run: int, idle: float) -> dict[str, float]:
    tenant = f"bench-{run}"
    manifest = {
        "apiVersion": "stockade.dev/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": tenant},
        "spec": {"controlPlane": {"service": {"type": "NodePort"}}},
    }
    applied = time.monotonic()
    super_kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(manifest))

    def ready() -> bool:
        conditions = super_kubectl.json("get", "tenant", tenant).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    ready_at = wait(ready, 600, f"Tenant {tenant} Ready")
    kubeconfig = folder / f"{tenant}.kubeconfig"
    subprocess.run(
        [sys.executable, "-m", "stockade.cli", "kubeconfig", tenant, "-o", str(kubeconfig)],
        check=True, capture_output=True, env={**os.environ, "KUBECONFIG": str(super_kubectl.kubeconfig)},
    )  # fmt: skip
    tenant_kubectl = Kubectl(kubeconfig)
    wait(lambda: tenant_kubectl("get", "serviceaccount", "default"), 120, "tenant default ServiceAccount")
    tenant_kubectl("apply", "-f", "-", stdin=yaml.safe_dump(sleeper("first", "default")))
    running_at = wait(lambda: phase(tenant_kubectl, "first", "default") == "Running", 300, "first tenant pod Running")
    time.sleep(idle)
    memory = tenant_working_set(super_kubectl, tenant)
    super_kubectl("delete", "tenant", tenant, "--timeout=300s", timeout=320)
    return {
        "tenant_ready_s": ready_at - applied,
        "first_pod_running_s": running_at - applied,
        "memory_bytes": memory,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=30, help="seconds idle before reading memory")
    parser.add_argument("--runtime-class", default="gvisor")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "startup.json")
    args = parser.parse_args()
    super_kubectl, folder, op_kubeconfig = install_for_benchmark("bench")
    operator = operator_process(
        op_kubeconfig, folder / "operator.log", "bench", resync_seconds=5, runtime_class=args.runtime_class,
        netgate_image=NETGATE_IMAGE,
    )  # fmt: skip
    operator.start()
    runs = []
    try:
        for run in range(args.runs):
            bare = baseline(super_kubectl, args.runtime_class, run, args.idle)
            print(
                f"run {run}: bare etcd + kube-apiserver {bare['control_plane_ready_s']:.1f}s, "
                f"pod {bare['pod_running_s']:.1f}s",
                flush=True,
            )
            tenant = stockade_run(super_kubectl, folder, run, args.idle)
            print(
                f"run {run}: Tenant Ready {tenant['tenant_ready_s']:.1f}s, first pod Running "
                f"{tenant['first_pod_running_s']:.1f}s, {tenant['memory_bytes'] / 2**20:.0f} MiB idle",
                flush=True,
            )
            runs.append({"baseline": bare, "stockade": tenant})
    finally:
        operator.stop()

    def median(side: str, key: str) -> float:
        return float(statistics.median(r[side][key] for r in runs))

    result = {
        "runs": runs,
        "median": {
            "tenant_ready_s": median("stockade", "tenant_ready_s"),
            "first_pod_running_s": median("stockade", "first_pod_running_s"),
            "bare_control_plane_ready_s": median("baseline", "control_plane_ready_s"),
            "bare_pod_running_s": median("baseline", "pod_running_s"),
            "bare_total_s": median("baseline", "total_s"),
            "tenant_idle_memory_mib": median("stockade", "memory_bytes") / 2**20,
            "bare_control_plane_memory_mib": median("baseline", "memory_bytes") / 2**20,
        },
    }
    m = result["median"]
    result["ratios"] = {
        "tenant_ready_vs_bare_control_plane": m["tenant_ready_s"] / m["bare_control_plane_ready_s"],
        "first_pod_vs_bare_control_plane_plus_pod": m["first_pod_running_s"] / m["bare_total_s"],
        "tenant_memory_vs_bare_control_plane": m["tenant_idle_memory_mib"] / m["bare_control_plane_memory_mib"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({"median": m, "ratios": result["ratios"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
