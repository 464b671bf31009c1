"""The e2e tier: Stockade installed on the super cluster that $KUBECONFIG names (the local super
cluster in CI, or kind), the operator running as its ServiceAccount, Tenants that go all the way to
Ready on real kubelets, and tenant workloads in sandboxed containers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade import leader, naming
from stockade_dev.localcluster.cluster import KUBELET_IMAGE, NETGATE_IMAGE, import_operator_image
from stockade_dev.localcluster.node import Layout
from stockade_dev.testbed import ManagedProcess
from stockade_dev.testbed.controlplane import free_port
from stockade_dev.testbed.kubectl import Kubectl
from stockade_dev.testbed.operator_process import operator_process
from stockade_dev.testbed.pytest_plugin import SESSION_OWNER
from stockade_dev.up import OPERATOR_DEPLOYMENT, install_stockade, operator_kubeconfig
from tests.helpers import eventually, http_get

REPO = Path(__file__).resolve().parents[2]
RUNTIME_CLASS = os.environ.get("STOCKADE_E2E_RUNTIME_CLASS", "gvisor")
# The runtime the sandbox RuntimeClass resolves to in containerd (gVisor's shim on the local cluster).
SANDBOX_RUNTIME = os.environ.get("STOCKADE_E2E_SANDBOX_RUNTIME", "io.containerd.runsc.v1")
READY_TIMEOUT = 420.0
# The operator runs in the cluster as manifests/ deploy it (the default), or, with
# STOCKADE_E2E_OPERATOR=process, as a process on this machine (faster to iterate on).
IN_CLUSTER = os.environ.get("STOCKADE_E2E_OPERATOR", "in-cluster") == "in-cluster"
RESYNC_SECONDS = 5
OPERATOR_SELECTOR = "app.kubernetes.io/name=stockade-operator"
OPERATOR_METRICS = "stockade-operator-metrics"
OPERATOR_METRICS_PORT = 9090  # manifests/operator.yaml
OPERATOR_REPLICAS = 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def super_kubeconfig() -> Path:
    value = os.environ.get("KUBECONFIG")
    if not value or not Path(value).is_file():
        pytest.fail("KUBECONFIG names no cluster: run `e2e/cluster up` (or use kind) and export KUBECONFIG")
    return Path(value)


@pytest.fixture(scope="session")
def super_kubectl(super_kubeconfig: Path) -> Kubectl:
    return Kubectl(super_kubeconfig)


class Operator:
    """The operator as the Deployment of manifests/ (2 replicas, one leading), from its image built
    on this machine (`operator_image`) and imported into the local super cluster; `restart()` kills
    the leading pod. With STOCKADE_E2E_OPERATOR=process it is a process on this machine instead
    (same ServiceAccount), and `restart()` SIGKILLs it and starts a fresh one. On kind the image is
    loaded by e2e/kind/up."""

    def __init__(self, kubeconfig: Path, log: Path, super_kubectl: Kubectl):
        self.kubeconfig, self.log, self.super_kubectl = kubeconfig, log, super_kubectl
        self.in_cluster = IN_CLUSTER
        self.metrics_port = OPERATOR_METRICS_PORT if IN_CLUSTER else free_port()
        self.process = self._new_process()
        self.start()

    def _new_process(self) -> ManagedProcess:
        return operator_process(
            self.kubeconfig, self.log, SESSION_OWNER, resync_seconds=RESYNC_SECONDS, runtime_class=RUNTIME_CLASS,
            netgate_image=NETGATE_IMAGE, kubelet_image=KUBELET_IMAGE, metrics_port=self.metrics_port,
        )  # fmt: skip

    # -- the Deployment ----------------------------------------------------------------------

    def pods(self) -> list[dict[str, Any]]:
        found = self.super_kubectl.json("get", "pods", "-n", naming.OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR)
        return list(found["items"])

    def leader_pod(self) -> dict[str, Any]:
        """The pod holding the Lease (its identity starts with the pod's host name)."""

        def holder() -> dict[str, Any] | None:
            lease = self.super_kubectl.json("get", "lease", "-n", naming.OPERATOR_NAMESPACE, leader.LEASE)
            identity = lease["spec"].get("holderIdentity") or ""
            return next((p for p in self.pods() if identity.startswith(f"{p['metadata']['name']}_")
                         and p.get("status", {}).get("podIP")), None)  # fmt: skip

        return eventually(holder, timeout=90, interval=1, what="an operator pod holding the Lease")

    def _rolled_out(self) -> None:
        self.super_kubectl("rollout", "status", *OPERATOR_DEPLOYMENT, "--timeout=300s", timeout=320)

    # -- what tests use ----------------------------------------------------------------------

    def metrics(self, via_service: bool = False) -> str:
        """What the leading operator's metrics endpoint serves (Prometheus text format); with
        `via_service`, what the Service stockade-operator-metrics answers (either replica)."""
        if not self.in_cluster:
            host = "127.0.0.1"
        elif via_service:
            service = self.super_kubectl.json("get", "service", "-n", naming.OPERATOR_NAMESPACE, OPERATOR_METRICS)
            host = service["spec"]["clusterIP"]
        else:
            host = self.leader_pod()["status"]["podIP"]
        status, text = http_get(f"http://{host}:{self.metrics_port}/metrics")
        assert status == 200, (status, text)
        return text

    def log_text(self) -> str:
        """The operator's log: the process's file, or every operator pod's container log."""
        if not self.in_cluster:
            return self.process.log_path.read_text()
        return "\n".join(
            self.super_kubectl("logs", "-n", naming.OPERATOR_NAMESPACE, p["metadata"]["name"], check=False)
            for p in self.pods()
        )

    def log_tail(self, lines: int) -> str:
        """The last `lines` lines of its log that say more than a routine handler success (a
        failed test's timer ticks every few seconds would otherwise crowd out what it did)."""
        try:
            text = self.log_text()
        except Exception as error:  # a diagnostic must never hide the failure it explains
            return f"not read: {error!r}"
        said = [line for line in text.splitlines() if not ROUTINE_LOG_LINE.search(line)]
        return "\n".join(said[-lines:])

    def running(self) -> bool:
        if not self.in_cluster:
            return self.process.running()
        replicas = self.super_kubectl("get", *OPERATOR_DEPLOYMENT, "-o", "jsonpath={.spec.replicas}").strip()
        return replicas not in ("", "0")

    def restart(self) -> None:
        """Kill the operator: the leading pod (the other replica takes over), or the process."""
        if self.in_cluster:
            name = self.leader_pod()["metadata"]["name"]
            self.super_kubectl(
                "delete", "pod", "-n", naming.OPERATOR_NAMESPACE, name, "--grace-period=0", "--force", check=False
            )
            return
        self.process.stop(grace=0)
        self.start()

    def stop(self) -> None:
        if not self.in_cluster:
            self.process.stop()
            return
        self.super_kubectl("scale", *OPERATOR_DEPLOYMENT, "--replicas=0")
        eventually(lambda: not self.pods(), timeout=120, interval=1, what="no operator pod left")

    def start(self) -> None:
        """Start it (again after `stop()`)."""
        if not self.in_cluster:
            self.process = self._new_process()
            self.process.start()
            return
        self.super_kubectl("scale", *OPERATOR_DEPLOYMENT, f"--replicas={OPERATOR_REPLICAS}")
        self._rolled_out()


@pytest.fixture(scope="session")
def stockade(
    super_kubectl: Kubectl, super_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    local = super_kubeconfig.resolve() == Layout.from_env().kubeconfig.resolve()
    if IN_CLUSTER and local:
        import_operator_image(Layout.from_env(), out=lambda line: print(line, flush=True))
    environment = {  # this cluster's runtime and images (on kind, the manifests' defaults hold)
        "STOCKADE_RUNTIME_CLASS": RUNTIME_CLASS, "STOCKADE_RESYNC_SECONDS": str(RESYNC_SECONDS),
        "STOCKADE_NETGATE_IMAGE": NETGATE_IMAGE, "STOCKADE_KUBELET_IMAGE": KUBELET_IMAGE,
    }  # fmt: skip
    install_stockade(super_kubectl, operator_in_cluster=IN_CLUSTER, operator_env=environment if local else None)
    folder = tmp_path_factory.mktemp("operator")
    kubeconfig = operator_kubeconfig(super_kubectl, yaml.safe_load(super_kubeconfig.read_text()), folder / "kubeconfig")
    operator = Operator(kubeconfig, folder / "operator.log", super_kubectl)
    yield operator
    operator.stop()


def control_plane_state(super_kubectl: Kubectl) -> str:
    """What a failed test needs to be explained afterwards, compactly: each tenant's control-plane
    pods with their containers' states, the namespace's last events, and the log tail of every
    container that is not ready (its previous run's too)."""
    lines: list[str] = []
    for ns in super_kubectl.json("get", "namespaces")["items"]:
        name = ns["metadata"]["name"]
        if not (name.startswith("stockade-") and name.endswith("-control-plane")):
            continue
        for pod in super_kubectl.json("get", "pods", "-n", name)["items"]:
            meta, status = pod["metadata"], pod.get("status", {})
            lines.append(f"{name}/{meta['name']}: {status.get('phase')} deleting={bool(meta.get('deletionTimestamp'))}")
            for c in status.get("initContainerStatuses", []) + status.get("containerStatuses", []):
                last = c.get("lastState", {}).get("terminated") or {}
                lines.append(
                    f"  {c['name']}: ready={c.get('ready')} restarts={c.get('restartCount')} "
                    f"state={json.dumps(c.get('state'))[:160]} last={last.get('reason')}/{last.get('exitCode')}"
                )
                if c.get("ready"):
                    continue
                for previous in ("--previous=false", "--previous=true"):
                    tail = super_kubectl(
                        "logs", "-n", name, meta["name"], "-c", c["name"], previous, "--tail=8", check=False
                    ).strip()
                    lines += [f"    [{previous}] {line[:200]}" for line in tail.splitlines()]
        events = super_kubectl("get", "events", "-n", name, "--sort-by=.lastTimestamp", check=False)
        lines += [f"  event: {line[:200]}" for line in events.strip().splitlines()[-12:]]
    return "\n".join(lines) or "no tenant control-plane namespaces"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    funcargs = getattr(item, "funcargs", {})
    operator, super_kubectl = funcargs.get("stockade"), funcargs.get("super_kubectl")
    if report.failed and isinstance(operator, Operator):
        report.sections.append(("operator log (tail)", operator.log_tail(80)))
    if report.failed and isinstance(super_kubectl, Kubectl):
        try:
            report.sections.append(("tenant control planes in the super cluster", control_plane_state(super_kubectl)))
        except Exception as error:  # a diagnostic must never hide the failure it explains
            report.sections.append(("tenant control planes in the super cluster", f"not read: {error!r}"))
    return report


# Operator log lines a failure report leaves out: handlers that succeeded, with nothing else said.
ROUTINE_LOG_LINE = re.compile(r"\[INFO +\] \[[^]]+\] (Timer|Handler) '[a-z_]+' succeeded\.$")


@dataclass
class Tenant:
    name: str
    super_kubectl: Kubectl
    kubeconfig: Path

    @property
    def kubectl(self) -> Kubectl:
        return Kubectl(self.kubeconfig)

    @property
    def control_plane_namespace(self) -> str:
        return naming.control_plane_namespace(self.name)

    @property
    def workloads_namespace(self) -> str:
        return naming.workloads_namespace(self.name)

    def get(self) -> dict[str, Any]:
        return dict(self.super_kubectl.json("get", "tenant", self.name))

    def condition(self, kind: str) -> dict[str, Any]:
        return next((c for c in self.get().get("status", {}).get("conditions", []) if c["type"] == kind), {})

    def patch(self, patch: dict[str, Any]) -> None:
        self.super_kubectl("patch", "tenant", self.name, "--type=merge", "-p", json.dumps(patch))

    def wait_ready(self, timeout: float = READY_TIMEOUT, version: str | None = None) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            obj = self.get()
            status = obj.get("status", {})
            conditions = {c["type"]: c for c in status.get("conditions", [])}
            current = conditions.get("Ready", {}).get("status") == "True"
            generation = status.get("observedGeneration") == obj["metadata"]["generation"]
            matches = version is None or status.get("version") == version
            return obj if current and generation and matches else None

        return dict(eventually(ready, timeout=timeout, interval=2, what=f"Tenant {self.name} Ready"))

    def fetch_kubeconfig(self) -> Path:
        subprocess.run(
            [sys.executable, "-m", "stockade.cli", "kubeconfig", self.name, "-o", str(self.kubeconfig)],
            check=True, capture_output=True, env={**os.environ, "KUBECONFIG": str(self.super_kubectl.kubeconfig)},
        )  # fmt: skip
        return self.kubeconfig


# The e2e tenants' default container requests: the API's default (100m CPU) would let the tier's
# test pods fill this 2-core node's CPU requests (1910m of 2000m measured with two tenants), and a
# new pod then waits out its test's timeout in Pending ("Insufficient cpu").
E2E_CONTAINER_DEFAULTS = {"requests": {"cpu": "10m", "memory": "128Mi"}}


def create_tenant(super_kubectl: Kubectl, folder: Path, name: str, spec: dict[str, Any]) -> Tenant:
    # A Tenant of the same name left by an earlier session (deleted or not: a fixture that failed
    # before its teardown leaves it) would swallow the apply.
    super_kubectl("delete", "tenant", name, "--ignore-not-found", "--wait=false")
    eventually(
        lambda: not super_kubectl("get", "tenant", name, "--ignore-not-found", "-o", "name").strip(),
        timeout=300, interval=2, what=f"an earlier Tenant {name} deleted",
    )  # fmt: skip
    workloads = {"containerDefaults": E2E_CONTAINER_DEFAULTS, **spec.get("workloads", {})}
    manifest = {"apiVersion": "stockade.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name},
                "spec": {**spec, "workloads": workloads}}  # fmt: skip
    super_kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(manifest))
    return Tenant(name, super_kubectl, folder / f"{name}.kubeconfig")


# Cloud metadata's address. Nothing may ever reach a real one from here: the decoy below binds it on
# this host's loopback for the whole session, so a probe that gets through lands on the decoy.
METADATA_IP = "169.254.169.254"


@dataclass
class Decoy:
    """An HTTP server on METADATA_IP:80 of this host that records who asked for what."""

    requests: list[tuple[str, str]] = field(default_factory=list)  # (client address, path)

    def paths_from(self, prefix: str) -> list[str]:
        return [path for _, path in self.requests if path.startswith(prefix)]


@pytest.fixture(scope="session")
def metadata_decoy() -> Iterator[Decoy]:
    decoy = Decoy()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            decoy.requests.append((self.client_address[0], self.path))
            body = b"decoy: this would have been the cloud's metadata service\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    added = subprocess.run(["ip", "addr", "add", f"{METADATA_IP}/32", "dev", "lo"], capture_output=True).returncode == 0
    server = ThreadingHTTPServer((METADATA_IP, 80), Handler)
    thread = threading.Thread(target=server.serve_forever, name="metadata-decoy", daemon=True)
    thread.start()
    try:
        yield decoy
    finally:
        server.shutdown()
        server.server_close()
        if added:
            subprocess.run(["ip", "addr", "del", f"{METADATA_IP}/32", "dev", "lo"], capture_output=True)


def containerd_runtime(container_id: str) -> str:
    """The runtime containerd itself runs a container with (not what the pod spec asks for)."""
    socket = Layout.from_env().containerd_socket
    result = subprocess.run(
        ["ctr", "--address", str(socket), "--namespace", "k8s.io", "containers", "info", container_id.split("://")[-1]],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return str(json.loads(result.stdout)["Runtime"]["Name"])


def can_inspect_runtime() -> bool:
    return Layout.from_env().containerd_socket.exists()
