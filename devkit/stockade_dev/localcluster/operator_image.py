"""The operator's OCI image, built on this machine without Docker or a registry.

Two layers, as the Dockerfile's two stages yield: a Debian root filesystem with Python (built by
`mmdebstrap` from Debian's archive; the Dockerfile's `python:3.11-slim` is Debian with the same
Python minor), and the project with its dependencies, installed by pip into /usr/local. The image's
user, environment, working directory and entrypoint are read from the Dockerfile's final stage, so
the two cannot drift; `tests/integration/test_packaging.py` checks the files.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stockade_dev.localcluster import images
from stockade_dev.testbed.binaries import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
OPERATOR_MANIFEST = REPO_ROOT / "manifests" / "operator.yaml"
# `essential` is dpkg's Essential set (a shell, coreutils, libc); python3 and the CA bundle on top.
DEBIAN_PACKAGES = ("python3", "ca-certificates")
# The image's user, with a name as the Dockerfile's `useradd` gives it: Python's getpass (which kopf
# calls) fails for a uid /etc/passwd does not know.
USER_ENTRIES = {
    "etc/passwd": f"nonroot:x:{images.NONROOT_UID}:{images.NONROOT_UID}::/nonexistent:/usr/sbin/nologin",
    "etc/group": f"nonroot:x:{images.NONROOT_UID}:",
}
# Debian's python3 reads /usr/local's packages here (python:3.11-slim's own build reads site-packages).
SITE_PACKAGES = "usr/local/lib/python{minor}/dist-packages"
# The sources the second layer is built from: its fingerprint changes when one of them does.
PROJECT_SOURCES = ("pyproject.toml", "README.md", "operator")


class OperatorImageError(Exception):
    pass


@dataclass(frozen=True)
class DockerfileImage:
    """What the Dockerfile's final stage says about the image it builds."""

    python_minor: str  # "3.11", from `FROM python:3.11-slim`
    env: dict[str, str]
    user: str
    workdir: str
    entrypoint: tuple[str, ...]


def read_dockerfile(path: Path = DOCKERFILE) -> DockerfileImage:
    """Parse the final stage of the Dockerfile (FROM, ENV, USER, WORKDIR, ENTRYPOINT in exec form)."""
    stage = path.read_text().split("\nFROM ")[-1]
    found = re.match(r"python:(\d+\.\d+)-slim", stage)
    if not found:
        raise OperatorImageError(f"{path}: the final stage is not FROM python:<minor>-slim: {stage.splitlines()[0]!r}")
    env: dict[str, str] = {}
    user = workdir = ""
    entrypoint: tuple[str, ...] = ()
    for line in stage.splitlines()[1:]:
        word, _, rest = line.partition(" ")
        if word == "ENV":
            for pair in rest.split():
                key, _, value = pair.partition("=")
                env[key] = value
        elif word == "USER":
            user = rest.strip()
        elif word == "WORKDIR":
            workdir = rest.strip()
        elif word == "ENTRYPOINT":
            entrypoint = tuple(json.loads(rest))
    if not (user and workdir and entrypoint):
        raise OperatorImageError(f"{path}: the final stage needs USER, WORKDIR and ENTRYPOINT (exec form)")
    return DockerfileImage(found.group(1), env, user, workdir, entrypoint)


def reference(manifest: Path = OPERATOR_MANIFEST) -> str:
    """The image the Deployment in manifests/ runs (the name this build is imported under)."""
    found = re.search(r"^\s+image:\s*(\S+)\s*$", manifest.read_text(), re.MULTILINE)
    if not found:
        raise OperatorImageError(f"{manifest}: no container image found")
    return found.group(1)


def image_config(spec: DockerfileImage, diff_ids: list[str]) -> dict[str, Any]:
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", *(f"{k}={v}" for k, v in spec.env.items())],
            "User": spec.user,
            "WorkingDir": spec.workdir,
            "Entrypoint": list(spec.entrypoint),
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created_by": by, "created": "1970-01-01T00:00:00Z"}
            for by in (
                f"mmdebstrap {images.DEBIAN_SUITE} {' '.join(DEBIAN_PACKAGES)}",
                "pip install . (operator_image)",
            )
        ],
    }


