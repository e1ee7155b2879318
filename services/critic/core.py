"""The critic of every search, in memory: what CriticService serves and the plain loop runs directly.

`CriticCore` keeps the observation history of every search (also of searches
that never asked for predictions: a later search can pre-train on them), the
`SearchCritic` of each opened search, and snapshots for transfer (paper 3.1,
7.2). With a store, every change is written through, so a restarted critic
resumes with the same nets, generator and history. An ended search's critic
and history are read from the store when something needs them (a redelivered
result, a snapshot export, a later search's pre-training) and not kept: memory
holds the searches that run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Protocol

import safetensors.torch

from fnas import spaces
from fnas.bounds import clip
from services.critic.decision import DecisionConfig, Prediction
from services.critic.model import CriticNets, FitConfig
from services.critic.search_critic import SearchCritic, read

#: Pre-training on stored histories replays them in rounds of this many results, like a search would.
HISTORY_ROUND = 10


#: One trained result as the critic keeps it: (search_id, space, index, tokens, reward).
Observation = tuple[str, str, int, tuple[int, ...], float]


class Store(Protocol):
    """Persistence of the core (services.critic.store.CriticStore implements it on LMDB)."""

    def put_observations(self, rows: Sequence[Observation]) -> None: ...
    def observations(self, search_id: str) -> list[tuple[str, int, tuple[int, ...], float]]: ...
    def put_search(self, search_id: str, meta: dict, state: bytes | None) -> None: ...
    def search(self, search_id: str) -> tuple[dict, bytes | None] | None: ...
    def put_snapshot(self, snapshot_id: str, data: bytes) -> None: ...
    def snapshot(self, snapshot_id: str) -> bytes | None: ...
    def put_ended(self, search_id: str) -> None: ...
    def ended(self, search_id: str) -> bool: ...


class NoHistory(ValueError):
    """A search to pre-train on has no stored results; the message starts with its field, history[i]."""


class CriticCore:
    """Histories, per-search critics and snapshots; see the module docstring."""

    def __init__(
        self,
        decision: DecisionConfig = DecisionConfig(),  # noqa: B008 - frozen
        fit: FitConfig = FitConfig(),  # noqa: B008 - frozen
        store: Store | None = None,
    ) -> None:
        self.decision, self.fit, self.store = decision, fit, store
        self.critics: dict[str, SearchCritic] = {}
        self._history: dict[str, dict[int, tuple[str, tuple[int, ...], float]]] = {}
        self._snapshots: dict[str, bytes] = {}

    # history
    def observe(self, search_id: str, space: str, index: int, tokens: Sequence[int], reward: float) -> bool:
        """Records one trained result; False for a duplicate (redelivered) one."""
        return self.observe_many([(search_id, space, index, tuple(tokens), reward)]) == 1

    def observe_many(self, rows: Sequence[Observation]) -> int:
        """Records trained results, stored in one transaction before they are kept in memory;
        returns how many were new (duplicates, redelivered or repeated, are dropped)."""
        new: dict[tuple[str, int], Observation] = {}
        # Once per search: an ended search's history is read from the store, not kept.
        histories = {
            search_id: self._load_history(search_id) for search_id in dict.fromkeys(r[0] for r in rows)
        }
        for search_id, space, index, tokens, reward in rows:
            if index not in histories[search_id] and (search_id, index) not in new:
                new[search_id, index] = (
                    search_id,
                    space,
                    index,
                    tuple(int(t) for t in tokens),
                    float(reward),
                )
        if self.store is not None and new:
            self.store.put_observations(list(new.values()))
        for search_id, space, index, tokens, reward in new.values():
            histories[search_id][index] = (space, tokens, reward)
            critic = self.critics.get(search_id)
            if critic is not None:
                critic.observe(index, tokens, reward)
        return len(new)

    def observed(self, search_id: str) -> int:
        """Trained results of the search recorded so far."""
        return len(self._load_history(search_id))

    def _load_history(self, search_id: str) -> dict[int, tuple[str, tuple[int, ...], float]]:
        history = self._history.get(search_id)
        if history is None:
            rows = self.store.observations(search_id) if self.store is not None else []
            history = {i: (s, tuple(t), r) for s, i, t, r in rows}
            if not self._ended(search_id):
                self._history[search_id] = history
        return history

    def _ended(self, search_id: str) -> bool:
        return self.store is not None and self.store.ended(search_id)

    # searches
    def open(
        self,
        search_id: str,
        space: str,
        seed: int,
        decision: DecisionConfig | None = None,
        snapshot_id: str = "",
        history: Sequence[str] = (),
        tenant: str = "",
    ) -> SearchCritic:
        """The critic of a search, created on first call (from a snapshot and/or earlier histories).

        Idempotent: a later call (an agent resuming) returns the existing critic
        unchanged, and reads no history. KeyError for a snapshot `tenant` does not
        have (unknown, or another tenant's); NoHistory for a history without results;
        ValueError for a snapshot or history of another space layout.
        """
        critic = self.get(search_id)
        if critic is not None:
            return critic
        sp = spaces.get(space)
        model = None
        if snapshot_id:
            model = self._snapshot_model(snapshot_id, sp, tenant)
            model.generator.manual_seed(seed)
        critic = SearchCritic(sp, seed, decision or self.decision, self.fit, model)
        if history:
            self._pretrain(critic, history)
        for index, (_, tokens, reward) in sorted(self._load_history(search_id).items()):
            critic.observe(index, tokens, reward)
        self.critics[search_id] = critic
        meta = {"space": space, "seed": seed, "decision": asdict(critic.decision)}
        if self.store is not None:
            self.store.put_search(search_id, meta, critic.state())
        return critic

    def forget(self, search_id: str) -> None:
        """An ended search: its critic and history leave memory for good; the store keeps both."""
        if self.store is not None:  # without a store, memory is the only copy
            self.store.put_ended(search_id)
            self._history.pop(search_id, None)
        self.critics.pop(search_id, None)

    def get(self, search_id: str) -> SearchCritic | None:
        """The critic of an opened search (reloaded from the store after a restart); None if never opened."""
        return self.critics.get(search_id) or self._restore(search_id)

    def _restore(self, search_id: str) -> SearchCritic | None:
        saved = self.store.search(search_id) if self.store is not None else None
        if saved is None:
            return None
        meta, state = saved
        critic = SearchCritic(
            spaces.get(meta["space"]), meta["seed"], DecisionConfig(**meta["decision"]), self.fit
        )
        for index, (_, tokens, reward) in sorted(self._load_history(search_id).items()):
            critic.observe(index, tokens, reward)
        if state is not None:
            critic.load_state(state)
        if not self._ended(search_id):
            self.critics[search_id] = critic
        return critic

    def _pretrain(self, critic: SearchCritic, history: Sequence[str]) -> None:
        """Replays earlier searches' results through the critic in rounds, then forgets them (paper 3.1)."""
        rows = []
        for position, other in enumerate(history):
            observations = self._load_history(other)
            if not observations:
                raise NoHistory(f"history[{position}]: no stored results of {clip(other)!r}")
            for _, (space, tokens, reward) in sorted(observations.items()):
                if spaces.get(space).vocab != critic.space.vocab:
                    raise ValueError(
                        f"search {other} is on {space}, whose tokens differ from {critic.space.id}'s"
                    )
                rows.append((tokens, reward))
        for i, (tokens, reward) in enumerate(rows):
            critic.observe(i, tokens, reward)
            if (i + 1) % HISTORY_ROUND == 0 or i + 1 == len(rows):
                critic.train_to(i + 1)
        critic.reset_for_transfer()

    def predict(self, search_id: str, tokens: Sequence[Sequence[int]], min_observed: int) -> list[Prediction]:
        """The search's predictions; KeyError if never opened, NotReady before min_observed results."""
        critic = self.get(search_id)
        if critic is None:
            raise KeyError(search_id)
        before = critic.trained.n_trained
        out = critic.predict(tokens, min_observed)
        if self.store is not None and critic.trained.n_trained != before:
            meta = {"space": critic.space.id, "seed": critic.seed, "decision": asdict(critic.decision)}
            self.store.put_search(search_id, meta, critic.state())
        return out

    # snapshots
    def export(self, search_id: str, tenant: str = "") -> tuple[str, bytes]:
        """Stores the search's nets as a snapshot of `tenant`'s; returns (snapshot id, safetensors bytes)."""
        critic = self.get(search_id)
        if critic is None:
            raise KeyError(search_id)
        with critic.busy:
            tensors = {k: v for k, v in critic.model.tensors().items() if k.startswith("net.")}
        meta = {
            "kind": "fnas-critic-snapshot",
            "space": critic.space.id,
            "vocab": list(critic.space.vocab),
            "embedding": critic.space.embedding_kind,
            "model": critic.model.meta() | {"param_groups": None},
            "observations": critic.trained.n_trained,
        }
        data = safetensors.torch.save(tensors, metadata={"fnas": json.dumps(meta)})
        return self._put_snapshot(data, tenant), data

    def import_snapshot(self, data: bytes, space: str, tenant: str = "") -> str:
        """Validates snapshot bytes against `space` and stores them as `tenant`'s; ValueError says why not."""
        self._model_of(data, spaces.get(space))
        return self._put_snapshot(data, tenant)

    def _put_snapshot(self, data: bytes, tenant: str) -> str:
        snapshot_id = hashlib.sha256(data).hexdigest()[:16]
        if self.store is not None:
            self.store.put_snapshot(_snapshot_key(snapshot_id, tenant), data)
        else:
            self._snapshots[_snapshot_key(snapshot_id, tenant)] = data
        return snapshot_id

    def _snapshot_model(self, snapshot_id: str, space: spaces.SearchSpace, tenant: str) -> CriticNets:
        key = _snapshot_key(snapshot_id, tenant)
        data = self.store.snapshot(key) if self.store is not None else self._snapshots.get(key)
        if data is None:
            raise KeyError(snapshot_id)
        return self._model_of(data, space)

    @staticmethod
    def _model_of(data: bytes, space: spaces.SearchSpace) -> CriticNets:
        tensors, meta = read(data)
        if meta.get("kind") != "fnas-critic-snapshot":
            raise ValueError("not a critic snapshot (metadata kind is missing)")
        if list(meta.get("vocab", [])) != list(space.vocab):
            raise ValueError(f"snapshot of {meta.get('space')!r}, whose tokens differ from {space.id}'s")
        # Snapshots from before spaces named their embedding were all made on the plain one-hot.
        if (kind := meta.get("embedding", "one-hot")) != space.embedding_kind:
            raise ValueError(
                f"snapshot made on the {kind!r} embedding, but {space.id} now uses {space.embedding_kind!r}; "
                "export it again from a search of this version"
            )
        model = meta.get("model", {})
        if model.get("n_in") != space.embedding_size:
            raise ValueError(
                f"snapshot input size {model.get('n_in')} != embedding size {space.embedding_size}"
            )
        try:
            return CriticNets.restore(tensors, model, weights_only=True)
        except (KeyError, TypeError, RuntimeError) as e:  # missing or mis-shaped tensors
            raise ValueError(f"snapshot weights do not fit the critic: {e}") from None


def _snapshot_key(snapshot_id: str, tenant: str) -> str:
    """Where a tenant's snapshot is stored: its own key space, so another tenant's id finds nothing.

    The anonymous tenant (authentication off) keeps the bare id, as snapshots had before tenants.
    """
    return f"{tenant}/{snapshot_id}" if tenant else snapshot_id


class LocalCritic:
    """The critic port of one search over an in-process core (the plain loop's, and tests')."""

    def __init__(self, core: CriticCore, search_id: str) -> None:
        self.core, self.search_id = core, search_id

    async def predict(self, tokens: Sequence[Sequence[int]], min_observed: int) -> list[Prediction]:
        """The core's predictions for this search."""
        return self.core.predict(self.search_id, tokens, min_observed)
