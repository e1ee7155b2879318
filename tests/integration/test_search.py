"""Searches through the in-process cluster: real NATS, real gRPC, real LMDB, tabular trainers."""

from __future__ import annotations

import urllib.request

import grpc
import pytest

from fnas import events, queue, spaces
from fnas.client import AgentClient
from fnas.v1 import common_pb2, search_pb2
from fnas_bench.plain_loop import arun_plain
from fnas_bench.tabular import Setup, evaluator
from services.agent import registry
from services.harness import Cluster

CORA = "nasbench-graph/cora"


def spec(strategy="ppo", seed=1, budget=40, **kw) -> common_pb2.SearchSpec:
    return common_pb2.SearchSpec(
        space=CORA, strategy=strategy, seed=seed, budget=common_pb2.Budget(max_activated_samples=budget), **kw
    )


@pytest.fixture
async def cluster(tmp_path):
    async with Cluster(tmp_path / "data", trainers=2, metrics_port=0) as c:
        yield c


@pytest.fixture
async def client(cluster):
    async with AgentClient(cluster.agent_address) as c:
        yield c


async def run_to_end(client: AgentClient, s: common_pb2.SearchSpec) -> tuple[search_pb2.SearchStatus, list]:
    search_id = await client.submit(s)
    trajectory = [e.sample async for e in client.watch(search_id) if e.HasField("sample")]
    return await client.get(search_id), trajectory


@pytest.mark.parametrize("strategy", ["ppo", "random", "evolution", "tpe", "bananas"])
async def test_search_completes_with_exact_accounting_and_matches_the_plain_loop(client, strategy):
    status, trajectory = await run_to_end(client, spec(strategy, budget=35))
    assert status.state == search_pb2.SEARCH_STATE_SUCCEEDED
    assert status.activated_samples == 35 == status.policy_samples_trained
    assert [s.index for s in trajectory] == list(range(len(trajectory)))
    assert len(trajectory) == status.policy_samples_trained + status.policy_samples_recall
    trained = [s for s in trajectory if s.source == common_pb2.SAMPLE_SOURCE_TRAINED]
    assert len({spaces.get(CORA).key(s.architecture.tokens) for s in trained}) == 35  # each trained once
    assert status.best.reward.value == max(s.reward.value for s in trajectory)
    # One code path: the plain in-memory loop gives the same samples, sources and rewards.
    space = spaces.get(CORA)
    plain = await arun_plain(registry.make(strategy, space, 1), evaluator(Setup.of(CORA, "accuracy")), 35)
    assert plain.samples == [(s.source, tuple(s.architecture.tokens), s.reward.value) for s in trajectory]
    top = await client.top(status.search_id, k=5)
    assert [s.reward.value for s in top] == sorted((s.reward.value for s in top), reverse=True)
    assert len({tuple(s.architecture.tokens) for s in top}) == len(top)
    assert top[0].reward.value == status.best.reward.value


async def test_the_event_mirror_has_a_subject_per_kind_so_ends_come_alone(cluster, client, eventually):
    bus = await queue.connect(cluster.nats_url, name="test-mirror")
    ends, mine = [], []
    try:
        await bus.subscribe(events.SEARCH_ENDS, lambda subject, data: _append(ends, subject, data))
        await bus.subscribe(events.ALL_SEARCH_EVENTS, lambda subject, data: _append(mine, subject, data))
        status, trajectory = await run_to_end(client, spec("random", budget=12))
        await eventually(lambda: len(ends) == 1)
    finally:
        await bus.close()
    # The trainers, critic and buffer subscribe to ends alone: one message per search, not one per sample.
    assert [(subject, kind) for subject, kind, _ in ends] == [
        (events.search_event(status.search_id, "finished"), "finished")
    ]
    # Every event, in order, each on the subject of its kind.
    assert [seq for _, _, seq in mine] == list(range(1, len(mine) + 1))
    assert all(subject == events.search_event(status.search_id, kind) for subject, kind, _ in mine)
    assert sum(kind == "sample" for _, kind, _ in mine) == len(trajectory) and mine[-1][1] == "finished"


async def _append(out: list, subject: str, data: bytes) -> None:
    event = search_pb2.SearchEvent.FromString(data)
    out.append((subject, event.WhichOneof("kind"), event.seq))


async def test_same_seed_same_trajectory_other_seed_differs(client):
    _, first = await run_to_end(client, spec(seed=7, budget=30))
    _, second = await run_to_end(client, spec(seed=7, budget=30))
    _, other = await run_to_end(client, spec(seed=8, budget=30))
    as_list = lambda t: [(tuple(s.architecture.tokens), s.reward.value) for s in t]  # noqa: E731
    assert as_list(first) == as_list(second)
    assert as_list(first) != as_list(other)


async def test_bad_spec_is_rejected_and_nothing_stored(client):
    bad = [
        common_pb2.SearchSpec(space="nope", budget=common_pb2.Budget(max_activated_samples=5)),
        spec(budget=-3),
        spec(strategy="annealing"),
        spec(warm_start=[common_pb2.Architecture(tokens=[0, 1, 2, 3, 42])]),
    ]
    for s in bad:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await client.submit(s)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "op4" in e.value.details() and "0..8" in e.value.details()
    assert await client.list() == []


