"""The buffers of every search, in memory: what BufferService serves and the plain loop runs directly."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from services.buffer.aeb import DEFAULT_CAPACITY, Entry, History, Replay, select


class Store(Protocol):
    """Persistence of the histories (services.buffer.store.BufferStore implements it on LMDB)."""

    def put_entries(self, rows: Sequence[tuple[str, Entry]]) -> None: ...
    def entries(self, search_id: str) -> Iterable[Entry]: ...
    def put_ended(self, search_id: str) -> None: ...
    def ended(self, search_id: str) -> bool: ...


class NotReady(Exception):
    """Fewer results observed than the request's min_observed."""


class BufferCore:
    """One `History` per search; with a store, written through and reloaded on first use.

    An ended search's history is read from the store when something needs it (a redelivered result,
    a late call) and not kept: memory holds the searches that run.
    """

    def __init__(self, store: Store | None = None) -> None:
        self.store = store
        self._histories: dict[str, History] = {}

    def history(self, search_id: str) -> History:
        """The search's history (loaded from the store on first use)."""
        h = self._histories.get(search_id)
        if h is None:
            h = History()
            for entry in self.store.entries(search_id) if self.store is not None else ():
                h.add(entry)
            if self.store is None or not self.store.ended(search_id):
                self._histories[search_id] = h
        return h

    def add(self, search_id: str, entry: Entry) -> bool:
        """Records one trained result; False for a duplicate index."""
        return self.add_many([(search_id, entry)]) == 1

    def add_many(self, rows: Sequence[tuple[str, Entry]]) -> int:
        """Records trained results (search_id, entry), stored in one transaction before they are kept
        in memory; returns how many were new (duplicate indices are dropped)."""
        new: dict[tuple[str, int], Entry] = {}
        # Once per search: an ended search's history is read from the store, not kept.
        histories = {search_id: self.history(search_id) for search_id in dict.fromkeys(r[0] for r in rows)}
        for search_id, entry in rows:
            if entry.index not in histories[search_id].entries and (search_id, entry.index) not in new:
                new[search_id, entry.index] = entry
        if self.store is not None and new:
            self.store.put_entries([(search_id, entry) for (search_id, _), entry in new.items()])
        for (search_id, _), entry in new.items():
            histories[search_id].add(entry)
        return len(new)

    def forget(self, search_id: str) -> None:
        """An ended search: its history leaves memory for good; the store keeps it (read on use)."""
        if self.store is not None:  # without a store, memory is the only copy
            self.store.put_ended(search_id)
            self._histories.pop(search_id, None)

    def observed(self, search_id: str) -> int:
        return len(self.history(search_id).entries)

    def replays(
        self,
        search_id: str,
        n: int,
        beta: float,
        seed: int,
        min_observed: int,
        capacity: int = DEFAULT_CAPACITY,
        temperature: float = 1.0,
    ) -> list[Replay]:
        """See `History.replays`; NotReady while fewer than min_observed results came."""
        h = self.history(search_id)
        if len(h.entries) < min_observed:
            raise NotReady(f"observed {len(h.entries)} of the {min_observed} results the request needs")
        return h.replays(n, beta, seed, min_observed, capacity, temperature)

    def size(self, search_id: str, min_observed: int, capacity: int = DEFAULT_CAPACITY) -> int:
        """How many samples the buffer holds after the first min_observed results."""
        return len(select(self.history(search_id).first(min_observed), capacity))


class LocalBuffer:
    """The buffer port of one search over an in-process core."""

    def __init__(self, core: BufferCore, search_id: str) -> None:
        self.core, self.search_id = core, search_id

    async def sample(
        self, n: int, beta: float, seed: int, min_observed: int, capacity: int, temperature: float
    ) -> list[Replay]:
        """The core's replays for this search."""
        return self.core.replays(self.search_id, n, beta, seed, min_observed, capacity, temperature)
