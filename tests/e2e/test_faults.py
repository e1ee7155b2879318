"""The fault suite: real processes (`fnas serve ...`) on a real nats-server, one fault per case.

Each case runs a search with the tabular trainer, breaks something mid-search
and asserts that the search completes with every activated sample counted
exactly once (mesh.counted_once). Each is bounded by its own timeout.
"""

from __future__ import annotations

import asyncio
import os
import signal
import urllib.request

import pytest
from mesh import (
    Mesh,
    Proc,
    counted_once,
    free_port,
    jobs_in_hand,
    spec,
    stream_results,
    wait_activated,
    wait_logged,
)

from fnas import events
from fnas.v1 import common_pb2
from services.pool.client import PoolClient

pytestmark = pytest.mark.e2e


async def start(mesh: Mesh, trainers: int, **trainer_kw) -> tuple[Proc, list[Proc]]:
    agent = mesh.start_agent()
    workers = [mesh.start_trainer(f"t{i}", **trainer_kw) for i in range(trainers)]
    await mesh.wait_agent(agent)
    for w in workers:
        await wait_logged(w, "working on")
    return agent, workers


@pytest.fixture
def mesh(tmp_path):
    m = Mesh(tmp_path).start_nats()
    yield m
    m.close()


@pytest.fixture
def secure_mesh(tmp_path, pki):
    """NATS user/password, agent mTLS and bearer tokens, all from FNAS_<SERVICE>_* variables."""
    m = Mesh(tmp_path, secure=True, pki=pki).start_nats()
    yield m
    m.close()


async def kill_mid_job(victim: Proc, timeout_s: float = 30.0) -> str:
    """SIGKILLs the trainer while it holds a job; returns that job's id."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not (held := jobs_in_hand(victim)):
        assert asyncio.get_running_loop().time() < deadline, "the trainer never held a job"
        await asyncio.sleep(0.01)
    victim.kill()
    return held.pop()


@pytest.mark.timeout(120)
async def test_trainer_sigkill_mid_search(mesh):
    _agent, (t0, _t1) = await start(mesh, 2)
    async with mesh.client() as client:
        search_id = await client.submit(spec(budget=20, simulated_s=0.2))
        await wait_activated(client, search_id, 4)
        lost = await kill_mid_job(t0)
        await counted_once(mesh, client, search_id, budget=20)
    (result,) = [r for r in await stream_results(mesh, search_id) if r.job_id == lost]
    assert result.trainer_id == "t1"  # redelivered after ack_wait and finished by the survivor


@pytest.mark.timeout(120)
async def test_nats_server_restart_mid_search_keeps_every_sample(secure_mesh):
    mesh = secure_mesh
    agent, trainers = await start(mesh, 2)
    async with mesh.client() as client:
        search_id = await client.submit(spec(budget=40, simulated_s=0.1))
        await wait_activated(client, search_id, 12)
        mesh.nats.restart(same_port=True)  # SIGTERM flushes the file store; clients reconnect
        await counted_once(mesh, client, search_id, budget=40)
    for proc in (agent, *trainers):
        assert "reconnected" in proc.text(), proc.name
        assert mesh.secure and "e2e-nats-password" not in proc.text()  # secrets never logged


@pytest.mark.timeout(180)
async def test_a_stalled_nats_server_pauses_the_search_instead_of_failing_it(mesh):
    """SIGSTOP keeps the connections open and every publish times out: a search submitted meanwhile
    publishes its first jobs past the publish's own retries (about 16 s), then again once NATS is back."""
    agent, _trainers = await start(mesh, 2)
    async with mesh.client() as client:
        os.kill(mesh.nats.pid, signal.SIGSTOP)
        try:
            search_id = await client.submit(spec(budget=20, simulated_s=0.05))
            await wait_logged(agent, "publishes its jobs again", timeout_s=60)
        finally:
            os.kill(mesh.nats.pid, signal.SIGCONT)
        await counted_once(mesh, client, search_id, budget=20)


