"""The pool's durable state in LMDB, and the in-memory index of block embeddings (paper 4.3).

One entry per (space, block position, task, iterations, block embedding): the block's weights (safetensors,
db "blocks") and its metadata (JSON, db "meta": the key's parts, the source job and an insertion sequence).
Iterations are part of the key so that a longer retrain (final selection) does not replace the checkpoint
trained for the standard count that fairness asks for; a later put of the same key replaces the weights
(the latest training of that block wins). Db "jobs" records every source job, which makes PutBlocks
idempotent: one write transaction stores a job's blocks and its record, or nothing.

One writer (the pool service); readers in other processes open read-only and see committed data. The map
starts small and doubles on MapFullError; a reader whose writer grew it gets MapResizedError and adopts the
new size (TECH-NOTES, LMDB). The index of embeddings lives in memory, rebuilt from "meta" at start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import lmdb
import numpy as np

T = TypeVar("T")
_DBS = ("blocks", "meta", "jobs", "info")
_SEQ = b"seq"


@dataclass(frozen=True)
class Entry:
    """One stored block, as the index knows it."""

    key: bytes
    space: str
    position: int
    task: str
    iterations: int
    source_job_id: str
    seq: int
    embedding: tuple[float, ...]
    #: (name, shape) of every stored tensor: ties in similarity go to the block that needs least adapting.
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def to_json(self) -> bytes:
        """The metadata record ("meta" db): every field but the key."""
        return json.dumps({k: v for k, v in vars(self).items() if k != "key"}).encode()

    @classmethod
    def from_json(cls, key: bytes, raw: bytes) -> Entry:
        m = json.loads(raw)
        shapes = tuple((n, tuple(s)) for n, s in m.pop("shapes", ()))
        return cls(key=bytes(key), embedding=tuple(m.pop("embedding")), shapes=shapes, **m)

    def mismatches(self, layout: Mapping[str, Sequence[int]]) -> int:
        """Tensors of `layout` this block lacks or holds in another shape."""
        mine = dict(self.shapes)
        return sum(mine.get(name) != tuple(shape) for name, shape in layout.items())


@dataclass(frozen=True)
class NewBlock:
    """A block to store: where it sits, its embedding, how long it trained, its safetensors bytes."""

    position: int
    embedding: Sequence[float]
    iterations: int
    weights: bytes
    shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)


def entry_key(space: str, position: int, task: str, iterations: int, embedding: Sequence[float]) -> bytes:
    """A fixed-length digest of the key's parts (tasks can be long paths; LMDB keys stop at 511 bytes)."""
    parts = json.dumps([space, position, task, iterations, [float(x) for x in embedding]])
    return hashlib.blake2b(parts.encode(), digest_size=16).hexdigest().encode()


