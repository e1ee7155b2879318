"""The Architecture Experience Buffer (paper 5), as pure functions over a search's trained results.

The buffer of a search is a function of its history: after the first N trained
results (by sample index), it holds the `capacity` samples with the highest
*distinct* rewards (paper 5: "samples with different reward values"; one sample
per value, the earliest). Replays are drawn with priorities

    P_i = exp(r_i / tau) / sum_j exp(r_j / tau)        (Eq. 5; tau = 1 is the paper's)

and weighted by importance-sampling weights S_i = (N * P_i)^-beta, normalised by
their maximum as in prioritized replay (Schaul et al. 2016, the paper's [25]),
with beta annealed from 0 to 1 over the search budget. Computing the buffer
from "the first N results" (never "whatever arrived first") makes replays
reproducible despite asynchronous updates; the history is all that is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Paper 5: "usually 10 in our experiments".
DEFAULT_CAPACITY = 10


@dataclass(frozen=True)
class Entry:
    """One trained sample as the buffer keeps it."""

    index: int
    tokens: tuple[int, ...]
    reward: float
    #: log pi_old(tokens) when it was sampled; NaN for non-policy samples (warm starts), never replayed.
    log_prob: float


@dataclass(frozen=True)
class Replay:
    """A drawn sample and its normalised importance weight S_i / max_j S_j."""

    entry: Entry
    weight: float


def priorities(rewards: Sequence[float], temperature: float = 1.0) -> np.ndarray:
    """Eq. 5: softmax of rewards / temperature (computed stably)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    r = np.asarray(rewards, dtype=np.float64) / temperature
    if r.size == 0:
        return r
    e = np.exp(r - r.max())
    return e / e.sum()


def importance_weights(p: np.ndarray, beta: float) -> np.ndarray:
    """S_i = (N P_i)^-beta over a buffer of N = len(p), normalised by the largest."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if p.size == 0:
        return p
    s = (len(p) * p) ** -beta
    return s / s.max()


def beta_at(progress: float) -> float:
    """beta annealed linearly from 0 at the start to 1 at the end of the budget (progress in [0, 1])."""
    return float(min(1.0, max(0.0, progress)))


def select(history: Sequence[Entry], capacity: int = DEFAULT_CAPACITY) -> list[Entry]:
    """The buffer: the `capacity` entries with the highest distinct rewards, best first.

    Entries without a behaviour log-prob cannot be replayed (no off-policy
    ratio) and are skipped; among equal rewards the earliest index stays.
    """
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    best: dict[float, Entry] = {}
    for e in sorted(history, key=lambda e: e.index):
        if e.log_prob == e.log_prob and e.reward not in best:  # NaN != NaN: warm starts
            best[e.reward] = e
    return sorted(best.values(), key=lambda e: (-e.reward, e.index))[:capacity]


def sample(
    buffer: Sequence[Entry], n: int, beta: float, rng: np.random.Generator, temperature: float = 1.0
) -> list[Replay]:
    """n replays drawn with replacement by priority, each with its normalised weight."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0 or not buffer:
        return []
    p = priorities([e.reward for e in buffer], temperature)
    w = importance_weights(p, beta)
    drawn = rng.choice(len(buffer), size=n, replace=True, p=p)
    return [Replay(buffer[i], float(w[i])) for i in drawn.tolist()]


class History:
    """The trained results of one search, by sample index (what a buffer service stores)."""

    def __init__(self) -> None:
        self.entries: dict[int, Entry] = {}

    def add(self, entry: Entry) -> bool:
        """Adds one result; False for a duplicate index (a redelivery)."""
        if entry.index in self.entries:
            return False
        self.entries[entry.index] = entry
        return True

    def first(self, n: int) -> list[Entry]:
        """The first n entries by sample index."""
        return [self.entries[i] for i in sorted(self.entries)[:n]]

    def replays(
        self, n: int, beta: float, seed: int, min_observed: int, capacity: int, temperature: float
    ) -> list[Replay]:
        """Replays from the buffer of the first `min_observed` results, drawn with a generator of `seed`."""
        buffer = select(self.first(min_observed), capacity)
        return sample(buffer, n, beta, np.random.default_rng(seed), temperature)
