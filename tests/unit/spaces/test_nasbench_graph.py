"""NAS-Bench-Graph space: sizes, keys and lookups against the package, and the pickle-free cache."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
from nas_bench_graph import Arch, gnn_list, gnn_list_proteins, light_read, link_list

from fnas import spaces
from fnas.spaces import NASBENCH_GRAPH_DATASETS, InvalidArchitecture, UnknownSpace
from fnas.spaces import nasbench_graph as nbg
from fnas.spaces.base import SearchSpace
from fnas.spaces.nasbench_graph import NasBenchGraphSpace

# Op tokens in the two vocabularies.
GAT, GCN, GIN, CHEB, SAGE, ARMA, GRAPH, FC, SKIP = range(9)
P_GCN, P_SAGE, P_ARMA, P_FC, P_SKIP = range(5)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """An empty FNAS_CACHE_DIR for this module, with no table of other tests left in memory."""
    path = tmp_path_factory.mktemp("fnas-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FNAS_CACHE_DIR", str(path))
        nbg._load_at.cache_clear()
        yield path
    nbg._load_at.cache_clear()


@pytest.fixture(scope="module")
def space(cache_dir):
    """One space per dataset, its cache built in cache_dir."""
    return {d: NasBenchGraphSpace(d) for d in NASBENCH_GRAPH_DATASETS}


@pytest.fixture(scope="module")
def raw():
    """The package's own tables, read with its own reader: the reference to agree with."""
    return {d: light_read(d) for d in NASBENCH_GRAPH_DATASETS}


def package_key(dataset, tokens):
    names = gnn_list_proteins if dataset == "proteins" else gnn_list
    return Arch(list(link_list[tokens[0]]), [names[t] for t in tokens[1:]]).valid_hash()


def all_tokens(s):
    return itertools.product(*(range(n) for n in s.vocab))


def test_sizes_equal_the_package_tables(space, raw):
    for d in NASBENCH_GRAPH_DATASETS:
        assert space[d].size() == len(raw[d]), d
    assert space["cora"].size() == 26_206
    assert space["proteins"].size() == 2_021


def test_keys_and_lookups_agree_with_the_package(space, raw):
    rng = np.random.default_rng(0)
    for d in NASBENCH_GRAPH_DATASETS:
        s = space[d]
        for tokens in rng.integers(0, s.vocab, size=(200, 5)):
            tokens = tuple(int(t) for t in tokens)
            if set(tokens[1:]) == {s.op_names.index("skip")}:
                continue
            expected = package_key(d, tokens)
            assert s.key(tokens) == str(expected)
            row = raw[d][expected]
            entry = s.lookup(tokens)
            assert entry.valid_accuracy == pytest.approx(float(row["valid_perf"]))
            assert entry.test_accuracy == pytest.approx(float(row["perf"]))
            assert entry.latency_ms == pytest.approx(float(row["latency"]) * 1000)
            assert entry.params == round(float(row["para"]) * 1e6)


def test_a_known_lookup(space, raw):
    # A 4-layer GCN chain: link [0,1,2,3], ops gcn x4, hash 8*10^4 + 1111.
    entry = space["cora"].lookup((8, GCN, GCN, GCN, GCN))
    assert entry.valid_accuracy == pytest.approx(raw["cora"][81111]["valid_perf"])
    assert entry.params == 634_119  # para 0.634119 million
    assert isinstance(entry.params, int) and isinstance(entry.latency_ms, float)


@pytest.mark.parametrize("dataset", ["cora", "proteins"])
def test_every_key_is_reachable_and_only_all_skip_is_missing(space, raw, dataset):
    s = space[dataset]
    skip = s.op_names.index("skip")
    keys, rejected = set(), []
    for tokens in all_tokens(s):
        try:
            keys.add(int(s.key(tokens)))
        except InvalidArchitecture:
            rejected.append(tokens)
    assert keys == set(raw[dataset])
    assert rejected == [(link, skip, skip, skip, skip) for link in range(len(link_list))]


def test_proteins_keys_use_gnn_list_digits(space):
    # gcn, sage, arma, fc are gnn_list ops 1, 4, 5, 7: the key spells those, not 0..3.
    assert space["proteins"].key((0, P_GCN, P_SAGE, P_ARMA, P_FC)) == "1457"


ISOMORPHIC = [
    # Four parallel layers: any order.
    ((0, GCN, GAT, SAGE, FC), (0, FC, SAGE, GAT, GCN)),
    # link [0,0,0,1]: layers 2 and 3 both read the input and feed nothing.
    ((1, GCN, GAT, SAGE, FC), (1, GCN, SAGE, GAT, FC)),
    # link [0,0,1,2]: two chains 1->3 and 2->4 can swap.
    ((3, GCN, GAT, SAGE, FC), (3, GAT, GCN, FC, SAGE)),
    # link [0,1,1,1]: the three layers on top of layer 1 can permute.
    ((5, GIN, GCN, GAT, SAGE), (5, GIN, SAGE, GCN, GAT)),
    # A skip at the root is the input itself: skip -> 3 x gcn == 3 x gcn beside a skip.
    ((5, SKIP, GCN, GCN, GCN), (0, GCN, GCN, GCN, SKIP)),
    # A chain with three skips is one gcn.
    ((8, GCN, SKIP, SKIP, SKIP), (0, GCN, SKIP, SKIP, SKIP)),
]