@pytest.mark.timeout(120)
async def test_poison_jobs_are_terminated_counted_and_the_search_goes_on(mesh):
    metrics_port = free_port()
    agent = mesh.start_agent()
    t0 = mesh.start_trainer("t0", extra=["--metrics-port", str(metrics_port)])
    await mesh.wait_agent(agent)
    await wait_logged(t0, "working on")
    nc = await mesh.nats_client()
    js = nc.jetstream()
    async with mesh.client() as client:
        search_id = await client.submit(spec(budget=30, simulated_s=0.05))
        # Garbage under a later job's id (the agent's own publish of that job is then de-duplicated),
        # and garbage nobody can be told about.
        await js.publish(events.TRAIN_JOB, b"\xff\xfe poison", headers={"Nats-Msg-Id": f"{search_id}/25"})
        await js.publish(events.TRAIN_JOB, b"\xff\xfe poison", headers={"Nats-Msg-Id": "nobody"})
        status = await counted_once(mesh, client, search_id, budget=30, failed=1)
    await nc.close()
    assert status.activated_samples == 30
    failed = [r for r in await stream_results(mesh, search_id) if r.sample_index == 25]
    assert len(failed) == 1 and failed[0].error.startswith("poison job: ")
    scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    assert 'fnas_trainer_jobs_total{outcome="poison"} 2.0' in scraped
    assert 'fnas_queue_poison_messages_total{consumer="trainer",stream="JOBS"} 2.0' in scraped


def scraped(port: int, name: str) -> float:
    """A sample's value from a process's /metrics ('name{labels}' exactly), 0 when absent."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


async def pool_stats(address: str):
    async with PoolClient(address, attempts=1, timeout_s=2) as pool:
        return await pool.stats()


@pytest.mark.timeout(240)
async def test_pool_sigkill_and_restart_mid_search_keeps_every_committed_block(mesh):
    pool_port = free_port()
    pool_address = f"127.0.0.1:{pool_port}"
    pool = mesh.start_pool(pool_port)
    agent = mesh.start_agent()
    metrics_ports = [free_port(), free_port()]
    # Tiny real training (mnas on digits, 1 epoch) in the trainer process; blocks go to the pool.
    tiny = ["--isolation", "thread", "--latency", "none", "--image-side", "8", "--width-mult", "0.25"]
    trainers = [
        mesh.start_trainer(
            f"t{i}",
            ack_wait_s=20,
            heartbeat_s=1,
            extra=[*tiny, "--pool-address", pool_address, "--metrics-port", str(port)],
        )
        for i, port in enumerate(metrics_ports)
    ]
    await mesh.wait_agent(agent)
    for proc in (pool, *trainers):
        await wait_logged(proc, "pool ready" if proc is pool else "working on", timeout_s=60)
    mnas = common_pb2.SearchSpec(
        space="mnas",
        strategy="ppo",
        seed=5,
        batch_size=4,
        budget=common_pb2.Budget(max_activated_samples=8),
        task=common_pb2.Task(dataset="digits", epochs=1),
        final_top_k=0,  # no final retrains: this case is about the pool
    )
    async with mesh.client() as client:
        search_id = await client.submit(mnas)
        deadline = asyncio.get_running_loop().time() + 120
        while (before := (await pool_stats(pool_address)).blocks) == 0:
            assert asyncio.get_running_loop().time() < deadline, "no block reached the pool"
            await asyncio.sleep(0.1)
        pool.kill()  # SIGKILL: puts in flight fail or are retried; committed ones must survive
        await asyncio.sleep(1.0)
        pool = mesh.start_pool(pool_port)
        await wait_logged(pool, "pool ready", timeout_s=60)
        await counted_once(mesh, client, search_id, budget=8, timeout_s=180)
    after = await pool_stats(pool_address)
    committed = sum(scraped(p, 'fnas_trainer_pool_blocks_total{kind="put"}') for p in metrics_ports)
    assert after.blocks >= before > 0  # nothing acknowledged before the kill was lost
    assert after.blocks >= committed > 0  # every put the pool acknowledged is there
    assert after.jobs <= 8  # blocks only of trained samples, each job once


@pytest.mark.timeout(90)
async def test_sigterm_stops_services_whose_nats_is_unreachable(tmp_path):
    mesh = Mesh(tmp_path)  # nats-server never started: its port refuses connections
    try:
        agent, trainer = mesh.start_agent(), mesh.start_trainer("t0")
        for proc in (agent, trainer):  # both keep retrying NATS, as they should...
            await wait_logged(proc, "Connect call failed", timeout_s=60)
        for proc in (agent, trainer):  # ...and a SIGTERM still stops them, cleanly
            assert await asyncio.to_thread(proc.kill, signal.SIGTERM) == 0, proc.text()[-2000:]
    finally:
        mesh.close()
