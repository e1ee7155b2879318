"""The UAC of one search: observation history, lazy training, the trust decision and its calibration.

Paper 4.2: V(m) predicts the reward, U(m) the error of that guess; U below the
threshold means trusted (the policy takes V(m) and nothing is trained).

Reproducibility (DESIGN.md): results arrive asynchronously and in any order, so
the critic never trains on "whatever came first". A prediction names how many
trained results it must reflect (`min_observed` = N); the critic then trains,
once, on exactly the first N observations by sample index, in a round seeded by
the search. The same requests therefore give the same answers in the mesh, in
the plain in-memory loop and after a restart (the state is saved after each
round).

Threshold, fixed or calibrated: each observation is first predicted *before* V
learns it (a prequential, i.e. out-of-sample, pair of U and |V - R|). The
calibrated threshold is the largest U whose lower-U pairs (of the last
`calibration_window`) have a mean error within `target_error` times the robust
reward scale (IQR / 1.349 of the rewards seen): trusted predictions are then
expected to stay within that error, which the agent checks on audited samples.

Transfer (paper 3.1), gated: a critic started from a snapshot or other searches'
histories predicts this search's first trained results before it learns them.
If it misses them by more than they deviate from their own mean (`misleads`), it
knows less of this task than that mean does, and the critic continues from
scratch, bit for bit as one without a prior. Until that check, a critic with a
prior answers as one without would (a fresh net from the search's seed), so the
first batch is chosen as from scratch: a prior the check drops costs the search
nothing. (Before, the prior ranked that first batch and every cross-table prior
was dropped after it: pubmed -> citeseer then needed 133.5 samples for scratch's
74.5, median of 30 seeds; now 74.5, and no pair of cora / citeseer / pubmed needs
more than scratch. README has the figures.)
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import safetensors.torch
import torch

from fnas.spaces.base import SearchSpace
from services.critic.decision import DecisionConfig, NotReady, Prediction, calibrate
from services.critic.model import CriticNets, FitConfig

log = logging.getLogger(__name__)

#: Token lists whose key and embedding SearchCritic keeps (all of NAS-Bench-Graph's 59,049 fit).
_CODE_CACHE = 100_000


@dataclass
class _Obs:
    tokens: tuple[int, ...]
    reward: float


@dataclass
class _Trained:
    """What the critic knows about the observations it trained on."""

    #: Sample index -> (V, U) predicted when the observation arrived (before V learned it).
    arrival: dict[int, tuple[float, float]] = field(default_factory=dict)
    #: Prequential (U, |V - R|) pairs, oldest first.
    pairs: list[tuple[float, float]] = field(default_factory=list)
    n_trained: int = 0
    threshold: float = -1.0
    best: float = float("-inf")


class SearchCritic:
    """The critic of one search (or of a snapshot being built)."""

    def __init__(
        self,
        space: SearchSpace,
        seed: int,
        decision: DecisionConfig = DecisionConfig(),  # noqa: B008 - frozen
        fit: FitConfig = FitConfig(),  # noqa: B008 - frozen
        model: CriticNets | None = None,
    ) -> None:
        self.space, self.seed, self.decision, self.fit_config = space, seed, decision, fit
        self.model = model or CriticNets(space.embedding_size, seed)
        self.observations: dict[int, _Obs] = {}
        self.trained = _Trained()
        self._known: dict[str, tuple[float, int]] = {}
        self.last_fit: dict[str, float] = {}
        self._codes: dict[tuple[int, ...], tuple[str, np.ndarray]] = {}
        #: Started from a snapshot or earlier histories (paper 3.1): its first predictions already count.
        self.pretrained = model is not None
        # observe() runs on the event loop while a training round runs in a worker thread.
        self._lock = threading.Lock()
        #: Held by every round and every reader of the nets: a retried or concurrent call never trains
        #: the same nets and optimizer from two threads (which corrupted Adam's state).
        self.busy = threading.RLock()
        #: What a critic without a prior would answer before the transfer check (see _answering).
        self._unchecked: CriticNets | None = None

    @property
    def observed(self) -> int:
        return len(self.observations)

    def observe(self, index: int, tokens: Sequence[int], reward: float) -> bool:
        """Adds one trained result; False for a duplicate index (redelivery)."""
        with self._lock:
            if index in self.observations:
                return False
            self.observations[index] = _Obs(tuple(int(t) for t in tokens), float(reward))
            return True

    def predict(self, tokens: Sequence[Sequence[int]], min_observed: int) -> list[Prediction]:
        """Predictions after training on the first `min_observed` results; NotReady before they came."""
        if self.observed < min_observed:
            raise NotReady(f"observed {self.observed} of the {min_observed} results the request needs")
        with self.busy:
            return self._predict(tokens, min_observed)

    def _predict(self, tokens: Sequence[Sequence[int]], min_observed: int) -> list[Prediction]:
        # Idempotent by count: a retried call finds the round done and only predicts.
        if min_observed > self.trained.n_trained:
            self.train_to(min_observed)
        if not tokens:
            return []
        rows = [self._encode(t) for t in tokens]
        x = torch.from_numpy(np.stack([emb for _, emb in rows]))
        values, uncertainties = self._answering().predict(x)
        d, t = self.decision, self.trained
        ready = t.n_trained >= d.warmup
        out = []
        for (key, _), v, u in zip(rows, values.tolist(), uncertainties.tolist(), strict=True):
            known = self._known.get(key) if d.recall else None
            if known is not None:
                out.append(Prediction(known[0] / known[1], 0.0, ready, known=True))
                continue
            trusted = ready and u < self.threshold() and (d.trust_above_best or v + d.optimism * u <= t.best)
            out.append(Prediction(v, u, trusted))
        return out

    def _answering(self) -> CriticNets:
        """The nets whose predictions answer now: a prior's only once the check has kept it."""
        if self.pretrained and not self.trained.n_trained:
            if self._unchecked is None:
                self._unchecked = CriticNets(self.space.embedding_size, self.seed)
            return self._unchecked
        return self.model

    def _encode(self, tokens: Sequence[int]) -> tuple[str, np.ndarray]:
        """(dedup key, one-hot embedding) of a token list, cached: a converged policy repeats itself."""
        tokens = tuple(tokens)
        hit = self._codes.get(tokens)
        if hit is None:
            if len(self._codes) >= _CODE_CACHE:
                self._codes.clear()
            hit = self._codes[tokens] = (self.space.key(tokens), self.space.embedding(tokens))
        return hit

    def threshold(self) -> float:
        """The U threshold now: the fixed one, or the calibrated one (-1: nothing trusted yet)."""
        if self.decision.threshold is not None:
            return self.decision.threshold
        return self.trained.threshold

    def train_to(self, n: int) -> None:
        """One training round on the first n observations by sample index (see the module docstring)."""
        with self.busy:
            self._train_to(n)

    def _train_to(self, n: int) -> None:
        with self._lock:
            data = sorted(self.observations.items())[:n]
        t = self.trained
        fresh = [(i, o) for i, o in data if i not in t.arrival]
        # Fresh rows last: the fit reserves part of every minibatch for them.
        data = [(i, o) for i, o in data if i in t.arrival] + fresh
        if fresh:
            x_new = torch.from_numpy(np.stack([self._encode(o.tokens)[1] for _, o in fresh]))
            values, uncertainties = self.model.predict(x_new)
            if self.pretrained and not t.n_trained and misleads(values, [o.reward for _, o in fresh]):
                # The transferred prior knows less of this task than the mean of its first rewards: this
                # search's critic starts from scratch instead, exactly as a critic without a prior would.
                log.info("critic prior dropped: it missed the first %d rewards by more than their spread", n)
                self.model, self.pretrained = self._answering(), False  # the nets that chose that batch
                values, uncertainties = self.model.predict(x_new)
            for (i, o), v, u in zip(fresh, values.tolist(), uncertainties.tolist(), strict=True):
                t.arrival[i] = (v, u)
                if t.n_trained or self.pretrained:  # an untrained net's errors say nothing about U
                    t.pairs.append((u, abs(v - o.reward)))
            del t.pairs[: -self.decision.calibration_window]
        x = torch.from_numpy(np.stack([self._encode(o.tokens)[1] for _, o in data]))
        rewards = torch.tensor([o.reward for _, o in data], dtype=torch.float32)
        arrival = torch.tensor([t.arrival[i][0] for i, _ in data], dtype=torch.float32)
        self.last_fit = self.model.fit(x, rewards, arrival, len(fresh), self.fit_config)
        t.n_trained = n
        self._unchecked = None
        t.best = max(o.reward for _, o in data)
        self._recount_known(data)
        t.threshold = calibrate(t.pairs, self.decision, self.model.scale.scale)

    def _recount_known(self, data: Sequence[tuple[int, _Obs]]) -> None:
        """Sum and count of the rewards of each architecture (by key) among the observations trained on."""
        self._known = {}
        for _, o in data:
            key = self._encode(o.tokens)[0]
            s, c = self._known.get(key, (0.0, 0))
            self._known[key] = (s + o.reward, c + 1)

    def reset_for_transfer(self) -> None:
        """Keeps the nets, forgets this history: the start of a search from a pre-trained critic."""
        self.observations, self.trained, self._known = {}, _Trained(), {}
        self.pretrained = True

    # state
    def state(self) -> bytes:
        """Nets, optimizer, generator and decision state as safetensors bytes (history not included)."""
        with self.busy:
            return self._state()

    def _state(self) -> bytes:
        t = self.trained
        meta = {
            "model": self.model.meta(),
            "arrival": [[i, v, u] for i, (v, u) in sorted(t.arrival.items())],
            "pairs": t.pairs,
            "n_trained": t.n_trained,
            "threshold": t.threshold,
            "best": t.best if t.n_trained else None,
            "decision": asdict(self.decision),
            "fit": asdict(self.fit_config),
            "space": self.space.id,
            "seed": self.seed,
            "pretrained": self.pretrained,
        }
        return safetensors.torch.save(self.model.tensors(), metadata={"fnas": json.dumps(meta)})

    def load_state(self, data: bytes) -> None:
        """Restores `state()` (the observations come from the store)."""
        tensors, meta = read(data)
        self.model = CriticNets.restore(tensors, meta["model"])
        t = self.trained = _Trained()
        t.arrival = {int(i): (v, u) for i, v, u in meta["arrival"]}
        t.pairs = [tuple(p) for p in meta["pairs"]]
        t.n_trained, t.threshold = int(meta["n_trained"]), float(meta["threshold"])
        self.pretrained = bool(meta.get("pretrained", False))
        t.best = float("-inf") if meta["best"] is None else float(meta["best"])
        with self._lock:
            data_ = sorted(self.observations.items())[: t.n_trained]
        self._recount_known(data_)


def misleads(values: Sequence[float], rewards: Sequence[float]) -> bool:
    """Whether predictions miss the rewards by more, on average, than the rewards' mean deviation from
    their own mean: worse than predicting that mean, i.e. no knowledge of the task (paper 3.1's transfer
    gated by its error on the new task's first trained samples; no threshold to tune)."""
    v, r = np.asarray(values, dtype=float), np.asarray(rewards, dtype=float)
    return bool(np.mean(np.abs(v - r)) > np.mean(np.abs(r - r.mean())))


def read(data: bytes) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of critic state / snapshot bytes; ValueError if they are not that."""
    try:
        tensors = safetensors.torch.load(data)
        (size,) = np.frombuffer(data[:8], dtype="<u8")
        header = json.loads(data[8 : 8 + int(size)])
        meta = json.loads(header["__metadata__"]["fnas"])
    except Exception as e:  # safetensors raises its own error types; all mean "not a critic state"
        raise ValueError(f"not a critic snapshot: {e}") from None
    return tensors, meta