@pytest.mark.parametrize(("a", "b"), ISOMORPHIC)
def test_isomorphic_token_lists_share_a_key(space, a, b):
    s = space["cora"]
    assert a != b
    assert s.key(a) == s.key(b)
    assert s.lookup(a) == s.lookup(b)
    # One graph, one embedding: the critic learns the graph, not the spelling it was sampled in.
    assert np.array_equal(s.embedding(a), s.embedding(b))


def test_different_graphs_have_different_keys(space):
    s = space["cora"]
    assert s.key((8, GCN, GAT, SAGE, FC)) != s.key((8, GAT, GCN, SAGE, FC))  # a chain's order matters
    assert s.key((0, GCN, GCN, GCN, GCN)) != s.key((8, GCN, GCN, GCN, GCN))


@pytest.mark.parametrize(
    ("dataset", "tokens", "message"),
    [
        ("cora", (9, 0, 0, 0, 0), "token 0 (link) is 9, allowed range is 0..8"),
        ("cora", (0, 0, -1, 0, 0), "token 2 (op2) is -1, allowed range is 0..8"),
        ("proteins", (0, 0, 0, 0, 5), "token 4 (op4) is 5, allowed range is 0..4"),
        ("cora", (0, 0, 0, 0), "takes 5 tokens (link, op1, op2, op3, op4), got 4"),
        ("cora", (0, 0, 0, 0, 0, 0), "got 6"),
    ],
)
def test_bad_tokens_name_the_position_and_range(space, dataset, tokens, message):
    s = space[dataset]
    for call in (s.validate, s.key, s.lookup, s.describe):
        with pytest.raises(InvalidArchitecture) as e:
            call(tokens)
        assert message in str(e.value)


@pytest.mark.parametrize("dataset", ["cora", "proteins"])
def test_all_skip_is_rejected(space, dataset):
    s = space[dataset]
    skip = s.op_names.index("skip")
    for link in range(len(link_list)):
        with pytest.raises(InvalidArchitecture, match="all-skip graph is not a model") as e:
            s.validate((link, skip, skip, skip, skip))
        assert f"link={list(link_list[link])}" in str(e.value) and dataset in str(e.value)
        with pytest.raises(InvalidArchitecture):
            s.lookup((link, skip, skip, skip, skip))


def test_describe(space):
    assert space["cora"].describe((8, GCN, GCN, GCN, GCN)) == {
        "link": [0, 1, 2, 3],
        "ops": ["gcn", "gcn", "gcn", "gcn"],
        "key": "81111",
    }
    assert space["proteins"].describe((3, P_GCN, P_SAGE, P_ARMA, P_SKIP))["ops"] == [
        "gcn",
        "sage",
        "arma",
        "skip",
    ]


def test_embeddings(space):
    cora, proteins = space["cora"], space["proteins"]
    assert cora.embedding_size == 90 and proteins.embedding_size == 58
    # A graph with one spelling (a chain's order matters): its plain one-hot, as canonical list and as mean.
    tokens = (8, GCN, GAT, SAGE, FC)
    e = cora.embedding(tokens)
    assert e.shape == (90,) and e.dtype == np.float32
    one_hot = [8, 9 + GCN, 18 + GAT, 27 + SAGE, 36 + FC]
    assert np.flatnonzero(e).tolist() == one_hot + [45 + i for i in one_hot] and e.sum() == 10
    # Two spellings (the chains 1->3 and 2->4 swap): the first in lexicographic order, then their mean.
    a, b = (3, GCN, GAT, SAGE, FC), (3, GAT, GCN, FC, SAGE)
    canonical, mean = cora.embedding(a)[:45], cora.embedding(a)[45:]
    assert b < a and np.array_equal(canonical, SearchSpace.embedding(cora, b))  # the plain one-hot of b
    assert mean[3] == 1 and mean[9 + GCN] == mean[9 + GAT] == mean[18 + GCN] == mean[18 + GAT] == 0.5
    assert np.array_equal(cora.embedding(a), cora.embedding(b)) and np.isclose(mean.sum(), 5)
    assert not np.array_equal(cora.embedding(a), cora.embedding(tokens))
    assert proteins.embedding((3, P_GCN, P_SAGE, P_ARMA, P_FC)).shape == (58,)
    with pytest.raises(InvalidArchitecture):
        cora.embedding((0, SKIP, SKIP, SKIP, SKIP))
    # Block i is the link pattern plus layer i's op.
    block = cora.block_embedding((3, GCN, GAT, SAGE, FC), 2)
    assert block.shape == (18,)
    assert np.flatnonzero(block).tolist() == [3, 9 + SAGE]
    assert proteins.block_embedding((3, P_GCN, P_SAGE, P_ARMA, P_FC), 3).shape == (14,)
    assert cora.blocks == ((0, 1), (0, 2), (0, 3), (0, 4))


