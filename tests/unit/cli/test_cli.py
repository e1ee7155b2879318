"""The `fnas` command: listing, describing, bad input (one line, exit code 2)."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time

import nas_bench_graph
import pytest

from fnas import spaces
from fnas.v1 import common_pb2, search_pb2
from fnas_cli import main, search
from services.agent.fnas_strategy import config_from_spec
from services.agent.spec import validate


def test_spaces_lists_every_space_with_the_package_counts(capsys):
    assert main(["spaces"]) == 0
    out = capsys.readouterr().out
    for dataset in spaces.NASBENCH_GRAPH_DATASETS:
        line = next(x for x in out.splitlines() if x.startswith(f"nasbench-graph/{dataset} "))
        assert f"{len(nas_bench_graph.light_read(dataset)):,}" in line
    assert "26,206" in next(x for x in out.splitlines() if x.startswith("nasbench-graph/cora "))
    assert any(x.startswith("mnas ") for x in out.splitlines())


def test_describe_tabular_prints_benchmark_figures_and_rank(capsys):
    assert main(["arch", "describe", "--space", "nasbench-graph/cora", "--tokens", "8,0,1,2,3"]) == 0
    out = capsys.readouterr().out
    space = spaces.get("nasbench-graph/cora")
    assert "gat" in out and "valid_accuracy" in out
    assert f"rank_by_valid_accuracy: {space.rank((8, 0, 1, 2, 3)):,}" in out


def test_describe_mnas_prints_mult_adds(capsys):
    assert (
        main(["arch", "describe", "--space", "mnas", "--tokens", ",".join(["2,0,0,1,1,1"] * 7), "--json"])
        == 0
    )
    assert "mult_adds" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["arch", "describe", "--space", "nasbench-graph/cora", "--tokens", "8,0,1,2,30"],
            "token 4 (op4) is 30",
        ),
        (["arch", "describe", "--space", "nasbench-graph/cora", "--tokens", "8,0,x"], "'x'"),
        (["arch", "describe", "--space", "moon", "--tokens", "1"], "unknown space 'moon'"),
        (["arch", "describe", "--space", "nasbench-graph/cora", "--tokens", "0,8,8,8,8"], "all-skip"),
        (["search", "--space", "nasbench-graph/cora", "--budget", "-5"], "--budget must be > 0"),
        (
            ["search", "--space", "nasbench-graph/cora", "--strategy", "fnas", "--fnas", "elite_size=0"],
            "fnas.elite_size: must be >= 1, got 0",
        ),
        (["bench", "ceiling", "--space", "mnas"], "mnas has no table"),
        (["bench", "search", "--space", "mnas", "--seeds", "1", "--budget", "1"], "mnas has no table"),
        (["bench", "ceiling", "--seeds", "0"], "--seeds must be >= 1, got 0"),
        # Checked before any cluster starts (issue 22).
        (["search", "--space", "mnas", "--dataset", "npz:/no/such.npz"], "npz:/no/such.npz: no such file"),
        (["search", "--space", "mnas", "--dataset", "moon"], "task.dataset: unknown dataset 'moon'"),
        (["ls", "--target", "127.0.0.1:1"], "no agent answers at 127.0.0.1:1"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, message):
    run = subprocess.run(
        [sys.executable, "-m", "fnas_cli", *argv], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == (1 if argv[0] == "ls" else 2)  # nothing listening is no bad input
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], run.stderr


def test_a_benchmark_without_the_bench_extra_says_how_to_get_it_before_it_runs():
    blocked = (
        "import sys; sys.modules['scipy'] = None; from fnas_cli import main; sys.exit(main(sys.argv[1:]))"
    )
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", blocked, "bench", "search", "--seeds", "1", "--out", "unused"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "pip install 'fnas[bench]'" in out.stderr, out.stderr
    assert time.monotonic() - started < 30  # refused up front, not after the benchmark's runs


def test_up_on_a_port_in_use_names_the_flag_that_fixes_it(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["up", "--port", str(port), "--data-dir", str(tmp_path)]
        run = subprocess.run(
            [sys.executable, "-m", "fnas_cli", *argv], capture_output=True, text=True, timeout=60
        )
    assert run.returncode == 2
    (line,) = run.stderr.strip().splitlines()
    assert f"--port {port}: the port is already in use" in line and "--port 0" in line
    assert not (tmp_path / "nats").exists()  # nothing started


def _actions(parser: argparse.ArgumentParser, path: str = "fnas"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield path, action


def test_every_flag_and_argument_has_a_help_line():
    from fnas_cli import build_parser

    missing = [f"{path} {a.option_strings or a.dest}" for path, a in _actions(build_parser()) if not a.help]
    assert not missing, missing


def test_help_and_version_do_not_import_torch_scipy_or_the_services():
    """What makes `fnas --help` slow: torch alone takes about a second to import, scipy.stats as long."""
    code = (
        "import sys; from fnas_cli import build_parser, main\n"
        "try: main(['--version'])\nexcept SystemExit: pass\n"
        "build_parser().format_help()\n"
        "print(sorted(m for m in sys.modules if m in ('torch', 'scipy', 'optuna') or m.endswith('.app')))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout + run.stderr
    assert run.stdout.startswith("fnas ")


def test_readme_commands_and_ci_agree():
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    readme = (root / "README.md").read_text()
    blocks = readme.split("```")
    install_run, install_test = blocks[1].strip(), blocks[3].strip()
    assert "fnas search" in install_run
    assert install_test in (root / ".ci" / "run").read_text().splitlines()


def test_fnas_limits_set_on_the_command_line_reach_the_strategy():
    parser = argparse.ArgumentParser()
    search.add_spec_arguments(parser)
    argv = ["--space", "nasbench-graph/cora", "--strategy", "fnas", "--fnas", "local_candidates=16"]
    spec = search.spec_from_args(parser.parse_args([*argv, "--fnas", "ucb=0.5", "--fnas", "warmup=20"]))
    assert (spec.fnas.local_candidates, spec.fnas.ucb, spec.fnas.warmup) == (16, 0.5, 20)
    assert not spec.fnas.HasField("elite_size")  # unset keeps the default
    config = config_from_spec(validate(spec))
    assert (config.local_candidates, config.ucb, config.elite_size) == (16, 0.5, 10)
    for bad, reason in (
        ("local_candidates", "expected FIELD=VALUE"),
        ("elite=3", "expected FIELD=VALUE"),
        ("elite_size=-1", "whole number"),
        ("elite_size=2.5", "whole number"),
        ("ucb=high", "not a number"),
    ):
        with pytest.raises(argparse.ArgumentTypeError, match=reason):
            search.fnas_option(bad)


@pytest.mark.parametrize(
    "flag", ["--epochs", "--pool-epochs", "--final-epochs", "--final-top-k", "--batch-size"]
)
def test_a_negative_count_is_refused_by_name(flag, capsys):
    parser = argparse.ArgumentParser(prog="fnas search")
    search.add_spec_arguments(parser)
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--space", "mnas", flag, "-1"])
    assert exit_.value.code == 2
    assert f"argument {flag}: '-1' is not a whole number >= 0" in capsys.readouterr().err


def test_a_search_without_a_critic_prints_its_recalls_and_no_critic_figures(capsys):
    from fnas_cli import output

    status = search_pb2.SearchStatus(
        search_id="s",
        spec=common_pb2.SearchSpec(
            space="nasbench-graph/cora",
            strategy="ppo",
            reward=common_pb2.RewardSpec(cost=common_pb2.COST_METRIC_NONE),
        ),
        state=search_pb2.SEARCH_STATE_SUCCEEDED,
        activated_samples=40,
        policy_samples_trained=40,
        policy_samples_recall=25,
        sample_speedup=65 / 40,
    )
    output.print_result(status, [], 1.0)
    out = capsys.readouterr().out
    assert (
        "policy samples: 40 trained, 25 recalled (trained before in this search); sample speedup 1.62x" in out
    )
    assert "critic" not in out
    status.spec.strategy, status.policy_samples_critic = "fnas", 5
    status.spec.modules.uac, status.spec.modules.aeb = True, True  # as the agent writes what ran
    output.print_result(status, [], 1.0)
    out = capsys.readouterr().out
    assert "5 trusted to the critic, 0 replayed from the buffer" in out
    assert "critic calibration: not yet meaningful" in out
    status.spec.modules.aeb = False  # fnas --no-aeb: no buffer figure
    output.print_result(status, [], 1.0)
    assert "5 trusted to the critic, 25 recalled" in capsys.readouterr().out


def test_the_compute_line_says_a_table_trains_nothing_and_counts_real_training():
    from fnas_cli import output

    status = search_pb2.SearchStatus(spec=common_pb2.SearchSpec(space="nasbench-graph/cora"))
    status.trainer_seconds = 0.004  # the trainers' table lookups
    assert output.compute_line(status) == "compute: no training (the benchmark table answers every sample)"
    status.spec.task.simulated_seconds, status.trainer_seconds = 0.3, 90.0  # a table with simulated training
    assert output.compute_line(status).startswith(
        "compute: 90.0 trainer-seconds of training (0.025 trainer-hours)"
    )
    status.spec.space, status.trainer_seconds = "mnas", 0.0  # nothing trained yet: the figure, not a claim
    assert output.compute_line(status).startswith("compute: 0.0 trainer-seconds")


def test_a_negative_mult_adds_target_is_refused_by_name():
    parser = argparse.ArgumentParser()
    search.add_spec_arguments(parser)
    args = parser.parse_args(["--space", "mnas", "--reward", "mult-adds", "--target-mult-adds", "-5"])
    with pytest.raises(ValueError, match="--target-mult-adds must be >= 0, got -5"):
        search.spec_from_args(args)
    args.target_mult_adds = 5_000_000_000  # a 64-bit count
    assert search.spec_from_args(args).reward.target_mult_adds == 5_000_000_000
