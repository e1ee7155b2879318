"""Poison messages: terminated, counted, reported as failed samples when attributable; consumers go on."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from prometheus_client import REGISTRY

from fnas import events
from fnas.reward import accuracy_only
from fnas.v1 import common_pb2, queue_pb2
from services.trainer.config import TrainerConfig
from services.trainer.evaluate import TabularEvaluator
from services.trainer.worker import TrainerWorker, attributed_job

pytestmark = pytest.mark.timeout(30)
CORA = "nasbench-graph/cora"


def poison_count(stream: str, consumer: str) -> float:
    labels = {"stream": stream, "consumer": consumer}
    return REGISTRY.get_sample_value("fnas_queue_poison_messages_total", labels) or 0.0


def trainer_jobs(outcome: str) -> float:
    return REGISTRY.get_sample_value("fnas_trainer_jobs_total", {"outcome": outcome}) or 0.0


def test_attributed_job_reads_the_payload_or_the_message_id():
    assert attributed_job(b"\xff\xff", "s1/7").job_id == "s1/7"
    job = attributed_job(b"\xff\xff", "s1/7")
    assert (job.search_id, job.sample_index) == ("s1", 7)
    no_id = queue_pb2.TrainJob(search_id="s1", sample_index=3).SerializeToString()
    assert attributed_job(no_id, "s1/3").sample_index == 3
    for data, msg_id in ((b"\xff", ""), (b"\xff", "garbage"), (b"\xff", "a b/1"), (b"\xff", "s1/x")):
        assert attributed_job(data, msg_id) is None, msg_id
    other = queue_pb2.TrainJob(search_id="s2").SerializeToString()
    assert attributed_job(other, "s1/1") is None  # payload and id disagree: report nothing


async def test_poison_jobs_are_terminated_counted_and_reported_as_failed(bus, nats_url, eventually):
    cfg = TrainerConfig(
        nats_url=nats_url, trainer_id="t-poison", heartbeat_s=0.2, ack_wait_s=1.0, max_deliver=2
    )
    await bus.ensure_streams(ack_wait_s=cfg.ack_wait_s, max_deliver=cfg.max_deliver)
    poison0, terminated0 = trainer_jobs("poison"), poison_count(events.JOBS, events.TRAINER)
    await bus.publish(events.TRAIN_JOB, b"\xff\xff not a protobuf", msg_id="p1/7")
    no_job_id = queue_pb2.TrainJob(search_id="p1", sample_index=8)
    await bus.publish(events.TRAIN_JOB, no_job_id, msg_id="p1/8")
    await bus.publish(events.TRAIN_JOB, b"\xff\xff", msg_id="nobody-knows")
    valid = queue_pb2.TrainJob(
        job_id="p1/9",
        search_id="p1",
        sample_index=9,
        architecture=common_pb2.Architecture(space=CORA, tokens=[0, 1, 1, 1, 1]),
        reward=accuracy_only(),
    )
    await bus.publish(events.TRAIN_JOB, valid, msg_id="p1/9")
    stop = asyncio.Event()
    task = asyncio.create_task(TrainerWorker(cfg, TabularEvaluator(cfg.heartbeat_s)).run(stop))
    try:
        await eventually(lambda: trainer_jobs("poison") == poison0 + 3, timeout_s=10)
        await eventually(lambda: bus_jobs_left(bus, 0), timeout_s=10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    got = {r.sample_index: r for r in await stream_results(bus)}
    assert sorted(got) == [7, 8, 9]  # the unattributable one has nobody to report to
    for index in (7, 8):
        assert got[index].outcome == queue_pb2.TRAIN_OUTCOME_FAILED
        assert got[index].job_id == f"p1/{index}" and got[index].error.startswith("poison job: ")
    assert got[9].outcome == queue_pb2.TRAIN_OUTCOME_OK  # the consumer kept going
    assert poison_count(events.JOBS, events.TRAINER) == terminated0 + 3


async def test_poison_event_is_skipped_counted_and_later_events_still_arrive(bus):
    await bus.ensure_streams()
    subject = events.train_result("p2")
    await bus.publish(subject, b"\xff\xff garbage", msg_id="result/p2/0")
    await bus.publish(subject, queue_pb2.TrainResult(job_id="p2/1", sample_index=1), msg_id="result/p2/1")
    before = poison_count(events.EVENTS, "probe")
    seen: list[int] = []
    stop = asyncio.Event()

    async def handler(_subject: str, data: bytes) -> None:
        seen.append(queue_pb2.TrainResult.FromString(data).sample_index)
        stop.set()

    await asyncio.wait_for(bus.consume(events.ALL_TRAIN_RESULTS, "probe", handler, stop), 10)
    assert seen == [1]
    assert poison_count(events.EVENTS, "probe") == before + 1


async def bus_jobs_left(bus, n: int) -> bool:
    return (await bus.js.stream_info(events.JOBS)).state.messages == n


async def stream_results(bus) -> list[queue_pb2.TrainResult]:
    state = (await bus.js.stream_info(events.EVENTS)).state
    out = []
    for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
        with contextlib.suppress(Exception):
            out.append(queue_pb2.TrainResult.FromString((await bus.js.get_msg(events.EVENTS, seq)).data))
    return out
