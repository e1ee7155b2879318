"""The buffer's durable state in LMDB: each search's trained results (the buffer is computed from them),
and which searches ended."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import lmdb

from fnas.v1 import common_pb2
from services.buffer.aeb import Entry

MAP_SIZE = 1 << 36  # address space only: the file grows as written (TECH-NOTES, LMDB)


class BufferStore:
    """One LMDB environment; implements services.buffer.core.Store."""

    def __init__(self, path: Path | str, sync: bool = True) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=2, sync=sync)
        self.db = self.env.open_db(b"entries")
        self.ended_db = self.env.open_db(b"ended")

    def close(self) -> None:
        self.env.close()

    def put_entries(self, rows: Sequence[tuple[str, Entry]]) -> None:
        """Stores trained results (search_id, entry), each as a Sample under search/index, in one
        transaction."""
        with self.env.begin(write=True) as txn:
            for search_id, entry in rows:
                sample = common_pb2.Sample(
                    architecture=common_pb2.Architecture(tokens=entry.tokens),
                    reward=common_pb2.Reward(value=entry.reward),
                    source=common_pb2.SAMPLE_SOURCE_TRAINED,
                    behaviour_log_prob=entry.log_prob,
                    index=entry.index,
                )
                txn.put(f"{search_id}/{entry.index:012d}".encode(), sample.SerializeToString(), db=self.db)

    def entries(self, search_id: str) -> Iterator[Entry]:
        """Every stored result of the search, by index."""
        prefix = f"{search_id}/".encode()
        with self.env.begin() as txn:
            cursor = txn.cursor(db=self.db)
            rows = []
            if cursor.set_range(prefix):
                for k, v in cursor:
                    if not k.startswith(prefix):
                        break
                    rows.append(common_pb2.Sample.FromString(v))
        for s in rows:
            yield Entry(s.index, tuple(s.architecture.tokens), s.reward.value, s.behaviour_log_prob)

    def put_ended(self, search_id: str) -> None:
        """Marks the search as ended."""
        with self.env.begin(write=True) as txn:
            txn.put(search_id.encode(), b"", db=self.ended_db)

    def ended(self, search_id: str) -> bool:
        with self.env.begin() as txn:
            return txn.get(search_id.encode(), db=self.ended_db) is not None
