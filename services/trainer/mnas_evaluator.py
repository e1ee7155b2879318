"""The evaluator of trained spaces (`mnas`): proxy-task training with AKP initialisation (paper 4.3).

Per job: check it (a bad job fails at once, before any training), run it in the training child (or a
thread) while heartbeating, ask the pool for the best-matching blocks when the child asks, and return the
reward with a hook that streams the trained blocks to the pool once the result is published. Without a pool
address, or for a job with use_pool = false, the model trains from scratch and nothing goes to the pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import prometheus_client

from fnas import datasets, spaces, waits
from fnas.queue import Heartbeat
from fnas.reward import RewardFn
from fnas.v1 import common_pb2, pool_pb2, queue_pb2
from services.pool.client import PoolClient
from services.trainer.child import AsyncQuery, ChildError, ChildProcess
from services.trainer.config import TrainerConfig
from services.trainer.evaluate import Evaluation

log = logging.getLogger(__name__)

POOL_BLOCKS = prometheus_client.Counter(
    "fnas_trainer_pool_blocks_total",
    "AKP blocks handled by the trainers: queried, matched (initialised from the pool), put (sent to it).",
    ["kind"],
)
POOL_ERRORS = prometheus_client.Counter(
    "fnas_trainer_pool_errors_total",
    "Pool calls that failed (the job then trains from scratch / keeps its result).",
    ["call"],
)
PHASE_SECONDS = prometheus_client.Histogram(
    "fnas_trainer_phase_seconds",
    "Seconds per phase of a trained job: setup (data, model, pool), train, evaluate (accuracy, latency).",
    ["phase"],
    buckets=(0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)


def settings_of(cfg: TrainerConfig) -> dict[str, Any]:
    """The child's Settings (services.trainer.job) from the trainer config, as plain JSON values."""
    return {
        "device": cfg.device, "amp": cfg.amp, "width_mult": cfg.width_mult, "image_side": cfg.image_side,
        "val_fraction": cfg.val_fraction, "data_seed": cfg.data_seed, "batch_size": cfg.batch_size,
        "lr": cfg.lr, "latency": cfg.latency, "latency_repeats": cfg.latency_repeats,
        "latency_table": str(Path(cfg.data_dir) / "trainer" / "latency-table.json"),
        "torch_threads": cfg.torch_threads,
    }  # fmt: skip


