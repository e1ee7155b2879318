"""NAS-Bench-Graph (Qin et al., NeurIPS 2022) as a tabular search space, one per dataset.

An architecture is a link pattern (which earlier node each of the 4 layers reads,
one of the package's 9 `link_list` entries) and one GNN op per layer. Token lists
that denote the same graph share the package's canonical hash (`Arch.valid_hash`),
which is also the benchmark table's key.

The package ships its tables as pickles. We unpickle only the installed package's
own file, once, with an unpickler that accepts nothing but plain numbers, and keep
a pickle-free `.npz` cache (loaded with allow_pickle=False) holding the table
columns and a token -> row array, so validation, keys and lookups are array
indexing instead of the package's Python hashing on every call.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import itertools
import logging
import os
import pickle
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nas_bench_graph
import numpy as np
import numpy._core.multiarray
from nas_bench_graph.architecture import Arch, gnn_list, gnn_list_proteins, link_list

from fnas.spaces import NASBENCH_GRAPH_DATASETS, UnknownSpace
from fnas.spaces.base import InvalidArchitecture, SearchSpace, TableEntry

log = logging.getLogger(__name__)

#: Bump when the layout of the cache file changes, so stale caches are not read.
CACHE_FORMAT = 1
#: Columns of `NasBenchGraphSpace.table()`.
COLUMNS = ("key", "valid_accuracy", "test_accuracy", "latency_ms", "params")
#: Ranking direction per column: +1 when higher is better.
_BETTER = {"valid_accuracy": 1, "test_accuracy": 1, "latency_ms": -1, "params": -1}
#: `Arch.hash_arch` writes the link index then each op's `gnn_list` index as base-10 digits.
_RADIX = len(gnn_list) + 1
#: The only globals the package's pickles reference (checked with pickletools for all 9 files).
_PICKLE_GLOBALS = {
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): numpy._core.multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): numpy._core.multiarray.scalar,
}


class NasBenchGraphSpace(SearchSpace):
    """NAS-Bench-Graph on one dataset: tokens (link, op1..op4), answered from the table."""

    tabular = True
    token_names = ("link", "op1", "op2", "op3", "op4")
    # Block i is layer i: the shared link pattern plus that layer's op.
    blocks = ((0, 1), (0, 2), (0, 3), (0, 4))
    embedding_kind = "graph-canonical-and-mean-one-hot"

    def __init__(self, dataset: str) -> None:
        if dataset not in NASBENCH_GRAPH_DATASETS:
            raise UnknownSpace(
                f"unknown NAS-Bench-Graph dataset {dataset!r}; known: {', '.join(NASBENCH_GRAPH_DATASETS)}"
            )
        self.dataset = dataset
        self.id = f"nasbench-graph/{dataset}"
        self.op_names = _op_names(dataset)
        self.vocab = (len(link_list),) + (len(self.op_names),) * 4
        # Package op index -> our token, to turn a key's digits back into tokens.
        self._token_of_op = _op_tokens(self.op_names)

    @functools.cached_property
    def _table(self) -> _Table:
        # Loaded on first use, so `spaces.get()` stays cheap.
        return load_table(self.dataset)

    def _row(self, tokens: Sequence[int]) -> int:
        return int(self._table.row[self.validate(tokens)])

    def _check(self, tokens: tuple[int, ...]) -> None:
        if self._table.row[tokens] >= 0:
            return
        link, ops = list(link_list[tokens[0]]), [self.op_names[t] for t in tokens[1:]]
        why = "an all-skip graph is not a model" if set(ops) == {"skip"} else "not in the benchmark"
        raise InvalidArchitecture(
            f"architecture link={link} ops={ops} has no entry in NAS-Bench-Graph {self.dataset} ({why})"
        )

    def key(self, tokens: Sequence[int]) -> str:
        """The package's canonical hash as a decimal string; isomorphic graphs share it."""
        return str(int(self._table.key[self._row(tokens)]))

    def size(self) -> int:
        return len(self._table.key)

    def embedding(self, tokens: Sequence[int]) -> np.ndarray:
        """Two views of the graph, so that one graph has one embedding: the one-hot of its canonical
        token list (the first in lexicographic order) and the mean one-hot of all its token lists.

        Cora's 26,206 graphs have 59,040 token lists (up to 54 for one graph). A critic fed the
        plain one-hot of whichever list was sampled learns a graph under one spelling and
        must guess its others. With the mean alone, which blurs which op sits where, the
        latency reward's searches got slower; the canonical list keeps it (README, Benchmarks).
        Measured with `fnas` over seeds 0-59 at a budget of 600, median activated samples to
        the top-0.1% accuracy on cora / citeseer / pubmed: 179.5 / 68.5 / 214.5 with both,
        215.5 / 84.5 / 208.5 with the mean alone, 236 / 88.5 / 259 with the plain one-hot of
        the sampled list.
        """
        return _graph_embeddings(self.dataset)[self._row(tokens)]

    @property
    def embedding_size(self) -> int:
        return 2 * super().embedding_size

    def describe(self, tokens: Sequence[int]) -> dict[str, Any]:
        tokens = self.validate(tokens)
        return {
            "link": list(link_list[tokens[0]]),
            "ops": [self.op_names[t] for t in tokens[1:]],
            "key": self.key(tokens),
        }

    def lookup(self, tokens: Sequence[int]) -> TableEntry:
        t, i = self._table, self._row(tokens)
        return TableEntry(
            valid_accuracy=float(t.valid_accuracy[i]),
            test_accuracy=float(t.test_accuracy[i]),
            latency_ms=float(t.latency_ms[i]),
            params=int(t.params[i]),
        )

    # The three methods below are for the benchmark and the CLI; search agents must not see the table.

    def table(self) -> dict[str, np.ndarray]:
        """Read-only columns over all unique architectures, sorted by key."""
        return {name: getattr(self._table, name) for name in COLUMNS}

    def rank(self, tokens: Sequence[int], by: str = "valid_accuracy") -> int:
        """1 + the number of architectures strictly better by `by` (1 = best; ties share a rank)."""
        if by not in _BETTER:
            raise ValueError(f"rank by one of {', '.join(_BETTER)}, not {by!r}")
        column = getattr(self._table, by) * _BETTER[by]
        return 1 + int(np.count_nonzero(column > column[self._row(tokens)]))

    def tokens_for_key(self, key: str | int) -> tuple[int, ...]:
        """The canonical token list of a key (the one whose digits the key spells)."""
        k = int(key)
        keys = self._table.key
        i = int(np.searchsorted(keys, k))
        if i == len(keys) or keys[i] != k:
            raise KeyError(f"no architecture with key {key} in NAS-Bench-Graph {self.dataset}")
        # _verify checked, when the cache was built, that every key decodes to tokens mapping back to it.
        link, ops = _decode(k)
        return (link, *(int(self._token_of_op[o]) for o in ops))


