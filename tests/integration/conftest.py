"""A super cluster with Stockade's manifests installed, and the operator running against it as
its own least-privileged ServiceAccount (so the ClusterRole in manifests/ is what is tested)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from stockade.kubeconfig import build_kubeconfig
from stockade_dev.testbed import LocalControlPlane, ManagedProcess, find_binary
from stockade_dev.testbed.controlplane import free_port
from stockade_dev.testbed.operator_process import operator_process
from stockade_dev.testbed.pytest_plugin import SESSION_OWNER
from tests.helpers import http_get

REPO = Path(__file__).resolve().parents[2]
RESYNC_SECONDS = 3


def kubectl(plane: LocalControlPlane, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(find_binary("kubectl")), "--kubeconfig", str(plane.kubeconfig_path), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


@pytest.fixture(scope="module")
def super_cluster(control_plane_factory: Callable[..., LocalControlPlane]) -> LocalControlPlane:
    # A real super cluster allows privileged pods (CNI, kube-proxy): the policy must do the refusing.
    plane = control_plane_factory("super", controller_manager=True, allow_privileged=True)
    kubectl(plane, "apply", "--server-side", "-k", str(REPO / "manifests"))
    return plane


@pytest.fixture(scope="module")
def super_client(super_cluster: LocalControlPlane) -> client.ApiClient:
    return config.new_client_from_config_dict(super_cluster.kubeconfig)


def service_account_kubeconfig(plane: LocalControlPlane, api: client.ApiClient, namespace: str, name: str) -> Path:
    token = (
        client.CoreV1Api(api)
        .create_namespaced_service_account_token(name, namespace, {"spec": {"expirationSeconds": 7200}})
        .status.token
    )
    kubeconfig = build_kubeconfig(cluster="super", server=plane.server, ca_pem=plane.ca_pem, user=name, token=token)
    return plane.write_kubeconfig(f"{name}.kubeconfig", kubeconfig)


class RunningOperator:
    """The operator process; restart() kills it (SIGKILL) and starts a fresh one."""

    def __init__(self, plane: LocalControlPlane, kubeconfig: Path, log_name: str = "operator.log"):
        self.plane = plane
        self.kubeconfig = kubeconfig
        self.log_name = log_name
        self.metrics_port = free_port()
        self.process: ManagedProcess = self._new()

    def _new(self) -> ManagedProcess:
        process = operator_process(
            self.kubeconfig, self.plane.dir / self.log_name, SESSION_OWNER, resync_seconds=RESYNC_SECONDS,
            metrics_port=self.metrics_port,
        )  # fmt: skip
        self.plane.processes.append(process)  # stopped with the plane; log shown on failure
        process.start()
        return process

    def kill(self) -> None:
        self.process.stop(grace=0)

    def restart(self) -> None:
        self.kill()
        self.plane.processes.remove(self.process)
        self.process = self._new()

    def log(self) -> str:
        return self.process.log_tail(400)

    def metrics(self) -> str:
        """What the operator's metrics endpoint serves (Prometheus text format)."""
        status, text = http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        assert status == 200, (status, text)
        return text

    def health(self) -> int:
        """The HTTP status of its liveness endpoint (what the Deployment's probe reads)."""
        return http_get(f"http://127.0.0.1:{self.metrics_port}/healthz")[0]


@pytest.fixture(scope="module")
def stockade_operator(super_cluster: LocalControlPlane, super_client: client.ApiClient) -> Iterator[RunningOperator]:
    kubeconfig = service_account_kubeconfig(super_cluster, super_client, "stockade-system", "stockade-operator")
    running = RunningOperator(super_cluster, kubeconfig)
    yield running
    running.kill()
