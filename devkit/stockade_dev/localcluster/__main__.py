"""`python -m stockade_dev.localcluster up|down|status` (wrapped by `e2e/cluster`).

`up` starts a detached supervisor that owns every process of the cluster (they die with it), and
prints its progress until the cluster is ready. `down` stops the supervisor, which tears down, then
restores the host itself in case the supervisor was already gone. Both are idempotent.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from stockade_dev.localcluster import host
from stockade_dev.localcluster.cluster import LocalClusterError, SuperCluster
from stockade_dev.localcluster.node import Layout
from stockade_dev.testbed.binaries import TestbinMissingError
from stockade_dev.testbed.kubectl import KubectlError
from stockade_dev.testbed.process import OWNER_ENV, file_tail

READY, FAILED = "READY", "FAILED"
OWNER_VAR = "STOCKADE_LOCAL_OWNER"
UP_TIMEOUT = 900


def _files(layout: Layout) -> tuple[Path, Path, Path]:
    """(pid file, progress file, supervisor log), beside the run folder so they outlive teardown."""
    base = layout.run.parent / layout.run.name
    return Path(f"{base}.pid"), Path(f"{base}.progress"), Path(f"{base}.log")


def _supervisor(layout: Layout) -> tuple[int, str] | None:
    pid_file = _files(layout)[0]
    try:
        pid_text, owner = pid_file.read_text().split()
        pid = int(pid_text)
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid, owner


def serve(layout: Layout) -> int:
    """The supervisor: start the cluster, report, and tear down on SIGTERM."""
    progress = _files(layout)[1]

    def out(line: str) -> None:
        with progress.open("a") as handle:
            handle.write(line + "\n")

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    cluster = SuperCluster(layout, os.environ[OWNER_VAR], out)
    try:
        cluster.start()
        out(f"{READY} {layout.kubeconfig}")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        out("stopping the local super cluster …")
        cluster.stop()
        out("stopped")
        return 0
    except (LocalClusterError, KubectlError, TestbinMissingError, OSError, subprocess.SubprocessError) as error:
        out(f"{FAILED} {error}")
        return 1


def _follow(progress: Path, offset: int, pid: int, timeout: float) -> tuple[str | None, int]:
    """Print the supervisor's new progress lines until READY/FAILED, it dies, or `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError), progress.open("rb") as handle:
            handle.seek(offset)
            for line in handle.read().splitlines(keepends=True):
                if not line.endswith(b"\n"):
                    break
                offset += len(line)
                text = line.decode(errors="replace").rstrip("\n")
                if text.startswith((READY, FAILED)):
                    return text, offset
                print(text, flush=True)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None, offset
        time.sleep(0.3)
    return None, offset


def up(layout: Layout) -> int:
    if os.geteuid() != 0:
        print("error: not root: the local super cluster runs containerd, the kubelet and iptables", file=sys.stderr)
        return 1
    pid_file, progress, log = _files(layout)
    if running := _supervisor(layout):
        result, _ = _follow(progress, 0, running[0], UP_TIMEOUT)
        if result and result.startswith(READY):
            print(f"the local super cluster is up; kubeconfig: {layout.kubeconfig}")
            return 0
        reason = result.removeprefix(FAILED).strip() if result else "it is not ready"
        print(f"error: the local super cluster did not start: {reason}", file=sys.stderr)
        return 1
    if host.HostSnapshot.load(host.snapshot_path(layout)) is not None:
        print("cleaning up what a previous local super cluster left behind …")
        host.restore(layout, b"", log=lambda line: print(f"    {line}"))
    owner = uuid.uuid4().hex
    progress.write_text("")
    with log.open("wb") as log_handle:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "stockade_dev.localcluster", "serve"],
            stdin=subprocess.DEVNULL, stdout=log_handle, stderr=subprocess.STDOUT,
            env={**os.environ, OWNER_VAR: owner}, start_new_session=True,
        )  # fmt: skip
    pid_file.write_text(f"{supervisor.pid} {owner}\n")
    started = time.monotonic()
    result, _ = _follow(progress, 0, supervisor.pid, UP_TIMEOUT)
    if result and result.startswith(READY):
        print(f"local super cluster up in {time.monotonic() - started:.0f}s")
        print(f"  export KUBECONFIG={layout.kubeconfig}")
        return 0
    reason = result.removeprefix(FAILED).strip() if result else f"supervisor exited:\n{file_tail(log, 40)}"
    print(f"error: the local super cluster did not start: {reason}", file=sys.stderr)
    down(layout)
    return 1


def down(layout: Layout) -> int:
    if os.geteuid() != 0:
        print("error: not root", file=sys.stderr)
        return 1
    pid_file, progress, _ = _files(layout)
    owner = ""
    if running := _supervisor(layout):
        pid, owner = running
        print(f"stopping the supervisor (pid {pid}) …", flush=True)
        offset = progress.stat().st_size if progress.exists() else 0
        os.kill(pid, signal.SIGTERM)
        _follow(progress, offset, pid, 120)
        host.kill_all([pid], grace=1)
    host.restore(layout, f"{OWNER_ENV}={owner}".encode() if owner else b"", log=lambda line: print(f"    {line}"))
    pid_file.unlink(missing_ok=True)
    print("local super cluster down; the host is as it was")
    return 0


def status(layout: Layout) -> int:
    running = _supervisor(layout)
    print(f"up (supervisor pid {running[0]}), kubeconfig {layout.kubeconfig}" if running else "down")
    return 0 if running else 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="e2e/cluster", description="A real single-node super cluster, no Docker.")
    parser.add_argument("command", choices=["up", "down", "status", "serve"])
    args = parser.parse_args(argv)
    layout = Layout.from_env()
    handlers = {"up": up, "down": down, "status": status, "serve": serve}
    return handlers[args.command](layout)


if __name__ == "__main__":
    sys.exit(main())
