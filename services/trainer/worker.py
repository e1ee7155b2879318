"""The trainer worker: pull a TrainJob, evaluate it, publish its TrainResult, then ack.

All trainers share the durable consumer `trainer` of the JOBS work queue, so each
job goes to one of them; a trainer that dies mid-job loses nothing, because the
job is acked only after its result is durable in the EVENTS stream, and JetStream
hands the unacked job to another trainer after ack_wait. Every result carries
the message id `result/<job_id>`, so a job evaluated twice yields one result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import prometheus_client
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import api

from fnas import events, metrics, queue, waits
from fnas.config import redact_url
from fnas.queue import Heartbeat, Poison, StuckMessage
from fnas.v1 import queue_pb2, search_pb2
from services.trainer.config import TrainerConfig
from services.trainer.evaluate import Evaluator

log = logging.getLogger(__name__)

JOBS = prometheus_client.Counter(
    "fnas_trainer_jobs_total",
    "Train jobs handled, by outcome: ok, failed (invalid job), exhausted (redeliveries ran out), "
    "poison (undecodable, terminated), error (transient, redelivered), dropped (its search had finished).",
    ["outcome"],
)
JOB_SECONDS = prometheus_client.Histogram(
    "fnas_trainer_job_seconds",
    "Wall seconds of one job: setup, training (or a table's simulated time) and evaluation.",
    buckets=(0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
TRAINER_SECONDS = prometheus_client.Counter(
    "fnas_trainer_train_seconds",
    "Trainer-seconds of training, by device kind (cpu, cuda, mps, table): the paper's GPU hours.",
    ["device"],
)
QUEUE_PENDING = prometheus_client.Gauge(
    "fnas_trainer_queue_pending", "Train jobs waiting in the queue (not yet delivered to any trainer)."
)


#: Finished searches a trainer remembers, to drop their queued jobs (oldest forgotten first).
MAX_FINISHED = 10_000


class SearchFinished(Exception):
    """The job's search finished (cancelled, failed or done) while the job waited or ran."""