@dataclass(frozen=True)
class _Table:
    """One dataset's table in plain arrays; `row[tokens]` is the table row, -1 when absent."""

    key: np.ndarray  # int64, sorted ascending
    valid_accuracy: np.ndarray  # float64
    test_accuracy: np.ndarray  # float64
    latency_ms: np.ndarray  # float64
    params: np.ndarray  # int64
    row: np.ndarray  # int32, shape = vocab


@functools.cache
def _graph_embeddings(dataset: str) -> np.ndarray:
    """Row -> [one-hot of its canonical token list, mean one-hot of all its token lists].

    Structure only, no results. One array per dataset and process (9.4 MB), shared by every
    search's space object.
    """
    table = load_table(dataset)
    row = table.row
    spellings = np.argwhere(row >= 0)  # [n, 5] token lists, in lexicographic order
    rows = row[tuple(spellings.T)]
    eyes = [np.eye(n, dtype=np.float32) for n in row.shape]
    one_hot = np.concatenate([eye[spellings[:, i]] for i, eye in enumerate(eyes)], axis=1)
    n_rows = len(table.key)
    sums = np.zeros((n_rows, one_hot.shape[1]), dtype=np.float32)
    np.add.at(sums, rows, one_hot)
    mean = sums / np.bincount(rows, minlength=n_rows)[:, None].astype(np.float32)
    _, first = np.unique(rows, return_index=True)  # each row's first spelling: its canonical list
    out = np.concatenate([one_hot[first], mean], axis=1)
    out.flags.writeable = False
    return out


