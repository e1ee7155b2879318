"""Separate processes (`fnas serve agent`, `fnas serve trainer`) on a real nats-server: a search
submitted over gRPC survives an agent SIGKILL with every activated sample counted once.
"""

from __future__ import annotations

import signal

import pytest
from mesh import Mesh, counted_once, wait_activated, wait_logged

from fnas.client import AgentClient
from fnas.v1 import common_pb2

pytestmark = pytest.mark.e2e
BUDGET = 80


async def trajectory(client: AgentClient, search_id: str) -> list[tuple[int, tuple[int, ...], float]]:
    return [
        (e.sample.index, tuple(e.sample.architecture.tokens), e.sample.reward.value)
        async for e in client.watch(search_id)
        if e.HasField("sample")
    ]


@pytest.mark.timeout(180)
async def test_agent_sigkill_mid_search_resumes_and_counts_once(tmp_path):
    mesh = Mesh(tmp_path).start_nats()
    try:
        agent = mesh.start_agent()
        for i in range(2):
            await wait_logged(mesh.start_trainer(f"t{i}", heartbeat_s=1.0, ack_wait_s=5.0), "working on")
        await mesh.wait_agent(agent)
        spec = common_pb2.SearchSpec(
            space="nasbench-graph/cora",
            strategy="ppo",
            seed=3,
            budget=common_pb2.Budget(max_activated_samples=BUDGET),
            task=common_pb2.Task(simulated_seconds=0.02),  # long enough to be killed mid-search
        )
        async with mesh.client() as client:
            search_id = await client.submit(spec)
            await wait_activated(client, search_id, 30)
        agent.kill(signal.SIGKILL)  # mid-batch: jobs in flight, results unconsumed

        agent = mesh.start_agent()
        await mesh.wait_agent(agent)
        async with mesh.client() as client:
            await counted_once(mesh, client, search_id, BUDGET)
            interrupted = await trajectory(client, search_id)
            # The same seed, uninterrupted, in the restarted agent: the restart changed nothing.
            reference = await trajectory(client, await client.submit(spec))

        assert f"resuming search {search_id}" in agent.text()
        assert [i for i, _, _ in interrupted] == list(range(len(interrupted)))  # BUDGET trained, and recalls
        assert interrupted == reference
        assert agent.kill(signal.SIGTERM) == 0
    finally:
        mesh.close()
