"""The README's main command, `make run` (`stockade up`), on a fresh local super cluster of its own:
it brings the cluster up, installs Stockade, runs the operator, provisions the example Tenant to
Ready, writes its kubeconfig, prints the next command, and with --once restores the host."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from stockade_dev.localcluster import host
from stockade_dev.localcluster.node import BRIDGE, FENCE_TABLE, Layout
from stockade_dev.testbed import leaked_processes
from stockade_dev.testbed.pytest_plugin import SESSION_ENV
from stockade_dev.up import STATE_DIR

pytestmark = pytest.mark.own_cluster


def test_stockade_up_brings_the_example_tenant_to_ready_and_restores_the_host() -> None:
    layout = Layout.from_env()
    assert not layout.state.exists(), "a local super cluster is already up: run `e2e/cluster down` first"
    links_before = set(host.links())
    limits_before = {key: (host.PROC_SYS / key).read_text() for key in host.SYSCTL_MINIMUMS}
    owner = uuid.uuid4().hex
    run = subprocess.run(
        [sys.executable, "-m", "stockade.cli", "up", "--local", "--once", "--timeout", "480"],
        capture_output=True, text=True, timeout=900, env={**os.environ, SESSION_ENV: owner},
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    for step in ("egress fence:", "control plane: etcd, kube-apiserver", "containerd with runc and gVisor", "images:",
                 "kubelet, kube-proxy, kube-router", "add-ons: CoreDNS", "installing Stockade",
                 "starting the operator", "applying Tenant team-a"):  # fmt: skip
        assert step in out, step
    assert "Ready=True" in out and "sandbox RuntimeClass gvisor" in out
    for key, minimum in host.SYSCTL_MINIMUMS.items():  # raised while it ran, if they were lower
        name = key.replace("/", ".")
        assert (f"raised {name} from" in out) == (int(limits_before[key]) < minimum), out
    kubeconfig_path = STATE_DIR / "team-a.kubeconfig"
    kubeconfig = yaml.safe_load(kubeconfig_path.read_text())
    assert kubeconfig["users"][0]["name"] == "team-a-admin"
    assert f"--kubeconfig {kubeconfig_path} get namespaces" in out
    assert "local super cluster stopped and removed" in out
    # Everything it started is gone, and the host is as it was.
    assert leaked_processes(owner) == []
    assert BRIDGE not in host.links() and set(host.links()) == links_before
    assert " ".join(FENCE_TABLE) not in host.nft_tables()
    assert not any(Path(p).exists() for p in layout.owned_paths())
    assert not host.snapshot_path(layout).exists()
    assert {key: (host.PROC_SYS / key).read_text() for key in host.SYSCTL_MINIMUMS} == limits_before
