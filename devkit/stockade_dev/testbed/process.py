"""A child process with its own log file, its own process group, and a guaranteed end."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from pathlib import Path

# Every process the test bed starts carries this variable, so a leak check can find it in /proc.
OWNER_ENV = "STOCKADE_TESTBED_OWNER"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: if the Python process dies (even by SIGKILL), so does the child."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ManagedProcess:
    def __init__(self, name: str, argv: list[str], log_path: Path, owner: str, env: dict[str, str] | None = None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.owner = owner
        self.extra_env = env or {}
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **self.extra_env, OWNER_ENV: self.owner}
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: stop() reaches its children too
                preexec_fn=_die_with_parent,
            )

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def exit_code(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after `grace` seconds."""
        if self._popen is None:
            return
        pgid = self._popen.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        self._popen.wait()

    def log_tail(self, lines: int = 60) -> str:
        return file_tail(self.log_path, lines)


def file_tail(path: Path, lines: int = 60) -> str:
    """The last `lines` lines of a log file, or `(no log)`."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def leaked_processes(owner: str) -> list[tuple[int, str]]:
    """Live processes started by the test bed for `owner` (pid, command line)."""
    marker = f"{OWNER_ENV}={owner}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            if marker not in environ.split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":  # a zombie has already exited; only its parent's wait() is missing
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        found.append((int(entry.name), cmdline.strip()))
    return found
