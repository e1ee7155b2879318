"""`fnas bench load` on a small load: every search succeeds, nothing is lost, the figures are there."""

from __future__ import annotations

import json

import pytest

from fnas_bench import load_bench
from fnas_cli import main

pytestmark = pytest.mark.timeout(90)


def test_load_bench_small_run_reports_figures_and_no_losses(tmp_path):
    out = tmp_path / "load"
    args = ["--searches", "3", "--budget", "12", "--trainers", "2", "--data-dir", str(tmp_path / "data")]
    code = main(["bench", "load", *args, "--out", str(out)])
    result = json.loads(out.with_suffix(".json").read_text())
    assert code == 0
    assert result["errors"] == 0 and result["lost_samples"] == 0
    assert result["activated_samples"] == 36 == sum(s["activated"] for s in result["searches"])
    assert result["throughput_samples_per_s"] > 0
    assert 0 < result["rpc_latency_ms"]["p50"] <= result["rpc_latency_ms"]["p99"]
    assert result["rpc_calls"] >= 6 and result["queue"]["samples"]
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_load_config_refuses_bad_values():
    with pytest.raises(ValueError, match="must be >= 1"):
        load_bench.LoadConfig(searches=0)
    with pytest.raises(ValueError, match="simulated_s"):
        load_bench.LoadConfig(simulated_s=-1)
