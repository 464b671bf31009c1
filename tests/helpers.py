"""Helpers shared by the integration and e2e tiers."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kubernetes.client.rest import ApiException

from stockade_dev.testbed import find_binary
from stockade_dev.testbed.kubectl import KubectlError

# The Argo CD health check of a Tenant, shipped as an example (Lua, run by `argocd_health`).
ARGOCD_HEALTH = Path(__file__).resolve().parents[1] / "examples" / "argocd" / "tenant-health.lua"
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


def kstatus(*objects: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """What the kstatus library (hack/testbin/kstatus) computes for each object: name ->
    (status, message), e.g. ("InProgress", …), ("Current", …), ("Failed", …)."""
    result = subprocess.run(
        [str(find_binary("kstatus"))], input=json.dumps(list(objects)), capture_output=True, text=True,
        timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    return {row["name"]: (row["status"], row["message"]) for row in rows}


def argocd_health(obj: Mapping[str, Any]) -> tuple[str, str]:
    """What Argo CD's health check (ARGOCD_HEALTH) says of `obj`: (status, message). Run by Lua 5.1,
    the language level of Argo CD's interpreter (gopher-lua)."""
    from lupa import lua51  # type: ignore[import-untyped]

    lua = lua51.LuaRuntime()
    check = lua.eval("function(obj)\n" + ARGOCD_HEALTH.read_text() + "\nend")
    result = check(lua.table_from(json.loads(json.dumps(obj)), recursive=True))
    return str(result["status"]), str(result["message"])


def http_get(url: str, timeout: float = 10) -> tuple[int, str]:
    """(status, body) of a plain GET, an error status included (e.g. a metrics or health endpoint)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()
