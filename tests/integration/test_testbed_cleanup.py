"""No test-bed process outlives its test session: failed, interrupted, terminated or killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from stockade_dev.testbed import leaked_processes
from stockade_dev.testbed.pytest_plugin import SESSION_ENV

pytestmark = pytest.mark.integration

CHILD_CONFTEST = 'pytest_plugins = ["stockade_dev.testbed.pytest_plugin"]\n'
CHILD_TEST = """
import os, time

def test_control_plane_then_failure(control_plane_factory):
    control_plane_factory("leak-check")
    open(os.environ["READY_FILE"], "w").close()
    if os.environ.get("HANG"):
        time.sleep(600)
    assert False, "deliberate failure"
"""


def start_child_session(tmp_path: Path, hang: bool) -> tuple[subprocess.Popen[str], str, Path]:
    (tmp_path / "conftest.py").write_text(CHILD_CONFTEST)
    (tmp_path / "test_child.py").write_text(CHILD_TEST)
    owner = uuid.uuid4().hex
    ready = tmp_path / "ready"
    env = {**os.environ, SESSION_ENV: owner, "READY_FILE": str(ready)}
    if hang:
        env["HANG"] = "1"
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return child, owner, ready


def wait_for(path: Path, child: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert child.poll() is None, f"child session ended early:\n{child.communicate()[0]}"
        assert time.monotonic() < deadline, "child session never started its control plane"
        time.sleep(0.2)


def assert_no_leak(owner: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while leaked_processes(owner) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leaked_processes(owner) == []


def test_failed_test_stops_processes_and_shows_logs(tmp_path: Path) -> None:
    child, owner, ready = start_child_session(tmp_path, hang=False)
    output, _ = child.communicate(timeout=300)
    assert ready.exists()
    assert child.returncode == 1, output
    assert "deliberate failure" in output
    # The failing test's report carries the tail of each process's log.
    assert "leak-check kube-apiserver log (tail)" in output
    assert "leak-check etcd log (tail)" in output
    assert_no_leak(owner)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_session_leaves_nothing(tmp_path: Path, signum: int) -> None:
    child, owner, ready = start_child_session(tmp_path, hang=True)
    try:
        wait_for(ready, child)
        assert leaked_processes(owner), "the child's control plane should be running now"
        child.send_signal(signum)
        child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert_no_leak(owner)
