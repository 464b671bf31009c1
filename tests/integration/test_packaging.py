"""The shipped package is the product: `pip install .` gives Stockade without test-only code.

Builds the real wheel (pip, as a user would) and reads what is in it; the development kit's
wheel is built beside it as the positive control (it does carry the test bed)."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

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
