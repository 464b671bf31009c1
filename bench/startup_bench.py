"""Start-up benchmark on a real super cluster (the local one: `e2e/cluster up`; KUBECONFIG names it).

    KUBECONFIG=/var/lib/stockade-local/admin.kubeconfig .venv/bin/python bench/startup_bench.py --runs 3

For each run, in the same session:
- Stockade: `kubectl apply` of a Tenant → Ready, and → the tenant's first pod Running (a pod
  created by the tenant admin as soon as the Tenant is Ready, synced into a sandboxed super pod);
- the fair baseline, without Stockade: the same control-plane objects (the same StatefulSet,
  containers, images, sandbox RuntimeClass, probes, Services, ConfigMap and NetworkPolicies,
  rendered by the same code, certificates prepared beforehand) applied by hand with one
  `kubectl apply` into a namespace of their own, until `/readyz` answers through the Service
  (verified against its CA, as the operator does) and the tenant's DNS is ready; then one
  sandboxed pod on the super cluster until Running.
Memory per idle control plane on both sides, from the kubelet's summary API after `--idle`
seconds: the working set of each container and of each pod (a pod's figure includes its sandbox:
gVisor's Sentry and Gofer here), each container's as the runtime reports it, and the floor of one
sandbox (an idle one-container pod in the same RuntimeClass). A RuntimeClass's declared
`overhead.podFixed` (e.g. `kata`'s 320 MiB / 250 m) is reported separately, per pod.
Ratios are the figures: this machine is noisy.
"""

from __future__ import annotations

import argparse
import json
import ssl
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from stockade import certificates as certs
from stockade import naming, render, tenant_rbac
from stockade.config import OperatorConfig
from stockade.kubeconfig import build_kubeconfig
from stockade.model import TenantSpec
from stockade_dev.localcluster.cluster import KUBELET_IMAGE, NETGATE_IMAGE, WORKLOAD_IMAGE
from stockade_dev.localcluster.cluster import RESTRICTED_SECURITY_CONTEXT as RESTRICTED
from stockade_dev.localcluster.node import NODE_NAME
from stockade_dev.testbed.kubectl import Kubectl
from stockade_dev.testbed.kubectl import wait_until as wait
from stockade_dev.testbed.operator_process import operator_process
from stockade_dev.up import fetch_tenant_kubeconfig, install_for_benchmark

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


