"""Helpers shared by the integration and e2e tiers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubernetes.client.rest import ApiException

from stockade_dev.testbed.kubectl import KubectlError

# The Deployments of the control-plane layout before one pod per replica (a workload per component).
LEGACY_DEPLOYMENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def eventually(check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.5, what: str = "") -> Any:
    """Retry `check` until it returns a truthy value; fail with its last result or error."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (ApiException, KubectlError, KeyError, IndexError, AssertionError) as error:
            last = error
        time.sleep(interval)
    raise AssertionError(f"{what or 'condition'} not met within {timeout}s; last result: {last!r}")
