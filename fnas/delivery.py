"""Handling of one delivered JetStream message: ack, nak, term, heartbeats, graceful stop.

The loops in `fnas.queue.Bus` fetch; these functions decide each message's fate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import nats.js.errors
import prometheus_client
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from fnas import retry, waits

log = logging.getLogger(__name__)

Heartbeat = Callable[[], Awaitable[None]]
WorkHandler = Callable[[bytes, Heartbeat], Awaitable[None]]
EventHandler = Callable[[str, bytes], Awaitable[None]]
#: Handles a fetched batch of events at once (their data, in stream order).
BatchHandler = Callable[[list[bytes]], Awaitable[None]]
#: Called with a poison work message and its error before the message is terminated (e.g. to report it).
PoisonHandler = Callable[[Msg, BaseException], Awaitable[None]]

POISON = prometheus_client.Counter(
    "fnas_queue_poison_messages_total",
    "Messages terminated as poison (undecodable or invalid), by stream and consumer.",
    ["stream", "consumer"],
)


T = TypeVar("T")


class Poison(Exception):
    """Raised by a handler for a message that can never succeed: it is terminated, not redelivered."""


async def fetch(sub: JetStreamContext.PullSubscription, batch: int, timeout_s: float) -> list[Msg]:
    """Up to `batch` messages of a pull consumer; [] when none came within timeout_s or NATS is away."""
    try:
        return await sub.fetch(batch, timeout=timeout_s)
    except (nats.errors.TimeoutError, TimeoutError):
        # An empty fetch raises by design (nats.py #418). nats-py 2.16 raises the builtin TimeoutError,
        # not its own subclass, when the deadline runs out between its two pull requests (a busy event
        # loop): uncaught, it silently ended the consumer's task and its service stopped receiving events.
        return []
    except (
        nats.errors.ConnectionClosedError,
        nats.errors.ConnectionReconnectingError,
        nats.js.errors.ServiceUnavailableError,
    ) as e:
        log.warning("fetch failed (%s); retrying", e)  # a nats-server restart: the client reconnects
        await asyncio.sleep(timeout_s)
        return []


async def run_work(
    msg: Msg,
    handler: WorkHandler,
    stop_event: asyncio.Event,
    nak_delay_s: float,
    grace_s: float,
    on_poison: PoisonHandler | None = None,
) -> None:
    """Runs a work handler on one message and acks, terms or naks it (see `Bus.work`).

    A poison message goes to `on_poison` first; if that fails, the message is
    nak'ed instead of terminated, so that the report is tried again.
    """

    async def heartbeat() -> None:
        await msg.in_progress()  # resets the server's ack_wait timer for this message

    task = asyncio.create_task(handler(msg.data, heartbeat))
    stopping = asyncio.create_task(stop_event.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            await asyncio.wait({task}, timeout=grace_s)
        if not task.done():
            log.info("stopping: handing message %s back to the queue", msg.metadata.sequence.stream)
            await waits.cancel(task)
            await nak(msg)
            return
    except asyncio.CancelledError:
        await waits.cancel(task)
        await nak(msg)
        raise
    finally:
        await waits.cancel(stopping)
    seq = msg.metadata.sequence.stream
    exc = asyncio.CancelledError() if task.cancelled() else task.exception()
    if exc is None:
        try:
            # No round trip: the result is already published, so a lost ack only means one
            # redelivery, whose result JetStream and the agent de-duplicate.
            await msg.ack()
        except nats.errors.Error as e:  # the message comes back after ack_wait; the result is de-duplicated
            log.warning("ack of message %d failed: %s", seq, e)
    elif isinstance(exc, Poison | DecodeError):
        if on_poison is not None:
            try:
                await on_poison(msg, exc)
            except Exception as e:  # e.g. NATS away: keep the message, report it on its next delivery
                log.warning("poison message %d: report failed (%r); redelivering", seq, e)
                await nak(msg, nak_delay_s)
                return
        log.error("poison message %d terminated: %s", seq, exc, exc_info=exc)
        _count_poison(msg)
        try:
            await msg.term()
        except nats.errors.Error as e:  # it comes back after ack_wait and is terminated then
            log.warning("term of message %d failed: %s", seq, e)
    else:
        log.warning(
            "message %d failed (delivery %d), redelivering in %.1f s: %r",
            seq,
            msg.metadata.num_delivered,
            nak_delay_s,
            exc,
            exc_info=exc,
        )
        await nak(msg, nak_delay_s)


async def run_event(
    msg: Msg, handler: EventHandler, stop: asyncio.Event, retry_delay_s: float, heartbeat_s: float
) -> bool:
    """Handles one event until it succeeds or is poison; False when stopping before that."""
    try:
        done = await _until_done(
            [msg], lambda: handler(msg.subject, msg.data), stop, retry_delay_s, heartbeat_s
        )
    except (Poison, DecodeError) as e:
        log.error("poison event %s on %s skipped: %s", msg.metadata.sequence.stream, msg.subject, e)
        _count_poison(msg)
        await msg.term()
        return True
    if done:
        await msg.ack()  # no round trip per event: a lost ack means one redelivery, which handlers absorb
    return done


async def run_batch(
    msgs: list[Msg], handler: BatchHandler, stop: asyncio.Event, retry_delay_s: float, heartbeat_s: float
) -> bool:
    """Handles fetched events with one handler call, then acks them all.

    False when stopping first: the unhandled events are nak'ed, in order, so that the next
    start gets them at once.

    A failing call is retried in place, as `run_event` does. When the handler calls the batch
    poison (Poison or a DecodeError: one event in it can never succeed), each event goes through
    `run_event` alone, so that only the poison one is skipped.
    """
    try:
        done = await _until_done(
            msgs, lambda: handler([m.data for m in msgs]), stop, retry_delay_s, heartbeat_s
        )
    except (Poison, DecodeError):
        return await _one_by_one(msgs, handler, stop, retry_delay_s, heartbeat_s)
    if not done:
        await nak_all(msgs)
        return False
    for m in msgs:
        await m.ack()
    return True


async def _one_by_one(
    msgs: list[Msg], handler: BatchHandler, stop: asyncio.Event, retry_delay_s: float, heartbeat_s: float
) -> bool:
    async def alone(_subject: str, data: bytes) -> None:
        await handler([data])

    for i, m in enumerate(msgs):
        if stop.is_set() or not await run_event(m, alone, stop, retry_delay_s, heartbeat_s):
            await nak_all(msgs[i:])
            return False
    return True


async def _until_done(
    msgs: list[Msg],
    call: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    retry_delay_s: float,
    heartbeat_s: float,
) -> bool:
    """Awaits call() until it returns (True) or `stop` is set while it fails (False); a failure is
    retried in place (a nak would let later events overtake it), Poison and DecodeError propagate.

    The messages get heartbeats meanwhile: a slow handler must not get its events redelivered.
    """
    beat = asyncio.create_task(_beat(msgs, heartbeat_s))
    try:
        while True:
            try:
                await call()
                return True
            except (Poison, DecodeError):
                raise
            except Exception:
                log.exception("event handler failed on %d events of %s; retrying", len(msgs), msgs[0].subject)
                if await waits.wait_event(stop, retry_delay_s):
                    return False
    finally:
        await waits.cancel(beat)


async def nak_all(msgs: list[Msg]) -> None:
    """Naks each message (see `nak`)."""
    for m in msgs:
        await nak(m)


def _count_poison(msg: Msg) -> None:
    meta = msg.metadata
    POISON.labels(meta.stream or "", meta.consumer or "").inc()


async def _beat(msgs: list[Msg], every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        for msg in msgs:
            with contextlib.suppress(nats.errors.Error):
                await msg.in_progress()


async def nak(msg: Msg, delay_s: float | None = None) -> None:
    """Naks a message; a failure is only logged (the message then returns after ack_wait)."""
    try:
        await msg.nak(delay=delay_s)
    except nats.errors.Error as e:  # not fatal: without the nak the message returns after ack_wait
        log.warning("nak failed: %s", e)


#: Errors of a JetStream request that a retry can fix (a nats-server restart, a reconnect).
TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.js.errors.ServiceUnavailableError,
)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    attempts: int = 5,
    wait_s: float = 0.5,
    retry_on: tuple[type[BaseException], ...] = TRANSIENT,
) -> T:
    """Awaits call() up to `attempts` times while it raises one of `retry_on`; only for idempotent calls.

    The project's retry policy (fnas.retry.retrying) after a first failure and a wait of `wait_s`:
    waits grow with jitter to at most 8 x wait_s, so a restarting nats-server is not asked again at a
    fixed beat.
    """
    try:
        return await call()  # the common case, without the policy's ~17 us per call (a few per sample)
    except retry_on as e:
        if attempts == 1:
            raise
        log.warning("%s; retrying", type(e).__name__)
    await asyncio.sleep(wait_s)
    policy = retry.retrying(
        attempts - 1, wait_s, 8 * wait_s, wait_s / 2, retry_if=lambda e: isinstance(e, retry_on)
    )
    async for attempt in policy:
        with attempt:
            return await call()
    raise AssertionError("unreachable: retrying() reraises")
