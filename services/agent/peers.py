"""The searches users compare against, behind the same strategy interface: `tpe` and `bananas`.

- `tpe`: Optuna's TPESampler with its defaults (Bergstra et al. 2011, "Algorithms
  for Hyper-Parameter Optimization"), one categorical parameter per token,
  through Optuna's ask/tell. A token list the space refuses is told as a failed
  trial and asked again.
- `bananas`: predictor-guided search after White, Neiswanger and Savani 2021,
  "BANANAS: Bayesian Optimization with Neural Architectures for Neural
  Architecture Search": an ensemble of MLPs fitted on the space's embedding of
  every trained architecture; a large pool of untrained candidates (one- and
  two-token mutations of the best ones, and uniform draws) is ranked by
  mean + kappa * std of the ensemble, and the top of it is trained each round.

Both learn only from the rewards the loop gives them (trained or recalled).
Their checkpoints are JSON and safetensors like the others': `tpe` keeps its
ask/tell log and rebuilds Optuna's study by replaying it (TPE's draws depend
only on its seed and that log), `bananas` keeps its data and generators and
refits its ensemble from them.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fnas.spaces.base import InvalidArchitecture, SearchSpace
from fnas.v1.common_pb2 import SAMPLE_SOURCE_BUFFER
from services.agent.batch import Feedback
from services.agent.strategies import MAX_TRIES, Proposal, Strategy


class TPEStrategy(Strategy):
    """Optuna's TPE (its defaults) over the token positions as categorical parameters."""

    name = "tpe"
    default_batch_size = 10  # as the other baselines: the number of parallel trainers

    def __init__(self, space: SearchSpace, seed: int, batch_size: int) -> None:
        super().__init__(space, seed, batch_size)
        #: Every ask and tell since the start, in order: ["ask", [tokens...]] and ["tell", [[i, value]...]]
        #: (value None: a failed trial); replaying it rebuilds the study exactly.
        self.log: list[list[Any]] = []
        self._study = self._new_study()
        self._pending: list[tuple[Any, tuple[int, ...]]] = []  # asked, not yet told: (trial, tokens)

    def _new_study(self):
        import optuna  # here: the agent imports Optuna only for a `tpe` search

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        logging.getLogger("optuna").propagate = False
        return optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=self.seed))

    def _ask(self) -> tuple[Any, tuple[int, ...]]:
        trial = self._study.ask()
        tokens = tuple(
            int(trial.suggest_categorical(f"t{i}", list(range(v)))) for i, v in enumerate(self.space.vocab)
        )
        return trial, tokens

    def propose(self, n: int) -> list[Proposal]:
        out = []
        for _ in range(n):
            for _attempt in range(MAX_TRIES):
                trial, tokens = self._ask()
                try:
                    tokens = self.space.validate(tokens)
                except InvalidArchitecture:
                    self._study.tell(trial, state=_failed())
                    self.log.append(["refused", list(tokens)])
                    continue
                self._pending.append((trial, tokens))
                self.log.append(["ask", list(tokens)])
                out.append(Proposal(tokens, 0.0))
                break
            else:
                raise RuntimeError(f"tpe: no valid architecture of {self.space.id} in {MAX_TRIES} draws")
        self.n_proposed += n
        return out

    def update(self, batch: list[Feedback]) -> dict[str, float]:
        pending, values = self._pending, {}
        for f in batch:  # in proposal order; a trial per proposal, repeats included
            if f.source != SAMPLE_SOURCE_BUFFER:
                i = next(i for i, (_, t) in enumerate(pending) if t == f.tokens and i not in values)
                values[i] = float(f.reward)
        for i, (trial, _) in enumerate(pending):  # a trial whose training failed is told as failed
            if i in values:
                self._study.tell(trial, values[i])
            else:
                self._study.tell(trial, state=_failed())
        self.log.append(["tell", [[i, values.get(i)] for i in range(len(pending))]])
        self._pending = []
        self.n_updates += 1
        return {}

    def _state(self):
        return {}, {"log": self.log}

    def _load_state(self, tensors, meta):
        self._study, self._pending, self.log = self._new_study(), [], []
        for kind, arg in meta["log"]:
            if kind == "tell":
                pending = self._pending
                for i, value in arg:
                    if value is None:
                        self._study.tell(pending[i][0], state=_failed())
                    else:
                        self._study.tell(pending[i][0], value)
                self._pending = []
            else:
                trial, tokens = self._ask()
                if list(tokens) != list(arg):
                    raise ValueError("tpe: the replayed study drew other architectures than its log")
                if kind == "refused":
                    self._study.tell(trial, state=_failed())
                else:
                    self._pending.append((trial, tuple(arg)))
            self.log.append([kind, arg])