class TrainerWorker:
    """One trainer: a pull loop over the JOBS queue, the max-deliveries handler and the finished searches.

    The agent announces every search's end on its event subject; a trainer then
    stops the job of that search it is training and drops the ones still queued
    (acked without a result: the search counts nothing after its end).
    """

    def __init__(self, cfg: TrainerConfig, evaluator: Evaluator) -> None:
        self.cfg = cfg
        self.evaluator = evaluator
        self._bus: queue.Bus | None = None
        self._finished: OrderedDict[str, None] = OrderedDict()
        #: Searches whose last event this trainer read once (jobs of a search met for the first time).
        self._looked_up: OrderedDict[str, None] = OrderedDict()
        self._running: dict[str, set[asyncio.Task]] = {}

    @property
    def _ready_name(self) -> str:
        return f"trainer/{self.cfg.trainer_id}"

    @property
    def busy(self) -> bool:
        """True while a job is being evaluated."""
        return bool(self._running)

    async def run(self, stop_event: asyncio.Event) -> None:
        """Works until `stop_event` is set; the job in hand then gets cfg.grace_s to finish."""
        connecting = asyncio.create_task(
            queue.connect(
                self.cfg.nats_url, name=f"fnas-trainer-{self.cfg.trainer_id}", **self.cfg.nats_auth()
            )
        )
        stopping = asyncio.create_task(stop_event.wait())
        await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not connecting.done():  # stopped while NATS is unreachable (connect retries forever): just stop
            await waits.cancel(connecting)
            log.warning("trainer %s stopped before NATS answered", self.cfg.trainer_id)
            return
        bus = self._bus = connecting.result()
        poller: asyncio.Task[None] | None = None
        try:
            await bus.ensure_streams(
                ack_wait_s=self.cfg.ack_wait_s,
                max_deliver=self.cfg.max_deliver,
                replicas=self.cfg.stream_replicas,
            )
            await bus.on_max_deliveries(events.JOBS, events.TRAINER, self._on_exhausted)
            await bus.subscribe(events.SEARCH_ENDS, self._on_search_end)
            poller = asyncio.create_task(self._poll_pending(bus, stop_event), name="trainer-pending")
            log.info("trainer %s working on %s", self.cfg.trainer_id, redact_url(self.cfg.nats_url))
            # /ready (the readiness probe): pulling jobs, on a live connection, not draining.
            metrics.set_ready(self._ready_name, lambda: bus.nc.is_connected and not stop_event.is_set())
            await bus.work(
                events.TRAIN_JOB,
                events.TRAINER,
                self._handle,
                stop_event,
                nak_delay_s=self.cfg.nak_delay_s,
                grace_s=self.cfg.grace_s,
                on_poison=self._on_poison,
                max_batch=self.cfg.max_jobs_per_fetch,
            )
        finally:
            metrics.set_ready(self._ready_name, None)
            if poller is not None:
                await waits.cancel(poller)
            await bus.close()
            self._bus = None
            close = getattr(self.evaluator, "close", None)
            if close is not None:  # the training child and the pool channel
                await close()
            log.info("trainer %s stopped", self.cfg.trainer_id)

    async def _handle(self, data: bytes, heartbeat: Heartbeat) -> None:
        try:
            job = queue_pb2.TrainJob.FromString(data)
            if not job.job_id:
                raise Poison("train job without job_id")  # its result could not be de-duplicated
            try:
                events.train_result(job.search_id)
            except ValueError as e:  # no subject to publish the result on: nobody could ever read it
                raise Poison(str(e)) from e
            log.info(
                "job %s started", job.job_id, extra={"job_id": job.job_id, "trainer": self.cfg.trainer_id}
            )
            try:
                result, after_publish = await self._evaluate(job, heartbeat)
            except SearchFinished:
                JOBS.labels("dropped").inc()
                log.info("job %s dropped: its search has finished", job.job_id)
                return  # acked without a result
            await self._publish(result)
            if after_publish is not None:  # AKP: the trained blocks go to the pool once the result is durable
                await after_publish()
        except (Poison, DecodeError):
            JOBS.labels("poison").inc()
            raise  # Bus.work terminates it
        except Exception:
            JOBS.labels("error").inc()
            raise  # Bus.work naks it; max_deliver bounds the retries
        outcome = "ok" if result.outcome == queue_pb2.TRAIN_OUTCOME_OK else "failed"
        JOBS.labels(outcome).inc()
        log.info(
            "job %s %s in %.3f s%s",
            job.job_id,
            outcome,
            result.train_seconds,
            f": {result.error}" if result.error else f", reward {result.reward.value:.4f}",
        )

    async def _evaluate(
        self, job: queue_pb2.TrainJob, heartbeat: Heartbeat
    ) -> tuple[queue_pb2.TrainResult, Callable[[], Awaitable[None]] | None]:
        result = _result_of(job, self.cfg.trainer_id)
        after_publish = None
        start = time.perf_counter()
        await self._look_up(job.search_id)
        if job.search_id in self._finished:
            raise SearchFinished(job.search_id)
        task = asyncio.ensure_future(self.evaluator.evaluate(job, heartbeat))
        running = self._running.setdefault(job.search_id, set())
        running.add(task)
        try:
            evaluation = await task
        except asyncio.CancelledError:
            if task.cancelled() and job.search_id in self._finished:
                raise SearchFinished(job.search_id) from None  # our own cancel, not the worker's
            raise
        except ValueError as e:  # InvalidArchitecture, UnknownSpace, bad RewardSpec: retrying cannot help
            result.outcome = queue_pb2.TRAIN_OUTCOME_FAILED
            result.error = f"invalid job: {e}"
        else:
            result.outcome = queue_pb2.TRAIN_OUTCOME_OK
            result.reward.CopyFrom(evaluation.reward)
            result.pool_blocks_matched = evaluation.pool_blocks_matched
            result.pool_blocks_queried = evaluation.pool_blocks_queried
            after_publish = evaluation.after_publish
        finally:
            running.discard(task)
            if not running:
                self._running.pop(job.search_id, None)
        wall = time.perf_counter() - start
        JOB_SECONDS.observe(wall)
        # A job that failed before training spent its time on setup.
        seconds = evaluation.seconds if result.outcome == queue_pb2.TRAIN_OUTCOME_OK else {"setup": wall}
        result.train_seconds = seconds.get("train", 0.0)
        result.setup_seconds = seconds.get("setup", 0.0)
        result.evaluate_seconds = seconds.get("evaluate", 0.0)
        if result.outcome == queue_pb2.TRAIN_OUTCOME_OK:
            result.epochs, result.device_kind = evaluation.epochs, evaluation.device_kind
            TRAINER_SECONDS.labels(evaluation.device_kind or "unknown").inc(result.train_seconds)
        return result, after_publish

    async def _on_search_end(self, subject: str, data: bytes) -> None:
        """Remembers a finished search and stops its jobs in training."""
        event = search_pb2.SearchEvent.FromString(data)
        if not event.HasField("finished"):
            return
        self._remember(self._finished, event.finished.search_id)
        for task in self._running.get(event.finished.search_id, ()):
            task.cancel()

    async def _look_up(self, search_id: str) -> None:
        """Reads a search's `finished` event once: a search that ended before this trainer started is known.

        The live subscription tells of ends from then on; the stream keeps the
        `finished` event of an earlier one. A failed read leaves the job to run.
        """
        if search_id in self._looked_up or search_id in self._finished or self._bus is None:
            return
        try:
            data = await self._bus.last(events.EVENTS, events.search_event(search_id, "finished"))
            ended = data is not None and search_pb2.SearchEvent.FromString(data).HasField("finished")
        except Exception as e:  # the job itself will meet the same trouble, or not: it decides
            log.debug("last event of search %s unavailable: %s", search_id, e)
            return
        self._remember(self._looked_up, search_id)
        if ended:
            self._remember(self._finished, search_id)

    @staticmethod
    def _remember(ids: OrderedDict[str, None], search_id: str) -> None:
        ids[search_id] = None
        while len(ids) > MAX_FINISHED:
            ids.popitem(last=False)

    async def _publish(self, result: queue_pb2.TrainResult) -> None:
        if self._bus is None:
            raise RuntimeError("trainer is not running")
        # Acked by the stream before Bus.work acks the job: the result is durable first.
        ack = await self._bus.publish(
            events.train_result(result.search_id), result, msg_id=events.result_msg_id(result.job_id)
        )
        if ack.duplicate:  # a redelivered job another trainer finished first: JetStream kept that one
            log.info("result of job %s dropped as a duplicate", result.job_id)

    async def _on_poison(self, msg: Msg, error: BaseException) -> None:
        """Reports a poison job as a FAILED result when its message id (the job id) says whose it was.

        The agent publishes each job with Nats-Msg-Id = job id = "<search_id>/<index>", so even an
        undecodable payload can be attributed; the search then counts a failed sample and goes on
        instead of waiting for a result that would never come.
        """
        job = attributed_job(msg.data, (msg.headers or {}).get(api.Header.MSG_ID.value, ""))
        if job is None:
            return  # nobody to tell: the poison counter and the log line are all that is left
        result = _result_of(job, self.cfg.trainer_id)
        result.outcome = queue_pb2.TRAIN_OUTCOME_FAILED
        result.error = f"poison job: {error}"[:500]
        await self._publish(result)

    async def _on_exhausted(self, stuck: StuckMessage) -> None:
        # Every trainer gets the advisory: all publish the same msg id (JetStream keeps one result), and
        # the one whose delete succeeds counts it.
        if self._bus is None:
            return
        try:
            job = queue_pb2.TrainJob.FromString(stuck.data)
        except DecodeError:
            job = None
        if job is not None and job.job_id:
            result = _result_of(job, self.cfg.trainer_id)
            result.outcome = queue_pb2.TRAIN_OUTCOME_FAILED
            result.error = f"redeliveries exhausted ({stuck.deliveries} deliveries)"
            try:
                await self._publish(result)
            except ValueError:  # a search id that is no subject token: nothing to report it on
                log.error("job %s: cannot report exhaustion for search %r", job.job_id, job.search_id)
        if await self._bus.delete(stuck.stream, stuck.stream_seq):
            JOBS.labels("exhausted").inc()
            log.warning(
                "job %s failed: redeliveries exhausted after %d deliveries",
                job.job_id if job else f"seq {stuck.stream_seq}",
                stuck.deliveries,
            )

    async def _poll_pending(self, bus: queue.Bus, stop_event: asyncio.Event) -> None:
        while not stop_event.is_set():
            try:
                QUEUE_PENDING.set(await bus.pending(events.TRAINER))
            except Exception as e:  # a metric must not stop the worker (e.g. during a nats-server restart)
                log.debug("queue depth unavailable: %s", e)
            await waits.wait_event(stop_event, self.cfg.pending_poll_s)


