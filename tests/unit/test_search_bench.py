import numpy as np
import pytest

from fnas import spaces
from fnas_bench import reach_stats, search_bench, tabular
from fnas_bench.plain_loop import samples_to_reach
from fnas_cli import main


def test_thresholds_are_the_top_shares_of_the_table():
    setup = tabular.Setup(
        spaces.get("nasbench-graph/cora"),
        tabular.reward_spec(spaces.get("nasbench-graph/cora"), "accuracy"),
    )
    t = tabular.thresholds(setup)
    acc = setup.space.table()["valid_accuracy"]
    assert (acc >= t["top0.1"]).sum() >= 27 and (acc > t["top0.1"]).sum() < 27
    assert (acc >= t["top1"]).mean() >= 0.01 and t["top1"] < t["top0.1"]


def test_latency_reward_targets_the_25th_percentile():
    space = spaces.get("nasbench-graph/cora")
    spec = tabular.reward_spec(space, "latency")
    assert spec.target_latency_ms == np.percentile(space.table()["latency_ms"], 25)


def test_summarise_counts_misses_as_beyond_budget():
    s = reach_stats.summarise([10, 20, None, 40], budget=100)
    assert s["reached_fraction"] == 0.75 and s["median"] == 30.0
    assert reach_stats.summarise([None, None, 5], budget=100)["median"] is None


def test_ratio_interval_brackets_the_ratio_and_narrows_with_consistent_seeds():
    base, mine = [300, 120, 500, 80, 260, 410, 90, 330, 150, 220], [60, 200, 40, 90, 75, 30, 120, 55, 85, 100]
    lo, hi = reach_stats.ratio_interval(base, mine, budget=1000)
    ratio = np.median(base) / np.median(mine)
    assert lo < ratio < hi and lo < 2 < hi  # ten noisy seeds: wide
    assert reach_stats.ratio_interval(base, mine, budget=1000) == [lo, hi]  # seeded
    assert reach_stats.ratio_interval([400] * 10, [100] * 10, budget=1000) == [4.0, 4.0]


def test_ratio_interval_counts_misses_as_budget_plus_one_and_needs_paired_lengths():
    assert reach_stats.ratio_interval([None] * 5, [100] * 5, budget=299) == [3.0, 3.0]
    with pytest.raises(ValueError, match="same number"):
        reach_stats.ratio_interval([1, 2], [1], budget=10)


def test_samples_to_reach():
    assert samples_to_reach([0.1, 0.5, 0.9], 0.5) == 2
    assert samples_to_reach([0.1], 0.5) is None


def test_ratios_to_ppo_carry_their_bootstrap_interval_in_the_json_and_the_table(tmp_path):
    result = search_bench.run(
        ["nasbench-graph/cora"], ["ppo", "random"], "accuracy", 3, 40, 0, tmp_path, progress=lambda _: None
    )
    strategies = result["spaces"]["nasbench-graph/cora"]["strategies"]
    assert strategies["ppo"]["top1"]["ratio_to_ppo_ci90"] == [1.0, 1.0]  # seeds resampled in pairs
    theirs = strategies["random"]["top1"]
    assert theirs["ratio_to_ppo_ci90"] == reach_stats.ratio_interval(
        strategies["ppo"]["top1"]["per_seed"], theirs["per_seed"], 40
    )
    lo, hi = strategies["random"]["top0.1"]["ratio_to_ppo_ci90"]
    row = next(line for line in search_bench.table(result).splitlines() if " random " in line)
    assert f"[{lo:.2f}, {hi:.2f}]" in row


def test_last_step_counts_top1_samples_up_to_each_first_top01_one():
    targets = {"top0.1": 0.9, "top1": 0.8}
    curves = [
        [0.5, 0.8, 0.85, 0.95, 0.8],  # 3 top-1% samples up to and with its first top-0.1% one; not the last
        [0.8, 0.8, 0.1],  # never reaches the top 0.1%: all its top-1% samples count, re-trained ones twice
    ]
    assert search_bench.last_step(curves, targets) == {"top1_samples": 5, "top0.1_samples": 1, "share": 0.2}
    assert search_bench.last_step([[0.1]], targets)["share"] is None


def test_the_mesh_overhead_is_the_median_of_paired_plain_and_mesh_runs(tmp_path):
    lines: list[str] = []
    result = search_bench.run(
        ["nasbench-graph/cora"],
        ["random"],
        "accuracy",
        1,
        30,
        1,
        tmp_path,
        progress=lines.append,
        mesh_repeats=2,
    )
    random = result["spaces"]["nasbench-graph/cora"]["strategies"]["random"]
    assert random["mesh_matches_plain"] and random["mesh_repeats"] == 2
    assert random["plain_ms_per_sample"] > 0 and random["mesh_ms_per_sample"] > random["plain_ms_per_sample"]
    assert random["overhead_ms_per_sample"] == pytest.approx(float(np.median(random["overhead_ms_per_run"])))
    assert len(random["overhead_ms_per_run"]) == 2
    assert lines[-1] == "nasbench-graph/cora random: 1 seeds through the mesh"


@pytest.mark.parametrize("repeats", ["0", "-2"])
def test_mesh_repeats_below_one_is_bad_input(repeats, capsys):
    assert main(["bench", "search", "--mesh-repeats", repeats, "--seeds", "1", "--budget", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fnas bench search: error: --mesh-repeats must be >= 1, got {repeats}"]
