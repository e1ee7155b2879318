"""`fnas bench akp`: its statistics, its plan's fairness, and one real source -> pool -> target run pair."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fnas.v1 import pool_pb2
from fnas_bench import akp_bench, akp_report, akp_worker
from fnas_cli import build_parser


def test_spearman_matches_the_textbook_values():
    assert akp_bench.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert akp_bench.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert akp_bench.spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    assert akp_bench.spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(np.sqrt(0.75))  # ties: mean ranks
    assert akp_bench.spearman([1, 1, 1], [1, 2, 3]) == 0.0


def test_epochs_to_threshold():
    assert akp_bench.epochs_to({1: 0.5, 2: 0.81, 4: 0.7, 8: 0.9}) == 2
    assert akp_bench.epochs_to({1: 0.5, 8: 0.79}) is None


def test_plan_pairs_scratch_and_pool_runs_and_keeps_true_runs_apart():
    cfg = akp_bench.AkpBenchConfig(archs=4, epochs=(1, 2), true_epochs=3, true_seeds=2, source_archs=3)
    targets, source, target = akp_bench.plan(cfg)
    assert len(targets) == 4 and len(source) == 3 and len(target) == 4 * (2 + 2 * 2)
    jobs = {j["id"]: j for j in target}
    for i in range(4):
        for e in (1, 2):
            scratch, pool = jobs[f"scratch/{e}/{i}"], jobs[f"pool/{e}/{i}"]
            assert scratch["seed"] == pool["seed"] and scratch["tokens"] == pool["tokens"]
            assert "pool_task" not in scratch and pool["pool_task"] == cfg.source_task
        seeds = {jobs[f"true/{k}/{i}"]["seed"] for k in range(2)} | {jobs[f"scratch/1/{i}"]["seed"]}
        assert len(seeds) == 3
    assert not {tuple(j["tokens"]) for j in source} & {tuple(t) for t in targets}
    assert all(j["put_job_id"] for j in source)
    assert [j["epochs"] for j in target] == sorted((j["epochs"] for j in target), reverse=True)
    assert akp_bench.plan(cfg) == (targets, source, target)  # seeded: the same plan twice


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="source-task"):
        akp_bench.AkpBenchConfig(task="digits", source_task="digits")
    with pytest.raises(ValueError, match="true-epochs"):
        akp_bench.AkpBenchConfig(epochs=(1, 16), true_epochs=8)
    with pytest.raises(ValueError, match="class range"):
        akp_worker.task_data("digits@3-3", 0)


def test_summary_names_the_figures(tmp_path):
    cfg = akp_bench.AkpBenchConfig(archs=3, epochs=(1, 2), true_epochs=2, source_archs=1)
    true = [0.5, 0.7, 0.9]
    target = {f"true/0/{i}": {"accuracy": a, "seconds": 1.0} for i, a in enumerate(true)}
    for i in range(3):
        for e, (scratch, pool) in {1: ([0.2, 0.1, 0.3][i], true[i] / 2), 2: (true[i], true[i])}.items():
            target[f"scratch/{e}/{i}"] = {"accuracy": scratch, "seconds": 1.0}
            target[f"pool/{e}/{i}"] = {
                "accuracy": pool,
                "seconds": 1.0,
                "queried": 7,
                "matched": 7,
                "adapted": 3,
                "similarity": [1.0] * 7,
            }
    stats = pool_pb2.PoolStatsResponse(blocks=7)
    result = akp_bench.summarise(
        cfg,
        {"source/0": {"accuracy": 0.4, "seconds": 2.0}},
        target,
        stats,
        {"source": 1.0, "target": 2.0, "total": 3.0},
    )
    assert result["rho"] == {"scratch": {"1": 0.5, "2": 1.0}, "pool": {"1": 1.0, "2": 1.0}}
    assert result["epochs_to_rho_0.8"] == {"scratch": 2, "pool": 1}
    assert result["epoch_speedup"] == 2.0 and result["hit_ratio"] == 1.0
    assert result["adapted_fraction"] == pytest.approx(3 / 7)
    json.dumps(result)  # plain JSON
    akp_report.plot(result, tmp_path / "akp.png")
    assert (tmp_path / "akp.png").read_bytes()[:4] == b"\x89PNG"
    assert "epoch speedup 2.00x" in akp_report.table(result)


def test_cli_parses_the_akp_subcommand():
    args = build_parser().parse_args(["bench", "akp", "--archs", "5", "--epochs", "1,3", "--workers", "1"])
    assert (args.archs, args.epochs, args.workers, args.source_task) == (5, "1,3", 1, "digits@0-4")


@pytest.mark.timeout(120)
async def test_a_source_run_fills_the_pool_and_a_target_run_draws_from_it(pool):
    common = {"width": 0.25, "image_side": 8, "batch_size": 128, "split_seed": 0, "epochs": 1}
    tokens = [1, 0, 0, 1, 1, 1] + [3, 0, 0, 1, 1, 1] * 6
    source = {
        **common,
        "id": "source/0",
        "tokens": tokens,
        "task": "digits@0-4",
        "seed": 1,
        "put_job_id": "bench/0",
    }
    done = await akp_worker.run_job(source, pool)
    assert done["stored"] == 7 and 0 <= done["accuracy"] <= 1
    iterations = akp_worker.steps("digits@0-4", 0, 1, 128)
    assert done["iterations"] == iterations
    target = {
        **common,
        "id": "pool/1/0",
        "tokens": tokens,
        "task": "digits",
        "seed": 2,
        "pool_task": "digits@0-4",
        "pool_iterations": iterations,
    }
    drawn = await akp_worker.run_job(target, pool)
    assert (drawn["queried"], drawn["matched"], drawn["adapted"]) == (7, 7, 0)
    assert drawn["similarity"] == [1.0] * 7
    assert (await pool.stats()).blocks_matched == 7
