"""The shipped package is the product: `pip install .` gives Stockade without test-only code.

Builds the real wheel (pip, as a user would) and reads what is in it; the development kit's
wheel is built beside it as the positive control (it does carry the test bed)."""

from __future__ import annotations

import ast
import io
import json
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

from stockade_dev.localcluster import operator_image
from stockade_dev.testbed.binaries import cache_root

REPO = Path(__file__).resolve().parents[2]


def build_wheel(source: Path, target: Path) -> zipfile.ZipFile:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(target), str(source)],
        check=True,
        timeout=300,
    )
    (wheel,) = target.glob("*.whl")
    return zipfile.ZipFile(wheel)


def imported_modules(source: str) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules


def test_product_wheel_has_no_test_code_and_ships_its_templates(tmp_path: Path) -> None:
    wheel = build_wheel(REPO, tmp_path / "product")
    names = wheel.namelist()
    modules = [n for n in names if n.endswith(".py")]
    assert not [n for n in names if "testbed" in n or "localcluster" in n or n.startswith("stockade_dev")], names
    assert {n for n in names if n.startswith("stockade/templates/")} >= {
        f"stockade/templates/{t}.yaml.j2" for t in ("control-plane", "network-policies", "workloads")
    }
    for module in modules:
        imports = imported_modules(wheel.read(module).decode())
        assert not imports & {"pytest", "stockade_dev", "kubernetes", "hypothesis"}, (module, imports)
    # The console script has no `up` of its own: the development kit adds it.
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert wheel.read(entry_points).decode().count("stockade.cli:main") == 1

    # Positive control: the same check finds the test bed in the development kit's wheel.
    devkit = build_wheel(REPO / "devkit", tmp_path / "devkit").namelist()
    assert "stockade_dev/testbed/pytest_plugin.py" in devkit
    assert "stockade_dev/localcluster/cluster.py" in devkit


def _oci_image(archive: Path) -> tuple[dict[str, Any], list[bytes]]:
    """(config, layer tars bottom first) of an OCI image layout archive."""
    with tarfile.open(archive) as oci:

        def blob(digest: str) -> bytes:
            handle = oci.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
            assert handle is not None
            return handle.read()

        index = json.loads(oci.extractfile("index.json").read())  # type: ignore[union-attr]
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        return json.loads(blob(manifest["config"]["digest"])), [blob(layer["digest"]) for layer in manifest["layers"]]


def test_the_operator_image_built_here_is_the_dockerfiles_and_runs(tmp_path: Path) -> None:
    """The image assembled without Docker (operator_image) against the Dockerfile, read here on its
    own: same user, working directory, environment and entrypoint; the product's every file inside;
    and it runs — its entrypoint and the operator's module, as the image's user, in its root."""
    dockerfile = (REPO / "Dockerfile").read_text().split("\nFROM ")[-1]
    minor = re.match(r"python:(\d+\.\d+)-slim", dockerfile).group(1)  # type: ignore[union-attr]
    user = re.search(r"^USER (\S+)$", dockerfile, re.MULTILINE).group(1)  # type: ignore[union-attr]
    workdir = re.search(r"^WORKDIR (\S+)$", dockerfile, re.MULTILINE).group(1)  # type: ignore[union-attr]
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", dockerfile, re.MULTILINE).group(1))  # type: ignore[union-attr]
    env = re.search(r"^ENV (.+)$", dockerfile, re.MULTILINE).group(1).split()  # type: ignore[union-attr]

    archive = operator_image.build(cache_root() / "images", out=print)
    config, layers = _oci_image(archive)
    assert config["config"]["User"] == user and not user.startswith("0")
    assert config["config"]["WorkingDir"] == workdir
    assert config["config"]["Entrypoint"] == entrypoint
    assert set(env) <= set(config["config"]["Env"])
    deployment = yaml.safe_load((REPO / "manifests" / "operator.yaml").read_text().split("\n---\n")[0])
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == operator_image.reference()
    assert f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}" == user

    root = tmp_path / "root"
    root.mkdir()
    for layer in layers:
        with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
            tar.extractall(root, filter="fully_trusted")
    assert (root / f"usr/bin/python{minor}").is_file()
    site = root / operator_image.SITE_PACKAGES.format(minor=minor)
    product = build_wheel(REPO, tmp_path / "product")
    shipped = [n for n in product.namelist() if n.startswith("stockade/")]
    assert shipped and [n for n in shipped if not (site / n).is_file()] == []
    assert (root / workdir.lstrip("/")).is_dir()

    def run(*argv: str) -> str:
        result = subprocess.run(
            ["chroot", f"--userspec={user}", str(root), "/usr/bin/env", "-i", *config["config"]["Env"], *argv],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "Usage: kopf" in run(entrypoint[0], "run", "--help")
    assert run("python3", "-c", "import stockade.handlers; print(stockade.handlers.__file__)").startswith(
        f"/{operator_image.SITE_PACKAGES.format(minor=minor)}/stockade/"
    )
    assert run("id", "-u") == f"{user.split(':')[0]}\n"  # positive control: it ran as the image's user
    # The user has a name, as the Dockerfile's useradd gives it (kopf asks getpass for it at start).
    uid = re.search(r"^RUN useradd --uid (\d+) .* (\S+)$", dockerfile, re.MULTILINE)
    assert uid and uid.group(1) == user.split(":")[0]
    assert run("python3", "-c", "import getpass; print(getpass.getuser())") == f"{uid.group(2)}\n"