class MnasEvaluator:
    """Trains `mnas` jobs; one job at a time per worker (one child, one GPU)."""

    def __init__(self, cfg: TrainerConfig) -> None:
        self.cfg = cfg
        self.pool = None
        if cfg.pool_address:  # the pool's own client: deadlines, and retries of its idempotent calls
            self.pool = PoolClient(
                cfg.pool_address,
                cfg.pool_timeout_s,
                tls=cfg.client_tls(),
                attempts=3,
                token=cfg.service_token,
            )
        self.settings = settings_of(cfg)
        self.child = ChildProcess(self.settings) if cfg.isolation == "process" else None
        self._runner = None  # the in-process JobRunner (isolation = "thread"), made on first use
        self._one_at_a_time = asyncio.Lock()  # the worker may hand over jobs concurrently

    async def evaluate(self, job: queue_pb2.TrainJob, heartbeat: Heartbeat) -> Evaluation:
        """Trains and evaluates the job; ValueError (-> FAILED result) for a job that can never succeed."""
        space = spaces.get(job.architecture.space)
        space.validate(job.architecture.tokens)
        reward_fn = RewardFn.from_spec(job.reward)
        datasets.check_name(job.task.dataset)
        if job.task.epochs < 1:
            raise ValueError(f"task.epochs must be >= 1, got {job.task.epochs}")
        query = self._query if (job.use_pool and self.pool is not None) else None
        header, blobs = await _with_heartbeat(self._run(job, query), heartbeat, self.cfg.heartbeat_s)
        if header.get("op") == "error":
            if header.get("invalid"):
                raise ValueError(header.get("message", "invalid job"))
            raise ChildError(header.get("message", "training failed"))
        for phase, seconds in header.get("seconds", {}).items():
            PHASE_SECONDS.labels(phase).observe(seconds)
        reward = common_pb2.Reward(
            accuracy=header["accuracy"], latency_ms=header["latency_ms"],
            mult_adds=header["mult_adds"], params=header["params"],
        )  # fmt: skip
        reward_fn.fill(reward)
        matched, queried = header["pool_blocks_matched"], header["pool_blocks_queried"]
        POOL_BLOCKS.labels("queried").inc(queried)
        POOL_BLOCKS.labels("matched").inc(matched)
        losses = header.get("losses") or [float("nan")]
        log.info(
            "job %s: %d steps, loss %.3f -> %.3f, accuracy %.4f, %.3f ms, pool %d/%d",
            job.job_id, header["iterations"], losses[0], losses[-1], reward.accuracy, reward.latency_ms,
            matched, queried,
        )  # fmt: skip
        after = None
        if blobs and self.pool is not None:
            after = self._putter(pool_pb2.PutBlocksRequest.FromString(blobs[0]))
        seconds = {k: float(v) for k, v in header.get("seconds", {}).items()}
        epochs = int(header.get("epochs", job.task.epochs))
        return Evaluation(reward, matched, queried, after, seconds, epochs, self._device_kind())

    def _device_kind(self) -> str:
        """The device kind the jobs train on (cpu, cuda, mps): `auto` resolved by the child or runner."""
        if self.child is not None:
            device = str(self.child.info.get("device", ""))
        else:
            device = str(getattr(self._runner, "device", ""))
        return (device or self.cfg.device).split(":")[0]

    async def _run(self, job: queue_pb2.TrainJob, query: AsyncQuery | None) -> tuple[dict, list[bytes]]:
        async with self._one_at_a_time:
            if self.child is not None:
                return await self.child.run(job, query, self.cfg.job_timeout_s)
            async with asyncio.timeout(self.cfg.job_timeout_s):
                return await self._run_in_thread(job, query)

    async def _run_in_thread(
        self, job: queue_pb2.TrainJob, query: AsyncQuery | None
    ) -> tuple[dict, list[bytes]]:
        from services.trainer.child import _FIGURES
        from services.trainer.job import JobRunner, Settings

        if self._runner is None:
            self._runner = await asyncio.to_thread(JobRunner, Settings(**self.settings))
        loop = asyncio.get_running_loop()
        sync_query = None
        if query is not None:

            def sync_query(request: pool_pb2.QueryBlocksRequest) -> pool_pb2.QueryBlocksResponse:
                return asyncio.run_coroutine_threadsafe(query(request), loop).result()

        try:
            out = await asyncio.to_thread(self._runner.run, job, sync_query)
        except ValueError as e:
            return {"op": "error", "invalid": True, "message": str(e)}, []
        header = {"op": "result", **{k: getattr(out, k) for k in _FIGURES}}
        return header, [out.put.SerializeToString()] if out.put is not None else []

    async def _query(self, request: pool_pb2.QueryBlocksRequest) -> pool_pb2.QueryBlocksResponse:
        """The pool's answer; an empty one (train from scratch) when the pool fails."""
        try:
            return await self.pool.query(
                request.architecture, request.blocks, request.task, request.iterations, seed=request.seed
            )
        except grpc.aio.AioRpcError as e:
            POOL_ERRORS.labels("query").inc()
            log.warning("pool query failed (%s: %s); training from scratch", e.code().name, e.details())
            return pool_pb2.QueryBlocksResponse()

    def _putter(self, request: pool_pb2.PutBlocksRequest) -> Callable[[], Awaitable[None]]:
        async def put() -> None:
            try:
                response = await self.pool.put(
                    request.architecture, request.task, request.source_job_id, request.blocks
                )
            except grpc.aio.AioRpcError as e:  # the result is published already; the blocks are a cache
                POOL_ERRORS.labels("put").inc()
                log.warning(
                    "pool put of %s failed: %s: %s", request.source_job_id, e.code().name, e.details()
                )
                return
            POOL_BLOCKS.labels("put").inc(response.stored)

        return put

    async def close(self) -> None:
        """Stops the child and closes the pool channel."""
        if self.child is not None:
            await self.child.close()
        if self.pool is not None:
            await self.pool.close()


async def _with_heartbeat(aw: Awaitable, heartbeat: Heartbeat, period_s: float):
    """Awaits `aw`, calling heartbeat() every period_s meanwhile (the job must not be redelivered)."""
    task = asyncio.ensure_future(aw)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=period_s)
            if done:
                return task.result()
            await heartbeat()
    finally:
        await waits.cancel(task)
