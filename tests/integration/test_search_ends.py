"""The critic and buffer free an ended search's memory, also when the search ended while they were down.

Real NATS JetStream, the real apps on real LMDB stores: a service hears of ends
through a durable consumer, so a restarted one catches up on the ends it missed,
and a result that comes after the end is stored but does not bring the search
back into memory.
"""

from __future__ import annotations

import pytest

from fnas import events
from fnas.v1 import common_pb2, queue_pb2, search_pb2
from services.buffer.app import BufferApp
from services.buffer.config import BufferConfig
from services.critic.app import CriticApp
from services.critic.config import CriticConfig

CORA = "nasbench-graph/cora"


def result(index: int) -> queue_pb2.TrainResult:
    return queue_pb2.TrainResult(
        search_id="s1",
        sample_index=index,
        architecture=common_pb2.Architecture(space=CORA, tokens=[8, index % 9, 1, 1, 1]),
        reward=common_pb2.Reward(value=0.5),
        outcome=queue_pb2.TRAIN_OUTCOME_OK,
    )


def buffer_app(nats_url, data_dir):
    app = BufferApp(BufferConfig(nats_url=nats_url, data_dir=data_dir, port=0))
    return app, lambda: app.core.observed("s1"), lambda: "s1" in app.core._histories


def critic_app(nats_url, data_dir):
    app = CriticApp(CriticConfig(nats_url=nats_url, data_dir=data_dir, port=0))
    core = app.core
    return app, lambda: core.observed("s1"), lambda: "s1" in core._history or "s1" in core.critics


@pytest.mark.parametrize("make", [buffer_app, critic_app], ids=["buffer", "critic"])
async def test_a_service_down_when_a_search_ended_hears_of_it_on_restart(
    make, bus, nats_url, tmp_path, eventually
):
    await bus.ensure_streams()
    app, observed, resident = make(nats_url, tmp_path)
    await app.warm_up()
    try:
        await bus.publish(events.train_result("s1"), result(0), msg_id="r0")
        await eventually(lambda: observed() == 1 and resident())
    finally:
        await app.close()
    finished = search_pb2.SearchEvent(search_id="s1", finished=search_pb2.SearchStatus(search_id="s1"))
    await bus.publish(events.search_event("s1", "finished"), finished)
    await bus.publish(events.train_result("s1"), result(1), msg_id="r1")  # a late result
    app, observed, resident = make(nats_url, tmp_path)
    await app.warm_up()
    try:
        await eventually(lambda: app.store.ended("s1"), msg="the end was missed")
        await eventually(lambda: observed() == 2, msg="the late result was not stored")
        assert not resident()
    finally:
        await app.close()
