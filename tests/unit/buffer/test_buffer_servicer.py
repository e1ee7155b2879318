"""BufferService through a real aio server on port 0, with its LMDB store in tmp_path."""

from __future__ import annotations

import math

import grpc
import pytest

from fnas import serving
from fnas.v1 import buffer_pb2, buffer_pb2_grpc, common_pb2, queue_pb2, search_pb2
from services.buffer.aeb import Entry
from services.buffer.client import BufferClient
from services.buffer.core import BufferCore
from services.buffer.servicer import BufferServicer
from services.buffer.store import BufferStore


@pytest.fixture
async def served(tmp_path):
    store = BufferStore(tmp_path / "buffer")
    servicer = BufferServicer(BufferCore(store), wait_s=0.3)

    def add(server) -> tuple[str, ...]:
        buffer_pb2_grpc.add_BufferServiceServicer_to_server(servicer, server)
        return (buffer_pb2.DESCRIPTOR.services_by_name["BufferService"].full_name,)

    running = await serving.start([add], serving.ServerConfig(port=0, grace_s=0))
    client = BufferClient(f"127.0.0.1:{running.port}")
    try:
        yield servicer, client, tmp_path / "buffer"
    finally:
        await client.close()
        await running.server.stop(0)
        servicer.core.store.close()


def result(
    i: int, reward: float, log_prob: float = -2.0, ok: bool = True, search_id: str = "s1", **kw
) -> bytes:
    return queue_pb2.TrainResult(
        search_id=search_id,
        sample_index=i,
        architecture=common_pb2.Architecture(tokens=[i, 0, 0, 0, 0]),
        reward=common_pb2.Reward(value=reward),
        outcome=queue_pb2.TRAIN_OUTCOME_OK if ok else queue_pb2.TRAIN_OUTCOME_FAILED,
        behaviour_log_prob=log_prob,
        **kw,
    ).SerializeToString()


async def test_only_results_a_search_may_replay_are_stored(served):
    servicer, client, _ = served
    await servicer.on_results(
        [
            result(0, 0.5, search_id="ppo", replayable=False),  # a search without the AEB
            result(0, 0.5, search_id="fnas", replayable=True),
            result(1, 0.6, search_id="fnas", replayable=False, final_rank=1),  # a final retrain
            result(0, 0.5, search_id="old-agent"),  # unset: an agent of an earlier version
        ]
    )
    assert [(await client.stats(s))[1] for s in ("ppo", "fnas", "old-agent")] == [0, 1, 1]
    assert [e.index for e in servicer.core.store.entries("ppo")] == []


async def test_sample_replays_the_best_distinct_rewards_with_weights_and_log_probs(served):
    servicer, client, _ = served
    # One fetched batch (one transaction); a result repeated in it counts once.
    await servicer.on_results(
        [result(i, 0.5 + 0.01 * i, log_prob=-float(i)) for i in range(20)] + [result(3, 0.53, log_prob=-3.0)]
    )
    await servicer.on_results([result(20, 0.99, log_prob=math.nan)])  # a warm start: never replayed
    await servicer.on_results([result(21, 0.99, ok=False)])
    drawn = await client.sample("s1", n=50, beta=1.0, seed=3, min_observed=21, capacity=4, temperature=0.01)
    assert {r.entry.index for r in drawn} <= {16, 17, 18, 19}
    assert all(r.entry.log_prob == -r.entry.index for r in drawn)
    weights = {r.entry.index: r.weight for r in drawn}
    assert max(weights.values()) == 1.0 and weights[19] < weights[16]  # likelier draws weigh less
    assert drawn == await client.sample("s1", 50, 1.0, 3, 21, 4, 0.01)
    assert await client.stats("s1", capacity=4) == (4, 21)


async def test_bad_input_and_waiting_for_results(served):
    servicer, client, _ = served
    for kw, field in ((dict(beta=1.5), "beta:"), (dict(n=100_000), "n:"), (dict(search_id=""), "search_id:")):
        request = buffer_pb2.SampleRequest(**({"search_id": "s1", "n": 1, "beta": 0.5} | kw))
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await client.stub.Sample(request, timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith(field)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.stub.Sample(buffer_pb2.SampleRequest(search_id="s1", n=1, min_observed=2), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    bad = common_pb2.Sample(
        reward=common_pb2.Reward(value=math.inf), architecture=common_pb2.Architecture(tokens=[1])
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.add("s1", [bad])
    assert e.value.details().startswith("samples[0].reward.value:") and servicer.core.observed("s1") == 0


async def test_a_restarted_buffer_loses_nothing(served):
    servicer, _, path = served
    for i in range(12):
        await servicer.on_results([result(i, 0.5 + 0.01 * (i % 6))])
    expected = servicer.core.replays("s1", 8, 0.5, 1, 12)
    servicer.core.store.close()
    again = BufferCore(BufferStore(path))
    assert again.observed("s1") == 12 and again.replays("s1", 8, 0.5, 1, 12) == expected
    servicer.core.store = again.store


async def test_a_finished_search_leaves_memory_for_good_and_comes_back_whole_from_the_store(served):
    servicer, _, path = served
    for i in range(12):
        await servicer.on_results([result(i, 0.5 + 0.01 * (i % 6))])
    expected = servicer.core.replays("s1", 8, 0.5, 1, 12)
    running = search_pb2.SearchEvent(search_id="s1", seq=3, update=search_pb2.SearchStatus(search_id="s1"))
    await servicer.on_search_end("fnas.agent.event.s1", running.SerializeToString())
    assert "s1" in servicer.core._histories  # progress events change nothing
    finished = search_pb2.SearchEvent(search_id="s1", seq=4, finished=search_pb2.SearchStatus(search_id="s1"))
    await servicer.on_search_end("fnas.agent.event.s1", finished.SerializeToString())
    assert "s1" not in servicer.core._histories
    assert servicer.core.observed("s1") == 12 and servicer.core.replays("s1", 8, 0.5, 1, 12) == expected
    # A result redelivered after the end, and one that came late: stored, counted once, not kept in memory.
    await servicer.on_results([result(3, 0.53), result(12, 0.6)])
    assert "s1" not in servicer.core._histories and servicer.core.observed("s1") == 13
    # A restarted buffer knows the search ended: a redelivered result does not bring it back either.
    servicer.core.store.close()
    servicer.core = again = BufferCore(BufferStore(path))  # the fixture closes its store
    await servicer.on_results([result(5, 0.55)])
    assert "s1" not in again._histories and again.replays("s1", 8, 0.5, 1, 12) == expected
    memory_only = BufferCore()
    memory_only.add("s2", Entry(0, (1, 2), 0.5, -1.0))
    memory_only.forget("s2")  # without a store, memory is the only copy: kept
    assert memory_only.observed("s2") == 1


async def test_a_late_batch_of_an_ended_search_reads_its_history_once(served, monkeypatch):
    servicer, _, _ = served
    await servicer.on_results([result(i, 0.5) for i in range(5)])
    servicer.core.forget("s1")
    reads = []
    entries = servicer.core.store.entries
    monkeypatch.setattr(servicer.core.store, "entries", lambda sid: reads.append(sid) or entries(sid))
    await servicer.on_results([result(i, 0.5) for i in range(3, 8)])  # 2 redelivered, 3 late
    assert reads == ["s1"] and servicer.core.observed("s1") == 8
