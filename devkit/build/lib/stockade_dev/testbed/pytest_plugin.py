"""pytest fixtures for real control planes: `control_plane_factory`, `apiserver`, `kube_client`.

Load with `pytest_plugins = ["stockade_dev.testbed.pytest_plugin"]`. Every process started here is
stopped at the end of the session, and the session fails if one is left running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stockade_dev.testbed.controlplane import LocalControlPlane
from stockade_dev.testbed.process import leaked_processes

SESSION_ENV = "STOCKADE_TESTBED_SESSION"
# One owner token per test session; a parent process may choose it (the leak tests do).
SESSION_OWNER = os.environ.get(SESSION_ENV) or uuid.uuid4().hex
_active: list[LocalControlPlane] = []

ControlPlaneFactory = Callable[..., LocalControlPlane]


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    # A SIGTERM (e.g. from CI's timeout) unwinds like Ctrl-C, so fixtures get to stop processes.
    raise KeyboardInterrupt


def pytest_sessionstart(session: pytest.Session) -> None:
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


@pytest.fixture(scope="session")
def control_plane_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneFactory]:
    """Start independent control planes: `control_plane_factory("tenant-a", controller_manager=True)`."""
    started: list[LocalControlPlane] = []

    def start(name: str = "testbed", **kwargs: Any) -> LocalControlPlane:
        plane = LocalControlPlane(name, owner=SESSION_OWNER, root=tmp_path_factory.getbasetemp(), **kwargs)
        started.append(plane)
        _active.append(plane)
        return plane.start()

    yield start
    for plane in started:
        plane.cleanup()
        _active.remove(plane)


@pytest.fixture(scope="session")
def apiserver(control_plane_factory: ControlPlaneFactory) -> LocalControlPlane:
    """A shared control plane with the controller-manager (GC, namespace deletion, SA tokens)."""
    return control_plane_factory("shared", controller_manager=True)


@pytest.fixture(scope="session")
def kube_client(apiserver: LocalControlPlane) -> Any:
    """A `kubernetes.client.ApiClient` for the shared control plane, as its superuser."""
    from kubernetes import config

    return config.new_client_from_config_dict(apiserver.kubeconfig)  # type: ignore[no-untyped-call]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for plane in _active:
            for component, tail in plane.logs().items():
                report.sections.append((f"{plane.name} {component} log (tail)", tail))
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for plane in list(_active):  # fixtures not torn down, e.g. after an interrupt
        plane.cleanup()
    leaked = leaked_processes(SESSION_OWNER)
    if leaked:
        for pid, _ in leaked:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        lines = "\n".join(f"  {pid} {cmd}" for pid, cmd in leaked)
        print(f"\nERROR: test-bed processes were still running at the end of the session:\n{lines}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
