"""CriticService: the UAC over gRPC, fed by the TrainResult stream.

Handlers check their input first (INVALID_ARGUMENT "<field>: <reason>", nothing
stored). Training runs in a worker thread, one round at a time per search, so
the event loop keeps consuming results and answering other searches meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections.abc import Sequence

import grpc

from fnas import spaces, waits
from fnas.bounds import clip
from fnas.config import FieldError
from fnas.v1 import common_pb2, critic_pb2, critic_pb2_grpc, queue_pb2, search_pb2
from services.critic import metrics
from services.critic.core import CriticCore, NoHistory, Observation
from services.critic.decision import NotReady, from_options

log = logging.getLogger(__name__)


class CriticServicer(critic_pb2_grpc.CriticServiceServicer):
    """Serves one `CriticCore`; `on_result` is the handler of the durable result consumer."""

    def __init__(self, core: CriticCore, wait_s: float = 5.0) -> None:
        self.core = core
        self.wait_s = wait_s
        self._changed = asyncio.Condition()
        #: A search's lock lives while a call holds or awaits it: an export of an ended search leaves none.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def on_results(self, datas: list[bytes]) -> None:
        """Records a fetched batch of TrainResults, the OK ones (failed ones teach nothing), in one
        transaction; duplicates are dropped."""
        results = [queue_pb2.TrainResult.FromString(d) for d in datas]
        await self._observe(
            [
                (
                    r.search_id,
                    r.architecture.space,
                    r.sample_index,
                    tuple(r.architecture.tokens),
                    r.reward.value,
                )
                for r in results
                if r.outcome == queue_pb2.TRAIN_OUTCOME_OK
            ]
        )

    async def on_search_end(self, subject: str, data: bytes) -> None:
        """A search's end (its `finished` event): its series leave /metrics and its nets leave memory
        for good (a training round in flight ends first). The store keeps the nets and history."""
        event = search_pb2.SearchEvent.FromString(data)
        if event.HasField("finished"):
            metrics.forget(event.search_id)
            async with self._lock(event.search_id):
                self.core.forget(event.search_id)

    async def _observe(self, rows: list[Observation]) -> None:
        if new := self.core.observe_many(rows):
            metrics.OBSERVATIONS.inc(new)
            async with self._changed:
                self._changed.notify_all()

    async def OpenSearch(self, request, context):
        if not request.search_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "search_id: required")
        try:
            space = spaces.get(request.space)
        except spaces.UnknownSpace as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"space: {e}")
        try:
            decision = from_options(request.options, self.core.decision)
        except FieldError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"options.{e.field}: {e.reason}")
        try:
            await self._in_round(
                request.search_id,
                self.core.open,
                request.search_id,
                space.id,
                request.seed,
                decision,
                request.snapshot_id,
                list(request.history),
                request.tenant,
            )
        except KeyError:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"snapshot_id: no snapshot {clip(request.snapshot_id)!r}"
            )
        except NoHistory as e:  # checked where it is read, so a resuming agent's call reads no history
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except ValueError as e:
            field = "snapshot_id" if request.snapshot_id and "snapshot" in str(e) else "history"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {e}")
        return critic_pb2.OpenSearchResponse(observed=self.core.observed(request.search_id))

    async def Predict(self, request, context):
        critic = self.core.get(request.search_id) if request.search_id else None
        if critic is None:
            code = (
                grpc.StatusCode.INVALID_ARGUMENT
                if not request.search_id
                else grpc.StatusCode.FAILED_PRECONDITION
            )
            await context.abort(code, f"search_id: {request.search_id!r} was never opened (call OpenSearch)")
        tokens = await self._tokens(request.architectures, critic.space, context)
        if not await self._wait(request.search_id, request.min_observed):
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"observed {self.core.observed(request.search_id)} of {request.min_observed} results; retry",
            )
        try:
            predictions = await self._in_round(
                request.search_id, self._predict, request.search_id, tokens, request.min_observed
            )
        except NotReady as e:  # cannot happen after _wait; kept for safety
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        metrics.observe_predictions(predictions)
        return critic_pb2.PredictResponse(
            predictions=[
                critic_pb2.Prediction(
                    value=p.value, uncertainty=p.uncertainty, trusted=p.trusted, known=p.known
                )
                for p in predictions
            ],
            observed=critic.trained.n_trained,
            threshold=critic.threshold(),
        )

    async def Observe(self, request, context):
        if not request.search_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "search_id: required")
        for i, s in enumerate(request.samples):
            try:
                space = spaces.get(s.architecture.space)
                space.validate(s.architecture.tokens)
            except ValueError as e:  # UnknownSpace, InvalidArchitecture
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"samples[{i}].architecture: {e}")
            if not math.isfinite(s.reward.value):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"samples[{i}].reward.value: must be finite"
                )
        await self._observe(
            [
                (
                    request.search_id,
                    s.architecture.space,
                    s.index,
                    tuple(s.architecture.tokens),
                    s.reward.value,
                )
                for s in request.samples
            ]
        )
        return critic_pb2.ObserveResponse(observed=self.core.observed(request.search_id))

    async def ExportSnapshot(self, request, context):
        if not request.search_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "search_id: required")
        try:
            snapshot_id, data = await self._in_round(
                request.search_id, self.core.export, request.search_id, request.tenant
            )
        except KeyError:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"search_id: no critic for {request.search_id!r}")
        return critic_pb2.ExportSnapshotResponse(snapshot_id=snapshot_id, weights=data)

    async def ImportSnapshot(self, request, context):
        try:
            spaces.get(request.space)
        except spaces.UnknownSpace as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"space: {e}")
        try:
            snapshot_id = self.core.import_snapshot(request.weights, request.space, request.tenant)
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"weights: {e}")
        return critic_pb2.ImportSnapshotResponse(snapshot_id=snapshot_id)

    # helpers
    def _predict(self, search_id: str, tokens: list[tuple[int, ...]], min_observed: int):
        """The core's predictions (in a worker thread); times the training round when there was one."""
        critic = self.core.get(search_id)
        started, before = time.perf_counter(), critic.trained.n_trained
        predictions = self.core.predict(search_id, tokens, min_observed)
        if critic.trained.n_trained != before:
            metrics.observe_round(search_id, critic, time.perf_counter() - started)
        return predictions

    async def _in_round(self, search_id: str, fn, *args):
        """fn(*args) in a worker thread under the search's lock, run to its end even if the caller leaves.

        A call whose deadline passes is cancelled, but its thread cannot be: were the
        lock released then, the client's retry would train the same nets beside it
        (seen as Adam's `KeyError: 'exp_avg_sq'`). Shielded, the round keeps the lock
        until it ends; the retry then finds it done, as rounds are idempotent by count.
        """

        async def locked():
            async with self._lock(search_id):
                return await asyncio.to_thread(fn, *args)

        task = asyncio.ensure_future(locked())
        # An abandoned round's error is logged, not lost: the retry gets its own.
        task.add_done_callback(_log_abandoned)
        return await asyncio.shield(task)

    def _lock(self, search_id: str) -> asyncio.Lock:
        return self._locks.setdefault(search_id, asyncio.Lock())

    async def _tokens(
        self, archs: Sequence[common_pb2.Architecture], space, context
    ) -> list[tuple[int, ...]]:
        out = []
        for i, a in enumerate(archs):
            if a.space and a.space != space.id:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"architectures[{i}].space: is {clip(a.space)!r}, not {space.id!r}",
                )
            try:
                out.append(space.validate(a.tokens))
            except spaces.InvalidArchitecture as e:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"architectures[{i}].tokens: {e}")
        return out

    async def _wait(self, search_id: str, n: int) -> bool:
        """True once the search has >= n results, False after wait_s."""
        return await waits.wait_until(self._changed, lambda: self.core.observed(search_id) >= n, self.wait_s)


def _log_abandoned(task: asyncio.Task) -> None:
    expected = KeyError | ValueError | NotReady  # answered to the caller as NOT_FOUND, INVALID_ARGUMENT...
    if not task.cancelled() and (e := task.exception()) is not None and not isinstance(e, expected):
        log.warning("critic round failed: %r", e)