async def test_unknown_search_is_not_found(client):
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.get("does-not-exist")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_cancel_stops_a_running_search(client, eventually):
    search_id = await client.submit(spec(budget=10_000, task=common_pb2.Task(simulated_seconds=0.05)))
    await eventually(lambda: _activated(client, search_id), timeout_s=20)
    status = await client.cancel(search_id)
    assert status.state == search_pb2.SEARCH_STATE_CANCELLED
    assert 0 < status.activated_samples < 10_000
    events = [e async for e in client.watch(search_id)]
    assert events[-1].HasField("finished") and [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_a_cancelled_search_frees_its_trainers_at_once(cluster, client, eventually):
    """Its jobs in training stop and its queued ones are dropped: the next search does not wait for them."""
    slow = await client.submit(spec(budget=100, task=common_pb2.Task(simulated_seconds=600)))
    await eventually(lambda: all(w.busy for w in cluster.workers), timeout_s=20, msg="trainers never busy")
    await client.cancel(slow)
    await eventually(
        lambda: not any(w.busy for w in cluster.workers), timeout_s=10, msg="trainers still busy"
    )
    status, _ = await run_to_end(client, spec(budget=10))
    assert status.state == search_pb2.SEARCH_STATE_SUCCEEDED and status.activated_samples == 10
    cancelled = await client.get(slow)
    assert cancelled.state == search_pb2.SEARCH_STATE_CANCELLED and cancelled.activated_samples == 0


async def _activated(client: AgentClient, search_id: str) -> bool:
    return (await client.get(search_id)).activated_samples > 0


async def test_warm_start_is_trained_first(client):
    warm = [3, 1, 1, 1, 1]
    status, trajectory = await run_to_end(
        client, spec(budget=12, warm_start=[common_pb2.Architecture(tokens=warm)])
    )
    assert list(trajectory[0].architecture.tokens) == warm
    assert status.activated_samples == 12 and status.policy_samples_trained == 11


async def test_metrics_count_activated_samples(cluster, client):
    await run_to_end(client, spec(budget=20))
    text = urllib.request.urlopen(f"http://127.0.0.1:{cluster.metrics_port}/metrics").read().decode()
    activated = next(
        line for line in text.splitlines() if line.startswith("fnas_agent_activated_samples_total")
    )
    assert float(activated.split()[-1]) >= 20
    assert 'fnas_agent_samples_total{source="trained"}' in text
    assert "fnas_trainer_jobs_total" in text
    assert 'fnas_agent_rpc_latency_seconds_count{code="OK",method="SubmitSearch"}' in text


async def test_a_search_without_the_buffer_marks_its_results_so_the_buffer_stores_none(cluster, client):
    status, trajectory = await run_to_end(client, spec(budget=10))
    results = cluster.agent.store.results(status.search_id, [s.index for s in trajectory])
    # The agent's job says it, the trainer copies it into the result the buffer reads.
    assert {(r.HasField("replayable"), r.replayable) for r in results if r} == {(True, False)}
    assert cluster.buffer.core.observed(status.search_id) == 0


async def test_watch_after_the_last_event_of_a_finished_search_returns(client):
    status, _ = await run_to_end(client, spec(budget=10))
    events = [e async for e in client.watch(status.search_id)]
    assert [e async for e in client.watch(status.search_id, after_seq=events[-1].seq)] == []
    assert [e.seq async for e in client.watch(status.search_id, after_seq=events[-2].seq)] == [events[-1].seq]


async def test_the_in_process_cluster_applies_the_agents_request_limit(cluster, client):
    """`fnas up` refuses what `fnas serve agent` refuses: requests over max_message_bytes (4 MiB)."""
    big = spec(name="n" * 1000)
    big.warm_start.extend([common_pb2.Architecture(tokens=[8, 0, 1, 1, 1])] * 600_000)  # about 5 MiB
    assert big.ByteSize() > cluster.agent.cfg.max_message_bytes == 4 * 1024 * 1024
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.submit(big)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await client.list() == []


async def test_compute_is_the_trainer_seconds_of_every_job(cluster, client):
    """Issue 24: each result carries its trainer-seconds; the status and Prometheus sum them."""
    before = _scraped(cluster, 'fnas_trainer_train_seconds_total{device="table"}')
    status, _ = await run_to_end(client, spec(budget=10, task=common_pb2.Task(simulated_seconds=0.05)))
    assert status.activated_samples == 10
    assert 10 * 0.05 <= status.trainer_seconds < 10 * 0.05 + 2.0  # the simulated training, not the waits
    assert status.trainer_setup_seconds > 0 and status.final_trainer_seconds == 0  # no final selection here
    after = _scraped(cluster, 'fnas_trainer_train_seconds_total{device="table"}')
    assert after - before == pytest.approx(status.trainer_seconds, rel=1e-6)


def _scraped(cluster, name: str) -> float:
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{cluster.metrics_port}/metrics", timeout=5).read().decode()
    )
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")), 0.0)
