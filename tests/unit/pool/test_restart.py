"""`python -m services.pool` as a real process: SIGKILL loses no committed block; SIGTERM exits 0;
the client rides out a restart by retrying.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fnas import serving
from fnas.mnasnet import build_model
from fnas.spaces.mnas import MnasSpace
from fnas.v1 import common_pb2
from services.pool.client import PoolClient, weights
from services.pool.config import PoolConfig

pytestmark = pytest.mark.e2e
SERVICE = "fnas.v1.PoolService"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_pool(port: int, data_dir: Path, log: Path) -> subprocess.Popen:
    args = ["--port", str(port), "--data-dir", str(data_dir), "--map-size-mb", "1"]
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "services.pool", *args], stdout=out, stderr=out)


async def wait_serving(address: str, proc: subprocess.Popen, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        assert proc.poll() is None, "pool exited during start-up"
        try:
            if await serving.health_status(address, SERVICE) == serving.SERVING:
                return
        except Exception:
            pass
        assert asyncio.get_running_loop().time() < deadline, f"{address} not SERVING in {timeout_s} s"
        await asyncio.sleep(0.05)


@pytest.fixture
def processes():
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def trained(i: int):
    tokens = MnasSpace().random_tokens(np.random.default_rng(i))
    torch.manual_seed(i)
    return common_pb2.Architecture(space="mnas", tokens=tokens), build_model(tokens, 10, (1, 8, 8), 0.25)


@pytest.mark.timeout(120)
async def test_sigkill_keeps_every_committed_block(tmp_path, processes):
    port = free_port()
    address, log = f"127.0.0.1:{port}", tmp_path / "pool.log"
    processes.append(proc := start_pool(port, tmp_path / "data", log))
    await wait_serving(address, proc)
    nets = [trained(i) for i in range(6)]
    async with PoolClient(address, timeout_s=10) as pool:
        for i, (arch, net) in enumerate(nets):  # ~6 x 0.3 MiB: the 1 MiB map grows on the way
            assert (await pool.put(arch, "digits", f"s/{i}", weights.put_blocks(net.blocks, 50))).stored == 7
        assert (tmp_path / "data" / "pool" / "data.mdb").stat().st_size > 1 << 20  # the map grew
        os.kill(proc.pid, signal.SIGKILL)  # no chance to close LMDB or drain anything
        assert proc.wait(10) == -signal.SIGKILL
        processes.append(proc := start_pool(port, tmp_path / "data", log))
        await wait_serving(address, proc)
        stats = await pool.stats()
        assert (stats.jobs, dict(stats.blocks_by_task)) == (6, {"digits": stats.blocks})
        assert stats.blocks == len(
            {(p, tuple(MnasSpace().block_embedding(a.tokens, p))) for a, _ in nets for p in range(7)}
        )
        arch, net = nets[-1]
        answer = await pool.query(arch, weights.block_queries(net.blocks), task="digits", iterations=50)
        assert answer.hit_ratio == 1.0 and all(m.similarity == pytest.approx(1.0) for m in answer.matches)
        assert {m.source_job_id for m in answer.matches} == {"s/5"}  # the latest of equal blocks
        fresh = build_model(arch.tokens, 10, (1, 8, 8), 0.25)
        weights.load_matches(fresh.blocks, answer.matches)
        for a, b in zip(net.blocks, fresh.blocks, strict=True):
            assert all(
                torch.equal(x, y)
                for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
            )
        assert (await pool.put(arch, "digits", "s/5", weights.put_blocks(net.blocks, 50))).duplicate
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


@pytest.mark.timeout(60)
async def test_client_retries_until_the_pool_is_back(tmp_path, processes):
    port = free_port()
    address = f"127.0.0.1:{port}"
    arch, net = trained(0)
    async with PoolClient(address, timeout_s=5, attempts=12) as pool:
        put = asyncio.create_task(pool.put(arch, "digits", "s/0", weights.put_blocks(net.blocks, 50)))
        await asyncio.sleep(0.3)  # the first attempts find nobody listening (UNAVAILABLE)
        assert not put.done()
        processes.append(start_pool(port, tmp_path / "data", tmp_path / "pool.log"))
        assert (await asyncio.wait_for(put, 45)).stored == 7


def test_bad_config_exits_2(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "services.pool", "--map-size-mb", "0"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "map_size_mb must be >= 1" in done.stderr
    assert PoolConfig.from_env({"FNAS_POOL_PORT": "0", "FNAS_POOL_SYNC": "false"}).sync is False
    with pytest.raises(ValueError, match="port"):
        PoolConfig(port=70000)
