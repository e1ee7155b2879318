"""Two `python -m services.trainer` processes; SIGKILL the one holding a job: the other finishes it, once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import pytest

from fnas import events
from fnas.reward import accuracy_only
from fnas.v1 import common_pb2, queue_pb2

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(30)]

ACK_WAIT_S = 1.5


class Trainer:
    """One trainer process and the JSON log lines it wrote so far."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc, self.name = proc, name
        self.lines: list[dict] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                self.lines.append({"msg": raw.decode(errors="replace")})

    def logged(self, text: str) -> bool:
        return any(text in line.get("msg", "") for line in self.lines)


async def start_trainer(nats_url: str, name: str) -> Trainer:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.trainer",
        "--nats-url",
        nats_url,
        "--trainer-id",
        name,
        "--ack-wait-s",
        str(ACK_WAIT_S),
        "--heartbeat-s",
        "0.3",
        "--max-deliver",
        "3",
        "--grace-s",
        "1",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return Trainer(proc, name)


async def test_killed_trainer_job_finished_by_the_other(nats_url, bus, eventually):
    trainers = [await start_trainer(nats_url, f"trainer-{i}") for i in range(2)]
    try:
        await eventually(lambda: all(t.logged("working on") for t in trainers), timeout_s=10)
        job = queue_pb2.TrainJob(
            job_id="kill/0",
            search_id="kill",
            sample_index=0,
            architecture=common_pb2.Architecture(space="nasbench-graph/cora", tokens=[0, 1, 2, 3, 4]),
            task=common_pb2.Task(simulated_seconds=2.0),
            reward=accuracy_only(),
        )
        await bus.publish(events.TRAIN_JOB, job, msg_id=job.job_id)
        await eventually(lambda: any(t.logged("job kill/0 started") for t in trainers), timeout_s=5)
        victim = next(t for t in trainers if t.logged("job kill/0 started"))
        survivor = next(t for t in trainers if t is not victim)
        await asyncio.sleep(0.5)  # mid-job
        victim.proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(victim.proc.wait(), 5) == -signal.SIGKILL
        assert not victim.logged("job kill/0 ok")

        # JetStream hands the job to the survivor once ack_wait passes without heartbeats.
        await eventually(lambda: survivor.logged("job kill/0 ok"), timeout_s=ACK_WAIT_S + 2.0 + 5)
        info = (await bus.js.stream_info(events.EVENTS)).state
        assert info.messages == 1
        raw = await bus.js.get_msg(events.EVENTS, info.last_seq)
        result = queue_pb2.TrainResult.FromString(raw.data)
        assert raw.subject == events.train_result("kill")
        assert result.outcome == queue_pb2.TRAIN_OUTCOME_OK and result.trainer_id == survivor.name
        assert result.train_seconds >= 2.0 and 0 < result.reward.accuracy <= 1
        assert (await bus.js.stream_info(events.JOBS)).state.messages == 0  # acked after the result

        survivor.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(survivor.proc.wait(), 10) == 0
        assert survivor.logged("stopped")
    finally:
        for t in trainers:
            if t.proc.returncode is None:
                t.proc.kill()
                await t.proc.wait()
            await stop_reader(t)


async def stop_reader(t: Trainer) -> None:
    try:
        await asyncio.wait_for(t.reader, 2)
    except (TimeoutError, asyncio.CancelledError):
        t.reader.cancel()
