"""The tabular benchmark setting: a space, its reward, the targets it defines and the trainer's evaluation.

Only the benchmark and the trainer read the table; a search sees nothing but
the rewards of what it trained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fnas import spaces
from fnas.standing import table_rewards, top_share
from fnas.v1 import common_pb2, queue_pb2
from services.trainer.evaluate import TabularEvaluator

#: Targets: the reward the best `q` share of the space's unique architectures reach.
TARGETS = {"top0.1": 0.001, "top1": 0.01}


@dataclass(frozen=True)
class Setup:
    space: spaces.SearchSpace
    reward: common_pb2.RewardSpec

    @classmethod
    def of(cls, space_id: str, reward_kind: str) -> Setup:
        """The setup of a tabular space and a reward kind; ValueError for a space without a table."""
        space = spaces.get(space_id)
        if not space.tabular:
            raise ValueError(f"{space_id} has no table; choose a tabular space (nasbench-graph/<dataset>)")
        return cls(space, reward_spec(space, reward_kind))


def reward_spec(space: spaces.SearchSpace, kind: str) -> common_pb2.RewardSpec:
    """accuracy: validation accuracy alone; latency: Eq. 2 with T = the space's 25th latency percentile."""
    if kind == "accuracy":
        return common_pb2.RewardSpec(cost=common_pb2.COST_METRIC_NONE)
    if kind == "latency":
        target = float(np.percentile(space.table()["latency_ms"], 25))
        return common_pb2.RewardSpec(cost=common_pb2.COST_METRIC_LATENCY, target_latency_ms=target)
    raise ValueError(f"--reward must be accuracy or latency, got {kind!r}")


def thresholds(setup: Setup) -> dict[str, float]:
    """Reward that the best `q` share of the space's unique architectures reach."""
    rewards = table_rewards(setup.space, setup.reward)
    return {name: top_share(rewards, q) for name, q in TARGETS.items()}


def evaluator(setup: Setup) -> Callable[[tuple[int, ...]], float]:
    """The trainer's tabular evaluation as a plain function of the tokens."""
    tabular = TabularEvaluator()

    def evaluate(tokens: tuple[int, ...]) -> float:
        job = queue_pb2.TrainJob(
            architecture=common_pb2.Architecture(space=setup.space.id, tokens=tokens), reward=setup.reward
        )
        return tabular.reward(job).value

    return evaluate
