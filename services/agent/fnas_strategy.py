"""The `fnas` strategy: the PPO controller (paper 4.1) fed by trained, trusted and replayed samples.

It is `PPOStrategy` plus the module switches and the few random choices the
batch assembly makes (which would-be-trusted samples are audited, the seed of
each buffer draw), the batch in flight, and the audit record. `fnas-uac` and
`fnas-aeb` are the same strategy with one module on (paper Table 4's ablation).
The batch assembly itself lives in `services.agent.assemble`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from fnas.config import Ranges, check_ranges, set_fields
from fnas.spaces.base import InvalidArchitecture, SearchSpace
from fnas.v1 import common_pb2
from services.agent import assemble
from services.agent.batch import BatchContext, Feedback, Planned
from services.agent.strategies import PPOStrategy, Proposal

#: PPO settings of the fnas strategies, tuned on cora with the modules on. A batch carries trusted and
#: replayed samples besides the trained ones, so it takes a larger step than the plain `ppo` baseline;
#: spelled out so that retuning that baseline's defaults does not silently change fnas.
FNAS_PPO = {"lr": 0.01, "n_epochs": 4, "clip_range": 0.2, "ent_coef": 0.01, "max_grad_norm": 0.5}


class Modules(NamedTuple):
    uac: bool
    akp: bool
    aeb: bool


def modules(spec: common_pb2.SearchSpec) -> Modules:
    """The module switches with their defaults (on) applied."""
    m = spec.modules
    return Modules(*(not m.HasField(name) or getattr(m, name) for name in Modules._fields))


@dataclass(frozen=True)
class FnasConfig:
    """The module switches and the batch-assembly limits (SearchSpec.modules and .fnas)."""

    #: Uncertainty-aware critic (paper 4.2).
    uac: bool = True
    #: Experience buffer (paper 5).
    aeb: bool = True
    #: Knowledge pool (paper 4.3): trainers of non-tabular spaces initialise from it.
    akp: bool = True
    #: Most trusted samples per batch, as a share of it (paper 4.2: 50%); the rest is resampled.
    max_trusted_fraction: float = 0.5
    #: Share of would-be-trusted samples trained anyway: the calibration check.
    audit_fraction: float = 0.1
    #: Most replayed (exploited) samples per PPO batch, as a share of it (paper 5: 50%).
    max_replay_fraction: float = 0.5
    #: Buffer capacity N (paper 5: 10).
    buffer_size: int = 10
    #: Priority temperature tau: P_i = softmax(r / tau) (paper Eq. 5 is tau = 1).
    priority_temperature: float = 1.0
    #: Resampling rounds (of one batch of proposals each) before the batch is closed as it is.
    max_draw_rounds: int = 5
    #: Proposals drawn per open slot in each round; with more than one, the most promising untrusted
    #: candidates (highest V + ucb * U) are trained first, the rest dropped like extra trusted ones.
    #: Tuned with 8 local candidates, seeds 0-19: 2 beat 8 on cora and citeseer and tied on pubmed.
    candidates: int = 2
    #: Weight of U in that ranking: 0 trains the highest predicted rewards first (tuned: 8 candidates
    #: ranked by V beat 4 ranked by V + U on cora, citeseer and pubmed, 10 seeds each).
    ucb: float = 0.0
    #: Each resampling round draws at this many times the previous round's temperature, so that a
    #: policy that keeps proposing what the critic already knows still yields new architectures.
    resample_temperature: float = 2.0
    #: Local candidates per open slot: one-token mutations of the best trained architectures, ranked
    #: with the untrusted proposals (an extension of the paper: the critic ranks the neighbourhood of
    #: what already worked, as predictor-guided local search does). 0 keeps to the policy's proposals.
    local_candidates: int = 8
    #: The best distinct trained architectures whose mutations are the local candidates.
    elite_size: int = 10

    def __post_init__(self) -> None:
        check_ranges(self, LIMITS)


#: The valid range of each FnasConfig limit; SearchSpec.fnas adds upper bounds (services/agent/spec.py).
LIMITS: Ranges = {
    "max_trusted_fraction": (lambda v: 0 <= v < 1, "must be in [0, 1): every batch trains something"),
    "audit_fraction": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "max_replay_fraction": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "buffer_size": (lambda v: v >= 1, "must be >= 1"),
    "priority_temperature": (lambda v: v > 0, "must be > 0"),
    "max_draw_rounds": (lambda v: v >= 1, "must be >= 1"),
    "candidates": (lambda v: v >= 1, "must be >= 1"),
    "ucb": (lambda v: v >= 0, "must be >= 0"),
    "resample_temperature": (lambda v: v >= 1, "must be >= 1"),
    "local_candidates": (lambda v: v >= 0, "must be >= 0"),
    "elite_size": (lambda v: v >= 1, "must be >= 1"),
}


class FnasStrategy(PPOStrategy):
    """PPO + UAC + AEB; see the module docstring."""

    name = "fnas"
    #: Policy samples per update; at most half of them trusted, so about 10+ are trained (tuned on cora).
    default_batch_size = 20

    def __init__(
        self,
        space: SearchSpace,
        seed: int,
        batch_size: int,
        fnas: FnasConfig = FnasConfig(),
        **overrides: Any,
    ) -> None:
        super().__init__(space, seed, batch_size, **(FNAS_PPO | overrides))
        self.fnas = fnas
        # Separate from the policy's generator, so switching a module off leaves the policy's draws alone.
        self.rng = np.random.default_rng([seed, 0xF7A5])
        #: (reward, tokens) of the best distinct trained architectures, best first.
        self.elite: list[tuple[float, tuple[int, ...]]] = []

    def update(self, batch: list[Feedback]) -> dict[str, float]:
        # Distinct by the space's key: two token lists of one architecture would fill two elite slots.
        keys = {self.space.key(t) for _, t in self.elite}
        for f in batch:
            if f.source == common_pb2.SAMPLE_SOURCE_TRAINED and (key := self.space.key(f.tokens)) not in keys:
                keys.add(key)
                self.elite.append((f.reward, f.tokens))
        self.elite = sorted(self.elite, key=lambda e: -e[0])[: self.fnas.elite_size]
        return super().update(batch)

    @property
    def uses_critic(self) -> bool:
        return self.fnas.uac

    @property
    def uses_buffer(self) -> bool:
        return self.fnas.aeb

    async def plan(self, batch: BatchContext) -> list[Planned]:
        return await assemble.plan_batch(self, batch)

    async def replays(self, batch: BatchContext, n_fresh: int) -> list[tuple[int, Feedback]]:
        return await assemble.replays(self, batch, n_fresh)

    def local_proposals(self, n: int) -> list[Proposal]:
        """n distinct one-token mutations of elite architectures, with their log-prob under the policy."""
        mutants: list[tuple[int, ...]] = []
        seen = {t for _, t in self.elite}
        for _ in range(20 * n if self.elite else 0):  # invalid mutations are redrawn, within reason
            if len(mutants) >= n:
                break
            tokens = list(self.elite[int(self.rng.integers(len(self.elite)))][1])
            pos = int(self.rng.integers(len(tokens)))
            size = self.space.vocab[pos]
            if size < 2:
                continue
            tokens[pos] = (tokens[pos] + 1 + int(self.rng.integers(size - 1))) % size
            try:
                mutant = self.space.validate(tokens)
            except InvalidArchitecture:
                continue
            if mutant not in seen:
                seen.add(mutant)
                mutants.append(mutant)
        if not mutants:
            return []
        with torch.no_grad():
            log_prob = self.policy.log_prob(torch.tensor(mutants)).tolist()
        return [Proposal(t, lp) for t, lp in zip(mutants, log_prob, strict=True)]

    def draw_audit(self) -> bool:
        """Whether this would-be-trusted sample is trained anyway (calibration check)."""
        return bool(self.rng.random() < self.fnas.audit_fraction)

    def draw_seed(self) -> int:
        """A seed for one buffer draw."""
        return int(self.rng.integers(1 << 62))

    def calibration_error(self) -> float | None:
        if not self.audits:
            return None
        return float(np.mean([abs(v - r) for v, r in self.audits]))

    def _state(self):
        tensors, meta = super()._state()
        meta |= {
            "fnas": asdict(self.fnas),
            "fnas_rng": self.rng.bit_generator.state,
            "audits": self.audits,
            "elite": [[r, list(t)] for r, t in self.elite],
        }
        return tensors, meta

    def _load_state(self, tensors, meta):
        super()._load_state(tensors, meta)
        # `dedup` was a switch before every strategy recalled what it trained (services.agent.batch).
        self.fnas = FnasConfig(**{k: v for k, v in meta["fnas"].items() if k != "dedup"})
        self.rng = np.random.default_rng([self.seed, 0xF7A5])
        self.rng.bit_generator.state = meta["fnas_rng"]
        self.audits = [tuple(a) for a in meta["audits"]]
        self.elite = [(float(r), tuple(t)) for r, t in meta.get("elite", [])]


def config_from_spec(spec: common_pb2.SearchSpec) -> FnasConfig:
    """The FnasConfig of a (validated) SearchSpec: module switches and the set FnasOptions fields."""
    m = modules(spec)
    return FnasConfig(uac=m.uac, aeb=m.aeb, akp=m.akp, **set_fields(spec.fnas, FnasConfig))