def cache_path(dataset: str) -> Path:
    """Where the pickle-free cache of a dataset lives: $FNAS_CACHE_DIR, else ~/.cache/fnas."""
    root = os.environ.get("FNAS_CACHE_DIR") or Path.home() / ".cache" / "fnas"
    return Path(root) / f"nasbench-graph-{_package_version()}-{dataset}.fnas{CACHE_FORMAT}.npz"


def load_table(dataset: str) -> _Table:
    """The dataset's table from the cache, building the cache from the package on a miss."""
    if dataset not in NASBENCH_GRAPH_DATASETS:
        raise UnknownSpace(f"unknown NAS-Bench-Graph dataset {dataset!r}")
    return _load_at(cache_path(dataset), dataset)


@functools.cache
def _load_at(path: Path, dataset: str) -> _Table:
    shape = (len(link_list),) + (len(_op_names(dataset)),) * 4
    try:
        return _read_cache(path, shape)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        log.warning("ignoring unreadable NAS-Bench-Graph cache %s (%s); rebuilding it", path, e)
    start = time.perf_counter()
    table = _build(dataset)
    try:
        _write_cache(path, table)
    except OSError as e:
        # A read-only home must not stop a search; the next process just rebuilds.
        log.warning("cannot write NAS-Bench-Graph cache %s (%s); using it in memory only", path, e)
    log.info("built NAS-Bench-Graph %s cache %s in %.2f s", dataset, path, time.perf_counter() - start)
    return table


def _read_cache(path: Path, shape: tuple[int, ...]) -> _Table:
    # allow_pickle=False: the cache directory is outside the package and must not run code.
    with np.load(path, allow_pickle=False) as z:
        arrays = {name: z[name] for name in (*COLUMNS, "row")}
    n = len(arrays["key"])
    if any(arrays[c].shape != (n,) for c in COLUMNS) or arrays["row"].shape != shape:
        raise ValueError("array shapes do not match the space")
    if any(arrays[c].dtype.kind != k for c, k in zip((*COLUMNS, "row"), "ifffii", strict=True)):
        raise ValueError("array types do not match the space")
    if n == 0 or np.any(np.diff(arrays["key"]) <= 0):
        raise ValueError("keys are not sorted and unique")
    if arrays["row"].min() < -1 or arrays["row"].max() >= n:
        raise ValueError("token -> row map points outside the table")
    return _freeze(arrays)


