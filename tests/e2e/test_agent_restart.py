"""Separate processes (`python -m services.agent`, `python -m services.trainer`) on a real nats-server:
a search submitted over gRPC survives an agent SIGKILL with every activated sample counted once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fnas import serving
from fnas.client import SearchClient
from fnas.v1 import common_pb2, search_pb2

pytestmark = pytest.mark.e2e
BUDGET = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(module: str, *args: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", module, *args], stdout=out, stderr=out, env=env)


async def wait_serving(address: str, proc: subprocess.Popen, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        assert proc.poll() is None, "service exited during start-up"
        try:
            if await serving.health_status(address, "fnas.v1.SearchService") == serving.SERVING:
                return
        except Exception:
            pass
        assert asyncio.get_running_loop().time() < deadline, f"{address} not SERVING in {timeout_s} s"
        await asyncio.sleep(0.1)


@pytest.fixture
def processes():
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


async def trajectory(client: SearchClient, search_id: str) -> list[tuple[int, tuple[int, ...], float]]:
    return [
        (e.sample.index, tuple(e.sample.architecture.tokens), e.sample.reward.value)
        async for e in client.watch(search_id)
        if e.HasField("sample")
    ]


@pytest.mark.timeout(180)
async def test_agent_sigkill_mid_search_resumes_and_counts_once(tmp_path, nats_url, processes):
    port = free_port()
    address = f"127.0.0.1:{port}"
    agent_args = ("--nats-url", nats_url, "--port", str(port), "--data-dir", str(tmp_path / "data"))
    log = tmp_path / "services.log"
    agent = start("services.agent", *agent_args, log=log)
    processes.append(agent)
    for _ in range(2):
        processes.append(start("services.trainer", "--nats-url", nats_url, "--heartbeat-s", "1", log=log))
    await wait_serving(address, agent)
    spec = common_pb2.SearchSpec(
        space="nasbench-graph/cora",
        strategy="ppo",
        seed=3,
        budget=common_pb2.Budget(max_activated_samples=BUDGET),
        task=common_pb2.Task(simulated_seconds=0.02),  # long enough to be killed mid-search
    )
    async with SearchClient(address) as client:
        search_id = await client.submit(spec)
        while (await client.get(search_id)).activated_samples < 40:
            await asyncio.sleep(0.05)
    agent.send_signal(signal.SIGKILL)  # mid-batch: jobs in flight, results unconsumed
    agent.wait(10)

    agent = start("services.agent", *agent_args, log=log)
    processes.append(agent)
    await wait_serving(address, agent)
    async with SearchClient(address) as client:
        interrupted = await trajectory(client, search_id)
        status = await client.get(search_id)
        # The same seed, uninterrupted, in the restarted agent: the restart changed nothing.
        reference = await trajectory(client, await client.submit(spec))

    assert f"resuming search {search_id}" in log.read_text()
    assert status.state == search_pb2.SEARCH_STATE_SUCCEEDED, status.error
    assert status.activated_samples == BUDGET == status.policy_samples_trained
    assert [i for i, _, _ in interrupted] == list(range(BUDGET))
    assert interrupted == reference

    agent.send_signal(signal.SIGTERM)
    assert agent.wait(20) == 0