def memory(super_kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    """Working sets in `namespace` (kubelet summary API), in MiB: each pod's (its cgroup on the host:
    the sandbox included, gVisor's Sentry and Gofer here), and each container's as the runtime
    reports it (gVisor's own accounting: it counts memory-mapped files such as etcd's database, so
    container figures do not add up to the pod's; the pod's is what the host pays)."""
    summary = json.loads(super_kubectl("get", "--raw", f"/api/v1/nodes/{NODE_NAME}/proxy/stats/summary"))
    pods, containers = {}, {}
    for entry in summary.get("pods", []):
        if entry["podRef"]["namespace"] != namespace:
            continue
        pod = entry["podRef"]["name"]
        pods[pod] = int((entry.get("memory") or {}).get("workingSetBytes", 0)) / 2**20
        for container in entry.get("containers") or []:
            used = int((container.get("memory") or {}).get("workingSetBytes", 0)) / 2**20
            containers[f"{pod}/{container['name']}"] = used
    return {"total_mib": sum(pods.values()), "sandboxes": len(pods), "pods": pods, "containers": containers}


def declared_overhead(super_kubectl: Kubectl, runtime_class: str) -> dict[str, str]:
    found = super_kubectl.json("get", "runtimeclass", runtime_class)
    return dict((found.get("overhead") or {}).get("podFixed") or {})


def fair_range(run: int) -> str:
    """The baseline's Service range: a block of the pool from its top, where the operator's
    claims (from the bottom) never reach in a benchmark."""
    config = OperatorConfig()
    return naming.service_ranges(config.service_pool, config.service_prefix)[-1 - run]


def fair_input(name: str, runtime_class: str, run: int, pki_checksum: str = "") -> render.TenantInput:
    # As the benchmark's Tenants: the sandbox RuntimeClass, the API server as a NodePort Service.
    spec = TenantSpec.model_validate({"controlPlane": {"runtimeClassName": runtime_class,
                                                       "service": {"type": "NodePort"}}})  # fmt: skip
    return render.TenantInput(name=name, uid="none", spec=spec, config=OperatorConfig(), pki_checksum=pki_checksum,
                              service_range=fair_range(run))  # fmt: skip


def unowned(objects: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """The objects of the control-plane `namespace` (and the namespace itself), owned by nobody: with
    no Tenant, the garbage collector would take them."""
    kept = [o for o in objects if namespace in (o["metadata"].get("namespace"), o["metadata"]["name"])]
    for obj in kept:
        obj["metadata"].pop("ownerReferences", None)
    return kept


def fair_secrets(
    name: str, runtime_class: str, run: int, cluster_ip: str
) -> tuple[list[dict[str, Any]], certs.ControlPlanePKI]:
    """The certificate Secrets Stockade would make, for the Service's address, made beforehand."""
    names = certs.ServingNames(
        apiserver_dns=naming.apiserver_dns_names(name),
        apiserver_ips=("127.0.0.1", cluster_ip),
        etcd_dns=naming.etcd_dns_names(name, 1),
        etcd_ips=("127.0.0.1",),
    )
    bundle = certs.plan_pki({}, {}, None, names).bundle
    inp = fair_input(name, runtime_class, run)
    return render.pki_secrets(inp, bundle) + render.kubeconfig_secrets(inp, bundle), bundle


def readyz_probe(cluster_ip: str, bundle: certs.ControlPlanePKI, folder: Path) -> Callable[[], bool]:
    """/readyz through the Service, the server verified against the tenant's CA (as the operator does)."""
    admin = bundle.leaves[certs.ADMIN]
    (folder / "ca.crt").write_bytes(bundle.cas[certs.CLUSTER_CA].cert_pem)
    (folder / "admin.pem").write_bytes(admin.cert_pem + admin.key_pem)
    context = ssl.create_default_context(cafile=str(folder / "ca.crt"))
    context.load_cert_chain(str(folder / "admin.pem"))
    url = f"https://{cluster_ip}:{naming.APISERVER_PORT}/readyz"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(url, context=context, timeout=3) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    return ready


def baseline(super_kubectl: Kubectl, runtime_class: str, run: int, idle: float) -> dict[str, Any]:
    """The same control-plane objects, rendered by the same code, applied by hand with kubectl."""
    name = f"fair-{run}"
    namespace = naming.control_plane_namespace(name)
    # Beforehand: the namespace and the Service (its address goes into the certificate), the certificates.
    service = ("Service", naming.APISERVER)
    # The Service pool, as the operator adds it (the baseline's API server takes an address of it).
    pool = render.service_pool(OperatorConfig())
    super_kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(pool))
    wait(
        lambda: any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in super_kubectl.json("get", "servicecidr", pool["metadata"]["name"])
            .get("status", {})
            .get("conditions", [])
        ),
        30,
        "the pool Ready",
    )
    early = [o for o in unowned(render.render_tenant(fair_input(name, runtime_class, run)), namespace)
             if o["kind"] == "Namespace" or (o["kind"], o["metadata"]["name"]) == service]  # fmt: skip
    super_kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(early))
    cluster_ip = super_kubectl.json("get", "service", naming.APISERVER, "-n", namespace)["spec"]["clusterIP"]
    secrets, bundle = fair_secrets(name, runtime_class, run, cluster_ip)
    inp = fair_input(name, runtime_class, run, pki_checksum=render.checksum(secrets))
    objects = unowned(render.render_tenant(inp) + secrets, namespace)
    readyz = readyz_probe(cluster_ip, bundle, Path(tempfile.mkdtemp(prefix="stockade-fair-")))
    started = time.monotonic()
    super_kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(objects))
    wait(readyz, 600, f"{name}: /readyz through the Service")
    # What the operator applies in the tenant once it answers (its RBAC, the DNS's read-only
    # identity included, and kube-system/kube-dns), with a short-lived bootstrap certificate.
    boot = certs.issue_bootstrap_client(bundle.cas[certs.CLUSTER_CA])
    bootstrap = build_kubeconfig(cluster=name, server=f"https://{cluster_ip}:{naming.APISERVER_PORT}",
                                 ca_pem=bundle.cas[certs.CLUSTER_CA].cert_pem, user="bootstrap",
                                 cert_pem=boot.cert_pem, key_pem=boot.key_pem)  # fmt: skip
    path = Path(tempfile.mkdtemp(prefix="stockade-fair-")) / "bootstrap.kubeconfig"
    path.write_text(yaml.safe_dump(bootstrap))
    in_tenant = [*tenant_rbac.objects(inp.spec), tenant_rbac.dns_service(naming.dns_service_ip(fair_range(run)))]
    Kubectl(path)("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(in_tenant))

    def dns_ready() -> bool:  # the tenant's DNS too: Stockade's Ready waits for it (DNSReady)
        status = super_kubectl.json("get", "deployment", naming.DNS, "-n", namespace).get("status", {})
        return bool(status.get("readyReplicas", 0) >= 1)

    ready = wait(dns_ready, 300, f"{name}: its DNS ready")
    pod = f"fair-pod-{run}"
    super_kubectl("apply", "-f", "-", stdin=yaml.safe_dump(sleeper(pod, "default", runtime_class)))
    running = wait(lambda: phase(super_kubectl, pod, "default") == "Running", 180, f"pod {pod} Running")
    time.sleep(idle)
    used = memory(super_kubectl, namespace)
    # The floor of one sandbox: the idle one-container pod (busybox `sleep`) in the same RuntimeClass.
    used["sandbox_floor_mib"] = memory(super_kubectl, "default")["pods"].get(pod, 0.0)
    super_kubectl("delete", "pod", pod, "--wait=false")
    super_kubectl("delete", "namespace", namespace, "--timeout=300s", timeout=320)
    return {"control_plane_ready_s": ready - started, "first_pod_running_s": running - started, "memory": used}


def stockade_run(super_kubectl: Kubectl, folder: Path, run: int, idle: float) -> dict[str, Any]:
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
    tenant_kubectl = Kubectl(fetch_tenant_kubeconfig(super_kubectl, tenant, folder / f"{tenant}.kubeconfig"))
    wait(lambda: tenant_kubectl("get", "serviceaccount", "default"), 120, "tenant default ServiceAccount")
    tenant_kubectl("apply", "-f", "-", stdin=yaml.safe_dump(sleeper("first", "default")))
    running_at = wait(lambda: phase(tenant_kubectl, "first", "default") == "Running", 300, "first tenant pod Running")
    time.sleep(idle)
    used = memory(super_kubectl, naming.control_plane_namespace(tenant))
    super_kubectl("delete", "tenant", tenant, "--timeout=300s", timeout=320)
    return {"control_plane_ready_s": ready_at - applied, "first_pod_running_s": running_at - applied, "memory": used}


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
        netgate_image=NETGATE_IMAGE, kubelet_image=KUBELET_IMAGE,
    )  # fmt: skip
    operator.start()
    # Declared overheads (added to each pod's requests by the API server): the benchmark's class, and
    # `kata`, the production default (its sandboxes cannot run on this machine).
    overhead = {name: declared_overhead(super_kubectl, name) for name in dict.fromkeys([args.runtime_class, "kata"])}
    runs = []
    try:
        for run in range(args.runs):
            fair = baseline(super_kubectl, args.runtime_class, run, args.idle)
            print(
                f"run {run}: by hand /readyz {fair['control_plane_ready_s']:.1f}s, first pod "
                f"{fair['first_pod_running_s']:.1f}s, {fair['memory']['total_mib']:.0f} MiB idle",
                flush=True,
            )
            tenant = stockade_run(super_kubectl, folder, run, args.idle)
            print(
                f"run {run}: Tenant Ready {tenant['control_plane_ready_s']:.1f}s, first pod Running "
                f"{tenant['first_pod_running_s']:.1f}s, {tenant['memory']['total_mib']:.0f} MiB idle",
                flush=True,
            )
            runs.append({"baseline": fair, "stockade": tenant})
    finally:
        operator.stop()

    def median(side: str, *path: str) -> float:
        values = []
        for r in runs:
            value: Any = r[side]
            for key in path:
                value = value[key]
            values.append(float(value))
        return float(statistics.median(values))

    m = {
        f"{side}_{figure}": median(side, *path)
        for side in ("stockade", "baseline")
        for figure, path in (
            ("ready_s", ("control_plane_ready_s",)),
            ("first_pod_running_s", ("first_pod_running_s",)),
            ("memory_mib", ("memory", "total_mib")),
            ("sandboxes", ("memory", "sandboxes")),
        )
    }
    m["sandbox_floor_mib"] = median("baseline", "memory", "sandbox_floor_mib")
    result = {
        "what": "Tenant apply → Ready / first pod Running, and idle memory, vs the same objects applied by hand",
        "runtime_class": args.runtime_class,
        "declared_overhead_per_pod": overhead,
        "sandboxes_per_tenant": {"one pod per replica (now)": 1, "a pod per component (before)": 4},
        "runs": runs,
        "median": m,
        "ratios": {
            "ready_vs_baseline": m["stockade_ready_s"] / m["baseline_ready_s"],
            "first_pod_vs_baseline": m["stockade_first_pod_running_s"] / m["baseline_first_pod_running_s"],
            "memory_vs_baseline": m["stockade_memory_mib"] / m["baseline_memory_mib"],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({"median": m, "ratios": result["ratios"], "declared_overhead_per_pod": overhead}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
