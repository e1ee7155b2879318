"""One batch of a search, for every strategy: where each policy sample's reward comes from.

A strategy plans a batch of policy samples (`Planned`, `Strategy.plan`). Each
one is trained (a train job: an activated sample), recalled (the result of an
architecture this search already trained, in an earlier batch or earlier in
this one), or trusted (the critic's prediction; `fnas` only). Every strategy
trains an architecture once per search and learns its result again each time
it proposes it: "activated samples" are distinct architectures trained, as a
user who pays for training would count them. `settle` turns the plan's
repeated train jobs into recalls, `fresh_feedback` gives the strategy its
rewards in plan order.

The agent (`services.agent.search_run`) and the plain in-memory loop
(`fnas_bench.plain_loop`) run this same code, so a seeded search gives the
same trajectory in both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

from fnas.v1.common_pb2 import SAMPLE_SOURCE_CRITIC, SAMPLE_SOURCE_RECALL, SAMPLE_SOURCE_TRAINED

#: Consecutive batches that train nothing new before a search is declared converged: its policy
#: proposes only architectures it has trained, and more updates would not change that soon.
MAX_IDLE_BATCHES = 50


@dataclass(frozen=True)
class Feedback:
    """The reward of one policy sample, as fed to `Strategy.update`."""

    tokens: tuple[int, ...]
    reward: float
    #: Behaviour log-prob: the proposal's, or the stored one of a buffer replay.
    log_prob: float
    #: Loss weight: S_i = (N P_i)^-beta for buffer replays (paper 5), 1 otherwise.
    weight: float = 1.0
    #: Where the reward came from (a SampleSource).
    source: int = SAMPLE_SOURCE_TRAINED


@dataclass(frozen=True)
class Planned:
    """One policy sample of a batch and where its reward will come from."""

    tokens: tuple[int, ...]
    #: The behaviour policy's log-prob; NaN for a warm-start architecture (trained, not learned from).
    log_prob: float
    #: SAMPLE_SOURCE_TRAINED (a train job), _RECALL (copy_of or recall_of) or _CRITIC (trusted: reward V).
    source: int
    #: V(m) and U(m) when the critic was asked (NaN otherwise).
    value: float = math.nan
    uncertainty: float = math.nan
    #: The critic vouched for it (a prediction, or a recall of what the critic knows): it counts
    #: against the batch's trusted share (paper 4.2).
    trusted: bool = False
    #: Would have been trusted, trained for the calibration check.
    audit: bool = False
    #: Position in the plan of the train job whose result this sample shares (-1: none).
    copy_of: int = -1
    #: Sample index of the earlier batch's trained sample whose result this one recalls (-1: none),
    #: and that result's reward.
    recall_of: int = -1
    recalled: float = math.nan

    @property
    def trains(self) -> bool:
        """True when this sample needs a train job of its own."""
        return self.source == SAMPLE_SOURCE_TRAINED

    @property
    def learned(self) -> bool:
        """False for a warm-start architecture: it has no behaviour log-prob for the policy to learn from."""
        return not math.isnan(self.log_prob)

    def to_dict(self) -> dict[str, Any]:
        # Not asdict(): it deep-copies every field, and a plan is written with every batch.
        return {f: getattr(self, f) for f in _PLANNED_FIELDS} | {"tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Planned:
        return cls(**(dict(raw) | {"tokens": tuple(raw["tokens"])}))


_PLANNED_FIELDS = tuple(f.name for f in fields(Planned))


class Recalls:
    """The search's result cache: the first trained reward of each architecture, by the space's key."""

    def __init__(self, key: Callable[[Sequence[int]], str]) -> None:
        self._key = key
        self._keys: dict[tuple[int, ...], str] = {}  # a converged policy proposes the same few lists
        self._first: dict[str, tuple[int, float]] = {}

    def key(self, tokens: Sequence[int]) -> str:
        tokens = tuple(tokens)
        hit = self._keys.get(tokens)
        if hit is None:
            hit = self._keys[tokens] = self._key(tokens)
        return hit

    def add(self, tokens: Sequence[int], index: int, reward: float) -> None:
        """A trained result: sample `index` of the search trained `tokens` to `reward`."""
        self._first.setdefault(self.key(tokens), (index, reward))

    def get(self, tokens: Sequence[int]) -> tuple[int, float] | None:
        """(sample index, reward) of the first trained result of this architecture, if any."""
        return self._first.get(self.key(tokens))

    def __len__(self) -> int:
        return len(self._first)


def settle(plan: Sequence[Planned], recalls: Recalls) -> list[Planned]:
    """Each architecture trains once per search: a train job of one trained before becomes its recall, a
    second job of one architecture within the batch a copy of the first (positions are kept)."""
    out: list[Planned] = []
    first: dict[str, int] = {}
    for pos, p in enumerate(plan):
        if p.trains:
            if (hit := recalls.get(p.tokens)) is not None:
                p = replace(p, source=SAMPLE_SOURCE_RECALL, recall_of=hit[0], recalled=hit[1])
            elif (job := first.setdefault(recalls.key(p.tokens), pos)) != pos:
                p = replace(p, source=SAMPLE_SOURCE_RECALL, copy_of=job)
        out.append(p)
    # A copy of a job that became a recall shares that recall.
    return [
        replace(p, copy_of=-1, recall_of=out[p.copy_of].recall_of, recalled=out[p.copy_of].recalled)
        if p.copy_of >= 0 and out[p.copy_of].recall_of >= 0
        else p
        for p in out
    ]


def fresh_feedback(
    plan: Sequence[Planned], rewards: Mapping[int, float], audits: list[tuple[float, float]]
) -> list[tuple[int, Feedback]]:
    """(plan position, feedback) of every sample with a reward, warm starts included (`Planned.learned`).

    `rewards` maps the plan position of each successful train job to its trained
    reward; samples whose job failed are left out. Audited samples append (V, R)
    to `audits`.
    """
    out = []
    for pos, p in enumerate(plan):
        if p.source == SAMPLE_SOURCE_CRITIC:
            reward: float | None = p.value
        elif p.recall_of >= 0:
            reward = p.recalled
        else:
            reward = rewards.get(p.copy_of if p.copy_of >= 0 else pos)
        if reward is None:
            continue
        if p.audit:
            audits.append((p.value, reward))
        out.append((pos, Feedback(p.tokens, reward, p.log_prob, 1.0, p.source)))
    return out


class CriticPort(Protocol):
    """The critic of one search (an in-process core or a gRPC client)."""

    async def predict(self, tokens: Sequence[Sequence[int]], min_observed: int) -> Sequence[Any]: ...


class BufferPort(Protocol):
    """The buffer of one search (an in-process core or a gRPC client)."""

    async def sample(
        self, n: int, beta: float, seed: int, min_observed: int, capacity: int, temperature: float
    ) -> Sequence[Any]: ...


@dataclass(frozen=True)
class BatchContext:
    """What a strategy may use to plan a batch and draw its replays."""

    #: Most policy samples in the batch, and most train jobs.
    size: int
    max_trained: int
    #: Trained results of this search so far (the critic and buffer answer as of this count).
    observed: int
    recalls: Recalls
    critic: CriticPort | None = None
    buffer: BufferPort | None = None
    #: Share of the budget spent (AEB's beta, paper 5).
    progress: float = 0.0
