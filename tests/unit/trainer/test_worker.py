"""The trainer worker end to end over a real nats-server, with a small fake tabular space."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import nats.js.errors
import pytest
from prometheus_client import REGISTRY

from fnas import events, metrics, queue
from fnas.reward import RewardFn, accuracy_only
from fnas.spaces import InvalidArchitecture, SearchSpace, TableEntry, UnknownSpace
from fnas.v1 import common_pb2, queue_pb2, search_pb2
from services.trainer import __main__ as cli
from services.trainer.config import TrainerConfig
from services.trainer.evaluate import Evaluation, SpaceRouter, TabularEvaluator
from services.trainer.worker import TrainerWorker

pytestmark = pytest.mark.timeout(20)


class TinySpace(SearchSpace):
    """Two tokens of three choices; (2, 2) is not an architecture."""

    id = "tiny"
    token_names = ("a", "b")
    vocab = (3, 3)
    blocks = ((0,), (1,))
    tabular = True

    def _check(self, tokens: tuple[int, ...]) -> None:
        if tokens == (2, 2):
            raise InvalidArchitecture("(2, 2) has no table entry")

    def key(self, tokens: Sequence[int]) -> str:
        return ",".join(map(str, tokens))

    def size(self) -> int:
        return 8

    def describe(self, tokens: Sequence[int]) -> dict[str, Any]:
        return {"tokens": list(tokens)}

    def lookup(self, tokens: Sequence[int]) -> TableEntry:
        a, b = tokens
        return TableEntry(
            valid_accuracy=0.5 + 0.1 * a, test_accuracy=0.5, latency_ms=1.0 + b, params=100 * (a + 1)
        )


def get_space(space_id: str) -> SearchSpace:
    if space_id != "tiny":
        raise UnknownSpace(f"unknown space {space_id!r}")
    return TinySpace()


def job(index: int, tokens: Sequence[int] = (1, 0), **kw: Any) -> queue_pb2.TrainJob:
    return queue_pb2.TrainJob(
        job_id=f"s1/{index}",
        search_id="s1",
        sample_index=index,
        architecture=common_pb2.Architecture(space="tiny", tokens=list(tokens)),
        reward=kw.pop(
            "reward", common_pb2.RewardSpec(cost=common_pb2.COST_METRIC_LATENCY, target_latency_ms=2.0)
        ),
        **kw,
    )


def jobs_total(outcome: str) -> float:
    return REGISTRY.get_sample_value("fnas_trainer_jobs_total", {"outcome": outcome}) or 0.0


@pytest.fixture
def cfg(nats_url: str) -> TrainerConfig:
    return TrainerConfig(
        nats_url=nats_url,
        trainer_id="t1",
        heartbeat_s=0.2,
        ack_wait_s=1.0,
        max_deliver=2,
        nak_delay_s=0.05,
        grace_s=1.0,
        pending_poll_s=0.1,
    )


@contextlib.asynccontextmanager
async def running(cfg: TrainerConfig, evaluator: Any = None):
    stop = asyncio.Event()
    worker = TrainerWorker(cfg, evaluator or TabularEvaluator(cfg.heartbeat_s, get_space=get_space))
    task = asyncio.create_task(worker.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def results(bus: queue.Bus) -> list[tuple[str, dict[str, str], queue_pb2.TrainResult]]:
    """Every message of the EVENTS stream, in order: (subject, headers, TrainResult)."""
    state = (await bus.js.stream_info(events.EVENTS)).state
    out = []
    for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
        raw = await bus.js.get_msg(events.EVENTS, seq)
        out.append((raw.subject, raw.headers or {}, queue_pb2.TrainResult.FromString(raw.data)))
    return out


async def jobs_left(bus: queue.Bus) -> int:
    return (await bus.js.stream_info(events.JOBS)).state.messages


async def jobs_left_is(bus: queue.Bus, n: int) -> bool:
    return await jobs_left(bus) == n


async def results_count_is(bus: queue.Bus, n: int) -> bool:
    return len(await results(bus)) == n


async def test_job_becomes_result_then_is_acked(bus, cfg, eventually):
    await bus.ensure_streams(ack_wait_s=cfg.ack_wait_s, max_deliver=cfg.max_deliver)
    ok0 = jobs_total("ok")
    await bus.publish(events.TRAIN_JOB, job(0, (1, 0)), msg_id="s1/0")
    async with running(cfg):
        await eventually(lambda: jobs_total("ok") == ok0 + 1)
        await eventually(lambda: jobs_left_is(bus, 0))
    ((subject, headers, r),) = await results(bus)
    assert subject == events.train_result("s1") == "fnas.trainer.result.s1"
    assert headers.get("Nats-Msg-Id") == "result/s1/0"
    assert r.outcome == queue_pb2.TRAIN_OUTCOME_OK and r.job_id == "s1/0" and r.trainer_id == "t1"
    assert r.reward.accuracy == pytest.approx(0.6) and r.reward.latency_ms == 1.0 and r.reward.params == 200
    expected = RewardFn.from_spec(job(0).reward)(0.6, 1.0)
    assert r.reward.value == pytest.approx(expected) and r.reward.value != pytest.approx(0.6)
    assert list(r.architecture.tokens) == [1, 0] and r.train_seconds >= 0


async def test_ready_only_while_pulling_jobs(cfg, eventually):
    """/ready (the readiness probe) answers 503 before the worker pulls jobs and after it stops."""
    port = metrics.start_http(0, addr="127.0.0.1")

    def status() -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as e:
            return e.code

    assert await asyncio.to_thread(status) == 503
    async with running(cfg):
        await eventually(lambda: asyncio.to_thread(lambda: status() == 200))
    assert await asyncio.to_thread(status) == 503


async def test_invalid_jobs_fail_once_and_bad_payload_is_terminated(bus, cfg, eventually):
    await bus.ensure_streams(ack_wait_s=cfg.ack_wait_s, max_deliver=cfg.max_deliver)
    poison0 = jobs_total("poison")
    await bus.publish(events.TRAIN_JOB, b"\xff\xff\xff not a protobuf", msg_id="garbage")
    await bus.publish(events.TRAIN_JOB, job(1, (2, 2)), msg_id="s1/1")  # not in the table
    await bus.publish(events.TRAIN_JOB, job(2, (0, 5)), msg_id="s1/2")  # token out of range
    bad_reward = common_pb2.RewardSpec(cost=common_pb2.COST_METRIC_LATENCY)  # no target latency
    await bus.publish(events.TRAIN_JOB, job(3, reward=bad_reward), msg_id="s1/3")
    await bus.publish(events.TRAIN_JOB, job(4, reward=accuracy_only()), msg_id="s1/4")  # fine
    async with running(cfg):
        await eventually(lambda: results_count_is(bus, 4))
        await eventually(lambda: jobs_left_is(bus, 0))
        await asyncio.sleep(cfg.ack_wait_s + 0.2)  # nothing comes back for a second try
    got = {r.job_id: r for _, _, r in await results(bus)}
    assert sorted(got) == ["s1/1", "s1/2", "s1/3", "s1/4"]
    for failed in ("s1/1", "s1/2", "s1/3"):
        assert got[failed].outcome == queue_pb2.TRAIN_OUTCOME_FAILED
    assert "has no table entry" in got["s1/1"].error
    assert "token 1 (b) is 5" in got["s1/2"].error
    assert "target_latency_ms" in got["s1/3"].error
    assert got["s1/4"].outcome == queue_pb2.TRAIN_OUTCOME_OK and got["s1/4"].reward.value == pytest.approx(
        0.6
    )
    assert jobs_total("poison") == poison0 + 1


class Broken:
    """An evaluator whose failures are transient (not ValueError): the job is redelivered."""

    def __init__(self) -> None:
        self.calls = 0

    async def evaluate(self, job: queue_pb2.TrainJob, heartbeat: queue.Heartbeat) -> Evaluation:
        self.calls += 1
        raise RuntimeError("CUDA error: device-side assert")


async def test_exhausted_redeliveries_become_failed_result(bus, cfg, eventually):
    await bus.ensure_streams(ack_wait_s=cfg.ack_wait_s, max_deliver=cfg.max_deliver)
    broken = Broken()
    await bus.publish(events.TRAIN_JOB, job(5), msg_id="s1/5")
    async with running(cfg, broken):
        await eventually(lambda: results_count_is(bus, 1), timeout_s=8)
        await eventually(lambda: jobs_left_is(bus, 0))  # the stuck job was deleted
    ((_, headers, r),) = await results(bus)
    assert r.outcome == queue_pb2.TRAIN_OUTCOME_FAILED and r.job_id == "s1/5"
    assert "redeliveries exhausted" in r.error and headers["Nats-Msg-Id"] == "result/s1/5"
    assert broken.calls == cfg.max_deliver


async def test_job_evaluated_twice_yields_one_result(bus, cfg, eventually):
    await bus.ensure_streams(ack_wait_s=cfg.ack_wait_s, max_deliver=cfg.max_deliver)
    # The same job under two queue message ids: as if the agent re-sent it after the duplicate window.
    await bus.publish(events.TRAIN_JOB, job(6), msg_id="first")
    await bus.publish(events.TRAIN_JOB, job(6), msg_id="second")
    ok0 = jobs_total("ok")
    async with running(cfg):
        await eventually(lambda: jobs_total("ok") == ok0 + 2)
        await eventually(lambda: jobs_left_is(bus, 0))
    assert [r.job_id for _, _, r in await results(bus)] == ["s1/6"]


async def test_router_picks_tabular_and_refuses_trained_spaces():
    class Mnas(TinySpace):
        id = "mnas"
        tabular = False

    router = SpaceRouter(
        TabularEvaluator(get_space=get_space), get_space=lambda s: Mnas() if s == "mnas" else get_space(s)
    )

    async def beat() -> None:
        return None

    evaluation = await router.evaluate(job(0, reward=accuracy_only()), beat)
    assert evaluation.reward.value == pytest.approx(0.6)
    mnas_job = job(1)
    mnas_job.architecture.space = "mnas"
    with pytest.raises(ValueError, match="no evaluator"):
        await router.evaluate(mnas_job, beat)


async def test_simulated_seconds_heartbeat():
    beats: list[float] = []
    loop = asyncio.get_running_loop()

    async def beat() -> None:
        beats.append(loop.time())

    start = loop.time()
    await TabularEvaluator(heartbeat_s=0.1, get_space=get_space).evaluate(
        job(0, task=common_pb2.Task(simulated_seconds=0.35)), beat
    )
    assert loop.time() - start >= 0.35
    assert len(beats) == 3  # at 0.1, 0.2, 0.3 s


def test_config_from_env_flags_and_validation():
    env = {
        "FNAS_TRAINER_ACK_WAIT_S": "12.5",
        "FNAS_TRAINER_MAX_DELIVER": "7",
        "FNAS_TRAINER_METRICS_PORT": "9100",
    }
    cfg = TrainerConfig.from_env(env, max_deliver=3)
    assert (cfg.ack_wait_s, cfg.max_deliver, cfg.metrics_port) == (12.5, 3, 9100)
    assert cfg.trainer_id  # defaulted to <hostname>-<pid>
    with pytest.raises(ValueError, match="heartbeat_s"):
        TrainerConfig(heartbeat_s=40.0, ack_wait_s=30.0)
    with pytest.raises(ValueError, match="max_deliver"):
        TrainerConfig.from_env({"FNAS_TRAINER_MAX_DELIVER": "many"})
    args = cli.build_parser().parse_args(["--ack-wait-s", "9", "--trainer-id", "gpu-3"])
    flagged = cli.config_from_args(args)
    assert (flagged.ack_wait_s, flagged.trainer_id, flagged.max_deliver) == (9.0, "gpu-3", 5)


async def test_a_trainer_started_after_a_search_ended_drops_its_queued_jobs(bus, cfg, eventually):
    """The search's `finished` event was published before this trainer ran: the stream still tells it."""
    await bus.ensure_streams(ack_wait_s=cfg.ack_wait_s, max_deliver=cfg.max_deliver)
    ended = search_pb2.SearchEvent(search_id="s1", seq=9, finished=search_pb2.SearchStatus(search_id="s1"))
    await bus.publish(events.search_event("s1", "finished"), ended, msg_id="event/s1/9")
    await bus.publish(events.TRAIN_JOB, job(7), msg_id="s1/7")
    other = job(8)
    other.search_id, other.job_id = "s2", "s2/8"
    await bus.publish(events.TRAIN_JOB, other, msg_id="s2/8")  # a search that did not end
    dropped, ok = jobs_total("dropped"), jobs_total("ok")
    async with running(cfg):
        await eventually(lambda: jobs_left_is(bus, 0))
        await eventually(lambda: jobs_total("ok") == ok + 1)
    assert jobs_total("dropped") == dropped + 1
    raw = await bus.js.get_last_msg(events.EVENTS, events.train_result("s2"))
    assert queue_pb2.TrainResult.FromString(raw.data).job_id == "s2/8"
    with pytest.raises(nats.js.errors.NotFoundError):  # nothing was published for the ended search
        await bus.js.get_last_msg(events.EVENTS, events.train_result("s1"))
