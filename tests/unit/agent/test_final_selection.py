"""Final selection (paper 6.2): defaults, ranking, and results kept once beside the search."""

from __future__ import annotations

import re

import pytest

from fnas.v1 import common_pb2, queue_pb2, search_pb2
from services.agent import final_selection as fs
from services.agent.spec import SpecError, validate
from services.agent.store import AgentStore


def sample(index: int, reward: float) -> common_pb2.Sample:
    return common_pb2.Sample(
        architecture=common_pb2.Architecture(space="mnas", tokens=[index]),
        reward=common_pb2.Reward(value=reward),
        source=common_pb2.SAMPLE_SOURCE_TRAINED,
        index=index,
    )


def result(rank: int, value: float, ok: bool = True) -> queue_pb2.TrainResult:
    return queue_pb2.TrainResult(
        search_id="s1",
        final_rank=rank,
        outcome=queue_pb2.TRAIN_OUTCOME_OK if ok else queue_pb2.TRAIN_OUTCOME_FAILED,
        reward=common_pb2.Reward(value=value, accuracy=value),
        error="" if ok else "invalid job: dataset npz:/gone.npz: no such file",
    )


def test_defaults():
    spec = common_pb2.SearchSpec(task=common_pb2.Task(epochs=5))
    assert fs.top_k(spec, tabular=False) == 10 and fs.top_k(spec, tabular=True) == 0
    assert fs.epochs(spec) == 10
    spec.final_top_k, spec.final_epochs = 0, 7
    assert fs.top_k(spec, tabular=False) == 0 and fs.epochs(spec) == 7
    assert fs.job_id("abc", 3) == "abc/final/3"


def test_rank_orders_by_final_reward_and_puts_failures_last():
    chosen = [sample(4, 0.9), sample(7, 0.8), sample(1, 0.7)]
    ranked = fs.rank(chosen, [result(1, 0.5), result(2, 0.0, ok=False), result(3, 0.95)], 10, [11, 12, 13])
    assert [c.sample.index for c in ranked] == [1, 4, 7] and [c.rank for c in ranked] == [1, 2, 3]
    assert ranked[0].final_reward.value == 0.95 and ranked[0].seed == 13 and ranked[0].epochs == 10
    assert "no such file" in ranked[2].error and not ranked[2].HasField("final_reward")


def test_results_are_stored_once_and_only_for_known_searches(tmp_path):
    store = AgentStore(tmp_path / "agent", sync=False)
    try:
        store.put_status(search_pb2.SearchStatus(search_id="s1"))
        assert fs.store_result(store, result(2, 0.5))
        assert not fs.store_result(store, result(2, 0.6))  # a redelivery: the first one stays
        assert not fs.store_result(store, queue_pb2.TrainResult(search_id="other", final_rank=1))
        got = fs.stored_results(store, "s1", range(1, 4))
        assert list(got) == [2] and got[2].reward.value == 0.5
        assert store.results("s1", [0, 1, 2]) == [None, None, None]  # no search sample was added
        assert store.status("s1").activated_samples == 0
    finally:
        store.close()


def test_spec_checks_final_selection_and_pool_transfer():
    budget = common_pb2.Budget(max_activated_samples=5)
    ok = validate(common_pb2.SearchSpec(space="mnas", budget=budget, pool_task="synthetic", final_top_k=3))
    assert ok.pool_task == "synthetic" and ok.final_top_k == 3
    bad = {
        "final_top_k: must be <= 100": common_pb2.SearchSpec(space="mnas", budget=budget, final_top_k=101),
        "pool_task: needs a trained space": common_pb2.SearchSpec(
            space="nasbench-graph/cora", budget=budget, pool_task="digits"
        ),
        "pool_task: needs a trained space (mnas) with the akp module on": common_pb2.SearchSpec(
            space="mnas", budget=budget, pool_task="digits", modules=common_pb2.Modules(akp=False)
        ),
    }
    for message, spec in bad.items():
        with pytest.raises(SpecError, match=re.escape(message)):
            validate(spec)
