"""The critic's durable state in LMDB: observation histories, per-search nets, snapshots, ended searches.

A restarted critic loses nothing: every trained result is written when it is
consumed (before its event is acked), and each search's nets, optimizer and
generator after every training round, so the next round continues exactly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import lmdb

from fnas.v1 import common_pb2

MAP_SIZE = 1 << 36  # address space only: the file grows as written (TECH-NOTES, LMDB)
_DBS = ("observations", "searches", "states", "snapshots", "ended")


def _key(search_id: str, index: int) -> bytes:
    return f"{search_id}/{index:012d}".encode()


class CriticStore:
    """One LMDB environment (one per path per process); implements services.critic.core.Store."""

    def __init__(self, path: Path | str, sync: bool = True) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=len(_DBS), sync=sync)
        self.db = {name: self.env.open_db(name.encode()) for name in _DBS}

    def close(self) -> None:
        self.env.close()

    def put_observations(self, rows: Sequence[tuple[str, str, int, Sequence[int], float]]) -> None:
        """Stores trained results (search_id, space, index, tokens, reward), each as a Sample under
        search/index, in one transaction."""
        with self.env.begin(write=True) as txn:
            for search_id, space, index, tokens, reward in rows:
                sample = common_pb2.Sample(
                    architecture=common_pb2.Architecture(space=space, tokens=tokens),
                    reward=common_pb2.Reward(value=reward),
                    source=common_pb2.SAMPLE_SOURCE_TRAINED,
                    index=index,
                )
                txn.put(_key(search_id, index), sample.SerializeToString(), db=self.db["observations"])

    def observations(self, search_id: str) -> list[tuple[str, int, tuple[int, ...], float]]:
        """(space, index, tokens, reward) of every stored result of the search, by index."""
        prefix = f"{search_id}/".encode()
        out = []
        with self.env.begin() as txn:
            cursor = txn.cursor(db=self.db["observations"])
            if cursor.set_range(prefix):
                for k, v in cursor:
                    if not k.startswith(prefix):
                        break
                    s = common_pb2.Sample.FromString(v)
                    out.append((s.architecture.space, s.index, tuple(s.architecture.tokens), s.reward.value))
        return out

    def put_search(self, search_id: str, meta: dict, state: bytes | None) -> None:
        """Stores a search's settings and (when given) its nets' state, in one transaction."""
        with self.env.begin(write=True) as txn:
            txn.put(search_id.encode(), json.dumps(meta).encode(), db=self.db["searches"])
            if state is not None:
                txn.put(search_id.encode(), state, db=self.db["states"])

    def search(self, search_id: str) -> tuple[dict, bytes | None] | None:
        """(settings, state) of an opened search; None if it was never opened."""
        with self.env.begin() as txn:
            meta = txn.get(search_id.encode(), db=self.db["searches"])
            state = txn.get(search_id.encode(), db=self.db["states"])
        return None if meta is None else (json.loads(meta), state)

    def put_ended(self, search_id: str) -> None:
        """Marks the search as ended."""
        with self.env.begin(write=True) as txn:
            txn.put(search_id.encode(), b"", db=self.db["ended"])

    def ended(self, search_id: str) -> bool:
        with self.env.begin() as txn:
            return txn.get(search_id.encode(), db=self.db["ended"]) is not None

    def put_snapshot(self, snapshot_id: str, data: bytes) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(snapshot_id.encode(), data, db=self.db["snapshots"])

    def snapshot(self, snapshot_id: str) -> bytes | None:
        with self.env.begin() as txn:
            return txn.get(snapshot_id.encode(), db=self.db["snapshots"])
