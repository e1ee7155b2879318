"""The agent's durable state in LMDB: searches, their trajectories, received
train results, events and checkpoints.

Everything a search needs to resume after a crash lives here, and every change
that must be atomic (a result and the counters it moves; a finished batch with
its checkpoint) is one write transaction. A result is stored under its sample
index exactly once, which is what makes activated samples count exactly once
however often the queue redelivers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import lmdb

from fnas.v1 import common_pb2, queue_pb2, search_pb2
from services.agent.batch import Planned

log = logging.getLogger(__name__)

MAP_SIZE = 1 << 36  # address space only: the file grows as written (TECH-NOTES, LMDB)
_DBS = ("searches", "samples", "results", "events", "checkpoints")
#: A search in one of these states counts no more results.
_ENDED = (
    search_pb2.SEARCH_STATE_SUCCEEDED,
    search_pb2.SEARCH_STATE_FAILED,
    search_pb2.SEARCH_STATE_CANCELLED,
)


@dataclass
class LoopState:
    """Where a search's loop stands, apart from the strategy's own state."""

    next_index: int = 0
    next_seq: int = 1
    #: The batch in flight: its policy samples (sample index plan_index + position), the trained
    #: results observed when it was planned, and the batches in a row that trained nothing new.
    plan: list[Planned] = field(default_factory=list)
    plan_index: int = 0
    plan_observed: int = 0
    idle_batches: int = 0
    warm_started: bool = False

    def jobs(self) -> list[tuple[int, Planned]]:
        """(sample index, planned sample) of the batch's train jobs."""
        return [(self.plan_index + pos, p) for pos, p in enumerate(self.plan) if p.trains]

    def to_json(self) -> bytes:
        own = {f.name: getattr(self, f.name) for f in fields(self)}  # asdict() would copy the plan twice
        return json.dumps(own | {"plan": [p.to_dict() for p in self.plan]}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> LoopState:
        raw = json.loads(data)
        if raw.pop("pending", None):
            # Written before every strategy kept its batch here: that batch is planned again (its
            # results are kept and counted under their own indices).
            log.warning("a batch in flight from an older agent is planned again")
        raw["plan"] = [Planned.from_dict(p) for p in raw.get("plan", ())]
        return cls(**raw)


def _key(search_id: str, n: int) -> bytes:
    return f"{search_id}/{n:012d}".encode()


def _count(status: search_pb2.SearchStatus, result: queue_pb2.TrainResult) -> None:
    """Moves a search's counters by one new result."""
    # Compute (the paper's GPU hours): a failed job cost trainer time too.
    status.trainer_seconds += result.train_seconds
    status.trainer_setup_seconds += result.setup_seconds
    status.trainer_evaluate_seconds += result.evaluate_seconds
    if result.outcome != queue_pb2.TRAIN_OUTCOME_OK:
        status.failed_samples += 1
        return
    status.activated_samples += 1
    warm = result.pool_blocks_queried and result.pool_blocks_matched == result.pool_blocks_queried
    status.pool_warm_samples += 1 if warm else 0
    status.pool_blocks_queried += result.pool_blocks_queried  # AKP hit ratio (paper 4.3)
    status.pool_blocks_matched += result.pool_blocks_matched
    if not status.HasField("best") or result.reward.value > status.best.reward.value:
        status.best.CopyFrom(
            common_pb2.Sample(
                architecture=result.architecture,
                reward=result.reward,
                source=common_pb2.SAMPLE_SOURCE_TRAINED,
                index=result.sample_index,
            )
        )


class AgentStore:
    """One LMDB environment (one per path per process) with a named db per kind."""

    def __init__(self, path: Path | str, sync: bool = True) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=len(_DBS), sync=sync)
        self.db = {name: self.env.open_db(name.encode()) for name in _DBS}

    def close(self) -> None:
        self.env.close()

    # searches
    def put_status(self, status: search_pb2.SearchStatus, txn: lmdb.Transaction | None = None) -> None:
        if txn is None:
            with self.env.begin(write=True) as txn:
                txn.put(status.search_id.encode(), status.SerializeToString(), db=self.db["searches"])
        else:
            txn.put(status.search_id.encode(), status.SerializeToString(), db=self.db["searches"])

    def status(self, search_id: str, txn: lmdb.Transaction | None = None) -> search_pb2.SearchStatus | None:
        if txn is None:
            with self.env.begin() as txn:
                return self.status(search_id, txn)
        raw = txn.get(search_id.encode(), db=self.db["searches"])
        return None if raw is None else search_pb2.SearchStatus.FromString(raw)

    def statuses(self) -> list[search_pb2.SearchStatus]:
        with self.env.begin() as txn:
            return [search_pb2.SearchStatus.FromString(v) for _, v in txn.cursor(db=self.db["searches"])]

    # results from the trainers
    def add_results(self, results: Sequence[queue_pb2.TrainResult]) -> list[search_pb2.SearchStatus | None]:
        """Stores each result once and moves its search's counters with it, in one transaction.

        Returns per result its search's updated status, or None when the result was a
        duplicate, belongs to no search of this agent, or came after its search ended (a
        cancelled search's counts stay what cancelling it reported): all are acknowledged
        and dropped. One commit for a fetched batch: a sync write costs the same for one
        result as for sixty.
        """
        statuses: dict[str, search_pb2.SearchStatus | None] = {}
        changed: set[str] = set()
        out: list[search_pb2.SearchStatus | None] = []
        with self.env.begin(write=True) as txn:
            for result in results:
                if result.search_id not in statuses:
                    statuses[result.search_id] = self.status(result.search_id, txn)
                status = statuses[result.search_id]
                key = _key(result.search_id, result.sample_index)
                if (
                    status is None
                    or status.state in _ENDED
                    or not txn.put(key, result.SerializeToString(), db=self.db["results"], overwrite=False)
                ):
                    out.append(None)
                    continue
                _count(status, result)
                changed.add(result.search_id)
                out.append(status)
            for search_id in changed:
                self.put_status(statuses[search_id], txn)
        return out

    def results(self, search_id: str, indices: Sequence[int]) -> list[queue_pb2.TrainResult | None]:
        """The stored result of each sample index (None where none arrived yet), in one read."""
        with self.env.begin() as txn:
            raws = [txn.get(_key(search_id, i), db=self.db["results"]) for i in indices]
        return [None if raw is None else queue_pb2.TrainResult.FromString(raw) for raw in raws]

    # checkpoints, trajectory and events
    def checkpoint(self, search_id: str) -> tuple[bytes, LoopState] | None:
        with self.env.begin() as txn:
            strategy = txn.get(f"{search_id}/strategy".encode(), db=self.db["checkpoints"])
            loop = txn.get(f"{search_id}/loop".encode(), db=self.db["checkpoints"])
        return None if strategy is None else (strategy, LoopState.from_json(loop))

    def commit(
        self,
        search_id: str,
        mutate: Callable[[search_pb2.SearchStatus], None],
        strategy_state: bytes | None = None,
        loop: LoopState | None = None,
        samples: Sequence[common_pb2.Sample] = (),
        events: Callable[[search_pb2.SearchStatus], list[search_pb2.SearchEvent]] | None = None,
    ) -> tuple[search_pb2.SearchStatus, list[search_pb2.SearchEvent]]:
        """Commits one step of a search atomically; returns the new status and events.

        The status is read inside the transaction and changed by `mutate`, so
        counters moved by results that arrived meanwhile are kept.
        """
        with self.env.begin(write=True) as txn:
            status = self.status(search_id, txn)
            if status is None:
                raise KeyError(search_id)
            mutate(status)
            status.updated_at = time.time()
            self.put_status(status, txn)
            new_events = events(status) if events else []  # may advance loop.next_seq: before loop is stored
            if strategy_state is not None:
                txn.put(f"{search_id}/strategy".encode(), strategy_state, db=self.db["checkpoints"])
            if loop is not None:
                txn.put(f"{search_id}/loop".encode(), loop.to_json(), db=self.db["checkpoints"])
            for sample in samples:
                txn.put(_key(search_id, sample.index), sample.SerializeToString(), db=self.db["samples"])
            for event in new_events:
                txn.put(_key(search_id, event.seq), event.SerializeToString(), db=self.db["events"])
        return status, new_events

    def samples(self, search_id: str) -> Iterator[common_pb2.Sample]:
        yield from (common_pb2.Sample.FromString(v) for v in self._scan("samples", search_id))

    def events(self, search_id: str, after_seq: int = 0) -> list[search_pb2.SearchEvent]:
        return [search_pb2.SearchEvent.FromString(v) for v in self._scan("events", search_id, after_seq + 1)]

    def _scan(self, db: str, search_id: str, start: int = 0) -> list[bytes]:
        prefix = f"{search_id}/".encode()
        out = []
        with self.env.begin() as txn:
            cursor = txn.cursor(db=self.db[db])
            if not cursor.set_range(_key(search_id, start)):
                return out
            for k, v in cursor:
                if not k.startswith(prefix):
                    break
                out.append(v)
        return out
