"""The README's main command, `make run` (`stockade up`), end to end on a fresh local super cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import yaml

from stockade.local import STATE_DIR
from stockade.testbed import leaked_processes
from stockade.testbed.pytest_plugin import SESSION_ENV

pytestmark = pytest.mark.integration


def test_stockade_up_provisions_the_example_tenant_and_cleans_up() -> None:
    owner = uuid.uuid4().hex
    run = subprocess.run(
        [sys.executable, "-m", "stockade.cli", "up", "--once", "--timeout", "120"],
        capture_output=True, text=True, timeout=300, env={**os.environ, SESSION_ENV: owner},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    for step in ("[1] starting a local super cluster", "[2] installing Stockade", "[3] starting the operator",
                 "[4] applying Tenant team-a"):  # fmt: skip
        assert step in out
    assert "CertificatesReady=True" in out and "IsolationReady=True" in out
    assert "local super cluster stopped and removed" in out
    kubeconfig = yaml.safe_load((STATE_DIR / "team-a.kubeconfig").read_text())
    assert kubeconfig["users"][0]["name"] == "team-a-admin"
    assert leaked_processes(owner) == []  # etcd, API server, controller-manager and operator all stopped
