"""BufferService: the AEB over gRPC, fed by the TrainResult stream.

Handlers check their input first (INVALID_ARGUMENT "<field>: <reason>", nothing
stored). Sample waits until the search's first `min_observed` results are in,
so a replay never depends on which results happened to arrive first.
"""

from __future__ import annotations

import asyncio
import math

import grpc
from prometheus_client import Counter

from fnas import waits
from fnas.v1 import buffer_pb2, buffer_pb2_grpc, common_pb2, queue_pb2, search_pb2
from services.buffer.aeb import DEFAULT_CAPACITY, Entry
from services.buffer.core import BufferCore

ENTRIES = Counter("fnas_buffer_results_total", "Trained results recorded (once each).")
REPLAYS = Counter("fnas_buffer_replays_total", "Samples replayed to the agent.")
MAX_N = 4096
MAX_CAPACITY = 100_000


class BufferServicer(buffer_pb2_grpc.BufferServiceServicer):
    """Serves one `BufferCore`; `on_result` is the handler of the durable result consumer."""

    def __init__(self, core: BufferCore, wait_s: float = 5.0) -> None:
        self.core = core
        self.wait_s = wait_s
        self._changed = asyncio.Condition()

    async def on_results(self, datas: list[bytes]) -> None:
        """Records a fetched batch of TrainResults, the OK and replayable ones with their behaviour
        log-probs, in one transaction; duplicates are dropped. A result its job marked not replayable (a
        search without the AEB, a final retrain) is acked unstored: nothing would ever replay it."""
        results = [queue_pb2.TrainResult.FromString(d) for d in datas]
        await self._add(
            [
                (
                    r.search_id,
                    Entry(r.sample_index, tuple(r.architecture.tokens), r.reward.value, r.behaviour_log_prob),
                )
                for r in results
                if r.outcome == queue_pb2.TRAIN_OUTCOME_OK and (r.replayable or not r.HasField("replayable"))
            ]
        )

    async def on_search_end(self, subject: str, data: bytes) -> None:
        """A search's end (its `finished` event): its history leaves memory for good; the store keeps it."""
        event = search_pb2.SearchEvent.FromString(data)
        if event.HasField("finished"):
            self.core.forget(event.search_id)

    async def _add(self, rows: list[tuple[str, Entry]]) -> None:
        if new := self.core.add_many(rows):
            ENTRIES.inc(new)
            async with self._changed:
                self._changed.notify_all()

    async def Add(self, request, context):
        if not request.search_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "search_id: required")
        for i, s in enumerate(request.samples):
            if not s.architecture.tokens:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"samples[{i}].architecture.tokens: required"
                )
            if not math.isfinite(s.reward.value):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"samples[{i}].reward.value: must be finite"
                )
            if s.source not in (common_pb2.SAMPLE_SOURCE_UNSPECIFIED, common_pb2.SAMPLE_SOURCE_TRAINED):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"samples[{i}].source: trained samples only"
                )
        await self._add(
            [
                (
                    request.search_id,
                    Entry(s.index, tuple(s.architecture.tokens), s.reward.value, s.behaviour_log_prob),
                )
                for s in request.samples
            ]
        )
        return buffer_pb2.AddResponse(
            size=self.core.size(request.search_id, self.core.observed(request.search_id))
        )

    async def Sample(self, request, context):
        capacity = request.capacity or DEFAULT_CAPACITY
        temperature = request.temperature or 1.0
        checks = (
            (not request.search_id, "search_id: required"),
            (request.n > MAX_N, f"n: must be <= {MAX_N}"),
            (not 0.0 <= request.beta <= 1.0, "beta: must be in [0, 1]"),
            (capacity > MAX_CAPACITY, f"capacity: must be <= {MAX_CAPACITY}"),
            (not (math.isfinite(temperature) and temperature > 0), "temperature: must be > 0"),
        )
        for bad, message in checks:
            if bad:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        if not await self._wait(request.search_id, request.min_observed):
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"observed {self.core.observed(request.search_id)} of {request.min_observed} results; retry",
            )
        drawn = self.core.replays(
            request.search_id,
            request.n,
            request.beta,
            request.seed,
            request.min_observed,
            capacity,
            temperature,
        )
        REPLAYS.inc(len(drawn))
        return buffer_pb2.SampleResponse(
            samples=[
                buffer_pb2.WeightedSample(
                    sample=common_pb2.Sample(
                        architecture=common_pb2.Architecture(tokens=r.entry.tokens),
                        reward=common_pb2.Reward(value=r.entry.reward),
                        source=common_pb2.SAMPLE_SOURCE_BUFFER,
                        behaviour_log_prob=r.entry.log_prob,
                        index=r.entry.index,
                    ),
                    weight=r.weight,
                )
                for r in drawn
            ]
        )

    async def Stats(self, request, context):
        if not request.search_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "search_id: required")
        observed = self.core.observed(request.search_id)
        size = self.core.size(request.search_id, observed, request.capacity or DEFAULT_CAPACITY)
        return buffer_pb2.BufferStatsResponse(size=size, observed=observed)

    async def _wait(self, search_id: str, n: int) -> bool:
        """True once the search has >= n results, False after wait_s."""
        return await waits.wait_until(self._changed, lambda: self.core.observed(search_id) >= n, self.wait_s)