def _write_cache(path: Path, table: _Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temp file in the same directory and rename it over the target, so a
    # concurrent reader (another service on this host) never sees a half-written file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; the table is public data that other users' services may read.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{name: getattr(table, name) for name in (*COLUMNS, "row")})
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _freeze(arrays: dict[str, np.ndarray]) -> _Table:
    for a in arrays.values():
        a.flags.writeable = False  # table() hands these out; callers must not edit the cache
    return _Table(**arrays)


def _build(dataset: str) -> _Table:
    raw = _read_package_table(dataset)
    keys = np.array(sorted(raw), dtype=np.int64)
    col = {f: np.array([raw[int(k)][f] for k in keys], dtype=np.float64) for f in raw[int(keys[0])]}
    hashes = _token_hashes(_op_names(dataset))
    row = np.searchsorted(keys, hashes).clip(max=len(keys) - 1)
    row = np.where(keys[row] == hashes, row, -1).astype(np.int32)
    _verify(dataset, keys, row)
    return _freeze(
        {
            "key": keys,
            "valid_accuracy": col["valid_perf"],
            "test_accuracy": col["perf"],
            "latency_ms": col["latency"] * 1e3,  # the table is in seconds
            "params": np.rint(col["para"] * 1e6).astype(np.int64),  # the table is in millions
            "row": row,
        }
    )


def _verify(dataset: str, keys: np.ndarray, row: np.ndarray) -> None:
    """Checks the token -> row map against the table; RuntimeError if the package changed."""
    reached = np.unique(row[row >= 0])
    if len(reached) != len(keys):
        raise RuntimeError(
            f"NAS-Bench-Graph {dataset}: {len(keys) - len(reached)} table keys"
            " are not the hash of any token list"
        )
    names = _op_names(dataset)
    skip = names.index("skip")
    all_skip = np.zeros(row.shape, dtype=bool)
    all_skip[:, skip, skip, skip, skip] = True
    if np.any((row < 0) & ~all_skip):
        # Not fatal: _check rejects them by name; but the package promises every other graph.
        log.warning(
            "NAS-Bench-Graph %s: %d token lists besides all-skip have no entry",
            dataset,
            int(np.count_nonzero((row < 0) & ~all_skip)),
        )
    links, ops = _decode(keys)
    op_tokens = [_op_tokens(names)[o] for o in ops]
    if np.any(links >= len(link_list)) or any(np.any(t < 0) for t in op_tokens):
        raise RuntimeError(f"NAS-Bench-Graph {dataset}: some keys name ops outside {names}")
    if not np.array_equal(row[(links, *op_tokens)], np.arange(len(keys))):
        raise RuntimeError(f"NAS-Bench-Graph {dataset}: some keys do not decode to their own tokens")


def _read_package_table(dataset: str) -> dict[int, dict[str, float]]:
    """Unpickles the installed package's own table file; no user-supplied path reaches here."""
    if dataset not in NASBENCH_GRAPH_DATASETS:
        raise UnknownSpace(f"unknown NAS-Bench-Graph dataset {dataset!r}")
    path = Path(nas_bench_graph.__file__).resolve().parent / "light" / f"{dataset}.bench"
    with path.open("rb") as f:
        raw = _NumbersOnlyUnpickler(f).load()
    return {int(k): {f: float(x) for f, x in v.items()} for k, v in raw.items()}


class _NumbersOnlyUnpickler(pickle.Unpickler):
    """Refuses every global except the numpy scalar machinery the tables use."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_GLOBALS[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"NAS-Bench-Graph table refers to {module}.{name}") from None


@functools.cache
def _token_hashes(names: tuple[str, ...]) -> np.ndarray:
    """`Arch.valid_hash` of every token list, shape = vocab.

    For proteins too the package hashes with `gnn_list` indices (radix 10): all 2,021
    proteins keys are hashes of gnn_list_proteins op names computed that way, while
    radix-6 `gnn_list_proteins` indices (hash_arch(use_proteins=True)) reach only 7.
    """
    shape = (len(link_list),) + (len(names),) * 4
    out = np.empty(shape, dtype=np.int64)
    for tokens in itertools.product(*(range(n) for n in shape)):
        out[tokens] = Arch(list(link_list[tokens[0]]), [names[t] for t in tokens[1:]]).valid_hash()
    return out


def _op_names(dataset: str) -> tuple[str, ...]:
    # The proteins runs used a smaller op set.
    return tuple(gnn_list_proteins if dataset == "proteins" else gnn_list)


def _op_tokens(names: Sequence[str]) -> np.ndarray:
    """Array from `gnn_list` index (a key digit) to the token of that op in `names`, -1 if absent."""
    out = np.full(_RADIX, -1, dtype=np.int64)
    out[[gnn_list.index(n) for n in names]] = np.arange(len(names))
    return out


def _decode(key: Any) -> tuple[Any, list[Any]]:
    """Key -> (link index, [op1..op4 gnn_list indices]); works on ints and int arrays."""
    ops = []
    for _ in range(4):
        key, digit = divmod(key, _RADIX)
        ops.append(digit)
    return key, ops[::-1]


@functools.cache
def _package_version() -> str:
    # The module's __version__ says 1.3 in the 1.4.0 wheel; the distribution metadata is right.
    return importlib.metadata.version("nas-bench-graph")
