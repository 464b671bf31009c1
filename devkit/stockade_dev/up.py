"""`stockade up`: Stockade's main job on one machine, in one command.

Uses the cluster of `--kubeconfig` or of the current kubeconfig (e.g. kind) when there is one;
otherwise brings up a real local super cluster (stockade_dev.localcluster: containerd, runc, gVisor,
kubelet, kube-proxy, CoreDNS; needs root). Then installs the CRD and manifests, runs the operator
as its own least-privileged ServiceAccount, applies an example Tenant, follows its conditions and
pods until it is Ready, and writes the tenant's admin kubeconfig. Locally the sandbox RuntimeClass
is `gvisor` where production uses `kata`.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from stockade import naming
from stockade.kubeconfig import build_kubeconfig
from stockade_dev.localcluster.cluster import KUBELET_IMAGE, NETGATE_IMAGE, LocalClusterError, SuperCluster
from stockade_dev.localcluster.node import Layout
from stockade_dev.testbed import ManagedProcess, TestbinMissingError, find_binary
from stockade_dev.testbed.binaries import REPO_ROOT
from stockade_dev.testbed.kubectl import Kubectl, KubectlError, Step
from stockade_dev.testbed.operator_process import operator_process

STATE_DIR = REPO_ROOT / ".stockade"
OPERATOR_DEPLOYMENT = ("-n", naming.OPERATOR_NAMESPACE, "deployment/stockade-operator")  # kubectl arguments


def install_stockade(
    kubectl: Kubectl, *, operator_in_cluster: bool = False, operator_env: dict[str, str] | None = None
) -> None:
    """Apply manifests/ (CRD, RBAC, operator, RuntimeClass, PriorityClass, admission policy).

    An operator Deployment found here keeps the replicas it had: its operators go on, and one
    started on this machine waits behind them for the Lease (operator/stockade/leader.py). One this
    call creates, while the operator runs as a process on this machine instead (same ServiceAccount,
    same roles), is scaled to zero: its image is not in the local cluster. `operator_env` sets the
    in-cluster operator's environment in the same apply (a kustomize overlay), so the next apply of
    manifests/ by the same manager meets no conflict."""
    found = kubectl("get", *OPERATOR_DEPLOYMENT, "--ignore-not-found", "-o", "jsonpath={.spec.replicas}").strip()
    with tempfile.TemporaryDirectory(prefix="stockade-install-") as overlay:
        source = REPO_ROOT / "manifests"
        if operator_env:
            container = {"name": "operator", "env": [{"name": k, "value": v} for k, v in operator_env.items()]}
            patch = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "stockade-operator", "namespace": naming.OPERATOR_NAMESPACE},
                "spec": {"template": {"spec": {"containers": [container]}}},
            }
            kustomization = {
                "resources": [os.path.relpath(source, overlay)],  # kustomize takes no absolute path
                "patches": [{"patch": yaml.safe_dump(patch)}],
            }
            Path(overlay, "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
            source = Path(overlay)
        kubectl("apply", "--server-side", "-k", str(source))
    kubectl("wait", "--for=condition=Established", "crd/tenants.stockade.dev", "--timeout=60s")
    if found:
        kubectl("scale", *OPERATOR_DEPLOYMENT, f"--replicas={found}")  # as it was found
    elif not operator_in_cluster:
        kubectl("scale", *OPERATOR_DEPLOYMENT, "--replicas=0")


def operator_kubeconfig(kubectl: Kubectl, server_kubeconfig: dict[str, Any], target: Path) -> Path:
    """A kubeconfig for the operator's ServiceAccount: the operator runs with exactly its ClusterRole."""
    token = kubectl("create", "token", "stockade-operator", "-n", naming.OPERATOR_NAMESPACE, "--duration=24h").strip()
    cluster = server_kubeconfig["clusters"][0]["cluster"]
    kubeconfig = build_kubeconfig(
        cluster="super",
        server=cluster["server"],
        ca_pem=base64.b64decode(cluster["certificate-authority-data"]),
        user="stockade-operator",
        token=token,
    )
    target.write_text(yaml.safe_dump(kubeconfig))
    target.chmod(0o600)
    return target