def _digest_of(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def project_fingerprint(root: Path = REPO_ROOT) -> str:
    h = hashlib.sha256(DOCKERFILE.read_bytes())
    for name in PROJECT_SOURCES:
        path = root / name
        for file in sorted([path] if path.is_file() else (p for p in path.rglob("*") if p.is_file())):
            if "__pycache__" in file.parts:
                continue
            h.update(f"{file.relative_to(root)}\0".encode() + file.read_bytes())
    return h.hexdigest()[:16]


def base_layer(cache: Path, out: Callable[[str], None]) -> Path:
    """The Debian layer with Python and the image's user (cached)."""
    hooks = tuple(f"echo '{line}' >> \"$1/{path}\"" for path, line in USER_ENTRIES.items())
    return images.debian_layer(cache, "operator-base", DEBIAN_PACKAGES, hooks, out)


def _relocate_scripts(site: Path, bin_dir: Path) -> None:
    """pip --target leaves console scripts in <site>/bin with this virtualenv's interpreter on the
    shebang line: move them to /usr/local/bin, started by the image's python3."""
    bin_dir.mkdir(parents=True)
    for script in sorted((site / "bin").iterdir()):
        lines = script.read_text().splitlines(keepends=True)
        if lines and lines[0].startswith("#!"):
            lines[0] = "#!/usr/bin/python3\n"
        target = bin_dir / script.name
        target.write_text("".join(lines))
        target.chmod(0o755)
    shutil.rmtree(site / "bin")


def project_layer(spec: DockerfileImage, cache: Path, out: Callable[[str], None]) -> Path:
    """/usr/local with the project and its dependencies, and the working directory."""
    target = cache / f"operator-project-{project_fingerprint()}.tar"
    if target.exists():
        return target
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if here != spec.python_minor:
        raise OperatorImageError(
            f"the image runs Python {spec.python_minor} (Dockerfile) and pip runs under Python {here}: "
            "wheels with compiled parts would not load; run with a Python of the image's minor"
        )
    out("    installing the project and its dependencies (pip) …")
    site = SITE_PACKAGES.format(minor=spec.python_minor)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        root = Path(tmp) / "root"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--no-warn-script-location",
             "--target", str(root / site), str(REPO_ROOT)],
            check=True, timeout=900,
        )  # fmt: skip
        _relocate_scripts(root / site, root / "usr/local/bin")
        # Byte-compiled here (same Python minor) with the paths they have in the image.
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "-d", f"/{site}", str(root / site)], check=True, timeout=600
        )
        (root / spec.workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial.tar")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(root.rglob("*")):
                info = tar.gettarinfo(str(path), str(path.relative_to(root)))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                if info.isfile():
                    with path.open("rb") as handle:
                        tar.addfile(info, handle)
                else:
                    tar.addfile(info)
        partial.replace(target)
    return target


def build(cache: Path, out: Callable[[str], None] = print) -> Path:
    """The operator image as an OCI archive in `cache` (built again only when a source changed)."""
    spec = read_dockerfile()
    name = reference()
    cache.mkdir(parents=True, exist_ok=True)
    layers = [base_layer(cache, out), project_layer(spec, cache, out)]
    safe = name.replace("/", "_").replace(":", "_")
    target = cache / f"{safe}-{_digest_of(*(p.name for p in layers))}.tar"
    if not target.exists():
        images.pack_layers(name, layers, image_config(spec, [images.file_digest(p) for p in layers]), target)
    for stale in {*cache.glob("operator-*.tar"), *cache.glob(f"{safe}-*.tar")} - {*layers, target}:
        stale.unlink(missing_ok=True)  # earlier builds: ~200 MB each
    return target
