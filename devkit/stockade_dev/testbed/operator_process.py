"""Run the Stockade operator as a separate process against a cluster (tests, the local demo)."""

from __future__ import annotations

import sys
from pathlib import Path

from stockade_dev.testbed.process import ManagedProcess


def operator_process(
    kubeconfig: Path,
    log_path: Path,
    owner: str,
    *,
    resync_seconds: float = 30,
    runtime_class: str = "kata",
    netgate_image: str | None = None,
    kubelet_image: str | None = None,
    metrics_port: int | None = None,
) -> ManagedProcess:
    """`kopf run -m stockade.handlers` as a ManagedProcess (not started yet)."""
    argv = [
        sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces",
        "-m", "stockade.handlers", "--log-format=full",
    ]  # fmt: skip
    env = {
        "KUBECONFIG": str(kubeconfig),
        "STOCKADE_RESYNC_SECONDS": str(resync_seconds),
        "STOCKADE_RUNTIME_CLASS": runtime_class,
        "PYTHONUNBUFFERED": "1",
    }
    if netgate_image:
        env["STOCKADE_NETGATE_IMAGE"] = netgate_image
    if kubelet_image:
        env["STOCKADE_KUBELET_IMAGE"] = kubelet_image
    if metrics_port:
        env["STOCKADE_METRICS_PORT"] = str(metrics_port)
    return ManagedProcess("stockade-operator", argv, log_path, owner, env=env)
