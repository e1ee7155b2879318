"""Where an architecture stands in a benchmark table, by a search's reward: for people, never for searches.

The CLI shows it beside a search's best architectures and in its plot, and the
benchmarks take their targets from it. Only the trainer, the benchmarks and the
CLI read a table; the agent, critic, pool and buffer learn only from results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fnas.reward import RewardFn
from fnas.spaces import SearchSpace
from fnas.v1 import common_pb2


def table_rewards(space: SearchSpace, reward: common_pb2.RewardSpec) -> np.ndarray:
    """The reward of every unique architecture of a tabular space (Eq. 2 on its validation accuracy)."""
    table = space.table()
    fn = RewardFn.from_spec(reward)
    return np.array([fn(a, lat) for a, lat in zip(table["valid_accuracy"], table["latency_ms"], strict=True)])


def top_share(values: np.ndarray, q: float) -> float:
    """The value that the best `q` share of `values` reach (at least the best one)."""
    ordered = np.sort(values)[::-1]
    return float(ordered[max(1, math.ceil(q * len(ordered))) - 1])


@dataclass(frozen=True)
class Standing:
    """An architecture's place among a table's `size` unique ones: rank 1 is the best."""

    rank: int
    size: int

    @property
    def top_percent(self) -> float:
        """The share of the table at least as good, in percent (the best of 26,206: 0.004%)."""
        return 100.0 * self.rank / self.size

    def __str__(self) -> str:
        return f"{self.rank:,} (top {self.top_percent:.2g}%)"


class Table:
    """The rewards of a tabular space's architectures, sorted once, for many standings."""

    def __init__(self, space: SearchSpace, reward: common_pb2.RewardSpec) -> None:
        self.rewards = table_rewards(space, reward)
        self._descending = np.sort(self.rewards)[::-1]

    def standing(self, reward: float) -> Standing:
        """The rank of a reward: 1 + the architectures strictly better (ties share a rank)."""
        better = int(np.searchsorted(-self._descending, -reward, side="left"))
        return Standing(better + 1, len(self.rewards))

    def top(self, q: float) -> float:
        """The reward the best `q` share of the table reach."""
        return top_share(self.rewards, q)