def follow(kubectl: Kubectl, tenant: str, timeout: float) -> dict[str, Any]:
    """Print each condition change and the control-plane pods' progress until the Tenant is Ready
    for its current spec (its status describes its latest generation)."""
    deadline = time.monotonic() + timeout
    seen: dict[str, tuple[str, str]] = {}
    pods_seen = ""
    namespace = naming.control_plane_namespace(tenant)
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = kubectl.json("get", "tenant", tenant)
        status = obj.get("status") or {}
        for condition in status.get("conditions", []):
            key = (condition["status"], condition["reason"])
            if seen.get(condition["type"]) != key:
                seen[condition["type"]] = key
                print(f"    {condition['type']}={condition['status']} ({condition['reason']}): {condition['message']}")
        pods = kubectl.json("get", "pods", "-n", namespace).get("items", [])
        summary = ", ".join(f"{p['metadata']['name']} {p.get('status', {}).get('phase', '?')}" for p in pods)
        if summary and summary != pods_seen:
            pods_seen = summary
            print(f"    pods: {summary}")
        current = status.get("observedGeneration") == obj["metadata"].get("generation")
        if current and any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])):
            return obj
        time.sleep(1)
    raise KubectlError(f"Tenant {tenant} not Ready within {timeout:.0f}s; see `kubectl describe tenant {tenant}`")


def install_for_benchmark(prefix: str) -> tuple[Kubectl, Path, Path]:
    """Stockade installed on the cluster $KUBECONFIG names (the local one for the benchmarks), a
    scratch folder, and a kubeconfig for the operator's ServiceAccount in it."""
    super_kubeconfig = Path(os.environ.get("KUBECONFIG", ""))
    if not super_kubeconfig.is_file():
        raise SystemExit("error: KUBECONFIG names no cluster; run `e2e/cluster up` and export KUBECONFIG")
    kubectl = Kubectl(super_kubeconfig)
    install_stockade(kubectl)
    folder = Path(tempfile.mkdtemp(prefix=f"stockade-{prefix}-"))
    kubeconfig = operator_kubeconfig(kubectl, yaml.safe_load(super_kubeconfig.read_text()), folder / "op")
    return kubectl, folder, kubeconfig


def fetch_tenant_kubeconfig(kubectl: Kubectl, tenant: str, target: Path) -> Path:
    """The tenant's admin kubeconfig at `target`, as a user gets it (`stockade kubeconfig`)."""
    subprocess.run(
        [sys.executable, "-m", "stockade.cli", "kubeconfig", tenant, "-o", str(target)],
        check=True, capture_output=True, env={**os.environ, "KUBECONFIG": str(kubectl.kubeconfig)},
    )  # fmt: skip
    return target


def current_kubeconfig() -> Path | None:
    """The kubeconfig kubectl would use (e.g. kind's), if it names a current context."""
    candidates = [*os.environ.get("KUBECONFIG", "").split(os.pathsep), str(Path.home() / ".kube" / "config")]
    for candidate in filter(None, candidates):
        path = Path(candidate)
        if path.is_file() and (yaml.safe_load(path.read_text()) or {}).get("current-context"):
            return path.resolve()
    return None


