"""A real mnas search through the in-process cluster: torch training in the trainers' child processes,
AKP initialisation from the pool, final selection (paper 6.2) and `fnas export` of the winner."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import numpy as np
import pytest

import fnas_cli as cli
from fnas import datasets
from fnas.client import AgentClient
from fnas.v1 import common_pb2, search_pb2
from services.harness import Cluster
from services.pool.client import PoolClient

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


async def test_small_mnas_search_final_selection_and_export(tmp_path):
    spec = common_pb2.SearchSpec(
        space="mnas",
        strategy="ppo",
        seed=3,
        budget=common_pb2.Budget(max_activated_samples=6),
        task=common_pb2.Task(dataset="digits", epochs=2),  # pool_epochs: 1 (the default, half)
        final_top_k=2,
        final_epochs=2,
    )
    async with (
        Cluster(tmp_path / "data", trainers=2) as cluster,
        AgentClient(cluster.agent_address) as client,
    ):
        search_id = await client.submit(spec)
        trajectory = [e.sample async for e in client.watch(search_id) if e.HasField("sample")]
        status = await client.get(search_id)
        results = cluster.agent.store.results(search_id, [s.index for s in trajectory])
        async with PoolClient(cluster.pool_address) as pool:
            pool_stats = await pool.stats()
        out = tmp_path / "export"
        # Export in this thread while the agent runs: asyncio.run inside the CLI needs its own thread.
        code = await asyncio.to_thread(
            cli.main,
            [
                "export",
                "--target",
                cluster.agent_address,
                "--search",
                search_id,
                "--rank",
                "1",
                "--out",
                str(out),
            ],
        )
    assert status.state == search_pb2.SEARCH_STATE_SUCCEEDED, status.error
    assert status.activated_samples == 6 and status.failed_samples == 0  # retrains are no samples
    assert len(trajectory) == 6
    for s in trajectory:
        assert 0 < s.reward.accuracy <= 1 and s.reward.value == s.reward.accuracy  # accuracy-only reward
        assert s.reward.mult_adds > 0 and s.reward.params > 0 and s.reward.latency_ms > 0
    # AKP: every sample queried its 7 blocks; all but the first one per trainer found them (paper 4.3).
    assert status.pool_blocks_queried == 6 * 7 and status.pool_blocks_matched >= 4 * 7
    # AKP's saving reaches the search (paper Table 4): a sample warm from the pool trains pool_epochs.
    assert status.spec.task.pool_epochs == 1
    warm = [r.pool_blocks_matched == r.pool_blocks_queried == 7 for r in results]
    assert [r.epochs for r in results] == [1 if w else 2 for w in warm]
    assert status.pool_warm_samples == sum(warm) >= 4
    assert pool_stats.blocks == 6 * 7  # the final retrains (from scratch) put nothing
    final = status.final_ranking
    assert [c.rank for c in final] == [1, 2] and all(c.epochs == 2 and not c.error for c in final)
    assert final[0].final_reward.value >= final[1].final_reward.value
    # Compute (issue 24): the status sums every job's trainer-seconds, the final selection apart.
    assert (
        status.trainer_seconds > 0
        and status.trainer_setup_seconds > 0
        and status.trainer_evaluate_seconds > 0
    )
    assert status.final_trainer_seconds > 0
    best_two = sorted((s.reward.value for s in trajectory), reverse=True)[:2]
    assert sorted(c.sample.reward.value for c in final) == sorted(best_two)

    assert code == 0
    meta = json.loads((out / "architecture.json").read_text())
    assert meta["tokens"] == list(final[0].sample.architecture.tokens)
    # The retrain repeats the final selection's (same seed, split and recipe; CPU is deterministic).
    assert meta["accuracy"] == pytest.approx(final[0].final_reward.accuracy, abs=1e-9)
    # model.py needs torch alone, and raw digits through its preprocess() give the reported accuracy.
    settings = meta["trainer_settings"]
    held_out = datasets.load("digits", seed=settings["data_seed"], val_fraction=settings["val_fraction"])
    np.save(out / "val_index.npy", held_out.val_index)
    check = (
        "import sys; sys.modules['fnas'] = None  # no fnas: importing it would fail\n"
        "import numpy as np, torch, model\n"
        "from sklearn.datasets import load_digits\n"
        "digits, i = load_digits(), np.load('val_index.npy')\n"
        "with torch.no_grad():\n"
        "    logits = model.load().eval()(model.preprocess(digits.images[i]))\n"
        "print(tuple(logits.shape), float((logits.argmax(1).numpy() == digits.target[i]).mean()))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", check], cwd=out, capture_output=True, text=True, timeout=60
    )
    shape, accuracy = loaded.stdout.split(") ")
    assert shape == f"({len(held_out.val_index)}, 10", loaded.stderr
    assert float(accuracy) == pytest.approx(meta["accuracy"], abs=1.5 / len(held_out.val_index))
    assert (
        set(meta["trainer_seconds"]) == {"setup", "train", "evaluate"}
        and meta["trainer_seconds"]["train"] > 0
    )
    assert meta["preprocess"]["scale"] == 1 / 16 and meta["preprocess"]["resize"]["method"] == "bilinear"
    modes = {f.name: f.stat().st_mode for f in out.iterdir() if f.suffix in (".py", ".json", ".safetensors")}
    assert len(modes) == 3 and len(set(modes.values())) == 1, modes


async def test_final_selection_of_a_table_search_moves_no_counters(tmp_path):
    spec = common_pb2.SearchSpec(
        space="nasbench-graph/cora", strategy="random", seed=1,
        budget=common_pb2.Budget(max_activated_samples=12), final_top_k=3,
    )  # fmt: skip
    async with (
        Cluster(tmp_path / "data", trainers=1) as cluster,
        AgentClient(cluster.agent_address) as client,
    ):
        search_id = await client.submit(spec)
        events = [e async for e in client.watch(search_id)]
        status = await client.get(search_id)
        top = await client.top(search_id, 3)
    assert status.state == search_pb2.SEARCH_STATE_SUCCEEDED
    assert status.activated_samples == 12 and sum(e.HasField("sample") for e in events) == 12
    # A table answers a retrain with the same figures: the ranking is the search's own.
    assert [c.sample.index for c in status.final_ranking] == [s.index for s in top]
    assert [c.final_reward.value for c in status.final_ranking] == [s.reward.value for s in top]
    assert events[-1].finished.final_ranking == status.final_ranking
