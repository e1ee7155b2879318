"""Evaluators: what a trainer does with one TrainJob (look it up, or train it).

An evaluator turns a job into an `Evaluation` (the reward of paper Eq. 2 and the
pool statistics). It raises ValueError (InvalidArchitecture, UnknownSpace, a bad
RewardSpec...) for a job that can never succeed, which the worker reports as a
FAILED result; any other exception is transient and the job is redelivered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from fnas import spaces
from fnas.queue import Heartbeat
from fnas.reward import RewardFn
from fnas.spaces import SearchSpace
from fnas.v1 import common_pb2, queue_pb2
from services.trainer.config import TrainerConfig


@dataclass
class Evaluation:
    """What evaluating one architecture produced."""

    reward: common_pb2.Reward
    #: AKP (paper 4.3): blocks initialised from the pool / blocks queried; 0 when the pool was not used.
    pool_blocks_matched: int = 0
    pool_blocks_queried: int = 0
    #: Runs after the result is published and before the job is acked (the trained blocks go to the pool).
    after_publish: Callable[[], Awaitable[None]] | None = None
    #: Compute (trainer-seconds) by phase: setup (data, model, pool), train, evaluate (accuracy, latency).
    seconds: dict[str, float] = field(default_factory=dict)
    #: Epochs trained (0 for a table) and the device kind that trained them (cpu, cuda, mps, table).
    epochs: int = 0
    device_kind: str = ""


class Evaluator(Protocol):
    """Evaluates one job; must call `heartbeat()` at least every heartbeat period while it works."""

    async def evaluate(self, job: queue_pb2.TrainJob, heartbeat: Heartbeat) -> Evaluation: ...


class TabularEvaluator:
    """Answers from a tabular space's benchmark table (NAS-Bench-Graph): microseconds per job.

    `job.task.simulated_seconds` emulates the cost of training (heartbeating
    meanwhile), so queue behaviour can be studied without GPUs.
    """

    def __init__(
        self, heartbeat_s: float = 5.0, get_space: Callable[[str], SearchSpace] = spaces.get
    ) -> None:
        if heartbeat_s <= 0:
            raise ValueError("heartbeat_s must be > 0")
        self.heartbeat_s = heartbeat_s
        self._get_space = get_space
        self._device = asyncio.Lock()  # simulated training occupies the trainer as a GPU would

    async def evaluate(self, job: queue_pb2.TrainJob, heartbeat: Heartbeat) -> Evaluation:
        """Looks the figures up, then waits the simulated training time."""
        if job.task.simulated_seconds < 0:
            raise ValueError(f"task.simulated_seconds must be >= 0, got {job.task.simulated_seconds}")
        # Everything that can fail runs before the wait: a bad job fails at once, not after "training".
        t0 = time.perf_counter()
        reward = self.reward(job)
        t1 = time.perf_counter()
        if job.task.simulated_seconds:
            async with self._device:
                t1 = time.perf_counter()
                await simulate(job.task.simulated_seconds, heartbeat, self.heartbeat_s)
        seconds = {"setup": t1 - t0, "train": time.perf_counter() - t1, "evaluate": 0.0}
        return Evaluation(reward, seconds=seconds, device_kind="table")

    def reward(self, job: queue_pb2.TrainJob) -> common_pb2.Reward:
        """The job's reward from the table; ValueError for an invalid job."""
        space = self._get_space(job.architecture.space)
        if not space.tabular:
            raise ValueError(f"space {space.id} is not tabular")
        tokens = space.validate(job.architecture.tokens)
        reward_fn = RewardFn.from_spec(job.reward)
        entry = space.lookup(tokens)
        reward = common_pb2.Reward(
            accuracy=entry.valid_accuracy, latency_ms=entry.latency_ms, params=entry.params
        )
        return reward_fn.fill(reward)


class SpaceRouter:
    """Picks the evaluator by the job's space: the tabular one for benchmark spaces, else `trained`."""

    def __init__(
        self,
        tabular: Evaluator,
        trained: Evaluator | None = None,
        get_space: Callable[[str], SearchSpace] = spaces.get,
    ) -> None:
        self.tabular = tabular
        self.trained = trained
        self._get_space = get_space

    async def evaluate(self, job: queue_pb2.TrainJob, heartbeat: Heartbeat) -> Evaluation:
        """Delegates to the evaluator for the job's space; ValueError when this trainer has none."""
        space = self._get_space(job.architecture.space)
        if space.tabular:
            return await self.tabular.evaluate(job, heartbeat)
        if self.trained is None:
            raise ValueError(f"this trainer has no evaluator for the trained space {space.id}")
        return await self.trained.evaluate(job, heartbeat)

    async def close(self) -> None:
        """Closes the evaluators that hold resources (the training child, the pool channel)."""
        for evaluator in (self.tabular, self.trained):
            close = getattr(evaluator, "close", None)
            if close is not None:
                await close()


def default_evaluator(heartbeat_s: float, cfg: TrainerConfig | None = None) -> Evaluator:
    """Tabular spaces answer from their table; trained spaces (mnas) train as `cfg` says (default config)."""
    from services.trainer.mnas_evaluator import MnasEvaluator

    trained = MnasEvaluator(
        cfg or TrainerConfig(heartbeat_s=heartbeat_s, ack_wait_s=max(30.0, 6 * heartbeat_s))
    )
    return SpaceRouter(tabular=TabularEvaluator(heartbeat_s=heartbeat_s), trained=trained)


async def simulate(seconds: float, heartbeat: Heartbeat, heartbeat_s: float) -> None:
    """Sleeps `seconds`, calling heartbeat() every heartbeat_s so that the job is not redelivered."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(left, heartbeat_s))
        if deadline - time.monotonic() > 0:
            await heartbeat()
