"""README's commands run as written (in subprocesses, as a user pastes them), so README cannot drift.

The main job runs with a smaller budget; `fnas up` runs on a free port, which
replaces README's 50051 in the commands that talk to it.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from timing import scaled

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
FNAS = [sys.executable, "-m", "fnas_cli"]

pytestmark = pytest.mark.timeout(300)


def blocks(lang: str = "") -> list[str]:
    """README's fenced code blocks of a language ('' : no language)."""
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def fnas_lines(block: str) -> list[list[str]]:
    """The `fnas ...` commands of a block as argv (comments dropped)."""
    out = []
    for line in block.splitlines():
        line = line.split("  #")[0].strip()
        if line.startswith("fnas "):
            out.append(shlex.split(line)[1:])
    return out


def run(argv: list[str], cwd: Path, timeout_s: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([*FNAS, *argv], cwd=cwd, capture_output=True, text=True, timeout=scaled(timeout_s))
    assert done.returncode == 0, f"fnas {' '.join(argv)}\n{done.stdout}\n{done.stderr}"
    return done


def test_the_main_job_runs_as_written_and_shows_fnas(tmp_path):
    main = blocks()[0].strip()
    assert main.startswith("python3 -m venv .venv")
    assert "pip install -q -c constraints.txt -e '.[all]'" in main  # the whole product, torch included
    argv = shlex.split(main.split("&& fnas ", 1)[1])
    assert argv[argv.index("--strategy") + 1] == "fnas"
    argv[argv.index("--budget") + 1] = "60"  # the same command, a smaller budget
    done = run(argv, tmp_path)
    out = done.stdout
    assert re.search(r"succeeded in [\d.]+s: 60 activated \(trained\) samples", out), out
    assert re.search(r"policy samples: 60 trained, \d+ trusted to the critic, \d+ replayed", out), out
    assert "sample speedup" in out and "critic calibration" in out
    assert re.search(r"^\s+1\s+0\.\d{4}.*\d+ \(top [\d.]+%\)", out, flags=re.M), out  # the table rank
    result = json.loads((tmp_path / argv[argv.index("--json") + 1]).read_text())
    trained = [s for s in result["trajectory"] if s["source"] == "trained"]
    assert result["activated_samples"] == len(trained) == result["policy_samples"]["trained"] == 60
    assert (tmp_path / argv[argv.index("--json") + 1]).with_suffix(".png").stat().st_size > 10_000


def test_up_then_search_ls_and_the_python_snippet_work_as_written(tmp_path):
    using = blocks()[2]
    commands = fnas_lines(using)
    up = next(c for c in commands if c[0] == "up")
    port = _free_port()
    server = subprocess.Popen(
        [*FNAS, *up, "--port", str(port), "--metrics-port", "0", "--data-dir", str(tmp_path / "up")],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in server.stdout:
            if line.startswith("agent "):
                assert f"127.0.0.1:{port}" in line, line
                break
        else:
            pytest.fail(f"fnas up ended: {server.wait()}")
        target = f"127.0.0.1:{port}"
        search = next(c for c in commands if c[0] == "search" and "--target" in c)
        search = [a.replace("127.0.0.1:50051", target) for a in search] + ["--budget", "30"]
        out = run(search, tmp_path).stdout
        search_id = re.search(r"search (\w{12}) succeeded", out).group(1)
        listed = run(
            [a.replace("127.0.0.1:50051", target) for a in next(c for c in commands if c[0] == "ls")],
            tmp_path,
        )
        assert search_id in listed.stdout and "succeeded" in listed.stdout
        (snippet,) = blocks("python")
        script = tmp_path / "snippet.py"
        script.write_text(
            snippet.replace("127.0.0.1:50051", target).replace(
                "max_activated_samples=300", "max_activated_samples=40"
            )
        )
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=scaled(120)
        )
        assert done.returncode == 0, done.stderr
        assert "activated samples: 40" in done.stdout
    finally:
        server.terminate()
        server.wait(30)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
