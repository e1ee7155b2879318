"""The import-linter contracts in pyproject.toml: one-way layers, services apart but for clients."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lint_imports(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_layers_and_the_services_independence_hold():
    run = lint_imports()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 kept, 0 broken" in run.stdout


def test_a_core_module_that_imported_a_service_would_break_the_layers(tmp_path):
    """The contracts catch what they are for: the same check on a copy of the core with one bad import."""
    config = tmp_path / "contracts.toml"
    config.write_text((ROOT / "pyproject.toml").read_text())
    bad = ROOT / "fnas" / "_layer_probe.py"
    bad.write_text("import services.agent.registry\n")
    try:
        run = lint_imports("--config", str(config))
    finally:
        bad.unlink()
    assert run.returncode != 0 and "fnas._layer_probe -> services.agent.registry" in run.stdout
