"""`fnas search` in the embedded default, as a user runs it: twice with one seed, one trajectory."""

from __future__ import annotations

import json
import subprocess
import sys


def search(tmp_path, name: str, seed: int) -> dict:
    out = tmp_path / f"{name}.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "fnas_cli",
            "search",
            "--space",
            "nasbench-graph/cora",
            "--strategy",
            "ppo",
            "--budget",
            "40",
            "--seed",
            str(seed),
            "--data-dir",
            str(tmp_path / name),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "rank" in run.stdout and "succeeded" in run.stdout
    assert out.with_suffix(".png").stat().st_size > 10_000
    return json.loads(out.read_text())


def test_same_seed_gives_the_identical_trajectory(tmp_path):
    first, second = search(tmp_path, "a", 5), search(tmp_path, "b", 5)
    assert len(first["trajectory"]) == 40 and first["activated_samples"] == 40
    strip = lambda r: [(s["tokens"], s["reward"]) for s in r["trajectory"]]  # noqa: E731
    assert strip(first) == strip(second)
    assert first["top"][0]["reward"] == max(s["reward"] for s in first["trajectory"])


def test_a_search_of_a_trained_space_prints_its_best_architectures(tmp_path):
    """Real training (the mnas space on the synthetic task): the result table has no table rank column."""
    out = tmp_path / "mnas.json"
    argv = "search --space mnas --strategy fnas --budget 3 --epochs 1 --dataset synthetic --final-top-k 1"
    argv += f" --final-epochs 1 --trainers 1 --data-dir {tmp_path / 'data'} --json {out}"
    run = subprocess.run(
        [sys.executable, "-m", "fnas_cli", *argv.split()], capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 0, run.stderr
    header = next(line for line in run.stdout.splitlines() if line.lstrip().startswith("rank"))
    assert "mult_adds" in header and "table rank" not in header, run.stdout
    assert "trainer-seconds of training" in run.stdout
    assert "final selection: the top 1 retrained for 1 epoch, ranked by final reward" in run.stdout
    final = run.stdout.split("final selection:")[1].splitlines()
    assert "activated#" in final[1], run.stdout  # numbered as in the best architectures' table
    assert json.loads(out.read_text())["activated_samples"] == 3