class Ensemble(nn.Module):
    """`members` ReLU MLPs evaluated together (one batched matmul per layer): (N, d) -> (members, N)."""

    def __init__(self, members: int, n_in: int, width: int, layers: int, generator: torch.Generator) -> None:
        super().__init__()
        sizes = [n_in] + [width] * layers + [1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in itertools.pairwise(sizes):
            bound = 1.0 / np.sqrt(a)  # torch's default Linear initialisation, from the strategy's generator
            self.weights.append(nn.Parameter(_uniform((members, a, b), bound, generator)))
            self.biases.append(nn.Parameter(_uniform((members, 1, b), bound, generator)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.expand(len(self.weights[0]), -1, -1)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h, w)
            if i < len(self.weights) - 1:
                h = torch.relu(h)
        return h.squeeze(-1)


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


def _failed():
    import optuna

    return optuna.trial.TrialState.FAIL


@dataclass(frozen=True)
class BananasConfig:
    """BANANAS sizes (the paper's ensemble of 5; smaller nets and pools, for the CPU a search runs on)."""

    #: Uniformly random architectures trained before the first model.
    initial: int = 20
    #: MLPs in the ensemble, their width and hidden layers, and their full-batch Adam epochs.
    ensemble: int = 5
    width: int = 64
    layers: int = 3
    epochs: int = 100
    lr: float = 1e-2
    #: Untrained candidates ranked per round: mutations of the best `parents`, and this share uniform.
    candidates: int = 1000
    parents: int = 10
    uniform_share: float = 0.1
    #: Acquisition: mean + kappa * std of the ensemble's predictions.
    kappa: float = 0.5


class BananasStrategy(Strategy):
    """Predictor-guided search: an MLP ensemble ranks mutations of the best architectures (see above)."""

    name = "bananas"
    default_batch_size = 10

    def __init__(self, space: SearchSpace, seed: int, batch_size: int, **overrides: Any) -> None:
        super().__init__(space, seed, batch_size)
        self.config = BananasConfig(**overrides)
        self.rng = np.random.default_rng([seed, 0xBA7A])
        self.generator = torch.Generator().manual_seed(seed)
        #: (tokens, reward) of every distinct trained architecture, in the order learned.
        self.data: dict[str, tuple[tuple[int, ...], float]] = {}

    def _uniform(self) -> tuple[tuple[int, ...], float]:
        return tuple(int(self.rng.integers(v)) for v in self.space.vocab), 0.0

    def propose(self, n: int) -> list[Proposal]:
        self.n_proposed += n
        if len(self.data) < self.config.initial:
            return [self._valid(self._uniform) for _ in range(n)]
        pool = self._candidates()
        if not pool:
            return [self._valid(self._uniform) for _ in range(n)]
        score = self._acquisition(pool)
        order = np.argsort(-score, kind="stable")[:n]
        out = [Proposal(pool[i], 0.0) for i in order]
        return out + [self._valid(self._uniform) for _ in range(n - len(out))]

    def _candidates(self) -> list[tuple[int, ...]]:
        """Distinct valid untrained architectures: mutations of the best ones, and uniform draws."""
        c = self.config
        best = sorted(self.data.values(), key=lambda d: -d[1])[: c.parents]
        seen, pool = set(self.data), []
        n_uniform = int(c.candidates * c.uniform_share)
        for k in range(4 * c.candidates):  # refused and known draws are skipped, within reason
            if len(pool) >= c.candidates:
                break
            if k < 4 * n_uniform and len(pool) < n_uniform:
                tokens = self._uniform()[0]
            else:
                tokens = list(best[int(self.rng.integers(len(best)))][0])
                for _ in range(1 + int(self.rng.integers(2))):  # one or two tokens
                    i = int(self.rng.integers(len(tokens)))
                    tokens[i] = int(self.rng.integers(self.space.vocab[i]))
            try:
                tokens = self.space.validate(tokens)
            except InvalidArchitecture:
                continue
            if (key := self.space.key(tokens)) not in seen:
                seen.add(key)
                pool.append(tokens)
        return pool

    def _acquisition(self, pool: list[tuple[int, ...]]) -> np.ndarray:
        """mean + kappa * std over the ensemble, fitted on standardised rewards."""
        c = self.config
        x = torch.from_numpy(np.stack([self.space.embedding(t) for t, _ in self.data.values()]))
        y = torch.tensor([r for _, r in self.data.values()], dtype=torch.float32)
        y = (y - y.mean()) / (y.std() + 1e-8)
        ensemble = Ensemble(c.ensemble, x.shape[1], c.width, c.layers, self.generator)
        optimizer = torch.optim.Adam(ensemble.parameters(), lr=c.lr, foreach=True)
        for _ in range(c.epochs):  # full batch; every member sees all data, from its own initialisation
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(ensemble(x), y.expand(c.ensemble, -1))
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            preds = ensemble(torch.from_numpy(np.stack([self.space.embedding(t) for t in pool])))
        return (preds.mean(0) + c.kappa * preds.std(0)).numpy()

    def update(self, batch: list[Feedback]) -> dict[str, float]:
        for f in batch:
            if f.source != SAMPLE_SOURCE_BUFFER:
                self.data.setdefault(self.space.key(f.tokens), (tuple(f.tokens), float(f.reward)))
        self.n_updates += 1
        return {}

    def _state(self):
        meta = {
            "config": asdict(self.config),
            "rng": self.rng.bit_generator.state,
            "data": [[k, list(t), r] for k, (t, r) in self.data.items()],
        }
        return {"generator": self.generator.get_state()}, meta

    def _load_state(self, tensors, meta):
        self.config = BananasConfig(**meta["config"])
        self.rng = np.random.default_rng([self.seed, 0xBA7A])
        self.rng.bit_generator.state = meta["rng"]
        self.generator = torch.Generator()
        self.generator.set_state(tensors["generator"])
        self.data = {k: (tuple(t), float(r)) for k, t, r in meta["data"]}
