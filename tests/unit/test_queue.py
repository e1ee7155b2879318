"""The JetStream bus on a real nats-server: work queue, redelivery, de-duplication, advisories, restart."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import nats.js.errors
import pytest

from fnas import config, events, queue
from fnas.nats_server import EmbeddedNats
from fnas.queue import Poison, StuckMessage
from services.agent.config import AgentConfig
from services.buffer.config import BufferConfig
from services.critic.config import CriticConfig
from services.trainer.config import TrainerConfig

pytestmark = pytest.mark.timeout(20)


@contextlib.asynccontextmanager
async def working(bus: queue.Bus, handler: queue.WorkHandler, **kw):
    """Runs bus.work on the train-job queue in the background; stops it on exit."""
    stop = asyncio.Event()
    kw.setdefault("fetch_timeout_s", 0.2)
    task = asyncio.create_task(bus.work(events.TRAIN_JOB, events.TRAINER, handler, stop, **kw))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def stream_messages(bus: queue.Bus, stream: str = events.JOBS) -> int:
    return (await bus.js.stream_info(stream)).state.messages


async def stream_count_is(bus: queue.Bus, n: int, stream: str = events.JOBS) -> bool:
    return await stream_messages(bus, stream) == n


@pytest.mark.parametrize(("seconds", "batched"), [(0.0, True), (0.03, False)])
async def test_quick_jobs_come_in_batches_slow_ones_alone(bus, eventually, seconds, batched):
    """Jobs of milliseconds (table lookups) are fetched and handled several at a time; a job that
    takes longer than the batch's hold comes alone, so none waits in one worker's hands."""
    await bus.ensure_streams(ack_wait_s=5, max_deliver=3)
    n = 40 if batched else 8
    for i in range(n):
        await bus.publish(events.TRAIN_JOB, f"j{i}".encode(), msg_id=f"s/{i}")
    done: list[bytes] = []
    in_flight, most = 0, 0

    async def handler(data: bytes, heartbeat: queue.Heartbeat) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(seconds)
        in_flight -= 1
        done.append(data)

    async with working(bus, handler, max_batch=16):
        await eventually(lambda: len(done) == n)
        await eventually(lambda: stream_count_is(bus, 0))  # each acked
    assert sorted(done) == sorted(f"j{i}".encode() for i in range(n))
    assert (most > 1) is batched and most <= 16


async def test_publish_work_ack_removes_job(bus, eventually):
    await bus.ensure_streams(ack_wait_s=5, max_deliver=3)
    got: list[bytes] = []

    async def handler(data: bytes, heartbeat: queue.Heartbeat) -> None:
        got.append(data)

    ack = await bus.publish(events.TRAIN_JOB, b"job-1", msg_id="s/1")
    assert ack.stream == events.JOBS and ack.seq == 1
    async with working(bus, handler):
        await eventually(lambda: got == [b"job-1"])
        # The work queue drops a job once it is acked.
        await eventually(lambda: stream_count_is(bus, 0))
    assert got == [b"job-1"]


async def test_unacked_job_is_redelivered_after_ack_wait(bus, eventually):
    await bus.ensure_streams(ack_wait_s=0.5, max_deliver=5)
    await bus.publish(events.TRAIN_JOB, b"job", msg_id="s/1")
    # A worker that takes the job and dies: fetched, never acked.
    sub = await bus.js.pull_subscribe_bind(events.TRAINER, stream=events.JOBS)
    (taken,) = await sub.fetch(1, timeout=2)
    await sub.unsubscribe()
    assert taken.data == b"job"
    seen: list[int] = []

    async def handler(data: bytes, heartbeat: queue.Heartbeat) -> None:
        seen.append(len(seen))

    loop = asyncio.get_running_loop()
    start = loop.time()
    async with working(bus, handler):
        await eventually(lambda: seen == [0])
        waited = loop.time() - start
    assert 0.3 < waited < 3.0  # came back only once ack_wait expired
    assert await stream_messages(bus) == 0


async def test_msg_id_deduplicates(bus):
    await bus.ensure_streams()
    first = await bus.publish(events.train_result("s1"), b"r", msg_id="result/s1/0")
    again = await bus.publish(events.train_result("s1"), b"r-again", msg_id="result/s1/0")
    other = await bus.publish(events.train_result("s1"), b"r", msg_id="result/s1/1")
    assert not first.duplicate
    assert again.duplicate and again.seq == first.seq
    assert other.seq == first.seq + 1
    assert await stream_messages(bus, events.EVENTS) == 2


async def test_heartbeat_keeps_slow_job_from_redelivery(bus, eventually):
    await bus.ensure_streams(ack_wait_s=0.5, max_deliver=5)
    runs: list[int] = []
    done = asyncio.Event()

    async def slow(data: bytes, heartbeat: queue.Heartbeat) -> None:
        runs.append(1)
        for _ in range(8):  # 1.6 s, three times ack_wait
            await asyncio.sleep(0.2)
            await heartbeat()
        done.set()

    await bus.publish(events.TRAIN_JOB, b"slow", msg_id="s/1")
    # Two workers on the shared consumer: without heartbeats the second would get the job after 0.5 s.
    async with working(bus, slow), working(bus, slow):
        await asyncio.wait_for(done.wait(), 5)
        await asyncio.sleep(0.7)  # past another ack_wait: nothing comes back
    assert runs == [1]
    assert await stream_messages(bus) == 0


async def test_poison_is_terminated_and_loop_continues(bus, eventually):
    await bus.ensure_streams(ack_wait_s=0.5, max_deliver=5)
    calls: list[bytes] = []
    ok: list[bytes] = []

    async def handler(data: bytes, heartbeat: queue.Heartbeat) -> None:
        calls.append(data)
        if data == b"bad":
            raise Poison("cannot ever work")
        ok.append(data)

    for i, payload in enumerate((b"bad", b"good")):
        await bus.publish(events.TRAIN_JOB, payload, msg_id=f"s/{i}")
    async with working(bus, handler):
        await eventually(lambda: ok == [b"good"])
        await asyncio.sleep(0.8)  # past ack_wait: a nak'ed or unacked poison message would be back
    assert calls == [b"bad", b"good"]
    assert await stream_messages(bus) == 0


async def test_stop_hands_unfinished_job_back_at_once(bus, eventually):
    await bus.ensure_streams(
        ack_wait_s=10, max_deliver=5
    )  # far longer than the test: no redelivery by timeout
    started = asyncio.Event()
    cancelled: list[bool] = []
    finished: list[bytes] = []

    async def endless(data: bytes, heartbeat: queue.Heartbeat) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def quick(data: bytes, heartbeat: queue.Heartbeat) -> None:
        finished.append(data)

    await bus.publish(events.TRAIN_JOB, b"long", msg_id="s/1")
    async with working(bus, endless, grace_s=0.2):
        await asyncio.wait_for(started.wait(), 5)
    assert cancelled == [True]  # the grace period ran out: cancelled and nak'ed
    async with working(bus, quick):
        await eventually(lambda: finished == [b"long"], timeout_s=3)


async def test_transient_error_is_retried(bus, eventually):
    await bus.ensure_streams(ack_wait_s=5, max_deliver=5)
    calls: list[int] = []

    async def flaky(data: bytes, heartbeat: queue.Heartbeat) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("pool unavailable")

    await bus.publish(events.TRAIN_JOB, b"job", msg_id="s/1")
    async with working(bus, flaky, nak_delay_s=0.05):
        await eventually(lambda: len(calls) == 3)
        await eventually(lambda: stream_count_is(bus, 0))
    assert len(calls) == 3


async def test_max_deliveries_advisory_hands_over_stuck_message(bus, eventually):
    await bus.ensure_streams(ack_wait_s=5, max_deliver=2)
    stuck: list[StuckMessage] = []

    async def on_stuck(msg: StuckMessage) -> None:
        stuck.append(msg)

    async def always_fails(data: bytes, heartbeat: queue.Heartbeat) -> None:
        raise RuntimeError("GPU fell off the bus")

    await bus.on_max_deliveries(events.JOBS, events.TRAINER, on_stuck)
    ack = await bus.publish(events.TRAIN_JOB, b"doomed", msg_id="s/1")
    async with working(bus, always_fails, nak_delay_s=0.05):
        await eventually(lambda: len(stuck) == 1, timeout_s=8)
    (msg,) = stuck
    assert (msg.stream, msg.consumer, msg.stream_seq) == (events.JOBS, events.TRAINER, ack.seq)
    assert msg.deliveries == 2 and msg.data == b"doomed" and msg.subject == events.TRAIN_JOB
    assert await stream_messages(bus) == 1  # JetStream keeps it: the handler must delete it
    assert await bus.delete(events.JOBS, msg.stream_seq) is True
    assert await bus.delete(events.JOBS, msg.stream_seq) is False  # a second trainer's delete
    assert await stream_messages(bus) == 0


async def test_pending_counts_undelivered_jobs(bus):
    await bus.ensure_streams(ack_wait_s=5, max_deliver=3)
    for i in range(3):
        await bus.publish(events.TRAIN_JOB, b"j", msg_id=f"s/{i}")
    assert await bus.pending(events.TRAINER) == 3


async def test_consume_in_order_and_resumes_after_restart(bus, eventually):
    await bus.ensure_streams()
    for i in range(3):
        await bus.publish(events.train_result("a"), f"a{i}".encode(), msg_id=f"a{i}")
    got: list[tuple[str, bytes]] = []
    failures = [1]

    async def handler(subject: str, data: bytes) -> None:
        if data == b"a1" and failures:
            failures.pop()
            raise RuntimeError("transient")  # retried in place: a2 must not overtake a1
        got.append((subject, data))

    async def run_until(n: int) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            bus.consume(
                events.ALL_TRAIN_RESULTS,
                events.CRITIC,
                handler,
                stop,
                fetch_timeout_s=0.2,
                retry_delay_s=0.05,
            )
        )
        await eventually(lambda: len(got) == n)
        stop.set()
        await asyncio.wait_for(task, 5)

    await run_until(3)
    assert [d for _, d in got] == [b"a0", b"a1", b"a2"]
    assert {s for s, _ in got} == {events.train_result("a")}
    await bus.publish(events.train_result("b"), b"b0", msg_id="b0")
    await run_until(4)  # the durable consumer resumes after a2
    assert got[3] == (events.train_result("b"), b"b0")


async def test_consume_batches_one_call_per_fetch_and_alone_around_a_poison_event(bus, eventually):
    """The results feed's path: a fetched batch goes to one handler call (one store transaction); a
    failing call is retried; a batch the handler calls poison is handled event by event, so that only
    the poison event is skipped and the rest is kept."""
    await bus.ensure_streams()
    for i in range(5):
        await bus.publish(events.train_result("a"), f"a{i}".encode(), msg_id=f"a{i}")
    calls: list[list[bytes]] = []
    failures = [1]

    async def handler(datas: list[bytes]) -> None:
        if failures:
            failures.pop()
            raise RuntimeError("transient")
        if b"a3" in datas:
            raise queue.Poison("a3 can never succeed")
        calls.append(datas)

    stop = asyncio.Event()
    task = asyncio.create_task(
        bus.consume_batches(
            events.ALL_TRAIN_RESULTS, events.CRITIC, handler, stop, fetch_timeout_s=0.2, retry_delay_s=0.05
        )
    )
    await eventually(lambda: sum(map(len, calls)) == 4)
    await bus.publish(events.train_result("b"), b"b0", msg_id="b0")
    await eventually(lambda: calls[-1] == [b"b0"])
    stop.set()
    await asyncio.wait_for(task, 5)
    assert calls == [[b"a0"], [b"a1"], [b"a2"], [b"a4"], [b"b0"]]  # the batch of 5 went one by one
    info = await bus.js.consumer_info(events.EVENTS, events.CRITIC)
    assert info.num_ack_pending == 0 and info.num_pending == 0  # all acked, the poison one terminated


async def test_consume_batches_hands_a_batch_to_one_call(bus, eventually):
    await bus.ensure_streams()
    for i in range(5):
        await bus.publish(events.train_result("a"), f"a{i}".encode(), msg_id=f"a{i}")
    calls: list[list[bytes]] = []

    async def handler(datas: list[bytes]) -> None:
        calls.append(datas)

    stop = asyncio.Event()
    task = asyncio.create_task(
        bus.consume_batches(events.ALL_TRAIN_RESULTS, events.CRITIC, handler, stop, fetch_timeout_s=0.2)
    )
    await eventually(lambda: sum(map(len, calls)) == 5)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert calls == [[f"a{i}".encode() for i in range(5)]]


async def test_consume_keeps_order_after_a_crash(nats_url, eventually):
    crashed = await queue.connect(nats_url, name="crashing-critic")
    await crashed.ensure_streams()
    for i in range(2):
        await crashed.publish(events.train_result("a"), f"a{i}".encode(), msg_id=f"a{i}")
    first: list[bytes] = []

    async def hangs_on_a1(subject: str, data: bytes) -> None:
        if data == b"a1":
            await asyncio.sleep(60)
        first.append(data)

    task = asyncio.create_task(
        crashed.consume(events.ALL_TRAIN_RESULTS, events.CRITIC, hangs_on_a1, asyncio.Event(), ack_wait_s=1.0)
    )
    await eventually(lambda: first == [b"a0"])
    await asyncio.sleep(0.1)  # a1 is in the handler, unacked
    task.cancel()
    await crashed.nc.close()  # no nak, no drain: a crash
    restarted = await queue.connect(nats_url, name="critic")
    try:
        await restarted.publish(events.train_result("a"), b"a2", msg_id="a2")  # newer than the lost a1
        got: list[bytes] = []
        stop = asyncio.Event()

        async def record(subject: str, data: bytes) -> None:
            got.append(data)

        task = asyncio.create_task(
            restarted.consume(
                events.ALL_TRAIN_RESULTS, events.CRITIC, record, stop, ack_wait_s=1.0, fetch_timeout_s=0.2
            )
        )
        await eventually(lambda: len(got) == 2, timeout_s=5)
        stop.set()
        await asyncio.wait_for(task, 5)
        assert got == [b"a1", b"a2"]  # a2 waited for a1's redelivery
    finally:
        await restarted.close()


async def test_streams_and_jobs_survive_server_restart(nats_server: EmbeddedNats, eventually):
    bus = await queue.connect(nats_server.url, name="restart")
    try:
        await bus.ensure_streams(ack_wait_s=7, max_deliver=4)
        await bus.publish(events.TRAIN_JOB, b"before-restart", msg_id="s/1")
        port = nats_server.port
        nats_server.restart(same_port=True)
        assert nats_server.port == port
        got: list[bytes] = []

        async def handler(data: bytes, heartbeat: queue.Heartbeat) -> None:
            got.append(data)

        # The client reconnects by itself; the stream, its job and the consumer's settings came back.
        async with working(bus, handler):
            await eventually(lambda: got == [b"before-restart"], timeout_s=10)
        info = await bus.js.consumer_info(events.JOBS, events.TRAINER)
        assert info.config.ack_wait == 7 and info.config.max_deliver == 4
        assert (await bus.js.stream_info(events.EVENTS)).config.subjects == list(events.EVENTS_SUBJECTS)
    finally:
        await bus.close()


async def test_ensure_streams_is_idempotent_and_updates_consumer(bus):
    await bus.ensure_streams(ack_wait_s=3, max_deliver=2)
    await bus.ensure_streams()  # e.g. a publisher: leaves the trainers' settings alone
    info = await bus.js.consumer_info(events.JOBS, events.TRAINER)
    assert (info.config.ack_wait, info.config.max_deliver) == (3, 2)
    await bus.ensure_streams(ack_wait_s=4, max_deliver=6)
    info = await bus.js.consumer_info(events.JOBS, events.TRAINER)
    assert (info.config.ack_wait, info.config.max_deliver) == (4, 6)


@pytest.mark.parametrize("replicas", [0, -1, 6, True, "3", 2.0])
async def test_ensure_streams_rejects_bad_replica_counts(bus, replicas):
    with pytest.raises(ValueError, match=r"replicas must be an int in 1\.\.5 \(JetStream's limit"):
        await bus.ensure_streams(replicas=replicas)
    with pytest.raises(nats.js.errors.NotFoundError):  # refused before anything was created
        await bus.js.stream_info(events.JOBS)


@pytest.mark.parametrize(
    ("cls", "prefix"), [(AgentConfig, "agent"), (CriticConfig, "critic"), (BufferConfig, "buffer"),
                        (TrainerConfig, "trainer")],
)  # fmt: skip
def test_stream_replicas_setting_from_env_and_flag(cls, prefix):
    env = {f"FNAS_{prefix.upper()}_STREAM_REPLICAS": "3"}
    assert cls().stream_replicas == 1
    assert cls.from_env(env).stream_replicas == 3
    args = config.add_flags(argparse.ArgumentParser(), cls, prefix).parse_args(["--stream-replicas", "2"])
    assert config.from_args(cls, prefix, args).stream_replicas == 2
    for bad in ("0", "6"):
        with pytest.raises(ValueError, match=r"stream_replicas must be an int in 1\.\.5"):
            cls.from_env({f"FNAS_{prefix.upper()}_STREAM_REPLICAS": bad})


async def test_stream_replicas_on_a_single_server(bus):
    await bus.ensure_streams(ack_wait_s=5, max_deliver=3, replicas=1)
    for stream in (events.JOBS, events.EVENTS):
        assert (await bus.js.stream_info(stream)).config.num_replicas == 1
    # nats-server answers 10074 "replicas > 1 not supported in non-clustered mode", for a new stream and an
    # update alike; it is wrapped into an error that says what to change.
    with pytest.raises(queue.StreamReplicasError, match="3 replicas requested") as raised:
        await bus.ensure_streams(replicas=3)
    message = str(raised.value)
    assert "fewer JetStream nodes" in message and "stream_replicas" in message, message
    assert raised.value.__cause__.err_code == 10074
    for stream in (events.JOBS, events.EVENTS):
        assert (await bus.js.stream_info(stream)).config.num_replicas == 1  # unchanged
    await bus.ensure_streams(replicas=1)  # still idempotent


async def test_replicas_on_a_fresh_single_server_fail_clearly(bus):
    with pytest.raises(queue.StreamReplicasError, match=r"stream JOBS: 3 replicas requested.*fewer"):
        await bus.ensure_streams(replicas=3)


async def test_with_retries_retries_transient_errors_only_then_reraises():
    import nats.errors

    from fnas.delivery import with_retries

    calls = []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise nats.errors.TimeoutError
        return "ok"

    assert await with_retries(flaky, attempts=5, wait_s=0.001) == "ok" and len(calls) == 3

    async def down():
        calls.append(1)
        raise nats.errors.NoRespondersError

    calls.clear()
    with pytest.raises(nats.errors.NoRespondersError):
        await with_retries(down, attempts=4, wait_s=0.001)
    assert len(calls) == 4

    async def bad():
        calls.append(1)
        raise ValueError("not transient")

    calls.clear()
    with pytest.raises(ValueError):
        await with_retries(bad, attempts=4, wait_s=0.001)
    assert len(calls) == 1
