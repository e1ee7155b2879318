"""The interface every search space implements.

A space turns the policy's token list into an architecture: it knows how many
choices each token position has, which token lists are valid, which ones are the
same architecture (the dedup key), and the one-hot expanded embedding of a whole
architecture and of each block (paper 3.1 and 4.3) that the critic and the pool
work on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class InvalidArchitecture(ValueError):
    """A token list that is not an architecture of the space; the message says why."""


@dataclass(frozen=True)
class TableEntry:
    """The benchmark figures of one architecture of a tabular space."""

    valid_accuracy: float
    test_accuracy: float
    latency_ms: float
    params: int


class SearchSpace(ABC):
    """A search space: token vocabularies, validation, dedup, embeddings."""

    #: Space id, e.g. "mnas" or "nasbench-graph/cora".
    id: str
    #: Name of each token position, e.g. ("link", "op1", ...).
    token_names: tuple[str, ...]
    #: Choices at each token position; token i lies in [0, vocab[i]).
    vocab: tuple[int, ...]
    #: Token positions of each block, in block order.
    blocks: tuple[tuple[int, ...], ...]
    #: True when a benchmark table answers instead of training.
    tabular: bool = False

    def validate(self, tokens: Sequence[int]) -> tuple[int, ...]:
        """Returns the tokens as a tuple, or raises InvalidArchitecture naming the bad position."""
        tokens = tuple(int(t) for t in tokens)
        if len(tokens) != len(self.vocab):
            raise InvalidArchitecture(
                f"{self.id} takes {len(self.vocab)} tokens ({', '.join(self.token_names)}), got {len(tokens)}"
            )
        for i, (t, n) in enumerate(zip(tokens, self.vocab, strict=True)):
            if not 0 <= t < n:
                raise InvalidArchitecture(
                    f"token {i} ({self.token_names[i]}) is {t}, allowed range is 0..{n - 1}"
                )
        self._check(tokens)
        return tokens

    def _check(self, tokens: tuple[int, ...]) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Space-specific validity beyond the ranges; raises InvalidArchitecture."""

    @abstractmethod
    def key(self, tokens: Sequence[int]) -> str:
        """Canonical dedup key: equal for token lists that denote the same architecture."""

    @abstractmethod
    def size(self) -> int:
        """Number of unique architectures (distinct keys)."""

    @abstractmethod
    def describe(self, tokens: Sequence[int]) -> dict[str, Any]:
        """Human-readable decoding of the tokens (names of the choices)."""

    def block_embedding(self, tokens: Sequence[int], block: int) -> np.ndarray:
        """One-hot expanded embedding of one block: the concatenated one-hots of its tokens."""
        return np.concatenate([_one_hot(tokens[i], self.vocab[i]) for i in self.blocks[block]])

    #: Names what `embedding` computes; a critic snapshot made on another embedding is refused.
    embedding_kind = "one-hot"

    def embedding(self, tokens: Sequence[int]) -> np.ndarray:
        """One-hot expanded embedding of the whole architecture (all token positions)."""
        return np.concatenate([_one_hot(t, n) for t, n in zip(tokens, self.vocab, strict=True)])

    @property
    def embedding_size(self) -> int:
        return int(sum(self.vocab))

    def lookup(self, tokens: Sequence[int]) -> TableEntry:
        """Benchmark figures of a tabular space; only the trainer may call it."""
        raise NotImplementedError(f"{self.id} is not a tabular space")


def _one_hot(index: int, n: int) -> np.ndarray:
    v = np.zeros(n, dtype=np.float32)
    v[index] = 1.0
    return v
