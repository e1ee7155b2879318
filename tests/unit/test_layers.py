"""The import-linter contracts in pyproject.toml: one-way layers, services apart but for clients."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


PACKAGES = ("fnas", "services", "fnas_cli", "fnas_bench")


def lint_imports(root: Path = ROOT) -> subprocess.CompletedProcess:
    """`lint-imports` on the tree at `root`, whose packages are the ones imported (PYTHONPATH)."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_layers_and_the_services_independence_hold():
    run = lint_imports()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 kept, 0 broken" in run.stdout


def test_a_core_module_that_imported_a_service_would_break_the_layers(tmp_path):
    """The contracts catch what they are for: the same check on a copy of the tree with one bad import."""
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "fnas" / "_layer_probe.py").write_text("import services.agent.registry\n")
    run = lint_imports(tmp_path)
    assert run.returncode != 0 and "fnas._layer_probe -> services.agent.registry" in run.stdout