def test_table_and_rank(space):
    s = space["cora"]
    t = s.table()
    assert set(t) == {"key", "valid_accuracy", "test_accuracy", "latency_ms", "params"}
    assert all(len(col) == s.size() for col in t.values())
    with pytest.raises(ValueError):
        t["valid_accuracy"][0] = 1.0  # the cache must not be editable through table()
    best = s.tokens_for_key(t["key"][np.argmax(t["valid_accuracy"])])
    assert s.rank(best) == 1
    fastest = s.tokens_for_key(t["key"][np.argmin(t["latency_ms"])])
    assert s.rank(fastest, by="latency_ms") == 1
    worst = s.tokens_for_key(t["key"][np.argmin(t["valid_accuracy"])])
    assert s.rank(worst) > s.size() // 2
    with pytest.raises(ValueError, match="rank by one of"):
        s.rank(best, by="accuracy")


@pytest.mark.parametrize("dataset", ["cora", "proteins"])
def test_tokens_for_key_round_trips(space, dataset):
    s = space[dataset]
    for k in s.table()["key"]:
        assert s.key(s.tokens_for_key(k)) == str(k)
    assert s.tokens_for_key("81111" if dataset == "cora" else "1457") == (
        (8, GCN, GCN, GCN, GCN) if dataset == "cora" else (0, P_GCN, P_SAGE, P_ARMA, P_FC)
    )
    with pytest.raises(KeyError):
        s.tokens_for_key(88888)  # all-skip: hashable, but not in the table


def _refuse(*args, **kwargs):
    raise AssertionError("a warm load must not unpickle or rebuild")


def test_warm_load_reads_only_the_npz_cache(space, cache_dir, monkeypatch):
    cold = space["cora"].lookup((8, GCN, GCN, GCN, GCN))
    path = nbg.cache_path("cora")
    assert path.parent == cache_dir and "1.4.0" in path.name and "cora" in path.name
    with np.load(path, allow_pickle=False) as z:  # a plain npz: loads without pickle
        assert len(z["key"]) == 26_206
    assert not list(cache_dir.glob("*.tmp"))
    nbg._load_at.cache_clear()
    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, _refuse)
    monkeypatch.setattr(nbg, "_NumbersOnlyUnpickler", _refuse)
    monkeypatch.setattr(nbg, "_build", _refuse)
    warm = NasBenchGraphSpace("cora")
    assert warm.size() == 26_206
    assert warm.lookup((8, GCN, GCN, GCN, GCN)) == cold


class _Payload:
    """Pickles to a call of _detonate: proves whether anyone unpickled it."""

    ran = False

    def __reduce__(self):
        return (_detonate, ())


def _detonate():
    _Payload.ran = True


def test_a_bad_cache_is_rebuilt_never_unpickled(tmp_path, monkeypatch):
    monkeypatch.setenv("FNAS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(nbg, "_load_at", nbg._load_at.__wrapped__)  # no memory of other tests' tables
    path = nbg.cache_path("proteins")
    path.write_bytes(pickle.dumps(_Payload()))
    assert NasBenchGraphSpace("proteins").size() == 2_021
    assert not _Payload.ran
    with np.load(path, allow_pickle=False) as z:
        assert z["row"].shape == (9, 5, 5, 5, 5)
    # A cache with the wrong shapes (e.g. another dataset's) is rebuilt as well.
    np.savez(path, key=np.arange(3), row=np.zeros(3, dtype=np.int32))
    assert NasBenchGraphSpace("proteins").size() == 2_021


def test_package_table_reader_refuses_foreign_globals(tmp_path):
    with (tmp_path / "x.bench").open("wb") as f:
        pickle.dump(_Payload(), f)
    with (tmp_path / "x.bench").open("rb") as f, pytest.raises(pickle.UnpicklingError, match="_detonate"):
        nbg._NumbersOnlyUnpickler(f).load()
    assert not _Payload.ran


def test_registry_and_unknown_dataset():
    s = spaces.get("nasbench-graph/proteins")
    assert isinstance(s, NasBenchGraphSpace) and s.tabular and s.vocab == (9, 5, 5, 5, 5)
    assert spaces.get("nasbench-graph/cora").vocab == (9,) * 5
    with pytest.raises(UnknownSpace):
        NasBenchGraphSpace("mnist")