def up(args: argparse.Namespace) -> int:
    STATE_DIR.mkdir(exist_ok=True)
    # Processes are tagged with this owner (see stockade_dev.testbed.process); tests choose it to check for leaks.
    owner = os.environ.get("STOCKADE_TESTBED_SESSION") or uuid.uuid4().hex
    processes: list[ManagedProcess] = []
    cluster: SuperCluster | None = None

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    existing = None if args.local else Path(args.kubeconfig).resolve() if args.kubeconfig else current_kubeconfig()
    runtime_class = args.runtime_class or ("kata" if existing else "gvisor")
    tenant_file = Path(args.tenant_file or REPO_ROOT / "examples" / ("minimal.yaml" if existing else "local.yaml"))
    try:
        if existing:
            kubeconfig_path = existing
            print(f"using the cluster of {kubeconfig_path} (pass --local for a local super cluster instead)")
        else:
            print("no cluster configured: starting a local super cluster on this machine (needs root)")
            cluster = SuperCluster(Layout.from_env(), owner)
            cluster.start()
            kubeconfig_path = STATE_DIR / "super.kubeconfig"
            shutil.copy(cluster.layout.kubeconfig, kubeconfig_path)
            kubeconfig_path.chmod(0o600)
        kubectl = Kubectl(kubeconfig_path)

        step = Step("installing Stockade: CRD, RBAC, RuntimeClass, PriorityClass, admission policy")
        install_stockade(kubectl)
        step.done()

        step = Step("starting the operator as ServiceAccount stockade-system/stockade-operator")
        server_kubeconfig = yaml.safe_load(kubeconfig_path.read_text())
        op_kubeconfig = operator_kubeconfig(kubectl, server_kubeconfig, STATE_DIR / "operator.kubeconfig")
        operator = operator_process(
            op_kubeconfig, STATE_DIR / "operator.log", owner, resync_seconds=5, runtime_class=runtime_class,
            netgate_image=None if existing else NETGATE_IMAGE,
            kubelet_image=None if existing else KUBELET_IMAGE,
        )  # fmt: skip
        processes.append(operator)
        operator.start()
        step.done(f"sandbox RuntimeClass {runtime_class}; log: {STATE_DIR / 'operator.log'}")

        tenant = yaml.safe_load(tenant_file.read_text())["metadata"]["name"]
        step = Step(f"applying Tenant {tenant} from {tenant_file} and waiting until it is Ready")
        kubectl("apply", "--server-side", "-f", str(tenant_file))
        obj = follow(kubectl, tenant, args.timeout)
        step.done(f"phase {obj['status']['phase']}, Kubernetes {obj['status'].get('version')}")

        target = STATE_DIR / f"{tenant}.kubeconfig"
        subprocess.run(
            [sys.executable, "-m", "stockade.cli", "kubeconfig", tenant, "-o", str(target)],
            check=True, env={**os.environ, "KUBECONFIG": str(kubeconfig_path)},
        )  # fmt: skip
        print()
        print(f"Tenant {tenant} is Ready. Its admin kubeconfig: {target}")
        print("Next, as the tenant's admin:")
        print(f"  {find_binary('kubectl')} --kubeconfig {target} get namespaces")
        print(f"As the super cluster's admin: kubectl --kubeconfig {kubeconfig_path} get tenants")
        if args.once:
            return 0
        stopping = "tears the local super cluster down" if cluster else "stops it"
        print(f"\nThe operator keeps running; Ctrl-C {stopping}.")
        while operator.running():
            time.sleep(1)
        print(f"error: the operator exited ({operator.exit_code()}):\n{operator.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping …")
        return 0
    except (KubectlError, LocalClusterError, TestbinMissingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        for process in processes:
            process.stop()
        if cluster is not None:
            print("stopping the local super cluster and restoring the host …")
            cluster.stop()
            print("local super cluster stopped and removed")


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("up", help="run Stockade end to end on this machine (see README)")
    parser.add_argument("--kubeconfig", help="use this cluster (default: the current kubeconfig's, if any)")
    parser.add_argument("--local", action="store_true", help="start a local super cluster even if a kubeconfig exists")
    parser.add_argument("--tenant-file", help="default: examples/local.yaml locally, else examples/minimal.yaml")
    parser.add_argument(
        "--runtime-class", help="sandbox RuntimeClass the operator enforces (gvisor locally, else kata)"
    )
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--once", action="store_true", help="exit (and tear down) once the Tenant is Ready")
    parser.set_defaults(handler=up)
