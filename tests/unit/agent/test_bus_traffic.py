"""The agent's traffic on the bus: jobs awaited beside the results, and the event mirror behind the
search's loop, in order, complete at the search's end."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from fnas.v1 import common_pb2, search_pb2
from services.agent.search_run import SearchRun
from services.agent.servicer import AgentServicer
from services.agent.store import AgentStore


class SlowBus:
    """Records each publish when it is sent; its ack comes `ack_s[seq]` later (or it fails)."""

    def __init__(self, ack_s: dict[int, float], failing: set[int] = frozenset()) -> None:
        self.ack_s, self.failing = ack_s, failing
        self.sent: list[int] = []
        self.acked: list[int] = []

    async def publish(self, subject: str, event: search_pb2.SearchEvent, msg_id: str) -> None:
        assert msg_id == f"event/s1/{event.seq}"
        assert subject == f"fnas.agent.event.s1.{event.WhichOneof('kind')}"  # a subject per kind
        self.sent.append(event.seq)
        await asyncio.sleep(self.ack_s.get(event.seq, 0.0))
        if event.seq in self.failing:
            raise ConnectionError("nats is away")
        self.acked.append(event.seq)


def batch(*seqs: int, finished: bool = False) -> list[search_pb2.SearchEvent]:
    kind = (
        {"finished": search_pb2.SearchStatus(search_id="s1")}
        if finished
        else {"update": search_pb2.SearchStatus()}
    )
    return [search_pb2.SearchEvent(search_id="s1", seq=seq, **kind) for seq in seqs]


async def test_batches_are_mirrored_in_order_behind_the_loop_and_all_before_the_end(tmp_path):
    bus = SlowBus({1: 0.2, 2: 0.1, 4: 0.05})
    agent = AgentServicer(AgentStore(tmp_path), bus)
    started = asyncio.get_running_loop().time()
    await agent._publish_events("s1", batch(1, 2, 3))
    await agent._publish_events("s1", batch(4, 5))
    # The loop went on without the acks (waiting for the first batch's would take 0.2 s; the margin is for
    # a loaded machine).
    assert asyncio.get_running_loop().time() - started < 0.18
    await agent._publish_events("s1", batch(6, finished=True))
    # The second batch went out after the first was acked, the end after everything.
    assert bus.sent == [1, 2, 3, 4, 5, 6]
    assert sorted(bus.acked) == [1, 2, 3, 4, 5, 6]
    assert not agent._mirrors


async def test_a_batch_the_bus_refuses_is_logged_and_the_search_goes_on(tmp_path, caplog):
    bus = SlowBus({}, failing={2})
    agent = AgentServicer(AgentStore(tmp_path), bus)
    with caplog.at_level(logging.WARNING, logger="services.agent.servicer"):
        await agent._publish_events("s1", batch(1, 2))
        await agent._publish_events("s1", batch(3))
        await agent._publish_events("s1", batch(4, finished=True))
    assert bus.sent == [1, 2, 3, 4] and bus.acked == [1, 3, 4]
    assert "events 1-2 of search s1 not mirrored" in caplog.text
    # The end itself fails the way a publish fails.
    with pytest.raises(ConnectionError):
        await AgentServicer(AgentStore(tmp_path / "b"), SlowBus({}, failing={9}))._publish_events(
            "s1", batch(9, finished=True)
        )


async def test_a_job_the_bus_refuses_fails_the_search_without_waiting_for_results(tmp_path):
    store = AgentStore(tmp_path)
    spec = common_pb2.SearchSpec(
        space="nasbench-graph/cora",
        strategy="random",
        budget=common_pb2.Budget(max_activated_samples=20),
    )
    store.put_status(
        search_pb2.SearchStatus(
            search_id="s1", state=search_pb2.SEARCH_STATE_RUNNING, spec=spec, created_at=time.time()
        )
    )

    async def refuse(job) -> None:
        raise ConnectionError("nats is away")

    finished: list[search_pb2.SearchEvent] = []

    async def on_events(search_id: str, new: list[search_pb2.SearchEvent]) -> None:
        finished.extend(e for e in new if e.HasField("finished"))

    # Well within the one-second poll of a wait for results: the failed publish ends the wait.
    await asyncio.wait_for(SearchRun("s1", store, refuse, on_events).run(), 0.8)
    status = store.status("s1")
    assert status.state == search_pb2.SEARCH_STATE_FAILED and "nats is away" in status.error
    assert [e.finished.state for e in finished] == [search_pb2.SEARCH_STATE_FAILED]


async def test_a_search_waiting_for_results_ends_on_a_cancel_that_comes_with_a_wake_up(tmp_path):
    """The agent's close cancels its searches; a result's wake-up in the same loop step must not
    swallow that cancel (asyncio.wait_for on Python 3.11 did, and the search then waited forever)."""
    store = AgentStore(tmp_path)
    spec = common_pb2.SearchSpec(
        space="nasbench-graph/cora", strategy="random", budget=common_pb2.Budget(max_activated_samples=20)
    )
    store.put_status(
        search_pb2.SearchStatus(
            search_id="s1", state=search_pb2.SEARCH_STATE_RUNNING, spec=spec, created_at=time.time()
        )
    )

    async def accept(job) -> None:
        pass

    async def on_events(search_id: str, new: list[search_pb2.SearchEvent]) -> None:
        pass

    run = SearchRun("s1", store, accept, on_events)
    task = asyncio.create_task(run.run())
    await asyncio.sleep(0.2)  # its jobs are out; it waits for their results (there are no trainers)
    run.notify()
    task.cancel()
    await asyncio.wait({task}, timeout=3)
    assert task.cancelled()
    assert store.status("s1").state == search_pb2.SEARCH_STATE_RUNNING  # resumed on the next start
