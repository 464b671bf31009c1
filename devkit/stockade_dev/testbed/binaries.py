"""Where the upstream binaries built by `make testbin` live."""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
VERSIONS_FILE = REPO_ROOT / "hack" / "testbin" / "versions.env"
BUILD_COMMAND = "make testbin"


class TestbinMissingError(RuntimeError):
    """An upstream binary is not built yet."""

    __test__ = False  # not a pytest test class


def pinned_versions() -> dict[str, str]:
    text = VERSIONS_FILE.read_text()
    return dict(re.findall(r"^([A-Z_]+)=(\S+)", text, flags=re.MULTILINE))


def kubernetes_version() -> str:
    return pinned_versions()["KUBERNETES_VERSION"]


def cache_root() -> Path:
    """Same rule as hack/testbin/build.sh: $STOCKADE_CACHE, else ~/.cache/stockade."""
    if override := os.environ.get("STOCKADE_CACHE"):
        return Path(override)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stockade"


def testbin_dir() -> Path:
    """$STOCKADE_TESTBIN, else the versioned cache folder (as hack/testbin/build.sh)."""
    if override := os.environ.get("STOCKADE_TESTBIN"):
        return Path(override)
    return cache_root() / f"k8s-{kubernetes_version()}" / "bin"


def previous_testbin_dir() -> Path:
    """The previous minor's control-plane binaries (images for the upgrade test)."""
    return cache_root() / f"k8s-{pinned_versions()['PREVIOUS_KUBERNETES_VERSION']}" / "bin"


def find_binary(name: str, directory: Path | None = None) -> Path:
    path = (directory or testbin_dir()) / name
    if not os.access(path, os.X_OK):
        raise TestbinMissingError(
            f"{name} is not built: expected it at {path}. Run `{BUILD_COMMAND}` to build the pinned "
            "Kubernetes and etcd binaries (or set STOCKADE_TESTBIN to a folder holding them)."
        )
    return path
