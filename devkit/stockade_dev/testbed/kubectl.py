"""kubectl from the test bed's binaries, and progress lines for long operations."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from stockade_dev.testbed.binaries import find_binary


class KubectlError(RuntimeError):
    pass


class Kubectl:
    def __init__(self, kubeconfig: Path):
        self.kubeconfig = kubeconfig
        self.binary = str(find_binary("kubectl"))

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120) -> str:
        result = subprocess.run(
            [self.binary, "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)} failed:\n{result.stderr.strip()}")
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))


class Step:
    """Prints `[n] what …` and, when done, how long it took: every long operation shows progress."""

    number = 0

    def __init__(self, what: str, out: Any = print):
        Step.number += 1
        self.what = what
        self.out = out
        self.started = time.monotonic()
        out(f"[{Step.number}] {what} …")

    def done(self, detail: str = "") -> float:
        elapsed = time.monotonic() - self.started
        self.out(f"    done in {elapsed:.1f}s{': ' + detail if detail else ''}")
        return elapsed


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.25) -> float:
    """For benchmarks: poll `check` until truthy and return the monotonic time it first was (a
    server not answering yet counts as not yet); exit naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return time.monotonic()
        except (KubectlError, ValueError, KeyError, OSError):
            pass
        time.sleep(interval)
    raise SystemExit(f"error: {what} not reached within {timeout:.0f}s")