class _Gate:
    """Many LMDB transactions at once, or one map resize (set_mapsize needs no live transaction)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._resizing = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._resizing)
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._resizing)
            self._resizing = True
            self._cond.wait_for(lambda: self._active == 0)
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


class _Bucket:
    """The entries of one (space, position), with their unit-norm embeddings as one matrix."""

    def __init__(self) -> None:
        self.entries: dict[bytes, Entry] = {}
        self._cache: tuple[list[Entry], np.ndarray] | None = None

    def add(self, entry: Entry) -> None:
        self.entries[entry.key] = entry
        self._cache = None

    def matrix(self) -> tuple[list[Entry], np.ndarray]:
        if self._cache is None:
            entries = list(self.entries.values())
            m = np.array([e.embedding for e in entries], dtype=np.float64).reshape(len(entries), -1)
            norms = np.linalg.norm(m, axis=1, keepdims=True)
            self._cache = entries, m / np.where(norms > 0, norms, 1.0)
        return self._cache


class PoolStore:
    """LMDB environment + embedding index; thread-safe (the service calls it from worker threads)."""

    def __init__(
        self,
        path: Path | str,
        map_size: int = 64 << 20,
        max_map_size: int = 1 << 40,
        readonly: bool = False,
        sync: bool = True,
    ) -> None:
        if readonly:
            self.env = lmdb.open(str(path), readonly=True, max_dbs=len(_DBS), lock=True)
        else:
            Path(path).mkdir(parents=True, exist_ok=True)
            # LMDB keeps the larger of this and the size a former writer grew the file to.
            self.env = lmdb.open(str(path), map_size=map_size, max_dbs=len(_DBS), sync=sync)
        self.readonly = readonly
        self.max_map_size = max_map_size
        self.db = {name: self.env.open_db(name.encode(), create=not readonly) for name in _DBS}
        self._gate = _Gate()
        self._write_lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._buckets: dict[tuple[str, int], _Bucket] = {}
        self.rebuild_index()

    def close(self) -> None:
        self.env.close()

    # reading
    def _read(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        """Runs fn in a read transaction; adopts the map size another process grew the file to."""
        for _ in range(3):
            try:
                with self._gate.shared(), self.env.begin() as txn:
                    return fn(txn)
            except lmdb.MapResizedError:
                with self._gate.exclusive():
                    self.env.set_mapsize(0)
        raise lmdb.MapResizedError("map resized repeatedly")

    def rebuild_index(self) -> int:
        """Reloads the index from the "meta" db; returns the number of entries."""

        def scan(txn: lmdb.Transaction) -> list[Entry]:
            return [Entry.from_json(k, v) for k, v in txn.cursor(db=self.db["meta"])]

        entries = self._read(scan)
        buckets: dict[tuple[str, int], _Bucket] = {}
        for e in entries:
            buckets.setdefault((e.space, e.position), _Bucket()).add(e)
        with self._index_lock:
            self._buckets = buckets
        return len(entries)

    def weights(self, key: bytes) -> bytes:
        """The stored safetensors bytes of an entry; KeyError if absent."""
        data = self._read(lambda txn: txn.get(key, db=self.db["blocks"]))
        if data is None:
            raise KeyError(key)
        return bytes(data)

    def job(self, source_job_id: str) -> dict | None:
        """The record of a source job whose blocks are stored, or None."""
        raw = self._read(lambda txn: txn.get(source_job_id.encode(), db=self.db["jobs"]))
        return None if raw is None else json.loads(raw)

    def count_jobs(self) -> int:
        return self._read(lambda txn: txn.stat(self.db["jobs"])["entries"])

    def map_size(self) -> int:
        return int(self.env.info()["map_size"])

    # the index
    def best(
        self,
        space: str,
        position: int,
        embedding: Sequence[float],
        task: str = "",
        iterations: int = 0,
        min_similarity: float = 0.0,
        layout: Mapping[str, Sequence[int]] | None = None,
    ) -> tuple[Entry, float] | None:
        """The stored block most similar to `embedding` at (space, position), with its cosine similarity.

        `task` ("" = any) filters; when `iterations` > 0 and some candidates trained exactly that long, only
        they compete (fairness, paper 4.3). Ties in similarity (one-hot embeddings take few values) go to the
        block with the fewest tensors whose shape differs from `layout` (the query's), then to the most
        recently stored one.
        """
        with self._index_lock:
            bucket = self._buckets.get((space, position))
            if bucket is None:
                return None
            entries, matrix = bucket.matrix()
        keep = np.array([not task or e.task == task for e in entries], dtype=bool)
        if iterations:
            fair = keep & np.array([e.iterations == iterations for e in entries], dtype=bool)
            keep = fair if fair.any() else keep
        if not keep.any():
            return None
        q = np.asarray(embedding, dtype=np.float64)
        norm = np.linalg.norm(q)
        sims = matrix @ (q / norm) if norm > 0 else np.zeros(len(entries))
        seqs = np.array([e.seq for e in entries])
        fit = np.array([-e.mismatches(layout) if layout else 0 for e in entries])
        # Rank by similarity (rounded: float noise must not decide), then shape fit, then insertion order.
        i = int(np.lexsort((seqs, fit, np.where(keep, np.round(sims, 9), -np.inf)))[-1])
        if sims[i] < min_similarity - 1e-9:
            return None
        return entries[i], float(np.clip(sims[i], -1.0, 1.0))

    def stats(self) -> tuple[int, dict[str, int]]:
        """Blocks stored, in all and per task."""
        with self._index_lock:
            per_task = Counter(e.task for b in self._buckets.values() for e in b.entries.values())
        return sum(per_task.values()), dict(per_task)

    # writing
    def put(self, space: str, task: str, source_job_id: str, blocks: Sequence[NewBlock]) -> tuple[int, bool]:
        """Stores a job's blocks atomically; returns (blocks written, duplicate job)."""
        if self.readonly:
            raise PermissionError("read-only pool store")
        with self._write_lock:
            while True:
                try:
                    with self._gate.shared(), self.env.begin(write=True) as txn:
                        entries = self._put_txn(txn, space, task, source_job_id, blocks)
                    break
                except lmdb.MapFullError:
                    self._grow()
        if entries is None:
            return 0, True
        with self._index_lock:
            for e in entries:
                self._buckets.setdefault((e.space, e.position), _Bucket()).add(e)
        return len(entries), False

    def _put_txn(
        self, txn: lmdb.Transaction, space: str, task: str, source_job_id: str, blocks: Sequence[NewBlock]
    ) -> list[Entry] | None:
        if txn.get(source_job_id.encode(), db=self.db["jobs"]) is not None:
            return None
        seq = int(txn.get(_SEQ, b"0", db=self.db["info"]))
        entries = []
        for block in blocks:
            seq += 1
            key = entry_key(space, block.position, task, block.iterations, block.embedding)
            shapes = tuple(sorted((n, tuple(map(int, shape))) for n, shape in block.shapes.items()))
            emb = tuple(map(float, block.embedding))
            e = Entry(key, space, block.position, task, block.iterations, source_job_id, seq, emb, shapes)
            txn.put(key, block.weights, db=self.db["blocks"])
            txn.put(key, e.to_json(), db=self.db["meta"])
            entries.append(e)
        record = {"task": task, "space": space, "blocks": len(entries)}
        txn.put(source_job_id.encode(), json.dumps(record).encode(), db=self.db["jobs"])
        txn.put(_SEQ, str(seq).encode(), db=self.db["info"])
        return entries

    def _grow(self) -> None:
        size = self.map_size()
        if size * 2 > self.max_map_size:
            raise lmdb.MapFullError(f"pool map at {size} bytes; max_map_size {self.max_map_size} reached")
        with self._gate.exclusive():
            self.env.set_mapsize(size * 2)
