"""`fnas bench search --workers N`: the plain runs in N processes give exactly the figures of one."""

from __future__ import annotations

import json

import pytest

from fnas_bench import reach_stats, search_bench
from fnas_cli import main


def both(tmp_path, *args, **kwargs) -> tuple[dict, dict, list[str]]:
    """The benchmark's result with workers=1 and workers=2, and the progress lines of the latter."""
    lines: list[str] = []
    one = search_bench.run(*args, tmp_path, progress=lambda _: None, **kwargs, workers=1)
    two = search_bench.run(*args, tmp_path, progress=lines.append, **kwargs, workers=2)
    return one, two, lines


def test_two_workers_give_the_figures_of_one(tmp_path):
    one, two, lines = both(tmp_path, ["nasbench-graph/cora"], ["random", "fnas"], "accuracy", 2, 30, 0)
    assert json.dumps(two) == json.dumps(one)
    assert lines[0] == "4 plain runs in 2 worker processes"
    # One line per finished run, in the order they finish: "<space> <strategy> seed <n>: <s> s (<k>/4)".
    assert {line.split(":")[0] for line in lines[1:]} == {
        f"nasbench-graph/cora {name} seed {seed}" for name in ("random", "fnas") for seed in (0, 1)
    }
    assert [line.rsplit(" ", 1)[1] for line in lines[1:]] == ["(1/4)", "(2/4)", "(3/4)", "(4/4)"]


def test_two_workers_give_the_transfer_figures_of_one(tmp_path):
    # fnas-uac, not fnas: the transfer then also runs its own scratch searches.
    one, two, lines = both(
        tmp_path,
        ["nasbench-graph/cora", "nasbench-graph/citeseer"],
        ["fnas-uac"],
        "accuracy",
        2,
        20,
        0,
        transfer_from="nasbench-graph/cora",
    )
    assert json.dumps(two) == json.dumps(one)
    assert set(two["transfer"]["spaces"]) == {"nasbench-graph/citeseer"}
    # 4 plain runs, 2 transfer sources, 2 scratch and 2 transfer searches on citeseer.
    assert lines[0] == "10 plain runs in 2 worker processes" and len(lines) == 11
    assert any("(from nasbench-graph/cora)" in line for line in lines)


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_workers_below_one_is_bad_input(workers, capsys):
    assert main(["bench", "search", "--workers", workers, "--seeds", "1", "--budget", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fnas bench search: error: --workers must be >= 1, got {workers}"]


def test_transfer_reuses_the_benchmarks_own_source_searches(tmp_path):
    lines: list[str] = []
    result = search_bench.run(
        ["nasbench-graph/cora", "nasbench-graph/citeseer"],
        ["fnas"],
        "accuracy",
        2,
        20,
        0,
        tmp_path,
        progress=lines.append,
        transfer_from="nasbench-graph/cora",
        workers=1,
    )
    # 2 fnas searches per space, 2 citeseer searches from cora's critics; no second cora search per seed.
    assert len(lines) == 6 and not any("transfer source" in line for line in lines)
    moved = result["transfer"]["spaces"]["nasbench-graph/citeseer"]
    assert moved["speedup_top1_ci90"] == reach_stats.ratio_interval(
        moved["scratch"]["top1"]["per_seed"], moved["transfer"]["top1"]["per_seed"], 20
    )
    assert (
        moved["scratch"]["top0.1"]
        == result["spaces"]["nasbench-graph/citeseer"]["strategies"]["fnas"]["top0.1"]
    )
