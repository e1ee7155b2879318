"""The JetStream bus: streams, de-duplicated publishing, the work queue and durable event consumers.

Delivery is at least once everywhere: a work handler's message is acked only
after the handler returned (so a trainer that dies loses nothing), and every
publisher sets a Nats-Msg-Id so that a redelivered job's second result is
dropped by JetStream inside the duplicate window (DESIGN.md, Transport).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats
import nats.errors
import nats.js.errors
from google.protobuf.message import Message
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

from fnas import delivery, events
from fnas.config import check_stream_replicas
from fnas.delivery import (
    BatchHandler,
    EventHandler,
    Heartbeat,
    Poison,
    PoisonHandler,
    WorkHandler,
    with_retries,
)

log = logging.getLogger(__name__)

#: Server-side redelivery policy of the work queue when no trainer has declared one.
DEFAULT_ACK_WAIT_S = 30.0
DEFAULT_MAX_DELIVER = 5
#: JetStream's default is 2 min; results of a job redelivered later than the window would be duplicated.
DEFAULT_DUPLICATE_WINDOW_S = 600.0
EVENTS_MAX_AGE_S = 7 * 24 * 3600.0
#: JetStream's answers to a stream with more replicas than the servers can place: a single server that is
#: not clustered (10074), too few servers in the cluster (10005, "no suitable peers for placement").
_REPLICAS_NOT_PLACEABLE = (10074, 10005)
#: The longest a batch of quick work messages may take (see `Bus.work`).
BATCH_HOLD_S = 0.02
#: A cluster answers a stream update that changes its replicas once the stream has moved (seconds).
STREAM_UPDATE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class StuckMessage:
    """A work message whose deliveries ran out (from the max-deliveries advisory), still in its stream."""

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int
    subject: str
    data: bytes


async def connect(
    url: str,
    name: str,
    *,
    connect_timeout_s: float = 5.0,
    reconnect_wait_s: float = 0.5,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
) -> Bus:
    """Connects to NATS; reconnects forever (a restarted nats-server keeps its streams).

    `user`/`password` or `token` authenticate the connection (a server with
    authorization refuses anonymous clients); they are never logged.
    """

    connected = False

    async def on_error(e: Exception) -> None:
        if not connected and "authorization violation" in str(e).lower():
            # Wrong or missing credentials: retrying forever would hide it; fail the start-up instead.
            raise NatsAuthError(f"nats {name}: the server refused the credentials (authorization violation)")
        log.warning("nats %s: %s", name, e)

    closing = asyncio.Event()  # set by Bus.close: a disconnect then is expected, not worth a warning

    async def on_disconnect() -> None:
        if not closing.is_set():
            log.warning("nats %s: disconnected", name)

    async def on_reconnect() -> None:
        log.info("nats %s: reconnected", name)

    nc = nats.NATS()
    connect = nc.connect(
        servers=url,
        name=name,
        connect_timeout=connect_timeout_s,
        reconnect_time_wait=reconnect_wait_s,
        max_reconnect_attempts=-1,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        **{k: v for k, v in (("user", user), ("password", password), ("token", token)) if v},
    )
    try:
        await connect
    except NatsAuthError:
        closing.set()
        with contextlib.suppress(Exception):
            await nc.close()
        raise
    connected = True
    return Bus(nc, closing)


class NatsAuthError(ConnectionError):
    """The NATS server refused this client's credentials."""


class StreamReplicasError(RuntimeError):
    """A stream asked for more replicas than the NATS server (or cluster) has JetStream nodes."""


#: What Bus.publish retries, and raises when the stream did not acknowledge through its retries
#: (nats-server stalled or restarting): a caller whose message is durable elsewhere publishes it again later.
PUBLISH_ERRORS: tuple[type[Exception], ...] = (nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError)