def attributed_job(data: bytes, msg_id: str) -> queue_pb2.TrainJob | None:
    """The job a (possibly undecodable) message was for, from its payload or its "<search>/<index>" id."""
    try:
        job = queue_pb2.TrainJob.FromString(data)
    except DecodeError:
        job = queue_pb2.TrainJob()
    job_id = job.job_id or msg_id
    search_id, _, index = job_id.rpartition("/")
    if not index.isdigit() or (job.search_id and job.search_id != search_id):
        return None
    try:
        events.train_result(search_id)
    except ValueError:  # no subject to report on
        return None
    return queue_pb2.TrainJob(
        job_id=job_id,
        search_id=search_id,
        sample_index=int(index),
        architecture=job.architecture,
        behaviour_log_prob=job.behaviour_log_prob,
    )


def _result_of(job: queue_pb2.TrainJob, trainer_id: str) -> queue_pb2.TrainResult:
    return queue_pb2.TrainResult(
        job_id=job.job_id,
        search_id=job.search_id,
        sample_index=job.sample_index,
        architecture=job.architecture,
        trainer_id=trainer_id,
        behaviour_log_prob=job.behaviour_log_prob,  # the buffer replays it off-policy (paper 5)
        final_rank=job.final_rank,  # a final-selection retrain, not a search sample (paper 6.2)
        replayable=job.replayable if job.HasField("replayable") else None,  # the buffer's to keep or not
    )
