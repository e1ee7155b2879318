"""Search strategies behind one in-memory interface: propose a batch, learn from its results.

`ppo` is the MNAS controller trained with PPO (paper 4.1), the plain baseline that
FNAS accelerates; `random` and `evolution` (regularized evolution, Real et al.
2019) are the reference points. The loop (`services.agent.batch`) is:
plan = s.plan(context), by default s.propose(n) all trained; train what was
not trained before (in any order, re-ordered by index); s.update(feedback);
save s.state(). Every source of randomness is an explicit generator seeded by
`seed`, and `state()` holds all of it, so a resumed strategy continues
bit-identically.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import safetensors.torch
import torch

from fnas.spaces.base import InvalidArchitecture, SearchSpace
from fnas.v1.common_pb2 import SAMPLE_SOURCE_BUFFER, SAMPLE_SOURCE_TRAINED
from services.agent import ppo
from services.agent.batch import BatchContext, Feedback, Planned
from services.agent.policy import HIDDEN_SIZE, Controller

#: Byte alignment of each tensor in a packed strategy state.
_ALIGN = 8
#: Redraws allowed per proposal before a space is declared (nearly) all-invalid.
MAX_TRIES = 1000


@dataclass(frozen=True)
class Proposal:
    """A proposed architecture and its behaviour-policy log-prob (0 for non-policy strategies)."""

    tokens: tuple[int, ...]
    log_prob: float


class Strategy(ABC):
    """A search strategy: proposes valid architectures and learns from their rewards."""

    name: ClassVar[str]
    #: Batch size that `make` uses when given 0.
    default_batch_size: ClassVar[int]
    batch_size: int

    def __init__(self, space: SearchSpace, seed: int, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.space, self.seed, self.batch_size = space, seed, batch_size
        self.n_proposed = 0
        self.n_updates = 0
        #: (V, R) of every audited sample: a critic's real error where it claimed to be right (fnas).
        self.audits: list[tuple[float, float]] = []

    #: Whether the loop gives this strategy a critic to plan with and a buffer to replay from.
    uses_critic: bool = False
    uses_buffer: bool = False

    async def plan(self, batch: BatchContext) -> list[Planned]:
        """The next batch of policy samples; by default every proposal is trained (the loop recalls
        the architectures this search trained before, `services.agent.batch.settle`)."""
        n = min(batch.size, batch.max_trained)
        return [Planned(p.tokens, p.log_prob, SAMPLE_SOURCE_TRAINED) for p in self.propose(n)]

    async def replays(self, batch: BatchContext, n_fresh: int) -> list[tuple[int, Feedback]]:
        """(original sample index, feedback) of earlier samples to learn from again with this batch."""
        return []

    def calibration_error(self) -> float | None:
        """Mean |V - R| over the audited samples; None before the first audit."""
        return None

    @abstractmethod
    def propose(self, n: int) -> list[Proposal]:
        """n valid architectures (token lists failing space.validate are redrawn)."""

    @abstractmethod
    def update(self, batch: list[Feedback]) -> dict[str, float]:
        """Learns from one completed batch, in order; returns train/* scalars."""

    def state(self) -> bytes:
        """Everything needed to resume bit-identically, as safetensors bytes (no pickle)."""
        tensors, meta = self._state()
        meta |= {
            "strategy": self.name,
            "space": self.space.id,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "n_proposed": self.n_proposed,
            "n_updates": self.n_updates,
        }
        packed, layout = _pack(tensors)
        meta["layout"] = layout
        return safetensors.torch.save({"packed": packed}, metadata={"fnas": json.dumps(meta)})

    def load_state(self, data: bytes) -> None:
        """Restores what `state()` saved; raises ValueError for another strategy or space."""
        try:
            meta = json.loads(_metadata(data)["fnas"])
        except (struct.error, UnicodeDecodeError, ValueError, KeyError) as e:
            raise ValueError(f"not a strategy state ({type(e).__name__}: {e})") from e
        if (meta["strategy"], meta["space"]) != (self.name, self.space.id):
            raise ValueError(
                f"state of {meta['strategy']!r} on {meta['space']!r}, not {self.name!r} on {self.space.id!r}"
            )
        self.seed, self.batch_size = meta["seed"], meta["batch_size"]
        self.n_proposed, self.n_updates = meta["n_proposed"], meta["n_updates"]
        tensors = safetensors.torch.load(data)
        if "layout" in meta:  # written packed; a checkpoint of an older agent holds the tensors themselves
            tensors = _unpack(tensors["packed"], meta["layout"])
        self._load_state(tensors, meta)

    @abstractmethod
    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]: ...

    @abstractmethod
    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None: ...

    def _valid(
        self,
        draw: Callable[[], tuple[tuple[int, ...], float]],
        first: tuple[tuple[int, ...], float] | None = None,
    ) -> Proposal:
        """`first` if the space accepts it, else calls `draw` until it returns tokens the space accepts.

        Redrawing conditions the behaviour policy on validity; the stored log-prob stays the
        unconditional one, whose ratio differs from the conditional one's only by a
        normaliser that is the same for every valid sample of a batch.
        """
        for attempt in range(MAX_TRIES):
            tokens, log_prob = first if attempt == 0 and first is not None else draw()
            try:
                return Proposal(self.space.validate(tokens), log_prob)
            except InvalidArchitecture:
                continue
        raise RuntimeError(f"{self.name}: no valid architecture of {self.space.id} in {MAX_TRIES} draws")


def _pack(tensors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[list]]:
    """The tensors' bytes in one uint8 tensor, and [name, dtype, shape] of each in order.

    A strategy's checkpoint is written with every batch: safetensors spends some 20 us of
    Python per tensor, and PPO's policy and Adam state are 77 tensors (`state()` took 1.5 ms
    with them as they are, 0.7 ms packed). Each tensor starts on an 8-byte boundary.
    """
    parts, layout = [], []
    for name, t in tensors.items():
        raw = t.detach().contiguous().numpy().reshape(-1).view(np.uint8)
        parts.append(raw)
        if pad := -raw.size % _ALIGN:
            parts.append(np.zeros(pad, dtype=np.uint8))
        layout.append([name, str(t.dtype).removeprefix("torch."), list(t.shape)])
    return torch.from_numpy(np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)), layout


def _unpack(packed: torch.Tensor, layout: list[list]) -> dict[str, torch.Tensor]:
    """The tensors that `_pack` packed; ValueError where the layout does not fit the bytes."""
    out, offset = {}, 0
    for name, dtype_name, shape in layout:
        dtype = getattr(torch, dtype_name, None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"not a strategy state (tensor {name!r} of unknown dtype {dtype_name!r})")
        size = math.prod(shape) * dtype.itemsize
        if offset + size > packed.numel():
            raise ValueError(f"not a strategy state (tensor {name!r} runs past the packed bytes)")
        # A copy with its own storage: torch.Generator.set_state crashed on a view into `packed`.
        out[name] = packed[offset : offset + size].view(dtype).reshape(shape).clone()
        offset += size + (-size % _ALIGN)
    return out


def _metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of safetensors bytes: an 8-byte little-endian header size, then JSON."""
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size]).get("__metadata__", {})


# PPO defaults, tuned on NAS-Bench-Graph cora and citeseer (reward = valid accuracy) with
# fnas_bench.plain_loop: ~25 configurations, 5-9 seeds each, budget 2000, ranked by the
# median activated samples to the table's top-1% / top-0.1% valid accuracy. Chosen
# (cora 63 / 372, citeseer 47 / 313): lr 1e-3 (5e-4: slower; 2e-3+: collapses onto one
# architecture), 4 epochs (1, 2 and 8 worse), ent_coef 0.01 (0 collapses, 0.03 / 0.1 slower),
# batch 10 (5 and 20 worse), clip 0.2 (0.1 and 0.3 worse), normalised advantages (slightly
# better than the raw baseline-subtracted ones, where decay 0.95 and 0.99 tied).
@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters (SB3 names); the defaults are the tuned ones above."""

    #: Adam learning rate.
    lr: float = 1e-3
    #: Full-batch gradient epochs per update.
    n_epochs: int = 4
    #: PPO clip epsilon.
    clip_range: float = 0.2
    #: Entropy bonus coefficient (on the summed per-token entropy).
    ent_coef: float = 0.01
    #: Global gradient-norm clip (SB3 default).
    max_grad_norm: float = 0.5
    #: Approx-KL early stop (None: off); an update is 4 full-batch epochs, so it rarely matters.
    target_kl: float | None = None
    #: Per-sample decay of MNAS's moving-average reward baseline (only logged when normalising).
    baseline_decay: float = 0.95
    #: Standardise advantages per batch (SB3).
    normalize_advantage: bool = True
    #: LSTM width (paper 6.1).
    hidden_size: int = HIDDEN_SIZE


class PPOStrategy(Strategy):
    """The MNAS LSTM controller trained with PPO (paper 4.1)."""

    name = "ppo"
    default_batch_size = 10  # tuned with PPOConfig

    def __init__(self, space: SearchSpace, seed: int, batch_size: int, **overrides: Any) -> None:
        super().__init__(space, seed, batch_size)
        self._build(PPOConfig(**overrides))
        self.baseline: float | None = None

    def _build(self, config: PPOConfig) -> None:
        self.config = config
        self.generator = torch.Generator().manual_seed(self.seed)
        self.policy = Controller(self.space.vocab, config.hidden_size, generator=self.generator)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.lr)

    def propose(self, n: int, temperature: float = 1.0) -> list[Proposal]:
        """n proposals; a temperature above 1 flattens the policy (log-probs are the tempered ones)."""
        if n <= 0:
            return []
        tokens, log_prob = self.policy.sample(n, self.generator, temperature)
        rows = zip(tokens.tolist(), log_prob.tolist(), strict=True)
        draw = functools.partial(self._sample_one, temperature)
        out = [self._valid(draw, first=(tuple(t), lp)) for t, lp in rows]
        self.n_proposed += n
        return out

    def _sample_one(self, temperature: float = 1.0) -> tuple[tuple[int, ...], float]:
        tokens, log_prob = self.policy.sample(1, self.generator, temperature)
        return tuple(tokens[0].tolist()), float(log_prob[0])

    def update(self, batch: list[Feedback]) -> dict[str, float]:
        if not batch:
            return {}
        c = self.config
        rewards = torch.tensor([f.reward for f in batch], dtype=torch.float32)
        samples = ppo.RolloutBufferSamples(
            tokens=torch.tensor([f.tokens for f in batch], dtype=torch.long),
            behaviour_log_prob=torch.tensor([f.log_prob for f in batch], dtype=torch.float32),
            advantages=ppo.compute_advantages(rewards, self.baseline, c.normalize_advantage),
            weights=torch.tensor([f.weight for f in batch], dtype=torch.float32),
        )
        # Replays are old, mostly high rewards (paper 5): they must not drag the baseline up.
        fresh = torch.tensor(
            [f.reward for f in batch if f.source != SAMPLE_SOURCE_BUFFER], dtype=torch.float32
        )
        self.baseline = ppo.update_baseline(self.baseline, fresh, c.baseline_decay)
        scalars = ppo.ppo_update(
            self.policy,
            self.optimizer,
            samples,
            n_epochs=c.n_epochs,
            clip_range=c.clip_range,
            ent_coef=c.ent_coef,
            max_grad_norm=c.max_grad_norm,
            target_kl=c.target_kl,
        )
        self.n_updates += 1
        return scalars | {
            "train/baseline": float(self.baseline if self.baseline is not None else 0.0),
            "train/reward_mean": float(rewards.mean()),
        }

    def _state(self):
        tensors = {f"policy.{k}": v.detach().contiguous() for k, v in self.policy.state_dict().items()}
        optim = self.optimizer.state_dict()
        for i, st in optim["state"].items():
            tensors |= {f"optim.{i}.{k}": torch.as_tensor(v) for k, v in st.items()}
        tensors["generator"] = self.generator.get_state()
        meta = {
            "config": asdict(self.config),
            "baseline": self.baseline,
            "param_groups": optim["param_groups"],
        }
        return tensors, meta

    def _load_state(self, tensors, meta):
        self._build(PPOConfig(**meta["config"]))
        self.policy.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("policy.")})
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, i, name = k.split(".", 2)
                state.setdefault(int(i), {})[name] = v
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        self.generator.set_state(tensors["generator"])
        self.baseline = meta["baseline"]


class _NumpyStrategy(Strategy):
    """A strategy whose randomness is one numpy Generator (PCG64)."""

    default_batch_size = 10  # the number of parallel trainers

    def __init__(self, space: SearchSpace, seed: int, batch_size: int) -> None:
        super().__init__(space, seed, batch_size)
        self.rng = np.random.default_rng(seed)

    def _uniform(self) -> tuple[tuple[int, ...], float]:
        return tuple(int(self.rng.integers(v)) for v in self.space.vocab), 0.0

    def _state(self):
        return {}, {"rng": self.rng.bit_generator.state} | self._extra_state()

    def _load_state(self, tensors, meta):
        self.rng = np.random.default_rng(self.seed)
        self.rng.bit_generator.state = meta["rng"]
        self._load_extra_state(meta)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, meta: dict[str, Any]) -> None:
        """Restores what `_extra_state` saved."""


class RandomStrategy(_NumpyStrategy):
    """Uniform random search over valid token lists (each token uniform, invalid ones redrawn)."""

    name = "random"

    def propose(self, n: int) -> list[Proposal]:
        self.n_proposed += n
        return [self._valid(self._uniform) for _ in range(n)]

    def update(self, batch: list[Feedback]) -> dict[str, float]:
        self.n_updates += 1
        return {}


@dataclass(frozen=True)
class EvolutionConfig:
    """Regularized evolution (Real et al. 2019) sizes.

    P=50, S=10 out of (20,5) (50,10) (50,25) (100,25) (100,50), 21 seeds on NAS-Bench-Graph
    cora and citeseer: the best median samples to the top-0.1% summed over both datasets.
    """

    #: P: the population (the oldest member dies when a child joins a full one).
    population_size: int = 50
    #: S: members drawn per tournament; the fittest one is the parent.
    sample_size: int = 10


class EvolutionStrategy(_NumpyStrategy):
    """Regularized (aging) evolution: tournament selection, one-token mutation, oldest dies."""

    name = "evolution"

    def __init__(self, space: SearchSpace, seed: int, batch_size: int, **overrides: Any) -> None:
        super().__init__(space, seed, batch_size)
        self.config = EvolutionConfig(**overrides)
        self.population: list[tuple[tuple[int, ...], float]] = []  # oldest first
        self._mutable = [i for i, v in enumerate(space.vocab) if v > 1]

    def mutate(self, tokens: tuple[int, ...]) -> tuple[int, ...]:
        """`tokens` with exactly one token changed to a different value, position uniform."""
        i = self._mutable[int(self.rng.integers(len(self._mutable)))]
        new = int(self.rng.integers(self.space.vocab[i] - 1))
        if new >= tokens[i]:  # skip the current value
            new += 1
        return (*tokens[:i], new, *tokens[i + 1 :])

    def _child(self) -> tuple[tuple[int, ...], float]:
        k = min(self.config.sample_size, len(self.population))
        drawn = self.rng.choice(len(self.population), size=k, replace=False)
        parent = max(drawn.tolist(), key=lambda j: self.population[j][1])  # ties: first drawn
        return self.mutate(self.population[parent][0]), 0.0

    def propose(self, n: int) -> list[Proposal]:
        out = []
        for _ in range(n):
            # The first P proposals form the random initial population; before any result
            # is back (asynchronous evaluation) there is nothing to mutate either.
            random = self.n_proposed < self.config.population_size or not self.population
            out.append(self._valid(self._uniform if random else self._child))
            self.n_proposed += 1
        return out

    def update(self, batch: list[Feedback]) -> dict[str, float]:
        for f in batch:
            if f.source == SAMPLE_SOURCE_BUFFER:  # a replay is not a new individual
                continue
            self.population.append((tuple(f.tokens), float(f.reward)))
            if len(self.population) > self.config.population_size:
                self.population.pop(0)  # aging: the oldest dies, not the worst
        self.n_updates += 1
        best = max((r for _, r in self.population), default=0.0)
        return {"train/population_best": best, "train/population_size": float(len(self.population))}

    def _extra_state(self):
        return {"config": asdict(self.config), "population": [[list(t), r] for t, r in self.population]}

    def _load_extra_state(self, meta):
        self.config = EvolutionConfig(**meta["config"])
        self.population = [(tuple(t), r) for t, r in meta["population"]]