class Bus:
    """One NATS connection with its JetStream context; see `connect`."""

    def __init__(self, nc: nats.NATS, closing: asyncio.Event | None = None) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self._closing = closing or asyncio.Event()
        self._subs: list[Subscription] = []

    async def ensure_streams(
        self,
        ack_wait_s: float | None = None,
        max_deliver: int | None = None,
        duplicate_window_s: float = DEFAULT_DUPLICATE_WINDOW_S,
        replicas: int = 1,
    ) -> None:
        """Creates or updates JOBS, EVENTS and the shared `trainer` consumer of JOBS; idempotent.

        The consumer's ack_wait / max_deliver are set only by a caller that passes
        them (the trainers, from their config); others, e.g. the agent, leave them
        as they are, or create the consumer with the defaults.

        `replicas` (1..5) is both streams' num_replicas; an existing stream with
        another count is updated to it, so every service must ask for the same
        count. More replicas than JetStream servers raise StreamReplicasError.
        """
        check_stream_replicas(replicas)
        if ack_wait_s is not None and max_deliver is not None:
            # A job can be redelivered until ack_wait * max_deliver after its first delivery; the result of
            # a late redelivery must still be recognised as a duplicate.
            duplicate_window_s = max(duplicate_window_s, 2 * ack_wait_s * max_deliver)
        duplicate_window_s = min(duplicate_window_s, EVENTS_MAX_AGE_S)  # JetStream: window <= max_age
        await self._upsert_stream(
            api.StreamConfig(
                name=events.JOBS,
                subjects=list(events.JOBS_SUBJECTS),
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
                duplicate_window=duplicate_window_s,
                num_replicas=replicas,
            )
        )
        await self._upsert_stream(
            api.StreamConfig(
                name=events.EVENTS,
                subjects=list(events.EVENTS_SUBJECTS),
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                duplicate_window=duplicate_window_s,
                max_age=EVENTS_MAX_AGE_S,
                num_replicas=replicas,
            )
        )
        if ack_wait_s is None and max_deliver is None:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.js.consumer_info(events.JOBS, events.TRAINER)
                return
        await self.js.add_consumer(
            events.JOBS,
            api.ConsumerConfig(
                name=events.TRAINER,
                durable_name=events.TRAINER,
                filter_subject=events.TRAIN_JOB,
                ack_policy=api.AckPolicy.EXPLICIT,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_wait=DEFAULT_ACK_WAIT_S if ack_wait_s is None else ack_wait_s,
                max_deliver=DEFAULT_MAX_DELIVER if max_deliver is None else max_deliver,
            ),
        )

    async def _upsert_stream(self, cfg: api.StreamConfig) -> None:
        try:
            try:
                await self.js.add_stream(cfg)  # succeeds as is when the stream exists with this config
            except nats.js.errors.BadRequestError as e:
                if e.err_code != 10058:  # "stream name already in use with a different configuration"
                    raise
                old = (await self.js.stream_info(cfg.name)).config.num_replicas or 1
                # A cluster moves the stream to the new replica count (raft group) before it answers.
                await self.nc.jetstream(timeout=STREAM_UPDATE_TIMEOUT_S).update_stream(cfg)
                if old != cfg.num_replicas:
                    log.warning("stream %s: replicas %d -> %d", cfg.name, old, cfg.num_replicas)
        except nats.js.errors.APIError as e:
            if e.err_code not in _REPLICAS_NOT_PLACEABLE:
                raise
            raise StreamReplicasError(
                f"stream {cfg.name}: {cfg.num_replicas} replicas requested, but the NATS server has fewer "
                f"JetStream nodes than that (server: {e.description}); set stream_replicas to at most the "
                "number of servers in the NATS cluster (1 for a single server)"
            ) from e

    async def publish(
        self,
        subject: str,
        message: Message | bytes,
        msg_id: str | None = None,
        timeout_s: float = 5.0,
        attempts: int = 3,
    ) -> api.PubAck:
        """Publishes and waits for the stream's PubAck; `msg_id` (Nats-Msg-Id) drops duplicates.

        With a msg_id the publish is idempotent, so it is retried on a timeout
        (a nats-server restart); without one it is tried once.
        """
        data = message if isinstance(message, bytes) else message.SerializeToString()
        headers = {api.Header.MSG_ID.value: msg_id} if msg_id else None
        return await with_retries(
            lambda: self.js.publish(subject, data, timeout=timeout_s, headers=headers),
            attempts=attempts if msg_id else 1,
            wait_s=0.2,
            retry_on=PUBLISH_ERRORS,
        )

    async def work(
        self,
        subject: str,
        durable: str,
        handler: WorkHandler,
        stop_event: asyncio.Event,
        *,
        stream: str = events.JOBS,
        fetch_timeout_s: float = 1.0,
        nak_delay_s: float = 2.0,
        grace_s: float = 5.0,
        on_poison: PoisonHandler | None = None,
        max_batch: int = 1,
    ) -> None:
        """Pulls messages from a work queue and runs `handler(data, heartbeat)` on each.

        Acks (waiting for the server) only after the handler returned; terminates
        the message when the handler raises Poison or a protobuf DecodeError; naks
        it with `nak_delay_s` on any other exception, so that max_deliver bounds
        the retries. When `stop_event` is set the current handler gets `grace_s`
        to finish; otherwise it is cancelled and its message nak'ed at once, so
        that another worker takes it without waiting for ack_wait. `on_poison(msg,
        error)` runs before a poison message is terminated (its headers may still
        say whose it was: the trainer reports it as a failed sample).

        Quick messages come in batches of up to `max_batch`, handled concurrently: each fetch asks
        for as many as the last batch's pace fits in BATCH_HOLD_S. Table lookups (well under a
        millisecond) then take a batch per round trip, and their results leave together; a training
        job (seconds or more) always comes alone, so no job waits in one worker's hands while
        another worker is free.
        """
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        # Retried: right after a nats-server restart the first request can go out on the dead connection.
        info = await with_retries(lambda: self.js.consumer_info(stream, durable, timeout=1.0), attempts=10)
        if info.config.filter_subject != subject:
            raise ValueError(
                f"consumer {stream}/{durable} filters {info.config.filter_subject!r}, not {subject!r}"
            )
        sub = await self.js.pull_subscribe_bind(durable, stream=stream)
        size = 1
        try:
            while not stop_event.is_set():
                msgs = await delivery.fetch(sub, size, fetch_timeout_s)
                if not msgs:
                    continue
                started = time.monotonic()
                await asyncio.gather(
                    *(
                        delivery.run_work(m, handler, stop_event, nak_delay_s, grace_s, on_poison)
                        for m in msgs
                    )
                )
                pace = len(msgs) / max(time.monotonic() - started, 1e-6)  # messages per second
                size = max(1, min(max_batch, int(pace * BATCH_HOLD_S)))
        finally:
            # nats-py 2.16: without this, drain() after an empty fetch waits its full 30 s timeout.
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def consume(
        self,
        subject_filter: str,
        durable: str,
        handler: EventHandler,
        stop_event: asyncio.Event,
        *,
        stream: str = events.EVENTS,
        batch: int = 1,
        fetch_timeout_s: float = 1.0,
        ack_wait_s: float = 10.0,
        retry_delay_s: float = 1.0,
    ) -> None:
        """Runs `handler(subject, data)` on every event of a durable consumer, in stream order.

        The consumer starts at the first message and resumes after the last acked
        one on restart. A failing handler is retried in place (a nak would let
        later events of the same search overtake it); Poison or a DecodeError skip
        the event. Delivery is at least once: handlers must be idempotent.

        With batch=1 (~4 k events/s on loopback) the order holds even across a
        crash: the one unacked event blocks the consumer until it comes back,
        ack_wait_s later. A larger batch is faster (~10 k/s) but after a crash the
        unacked rest of a batch can arrive after newer events.
        """

        async def each(msgs: list[Msg]) -> bool:
            for i, msg in enumerate(msgs):
                if stop_event.is_set() or not await delivery.run_event(
                    msg, handler, stop_event, retry_delay_s, heartbeat_s=ack_wait_s / 3
                ):
                    await delivery.nak_all(msgs[i:])
                    return False
            return True

        await self._consume(
            subject_filter, durable, each, stop_event, stream, batch, fetch_timeout_s, ack_wait_s
        )

    async def consume_batches(
        self,
        subject_filter: str,
        durable: str,
        handler: BatchHandler,
        stop_event: asyncio.Event,
        *,
        stream: str = events.EVENTS,
        batch: int = 64,
        fetch_timeout_s: float = 1.0,
        ack_wait_s: float = 10.0,
        retry_delay_s: float = 1.0,
    ) -> None:
        """Runs `handler(datas)` once per fetched batch of events (one store transaction for all).

        As `consume`, at least once and retried in place, for handlers to whom order does not
        matter; see `delivery.run_batch` for an event the handler calls poison.
        """

        async def whole(msgs: list[Msg]) -> bool:
            if stop_event.is_set():
                await delivery.nak_all(msgs)
                return False
            return await delivery.run_batch(msgs, handler, stop_event, retry_delay_s, ack_wait_s / 3)

        await self._consume(
            subject_filter, durable, whole, stop_event, stream, batch, fetch_timeout_s, ack_wait_s
        )

    async def _consume(
        self,
        subject_filter: str,
        durable: str,
        run: Callable[[list[Msg]], Awaitable[bool]],
        stop_event: asyncio.Event,
        stream: str,
        batch: int,
        fetch_timeout_s: float,
        ack_wait_s: float,
    ) -> None:
        """The fetch loop of a durable consumer: `run(msgs)` decides their fate; False stops it."""
        if batch < 1:
            raise ValueError("batch must be >= 1")
        config = api.ConsumerConfig(
            name=durable,
            durable_name=durable,
            filter_subject=subject_filter,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait_s,
            max_ack_pending=batch,
        )
        await with_retries(lambda: self.js.add_consumer(stream, config))  # create-or-update: idempotent
        sub = await self.js.pull_subscribe_bind(durable, stream=stream)
        try:
            while not stop_event.is_set():
                msgs = await delivery.fetch(sub, batch, fetch_timeout_s)
                # Stopping: the rest goes back now, in order, for the next start without waiting ack_wait.
                if msgs and not await run(msgs):
                    return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def on_max_deliveries(
        self, stream: str, durable: str, handler: Callable[[StuckMessage], Awaitable[None]]
    ) -> Subscription:
        """Calls `handler` with each message of stream/durable whose deliveries ran out.

        JetStream keeps such a message in the stream and only announces it on a
        core-NATS advisory (sent while some worker is pulling). Every subscriber
        gets the advisory: the handler must be idempotent (publish with a fixed
        msg id, then `delete`). Messages already deleted by another worker are skipped.
        """

        async def on_advisory(adv: Msg) -> None:
            try:
                body = json.loads(adv.data)
                seq, deliveries = int(body["stream_seq"]), int(body.get("deliveries", 0))
                raw = await self.js.get_msg(stream, seq)
            except nats.js.errors.NotFoundError:
                return  # another worker handled and deleted it
            except Exception:
                log.exception("bad max-deliveries advisory on %s", adv.subject)
                return
            stuck = StuckMessage(stream, durable, seq, deliveries, raw.subject or "", raw.data or b"")
            try:
                await handler(stuck)
            except Exception:
                log.exception("max-deliveries handler failed for %s seq %d", stream, seq)

        sub = await self.nc.subscribe(events.max_deliveries_advisory(stream, durable), cb=on_advisory)
        self._subs.append(sub)
        return sub

    async def subscribe(self, subject: str, handler: Callable[[str, bytes], Awaitable[None]]) -> Subscription:
        """Calls `handler(subject, data)` on each core-NATS message on `subject` from now on (no replay)."""

        async def on_msg(msg: Msg) -> None:
            try:
                await handler(msg.subject, msg.data)
            except Exception:
                log.exception("handler of %s failed", msg.subject)

        sub = await self.nc.subscribe(subject, cb=on_msg)
        self._subs.append(sub)
        return sub

    async def last(self, stream: str, subject: str) -> bytes | None:
        """The payload of the last message of `stream` on `subject`; None when there is none."""
        try:
            return (await with_retries(lambda: self.js.get_last_msg(stream, subject))).data
        except nats.js.errors.NotFoundError:
            return None

    async def delete(self, stream: str, seq: int) -> bool:
        """Deletes one message by sequence; False if it was already gone."""
        try:
            return await self.js.delete_msg(stream, seq)
        except nats.js.errors.APIError as e:
            if e.err_code in (10037, 10057):  # "no message found": another worker deleted it first
                return False
            raise

    async def pending(self, durable: str, stream: str = events.JOBS) -> int:
        """Messages of the stream the consumer has not yet delivered: queue depth / consumer lag."""
        info = await self.js.consumer_info(stream, durable)
        return int(info.num_pending or 0)

    async def close(self) -> None:
        """Unsubscribes, flushes pending acks and closes the connection."""
        self._closing.set()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        if self.nc.is_closed:
            return
        try:
            async with asyncio.timeout(5.0):
                await self.nc.drain()
        except Exception:
            log.warning("nats drain failed; closing", exc_info=True)
            await self.nc.close()


__all__ = [
    "Bus",
    "EventHandler",
    "Heartbeat",
    "NatsAuthError",
    "Poison",
    "StuckMessage",
    "WorkHandler",
    "connect",
]
