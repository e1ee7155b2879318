"""A frozen critic (SIGSTOP, then SIGCONT) mid-search: the search goes on and counts every sample once.

Before, the agent's timed-out Predict was retried while the abandoned call's
training round still ran in the critic, two rounds trained the same nets at
once (Adam's `KeyError: 'exp_avg_sq'`) and the search failed. Now the critic
runs one round at a time per search, and the agent trains the batch itself
once the critic has not answered within its patience.
"""

from __future__ import annotations

import asyncio
import signal

import pytest
from mesh import Mesh, free_port, stream_results, wait_activated, wait_logged

from fnas.v1 import common_pb2, queue_pb2, search_pb2

pytestmark = pytest.mark.e2e

BUDGET = 80


@pytest.fixture
def mesh(tmp_path):
    m = Mesh(tmp_path).start_nats()
    yield m
    m.close()


@pytest.mark.timeout(180)
async def test_a_frozen_critic_degrades_batches_and_the_search_completes_with_exact_counts(mesh):
    critic_port, buffer_port = free_port(), free_port()
    critic = mesh.start_helper("critic", critic_port)
    buffer = mesh.start_helper("buffer", buffer_port)
    agent = mesh.start_agent(
        [
            "--critic-address", f"127.0.0.1:{critic_port}",
            "--buffer-address", f"127.0.0.1:{buffer_port}",
            "--module-patience-s", "3",
        ]
    )  # fmt: skip
    trainers = [mesh.start_trainer(f"t{i}") for i in range(2)]
    await mesh.wait_ready(agent, [critic, buffer], trainers)
    spec = common_pb2.SearchSpec(
        space="nasbench-graph/cora",
        strategy="fnas",
        seed=3,
        budget=common_pb2.Budget(max_activated_samples=BUDGET),
        task=common_pb2.Task(simulated_seconds=0.05),
    )
    async with mesh.client() as client:
        search_id = await client.submit(spec)
        await wait_activated(client, search_id, 20, timeout_s=90)
        critic.popen.send_signal(signal.SIGSTOP)
        try:
            await wait_logged(agent, "critic unavailable", timeout_s=60)
        finally:
            await asyncio.sleep(1.0)
            critic.popen.send_signal(signal.SIGCONT)
        events: list[common_pb2.Sample] = []

        async def follow() -> None:
            async for event in client.watch(search_id):
                if event.HasField("sample"):
                    events.append(event.sample)

        await asyncio.wait_for(follow(), 120)
        status = await client.get(search_id)
    assert status.state == search_pb2.SEARCH_STATE_SUCCEEDED, status.error
    assert status.activated_samples == BUDGET and status.failed_samples == 0
    assert critic.popen.poll() is None, critic.text()[-3000:]
    assert "Traceback" not in critic.text(), critic.text()[-3000:]
    indices = [s.index for s in events]
    assert len(indices) == len(set(indices)), "a sample was learned from twice"
    results = [r for r in await stream_results(mesh, search_id) if not r.final_rank]
    jobs = [r.job_id for r in results]
    assert len(jobs) == len(set(jobs)) == BUDGET, "a job was trained twice or lost"
    assert all(r.outcome == queue_pb2.TRAIN_OUTCOME_OK for r in results)
    trained = {s.index for s in events if s.source == common_pb2.SAMPLE_SOURCE_TRAINED}
    assert {r.sample_index for r in results} <= trained
