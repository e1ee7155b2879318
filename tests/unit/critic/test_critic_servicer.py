"""CriticService through a real aio server on port 0, with its LMDB store in tmp_path."""

from __future__ import annotations

import json

import grpc
import pytest
import safetensors.torch
import torch

from fnas import serving
from fnas.v1 import common_pb2, queue_pb2, search_pb2
from services.critic.client import CriticClient
from services.critic.core import CriticCore
from services.critic.model import FitConfig
from services.critic.search_critic import read
from services.critic.servicer import CriticServicer
from services.critic.store import CriticStore

torch.set_num_threads(1)
CORA = "nasbench-graph/cora"


def arch(i: int) -> list[int]:
    return [8, i % 9, (i // 9) % 9, 1, 1]


@pytest.fixture
async def served(tmp_path):
    """(servicer, client, store path) of a critic on 127.0.0.1:0."""
    store = CriticStore(tmp_path / "critic")
    servicer = CriticServicer(CriticCore(fit=FitConfig(steps=3), store=store), wait_s=0.3)
    running = await serving.start([lambda s: _add(s, servicer)], serving.ServerConfig(port=0, grace_s=0))
    client = CriticClient(f"127.0.0.1:{running.port}")
    try:
        yield servicer, client, tmp_path / "critic"
    finally:
        await client.close()
        await running.server.stop(0)
        store.close()


def _add(server, servicer) -> tuple[str, ...]:
    from fnas.v1 import critic_pb2, critic_pb2_grpc

    critic_pb2_grpc.add_CriticServiceServicer_to_server(servicer, server)
    return (critic_pb2.DESCRIPTOR.services_by_name["CriticService"].full_name,)


def result(i: int, reward: float, ok: bool = True) -> bytes:
    return queue_pb2.TrainResult(
        search_id="s1",
        sample_index=i,
        architecture=common_pb2.Architecture(space=CORA, tokens=arch(i)),
        reward=common_pb2.Reward(value=reward),
        outcome=queue_pb2.TRAIN_OUTCOME_OK if ok else queue_pb2.TRAIN_OUTCOME_FAILED,
    ).SerializeToString()


async def code_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    return e.value.code(), e.value.details()


async def test_bad_input_is_invalid_argument_and_nothing_is_stored(served):
    servicer, client, _ = served
    stub = client.stub
    from fnas.v1 import critic_pb2

    assert (await code_of(client.open_search("", CORA, 0)))[0] == grpc.StatusCode.INVALID_ARGUMENT
    code, details = await code_of(client.open_search("s1", "nope", 0))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("space:")
    code, details = await code_of(client.open_search("s1", CORA, 0, common_pb2.FnasOptions(target_error=-1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("options.target_error:")
    code, details = await code_of(client.open_search("s1", CORA, 0, snapshot_id="missing"))
    assert code == grpc.StatusCode.NOT_FOUND and details.startswith("snapshot_id:")
    code, details = await code_of(client.open_search("s1", CORA, 0, history=["never"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("history[0]:")
    assert servicer.core.get("s1") is None
    code, _ = await code_of(stub.Predict(critic_pb2.PredictRequest(search_id="s1"), timeout=5))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    await client.open_search("s1", CORA, 0)
    bad = critic_pb2.PredictRequest(search_id="s1", architectures=[common_pb2.Architecture(tokens=[0, 1])])
    code, details = await code_of(stub.Predict(bad, timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("architectures[0].tokens:")
    code, details = await code_of(client.import_snapshot(b"not safetensors", CORA))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("weights:")
    bad_obs = common_pb2.Sample(architecture=common_pb2.Architecture(space=CORA, tokens=[9, 9, 9, 9, 9]))
    code, details = await code_of(client.observe("s1", [bad_obs]))
    assert details.startswith("samples[0].architecture:") and servicer.core.observed("s1") == 0


async def test_predict_waits_for_min_observed_then_answers_from_the_first_n(served):
    servicer, client, _ = served
    await client.open_search("s1", CORA, 7, common_pb2.FnasOptions(warmup=3, threshold=1e9))
    # One fetched batch: failed results teach nothing, a result repeated in it counts once.
    await servicer.on_results([result(0, 0.7), result(1, 0.71), result(3, 0.1, ok=False), result(1, 0.71)])
    await servicer.on_results([result(2, 0.72), result(1, 0.99)])  # a redelivery is dropped
    assert servicer.core.observed("s1") == 3
    assert sorted(i for _, i, _, _ in servicer.core.store.observations("s1")) == [0, 1, 2]
    code, details = await code_of(servicer_predict(client, 4))
    assert code == grpc.StatusCode.UNAVAILABLE and "observed 3 of 4" in details
    preds = await client.predict("s1", CORA, [arch(1), arch(40)], 3)
    assert preds[0].known and preds[0].value == pytest.approx(0.71) and preds[0].trusted
    assert not preds[1].known and preds[1].trusted == (preds[1].value <= 0.72)


async def servicer_predict(client: CriticClient, n: int):
    """One Predict call without the client's retries."""
    from fnas.v1 import critic_pb2

    request = critic_pb2.PredictRequest(
        search_id="s1", architectures=[common_pb2.Architecture(tokens=arch(0))], min_observed=n
    )
    return await client.stub.Predict(request, timeout=5)


async def test_a_restarted_critic_loses_nothing(served, tmp_path):
    servicer, client, path = served
    await client.open_search("s1", CORA, 3, common_pb2.FnasOptions(warmup=0))
    for i in range(25):
        await servicer.on_results([result(i, 0.6 + 0.01 * (i % 5))])
    await client.predict("s1", CORA, [arch(0)], 10)
    queries = [arch(i) for i in range(50, 60)]
    expected = servicer.core.predict("s1", queries, 20)
    servicer.core.store.close()
    # A new process: the same LMDB, nothing in memory.
    again = CriticCore(fit=FitConfig(steps=3), store=CriticStore(path))
    try:
        assert again.observed("s1") == 25
        assert again.predict("s1", queries, 20) == expected
    finally:
        again.store.close()
        servicer.core.store = CriticStore(path)  # the fixture closes it


async def test_snapshot_export_import_and_transfer_to_another_task(served):
    servicer, client, _ = served
    await client.open_search("s1", CORA, 1, common_pb2.FnasOptions(warmup=0))
    for i in range(20):
        await servicer.on_results([result(i, 0.6 + 0.01 * (i % 7))])
    await client.predict("s1", CORA, [], 20)
    snapshot_id, weights = await client.export_snapshot("s1")
    assert await client.import_snapshot(weights, "nasbench-graph/citeseer") == snapshot_id
    code, details = await code_of(client.import_snapshot(weights, "mnas"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "tokens differ" in details
    # A snapshot of an older version, made on the plain one-hot of whichever token list was sampled.
    tensors, meta = read(weights)
    del meta["embedding"]
    stale = safetensors.torch.save(tensors, metadata={"fnas": json.dumps(meta)})
    code, details = await code_of(client.import_snapshot(stale, CORA))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'one-hot' embedding" in details and "'graph-canonical-and-mean-one-hot'" in details
    await client.open_search("s2", "nasbench-graph/citeseer", 2, snapshot_id=snapshot_id)
    x = torch.eye(servicer.core.get("s2").space.embedding_size)[:3]
    transferred = servicer.core.get("s2").model.predict(x)[0]
    trained = servicer.core.get("s1").model.predict(x)[0]
    assert (transferred == trained).all()
    await client.open_search("s3", "nasbench-graph/pubmed", 2, history=["s1"])
    assert servicer.core.get("s3").observed == 0  # pre-trained on s1's results, which stay s1's
    # s1 ends (memory drops it); a resuming agent opens s3 again: its critic is there, and no
    # history is read from the store again.
    servicer.core.forget("s1")
    store, reads = servicer.core.store, []
    observations = store.observations
    store.observations = lambda search_id: reads.append(search_id) or observations(search_id)
    await client.open_search("s3", "nasbench-graph/pubmed", 2, history=["s1"])
    assert reads == []
    assert (await code_of(client.export_snapshot("nope")))[0] == grpc.StatusCode.NOT_FOUND


async def test_a_retried_predict_waits_for_the_abandoned_round_and_trains_once(served, monkeypatch):
    """A Predict whose deadline passes mid-round must not let its retry train the same nets beside it."""
    import threading
    import time

    from services.critic.model import CriticNets

    servicer, client, _ = served
    await client.open_search("s1", CORA, 7, common_pb2.FnasOptions(warmup=3))
    for i in range(12):
        await servicer.on_results([result(i, 0.6 + 0.01 * i)])
    fit, lock = CriticNets.fit, threading.Lock()
    running, seen = [0], {"max": 0, "rounds": 0}

    def slow_fit(self, *args, **kw):
        with lock:
            running[0] += 1
            seen["max"], seen["rounds"] = max(seen["max"], running[0]), seen["rounds"] + 1
        try:
            time.sleep(0.6)  # a slow round: the first call's deadline passes inside it
            return fit(self, *args, **kw)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(CriticNets, "fit", slow_fit)
    from fnas.v1 import critic_pb2

    request = critic_pb2.PredictRequest(
        search_id="s1", architectures=[common_pb2.Architecture(tokens=arch(0))], min_observed=12
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.stub.Predict(request, timeout=0.2)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    preds = await client.predict("s1", CORA, [arch(0)], 12)  # the retry
    assert len(preds) == 1 and preds[0].known
    assert seen == {"max": 1, "rounds": 1}
    assert servicer.core.get("s1").trained.n_trained == 12


async def test_an_ended_search_stays_out_of_memory_also_after_a_redelivery_or_a_restart(served):
    servicer, client, path = served
    await client.open_search("s1", CORA, 3, common_pb2.FnasOptions(warmup=0))
    for i in range(12):
        await servicer.on_results([result(i, 0.6 + 0.01 * (i % 5))])
    expected = servicer.core.predict("s1", [arch(50)], 12)
    finished = search_pb2.SearchEvent(search_id="s1", finished=search_pb2.SearchStatus(search_id="s1"))
    await servicer.on_search_end("fnas.agent.event.s1.finished", finished.SerializeToString())
    resident = lambda core: "s1" in core.critics or "s1" in core._history  # noqa: E731
    assert not resident(servicer.core)
    # A result redelivered after the end, and one that came late: stored, counted once, not kept in memory.
    await servicer.on_results([result(3, 0.63), result(12, 0.7)])
    assert not resident(servicer.core) and servicer.core.observed("s1") == 13
    # What a later call needs (an export, a prediction) is read from the store, and still not kept.
    assert servicer.core.predict("s1", [arch(50)], 12) == expected
    await client.export_snapshot("s1")
    assert not resident(servicer.core) and "s1" not in servicer._locks
    # A restarted critic knows the search ended: a redelivered result does not bring it back either.
    servicer.core.store.close()
    again = CriticCore(fit=FitConfig(steps=3), store=CriticStore(path))
    servicer.core = again  # the fixture closes its store
    await servicer.on_results([result(5, 0.65)])
    assert not resident(again) and again.observed("s1") == 13
