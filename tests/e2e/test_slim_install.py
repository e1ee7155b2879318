"""The slim install (no `all` extra, the pool and buffer image): `fnas serve pool` and `fnas serve buffer`
run as processes in which torch, Optuna, scikit-learn, nas-bench-graph and matplotlib cannot be
imported, and answer their RPCs; a command that needs the full install says how to get it."""

from __future__ import annotations

import asyncio
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from mesh import free_port

from fnas import serving
from fnas.mnasnet import build_model
from fnas.spaces.mnas import MnasSpace
from fnas.v1 import common_pb2
from fnas_cli import BENCH_INSTALL, FULL_INSTALL
from services.buffer.client import BufferClient
from services.pool.client import PoolClient, weights

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
#: `python -c` with the full install's modules made unimportable (None in sys.modules), then the CLI.
SLIM = (
    f"import sys; sys.modules.update(dict.fromkeys({sorted(FULL_INSTALL)!r})); "
    "from fnas_cli import main; sys.exit(main(sys.argv[1:]))"
)


def slim(*args: str, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-c", SLIM, *args], stdout=out, stderr=out)


async def serving_or_exit(address: str, name: str, proc: subprocess.Popen, log: Path) -> None:
    for _ in range(600):
        assert proc.poll() is None, f"{name} exited: {log.read_text()[-2000:]}"
        try:
            if await serving.health_status(address, name) == serving.SERVING:
                return
        except Exception:
            pass
        await asyncio.sleep(0.05)
    pytest.fail(f"{name} not SERVING: {log.read_text()[-2000:]}")


def test_the_full_install_modules_are_the_all_extra():
    """FULL_INSTALL (what the CLI names and this file blocks) is the modules of pyproject's `all` extra."""
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())

    def canonical(dist: str) -> str:
        return dist.lower().replace("_", "-")

    extras = pyproject["project"]["optional-dependencies"]
    extra = {canonical(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]) for r in extras["all"]}
    dists = importlib.metadata.packages_distributions()
    assert {canonical(d) for module in FULL_INSTALL for d in dists[module]} == extra
    bench = {canonical(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]) for r in extras["bench"]} - {"fnas"}
    assert {
        canonical(d) for module in BENCH_INSTALL for d in dists[module]
    } == bench  # what `fnas bench` checks


async def test_pool_and_buffer_run_without_the_full_install(tmp_path, nats_url):
    pool_port, buffer_port = free_port(), free_port()
    data = ("--data-dir", str(tmp_path))
    procs = [
        slim("serve", "pool", "--port", str(pool_port), *data, log=tmp_path / "pool.log"),
        slim(
            "serve",
            "buffer",
            "--port",
            str(buffer_port),
            *data,
            "--nats-url",
            nats_url,
            log=tmp_path / "buffer.log",
        ),
    ]
    try:
        await serving_or_exit(
            f"127.0.0.1:{pool_port}", "fnas.v1.PoolService", procs[0], tmp_path / "pool.log"
        )
        await serving_or_exit(
            f"127.0.0.1:{buffer_port}", "fnas.v1.BufferService", procs[1], tmp_path / "buffer.log"
        )
        tokens = MnasSpace().random_tokens(np.random.default_rng(0))
        arch = common_pb2.Architecture(space="mnas", tokens=tokens)
        torch.manual_seed(0)
        net = build_model(tokens, 10, (1, 8, 8), 0.25)  # torch here, in the trainer's place
        async with PoolClient(f"127.0.0.1:{pool_port}", timeout_s=10) as pool:
            assert (await pool.put(arch, "digits", "s/0", weights.put_blocks(net.blocks, 50))).stored == 7
            answer = await pool.query(arch, weights.block_queries(net.blocks), task="digits", iterations=50)
            assert answer.hit_ratio == 1.0
        samples = [
            common_pb2.Sample(
                architecture=common_pb2.Architecture(tokens=[i, 0]),
                reward=common_pb2.Reward(value=i),
                index=i,
            )
            for i in range(4)
        ]
        async with BufferClient(f"127.0.0.1:{buffer_port}") as buffer:
            assert await buffer.add("s", samples) == 4
            drawn = await buffer.sample(
                "s", n=8, beta=1.0, seed=1, min_observed=4, capacity=2, temperature=0.1
            )
            assert {r.entry.index for r in drawn} <= {2, 3}
    finally:
        for proc in procs:
            proc.terminate()
        assert [proc.wait(20) for proc in procs] == [0, 0]
    # A command that needs the full install says so (exit 2), instead of a traceback.
    out = subprocess.run(
        [sys.executable, "-c", SLIM, "search", "--space", "nasbench-graph/cora", "--budget", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "pip install 'fnas[all]'" in out.stderr, out.stderr
