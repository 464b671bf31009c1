"""`stockade up`: Stockade's main job on one machine, in one command.

Brings up a local super cluster (etcd, kube-apiserver, kube-controller-manager from the pinned
test-bed binaries) unless `--kubeconfig` names an existing one, installs the CRD and manifests,
runs the operator as its own least-privileged ServiceAccount, applies an example Tenant, follows
its conditions until it is provisioned, and writes the tenant's admin kubeconfig.

The local super cluster has no nodes yet (the kubelet, containerd and the gVisor sandbox are the
next milestone), so the tenant's control-plane pods stay Pending there; with `--kubeconfig`
pointing at a cluster with nodes and the `kata` RuntimeClass, the Tenant goes all the way to Ready.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from stockade import naming
from stockade.kubeconfig import build_kubeconfig
from stockade.testbed import LocalControlPlane, ManagedProcess
from stockade.testbed.binaries import REPO_ROOT
from stockade.testbed.kubectl import Kubectl, Step
from stockade.testbed.operator_process import operator_process

STATE_DIR = REPO_ROOT / ".stockade"


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
    """Print each condition change of the Tenant until it is Ready, or provisioned on a node-less cluster."""
    deadline = time.monotonic() + timeout
    seen: dict[str, tuple[str, str]] = {}
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = kubectl.json("get", "tenant", tenant)
        status = obj.get("status") or {}
        for condition in status.get("conditions", []):
            key = (condition["status"], condition["reason"])
            if seen.get(condition["type"]) != key:
                seen[condition["type"]] = key
                print(f"    {condition['type']}={condition['status']} ({condition['reason']}): {condition['message']}")
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        if conditions.get("Ready") == "True":
            return obj
        provisioned = conditions.get("CertificatesReady") == "True" and conditions.get("IsolationReady") == "True"
        nodes = kubectl.json("get", "nodes").get("items", [])
        if provisioned and not nodes:
            return obj
        time.sleep(1)
    raise SystemExit(
        f"error: Tenant {tenant} not provisioned within {timeout:.0f}s; see `kubectl describe tenant {tenant}`"
    )


def up(args: argparse.Namespace) -> int:
    STATE_DIR.mkdir(exist_ok=True)
    # Processes are tagged with this owner (see stockade.testbed.process); tests choose it to check for leaks.
    owner = os.environ.get("STOCKADE_TESTBED_SESSION") or uuid.uuid4().hex
    processes: list[ManagedProcess] = []
    plane: LocalControlPlane | None = None

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        if args.kubeconfig:
            kubeconfig_path = Path(args.kubeconfig).resolve()
            print(f"using the cluster of {kubeconfig_path}")
        else:
            step = Step("starting a local super cluster (etcd, kube-apiserver, kube-controller-manager)")
            plane = LocalControlPlane("super", owner=owner, controller_manager=True, allow_privileged=True)
            plane.start()
            kubeconfig_path = STATE_DIR / "super.kubeconfig"
            shutil.copy(plane.kubeconfig_path, kubeconfig_path)
            kubeconfig_path.chmod(0o600)
            step.done(f"{plane.server}, kubeconfig {kubeconfig_path}")
        kubectl = Kubectl(kubeconfig_path)

        step = Step("installing Stockade: CRD, RBAC, RuntimeClass, PriorityClass, admission policy")
        kubectl("apply", "--server-side", "-k", str(REPO_ROOT / "manifests"))
        kubectl("wait", "--for=condition=Established", "crd/tenants.stockade.dev", "--timeout=60s")
        step.done()

        step = Step("starting the operator as ServiceAccount stockade-system/stockade-operator")
        server_kubeconfig = yaml.safe_load(kubeconfig_path.read_text())
        op_kubeconfig = operator_kubeconfig(kubectl, server_kubeconfig, STATE_DIR / "operator.kubeconfig")
        operator = operator_process(
            op_kubeconfig, STATE_DIR / "operator.log", owner, resync_seconds=5, runtime_class=args.runtime_class
        )
        processes.append(operator)
        operator.start()
        step.done(f"log: {STATE_DIR / 'operator.log'}")

        tenant_file = Path(args.tenant_file).resolve()
        tenant = yaml.safe_load(tenant_file.read_text())["metadata"]["name"]
        step = Step(f"applying Tenant {tenant} from {tenant_file}")
        kubectl("apply", "--server-side", "-f", str(tenant_file))
        obj = follow(kubectl, tenant, args.timeout)
        step.done(f"phase {obj['status']['phase']}")

        target = STATE_DIR / f"{tenant}.kubeconfig"
        subprocess.run(
            [sys.executable, "-m", "stockade.cli", "kubeconfig", tenant, "-o", str(target)],
            check=True, env={**os.environ, "KUBECONFIG": str(kubeconfig_path)},
        )  # fmt: skip
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in obj["status"]["conditions"])
        print()
        print(f"Tenant {tenant}: {obj['status']['phase']}. Its admin kubeconfig: {target}")
        print(f"  kubectl --kubeconfig {kubeconfig_path} get tenants")
        if ready:
            print(f"  kubectl --kubeconfig {target} get namespaces")
        else:
            print(
                "  This super cluster has no nodes, so the tenant's control-plane pods stay Pending:\n"
                f"  kubectl --kubeconfig {kubeconfig_path} -n {naming.control_plane_namespace(tenant)} get pods"
            )
        if args.once:
            return 0
        print("\nThe operator keeps running; Ctrl-C stops it and tears the local super cluster down.")
        while operator.running():
            time.sleep(1)
        print(f"error: the operator exited ({operator.exit_code()}):\n{operator.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping …")
        return 0
    finally:
        for process in processes:
            process.stop()
        if plane is not None:
            plane.cleanup()
            print("local super cluster stopped and removed")


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("up", help="run Stockade end to end on this machine (see README)")
    parser.add_argument("--kubeconfig", help="use this cluster instead of starting a local super cluster")
    parser.add_argument("--tenant-file", default=str(REPO_ROOT / "examples" / "minimal.yaml"))
    parser.add_argument("--runtime-class", default="kata", help="sandbox RuntimeClass the operator enforces")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--once", action="store_true", help="exit (and tear down) once the Tenant is provisioned")
    parser.set_defaults(handler=up)
