import numpy as np

from fnas import spaces
from fnas.bench import search_bench, tabular
from fnas.bench.plain_loop import samples_to_reach


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
    s = search_bench.summarise([10, 20, None, 40], budget=100)
    assert s["reached_fraction"] == 0.75 and s["median"] == 30.0
    assert search_bench.summarise([None, None, 5], budget=100)["median"] is None


def test_samples_to_reach():
    assert samples_to_reach([0.1, 0.5, 0.9], 0.5) == 2
    assert samples_to_reach([0.1], 0.5) is None
