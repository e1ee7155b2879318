"""`fnas bench compute` on a tiny configuration: real searches through the in-process mesh."""

from __future__ import annotations

import json

import pytest

from fnas_bench import compute_bench, report
from fnas_bench.compute_bench import ComputeConfig

pytestmark = pytest.mark.timeout(300)


def test_a_tiny_compute_bench_reports_every_figure_per_row(tmp_path):
    cfg = ComputeConfig(
        seeds=1, budget=3, batch_size=3, epochs=2, final_top_k=1, final_epochs=1,
        trainers=1, rows=("mnas", "fnas"), proxy_architectures=3,
    )  # fmt: skip
    result = compute_bench.run(cfg)
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["mnas", "fnas"]
    for row in rows.values():
        (run,) = row["runs"]
        assert run["activated_samples"] == 3 and run["trainer_seconds"] > 0
        assert run["final_selection_seconds"] > 0 and len(run["curve"]) == 3
        # The quality curve retrains exactly as the final selection does: its end is that figure.
        assert run["curve"][-1][1] == run["final_accuracy"]
        spent = [t for t, _ in run["curve"]]
        assert spent == sorted(spent) and spent[-1] == pytest.approx(run["trainer_seconds"])
    # AKP: the first sample finds an empty pool (2 epochs); later ones may train warm (1 epoch: the agent's
    # rule, half of the epochs, which the result states).
    assert result["config"]["pool_epochs"] == 1
    assert rows["mnas"]["epochs_per_sample"] == 2 and 1 <= rows["fnas"]["epochs_per_sample"] <= 2
    assert result["target_final_accuracy"] == rows["mnas"]["final_accuracy"]  # one seed: its own
    assert rows["mnas"]["compute_speedup"] == 1.0
    proxy = result["proxy"]
    assert proxy["architectures"] == 3 and -1 <= proxy["seed_spearman"] <= 1
    assert proxy["final_accuracy_quartiles"] == sorted(proxy["final_accuracy_quartiles"])
    report.emit(result, compute_bench.table(result), tmp_path / "out", compute_bench.plot)
    assert json.loads((tmp_path / "out.json").read_text())["rows"][1]["name"] == "fnas"
    assert (tmp_path / "out.png").stat().st_size > 10_000


def test_bad_configurations_are_refused_with_the_flag():
    with pytest.raises(ValueError, match=r"--pool-epochs must be in 0\.\.4"):
        ComputeConfig(epochs=4, pool_epochs=5)
    with pytest.raises(ValueError, match="--rows"):
        ComputeConfig(rows=("fnas",))


def test_what_the_flags_leave_open_follows_the_agent_and_the_device():
    from services.trainer.config import TrainerConfig

    cpu, gpu = ComputeConfig().resolved(cuda=False), ComputeConfig().resolved(cuda=True)
    assert (cpu.width_mult, cpu.image_side) == compute_bench.CPU_TASK
    assert (gpu.width_mult, gpu.image_side) == (TrainerConfig.width_mult, TrainerConfig.image_side)
    assert gpu.width_mult > cpu.width_mult and gpu.image_side > cpu.image_side  # a larger task on a GPU
    assert cpu.pool_epochs == gpu.pool_epochs == 2  # the agent's rule: half of the 4 epochs
    given = ComputeConfig(width_mult=1.0, image_side=0, pool_epochs=1).resolved(cuda=True)
    assert (given.width_mult, given.image_side, given.pool_epochs) == (1.0, 0, 1)
