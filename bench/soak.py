"""Chaos soak on a real super cluster (the local one: `make soak` brings it up and down).

    KUBECONFIG=/var/lib/stockade-local/admin.kubeconfig .venv/bin/python bench/soak.py --tenants 2 --minutes 8

Several tenants churn Deployments, Services, ConfigMaps and Secrets (create, change, delete) while
the operator (SIGKILL; every syncer with it), a tenant's syncer alone (restarted in place by a
change of its workloads spec), and a tenant's control-plane pod (etcd, the API server and the
controllers of a replica, all at once) are killed at random.
Then churn and chaos stop, and every tenant must converge: an invariant check compares both sides
until it passes or `--converge-timeout` runs out —

- lost: an object the tenant API server acknowledged and no later operation removed is missing in
  the tenant; or a tenant object has no super counterpart, or one with other data;
- duplicated: a tenant object with more than one super object, or a Deployment with more pods than
  replicas;
- orphaned: a super object (synced label) whose tenant object is gone.

Bounded in time: churn and chaos last `--minutes`, convergence `--converge-timeout` seconds.
Writes bench/results/soak.json (kills survived, operations, objects checked, convergence time,
every violation) and exits 1 if any invariant is violated.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stockade import naming
from stockade_dev.localcluster.cluster import KUBELET_IMAGE, NETGATE_IMAGE, WORKLOAD_IMAGE
from stockade_dev.localcluster.cluster import RESTRICTED_SECURITY_CONTEXT as RESTRICTED
from stockade_dev.testbed.kubectl import Kubectl, KubectlError
from stockade_dev.testbed.kubectl import wait_until as wait
from stockade_dev.testbed.operator_process import operator_process
from stockade_dev.up import install_for_benchmark

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "churn"
KINDS = ("configmap", "secret", "service", "deployment")
# Per tenant and kind, names are drawn from a small pool so objects are created, changed and
# deleted again and again (not only created).
POOL = {"configmap": 6, "secret": 4, "service": 3, "deployment": 2}
VICTIMS = ["operator", "syncer", "control-plane"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def manifest(kind: str, name: str, revision: int) -> dict[str, Any]:
    meta = {"name": name, "namespace": NAMESPACE}
    if kind == "configmap":
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"revision": str(revision)}}
    if kind == "secret":
        value = base64.b64encode(str(revision).encode()).decode()
        return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque", "data": {"revision": value}}
    if kind == "service":
        return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
                "spec": {"selector": {"app": f"deployment-{revision % POOL['deployment']}"},
                         "ports": [{"port": 80 + revision % 3, "targetPort": 8080}]}}  # fmt: skip
    replicas = 1 + revision % 2
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                                  "name": "main", "image": WORKLOAD_IMAGE, "command": ["sleep", "3600"],
                                  "securityContext": RESTRICTED,
                                  "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                                                "limits": {"cpu": "100m", "memory": "32Mi"}}}]}}},
    }  # fmt: skip


@dataclass
class Ledger:
    """What the tenant API server acknowledged, per (kind, name): the revision, or None if deleted.
    A failed call leaves its object uncertain (the server may have applied it) until the next
    acknowledged call on it."""

    acknowledged: dict[tuple[str, str], int | None] = field(default_factory=dict)
    uncertain: set[tuple[str, str]] = field(default_factory=set)
    operations: Counter[str] = field(default_factory=Counter)


@dataclass
class SoakTenant:
    name: str
    kubectl: Kubectl
    ledger: Ledger = field(default_factory=Ledger)


def churn(tenant: SoakTenant, deadline: float, seed: int) -> None:
    rng = random.Random(seed)
    revision = 0
    while time.monotonic() < deadline:
        kind = rng.choice(KINDS)
        name = f"{kind}-{rng.randrange(POOL[kind])}"
        key = (kind, name)
        delete = tenant.ledger.acknowledged.get(key) is not None and rng.random() < 0.3
        revision += 1
        try:
            if delete:
                tenant.kubectl("delete", kind, name, "-n", NAMESPACE, "--ignore-not-found", "--wait=false", timeout=20)
                tenant.ledger.acknowledged[key] = None
            else:
                tenant.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                               stdin=yaml.safe_dump(manifest(kind, name, revision)), timeout=20)  # fmt: skip
                tenant.ledger.acknowledged[key] = revision
            tenant.ledger.uncertain.discard(key)
            tenant.ledger.operations["acknowledged"] += 1
        except (KubectlError, subprocess.TimeoutExpired):
            tenant.ledger.uncertain.add(key)  # the API server may be down (killed): may or may not have applied
            tenant.ledger.operations["failed"] += 1
            time.sleep(1)
        time.sleep(rng.uniform(0.2, 1.0))


@dataclass
class Chaos:
    super_kubectl: Kubectl
    tenants: list[str]
    restart_operator: Any
    kills: Counter[str] = field(default_factory=Counter)

    def run(self, deadline: float, seed: int, every: tuple[float, float]) -> None:
        rng = random.Random(seed)
        victims: list[str] = []
        while True:
            pause = rng.uniform(*every)
            if time.monotonic() + pause >= deadline:
                return
            time.sleep(pause)
            if not victims:  # each kind of victim once per round, in random order
                victims = rng.sample(VICTIMS, len(VICTIMS))
            victim = victims.pop()
            tenant = rng.choice(self.tenants)
            namespace = naming.control_plane_namespace(tenant)
            try:
                if victim == "operator":
                    self.restart_operator()  # SIGKILL: the reconciler and every tenant's syncer with it
                elif victim == "syncer":
                    # A change of spec.workloads restarts that tenant's syncer in place (a fresh list).
                    budget = "16Mi" if self.kills["syncer"] % 2 else "16383Ki"
                    patch = {"spec": {"workloads": {"quota": {"configBytes": budget}}}}
                    self.super_kubectl("patch", "tenant", tenant, "--type=merge", "-p", json.dumps(patch), timeout=30)
                else:  # the control-plane pod: etcd, the API server and the controllers at once
                    self.super_kubectl("delete", "pod", "-n", namespace, "-l", f"{naming.LABEL_REPLICA}=true",
                                       "--grace-period=0", "--force", "--wait=false", timeout=30)  # fmt: skip
            except (KubectlError, subprocess.TimeoutExpired) as error:
                log(f"chaos: could not kill {victim}: {error}")
                continue
            self.kills[victim] += 1
            log(f"chaos: killed {victim}" + ("" if victim == "operator" else f" of {tenant}"))


def items(kubectl: Kubectl, *args: str) -> list[dict[str, Any]]:
    return list(kubectl.json("get", *args).get("items", []))


def check(super_kubectl: Kubectl, tenant: SoakTenant) -> tuple[dict[str, list[str]], int]:
    """The invariants for one tenant: violations by class, and how many objects were compared."""
    violations: dict[str, list[str]] = {"lost": [], "duplicated": [], "orphaned": []}
    ns = naming.workloads_namespace(tenant.name)
    selector = f"{naming.LABEL_TENANT}={tenant.name},{naming.LABEL_SYNCED}=true"
    in_namespace = f"{naming.LABEL_NAMESPACE}={NAMESPACE}"  # mirrors of the churned tenant namespace
    checked = 0
    tenant_uids: set[str] = set()
    for kind in ("configmap", "secret", "service", "pod"):
        theirs = [o for o in items(tenant.kubectl, kind, "-n", NAMESPACE)
                  if not (kind == "configmap" and o["metadata"]["name"] == "kube-root-ca.crt")
                  and not (kind == "pod" and o["metadata"].get("deletionTimestamp"))]  # fmt: skip
        ours = [o for o in items(super_kubectl, kind, "-n", ns, "-l", f"{selector},{in_namespace}")
                if naming.TOKEN_EXPIRES_ANNOTATION not in (o["metadata"].get("annotations") or {})]  # fmt: skip
        by_uid: dict[str, list[dict[str, Any]]] = {}
        for shadow in ours:
            by_uid.setdefault((shadow["metadata"].get("annotations") or {}).get(naming.ANNOTATION_UID, ""), []).append(
                shadow
            )
        for obj in theirs:
            checked += 1
            uid, name = obj["metadata"]["uid"], obj["metadata"]["name"]
            tenant_uids.add(uid)
            shadows = by_uid.get(uid, [])
            if len(shadows) > 1:
                violations["duplicated"].append(f"{tenant.name}: {kind} {name} has {len(shadows)} super objects")
            if not shadows:
                violations["lost"].append(f"{tenant.name}: {kind} {name} has no super object")
            elif kind in ("configmap", "secret") and shadows[0].get("data") != obj.get("data"):
                violations["lost"].append(f"{tenant.name}: {kind} {name}: super data differs")
        for shadow in ours:
            checked += 1
            if (shadow["metadata"].get("annotations") or {}).get(naming.ANNOTATION_UID) not in tenant_uids:
                violations["orphaned"].append(f"{tenant.name}: super {kind} {shadow['metadata']['name']}")
        # What the tenant acknowledged and nothing later changed is there, at that revision.
        if kind != "pod":
            present = {o["metadata"]["name"]: o for o in theirs}
            for (ledger_kind, name), revision in tenant.ledger.acknowledged.items():
                if ledger_kind != kind or (ledger_kind, name) in tenant.ledger.uncertain:
                    continue
                if revision is not None and name not in present:
                    violations["lost"].append(f"{tenant.name}: {kind} {name} (revision {revision}) acknowledged, gone")
                if revision is None and name in present:
                    violations["lost"].append(f"{tenant.name}: {kind} {name} deleted, still there")
    for deployment in items(tenant.kubectl, "deployment", "-n", NAMESPACE):
        checked += 1
        name, replicas = deployment["metadata"]["name"], deployment["spec"]["replicas"]
        running = [p for p in items(super_kubectl, "pod", "-n", ns, "-l", selector)
                   if (p["metadata"].get("annotations") or {}).get(naming.ANNOTATION_NAME, "").startswith(f"{name}-")
                   and not p["metadata"].get("deletionTimestamp")]  # fmt: skip
        if len(running) > replicas:
            violations["duplicated"].append(f"{tenant.name}: deployment {name}: {len(running)} super pods > {replicas}")
        if len(running) < replicas:
            violations["lost"].append(f"{tenant.name}: deployment {name}: {len(running)} super pods < {replicas}")
    return violations, checked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=8)
    parser.add_argument("--converge-timeout", type=float, default=600)
    parser.add_argument("--chaos-every", type=float, nargs=2, default=(20, 45), metavar=("MIN", "MAX"))
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--runtime-class", default="gvisor")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "soak.json")
    args = parser.parse_args()
    super_kubectl, folder, op_kubeconfig = install_for_benchmark("soak")

    def new_operator() -> Any:
        process = operator_process(op_kubeconfig, folder / "operator.log", "soak", resync_seconds=5,
                                   runtime_class=args.runtime_class, netgate_image=NETGATE_IMAGE,
                                   kubelet_image=KUBELET_IMAGE)  # fmt: skip
        process.start()
        return process

    operator = [new_operator()]

    def restart_operator() -> None:
        operator[0].stop(grace=0)
        operator[0] = new_operator()

    tenants: list[SoakTenant] = []
    try:
        log(f"seed {args.seed}: {args.tenants} tenants, {args.minutes} min of churn and chaos")
        for i in range(args.tenants):
            name = f"soak-{i}"
            # One of an earlier soak may still be being deleted (the operator started above finishes it).
            wait(lambda name=name: not super_kubectl("get", "tenant", name, "--ignore-not-found", "-o", "name").strip(),
                 300, f"an earlier Tenant {name} deleted", interval=2)  # fmt: skip
            spec = {"controlPlane": {"service": {"type": "NodePort"}}}  # a kubeconfig reachable from here
            body = {"apiVersion": "stockade.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name}, "spec": spec}
            super_kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(body))
        for i in range(args.tenants):
            name = f"soak-{i}"

            def ready(name: str = name) -> bool:
                conditions = super_kubectl.json("get", "tenant", name).get("status", {}).get("conditions", [])
                return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

            wait(ready, 600, f"Tenant {name} Ready", interval=2)
            kubeconfig = folder / f"{name}.kubeconfig"
            env = {**os.environ, "KUBECONFIG": str(super_kubectl.kubeconfig)}
            command = [sys.executable, "-m", "stockade.cli", "kubeconfig", name, "-o", str(kubeconfig)]
            subprocess.run(command, check=True, capture_output=True, env=env)
            kubectl = Kubectl(kubeconfig)
            wait(lambda kubectl=kubectl: kubectl("get", "serviceaccount", "default"), 120, f"{name} ready for use")
            kubectl("create", "namespace", NAMESPACE)
            wait(lambda kubectl=kubectl: kubectl("get", "serviceaccount", "default", "-n", NAMESPACE), 60, "namespace")
            tenants.append(SoakTenant(name, kubectl))
            log(f"tenant {name} Ready")

        deadline = time.monotonic() + args.minutes * 60
        chaos = Chaos(super_kubectl, [t.name for t in tenants], restart_operator)
        threads = [threading.Thread(target=churn, args=(t, deadline, args.seed + i), daemon=True)
                   for i, t in enumerate(tenants)]  # fmt: skip
        for thread in threads:
            thread.start()
        # Chaos runs in the main thread: the operator it restarts dies with the thread that started
        # it (the test bed sets PR_SET_PDEATHSIG, which follows the parent *thread*).
        chaos.run(deadline, args.seed, args.chaos_every)
        for thread in threads:
            thread.join(120)
        stopped = time.monotonic()
        log(f"churn and chaos stopped: kills {dict(chaos.kills)}; converging …")

        violations: dict[str, list[str]] = {}
        checked = 0
        converged_after: float | None = None
        while time.monotonic() - stopped < args.converge_timeout:
            violations, checked = {"lost": [], "duplicated": [], "orphaned": []}, 0
            try:
                for tenant in tenants:
                    found, count = check(super_kubectl, tenant)
                    checked += count
                    for cls, entries in found.items():
                        violations[cls] += entries
            except (KubectlError, subprocess.TimeoutExpired) as error:
                violations = {"lost": [f"check failed: {error}"], "duplicated": [], "orphaned": []}
            if not any(violations.values()):
                converged_after = time.monotonic() - stopped
                break
            log(f"not converged yet: {sum(map(len, violations.values()))} violations, e.g. "
                f"{next(v for entries in violations.values() for v in entries)}")  # fmt: skip
            time.sleep(5)
    finally:
        operator[0].stop()

    operations: Counter[str] = Counter()
    for tenant in tenants:
        operations.update(tenant.ledger.operations)
    result = {
        "seed": args.seed,
        "tenants": args.tenants,
        "minutes": args.minutes,
        "kills": dict(chaos.kills),
        "kills_total": sum(chaos.kills.values()),
        "operations": dict(operations),
        "objects_checked": checked,
        "converged": converged_after is not None,
        "convergence_seconds": None if converged_after is None else round(converged_after, 1),
        "violations": violations,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "violations"}, indent=2))
    for cls, entries in violations.items():
        for entry in entries:
            print(f"{cls}: {entry}")
    for tenant in tenants:
        super_kubectl("delete", "tenant", tenant.name, "--wait=false")
    return 0 if result["converged"] else 1


if __name__ == "__main__":
    sys.exit(main())
