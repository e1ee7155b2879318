"""PoolStore on real LMDB: round trip, idempotence, fairness, growth, restart, other-process readers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import safetensors.numpy

from services.pool.store import NewBlock, PoolStore

ONE_HOT = {  # 3 fields of 2 choices: similarities are k/3
    "aaa": (1, 0, 1, 0, 1, 0),
    "aab": (1, 0, 1, 0, 0, 1),
    "abb": (1, 0, 0, 1, 0, 1),
    "bbb": (0, 1, 0, 1, 0, 1),
}


def block(
    emb: str, iterations: int = 100, channels: int = 4, position: int = 0, fill: float = 1.0
) -> NewBlock:
    data = safetensors.numpy.save({"w": np.full((channels, 2), fill, np.float32)})
    return NewBlock(position, ONE_HOT[emb], iterations, data, {"w": (channels, 2)})


def test_put_then_best_returns_the_most_similar_block(tmp_path: Path):
    store = PoolStore(tmp_path)
    assert store.put("mnas", "digits", "s/1", [block("aaa", fill=1.0)]) == (1, False)
    assert store.put("mnas", "digits", "s/2", [block("bbb", fill=2.0)]) == (1, False)
    entry, sim = store.best("mnas", 0, ONE_HOT["abb"])
    assert entry.source_job_id == "s/2" and abs(sim - 2 / 3) < 1e-9
    assert safetensors.numpy.load(store.weights(entry.key))["w"][0, 0] == 2.0
    assert store.best("mnas", 1, ONE_HOT["abb"]) is None  # no block at that position
    assert store.best("mnas", 0, ONE_HOT["abb"], min_similarity=0.9) is None
    store.close()


def test_repeated_source_job_stores_nothing(tmp_path: Path):
    store = PoolStore(tmp_path)
    store.put("mnas", "digits", "s/1", [block("aaa", fill=1.0)])
    assert store.put("mnas", "digits", "s/1", [block("bbb", fill=9.0)]) == (0, True)
    assert store.stats() == (1, {"digits": 1})
    assert store.job("s/1") == {"task": "digits", "space": "mnas", "blocks": 1}
    store.close()


def test_task_filter_and_equal_iteration_fairness(tmp_path: Path):
    store = PoolStore(tmp_path)
    store.put("mnas", "digits", "s/1", [block("aaa", iterations=100)])
    store.put("mnas", "digits", "s/2", [block("aab", iterations=500)])  # closer, but trained longer
    store.put("mnas", "synthetic", "t/1", [block("aab", iterations=100)])
    query = ONE_HOT["aab"]
    assert store.best("mnas", 0, query, task="digits", iterations=100)[0].source_job_id == "s/1"
    assert store.best("mnas", 0, query, task="digits")[0].source_job_id == "s/2"
    # No candidate trained exactly 7 iterations: fall back to all of them.
    assert store.best("mnas", 0, query, task="digits", iterations=7)[0].source_job_id == "s/2"
    assert store.best("mnas", 0, query, task="synthetic")[0].source_job_id == "t/1"
    assert store.best("mnas", 0, query, task="faces") is None
    store.close()


def test_ties_go_to_the_best_shape_fit_then_the_latest(tmp_path: Path):
    store = PoolStore(tmp_path)
    store.put("mnas", "digits", "s/1", [block("aaa", channels=4)])
    store.put("mnas", "digits", "s/2", [block("aaa", channels=8, iterations=101)])  # same embedding, later
    assert store.best("mnas", 0, ONE_HOT["aaa"])[0].source_job_id == "s/2"
    assert store.best("mnas", 0, ONE_HOT["aaa"], layout={"w": (4, 2)})[0].source_job_id == "s/1"
    store.close()


def test_index_is_rebuilt_on_reopen_and_the_map_grows(tmp_path: Path):
    store = PoolStore(tmp_path, map_size=64 << 10)  # 64 KiB: a few puts must grow it
    big = safetensors.numpy.save({"w": np.ones((64, 256), np.float32)})  # 64 KiB of weights
    for i in range(8):
        store.put("mnas", "digits", f"s/{i}", [NewBlock(i % 7, ONE_HOT["aaa"], 100, big)])
    grown = store.map_size()
    assert grown > 64 << 10
    store.close()
    again = PoolStore(tmp_path, map_size=64 << 10)  # a smaller request keeps the grown file
    assert again.stats() == (7, {"digits": 7})  # position 0 was put twice under one key: the latest wins
    assert again.best("mnas", 0, ONE_HOT["aaa"])[0].source_job_id == "s/7"
    assert again.count_jobs() == 8
    again.close()


READER = textwrap.dedent(
    """
    import sys
    from services.pool.store import PoolStore
    store = PoolStore(sys.argv[1], readonly=True)
    print(store.stats()[0], flush=True)
    sys.stdin.readline()  # the writer grows the map meanwhile
    print(store.rebuild_index(), store.map_size(), flush=True)
    """
)


def test_a_reader_in_another_process_adopts_a_grown_map(tmp_path: Path):
    writer = PoolStore(tmp_path, map_size=64 << 10, sync=False)
    writer.put("mnas", "digits", "s/0", [block("aaa")])
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout.readline().strip() == "1"
        # 12 MiB: beyond the 10 MiB a read-only environment maps by default, so the reader must resize.
        big = safetensors.numpy.save({"w": np.ones((256, 1024), np.float32)})
        for i in range(1, 13):
            writer.put("mnas", "digits", f"s/{i}", [NewBlock(i % 7, ONE_HOT["bbb"], 100 + i, big)])
        out, _ = reader.communicate("go\n", timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
    count, size = map(int, out.split())
    assert count == 13
    assert size == writer.map_size() > 10 << 20
    writer.close()


def test_reads_run_while_a_writer_grows_the_map(tmp_path: Path):
    """Queries in other threads during puts that resize the map: no error, and every block lands."""
    import threading

    store = PoolStore(tmp_path, map_size=64 << 10, sync=False)
    big = safetensors.numpy.save({"w": np.ones((64, 256), np.float32)})
    store.put("mnas", "digits", "seed", [NewBlock(0, ONE_HOT["aaa"], 1, big)])
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                entry, _ = store.best("mnas", 0, ONE_HOT["aaa"])
                assert len(store.weights(entry.key)) > 0
        except BaseException as e:
            errors.append(e)

    def write(w: int) -> None:
        for i in range(10):
            store.put("mnas", "digits", f"w{w}/{i}", [NewBlock(i % 7, ONE_HOT["bbb"], 100 * w + i, big)])

    readers = [threading.Thread(target=read) for _ in range(2)]
    writers = [threading.Thread(target=write, args=(w,)) for w in range(3)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(30)
    done.set()
    for t in readers:
        t.join(30)
    assert not errors
    assert store.count_jobs() == 31 and store.stats()[0] == 31
    assert store.map_size() >= 2 << 20
    store.close()
