"""A service's durable subscription to every TrainResult (and, if asked, every search end), from
start-up to close.

The agent, critic and buffer each learn from the results stream the same way:
connect, make sure the streams exist, and feed every result to their servicer
through a durable consumer named after the service, so that a restarted
service resumes where it stopped. The critic and buffer also hear of every
search's end through a durable consumer of their own: a core-NATS subscription
would miss the ends of searches that finished while the service was down, and
their memory would keep those searches for good.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fnas import events, queue
from fnas.delivery import BatchHandler, EventHandler


class ResultsFeed:
    """Connects to NATS and runs `handler(datas)` on every fetched batch of TrainResults, and
    `on_end(subject, data)` on every search's `finished` event when given; `close()` stops both.

    The handler stores a batch in one transaction (see `Bus.consume_batches`).
    """

    def __init__(
        self,
        nats_url: str,
        durable: str,
        handler: BatchHandler,
        *,
        stream_replicas: int = 1,
        on_end: EventHandler | None = None,
        **auth: Any,
    ):
        self.nats_url = nats_url
        self.durable = durable
        self.handler = handler
        self.on_end = on_end
        #: num_replicas of the streams it creates or updates (the service's stream_replicas).
        self.stream_replicas = stream_replicas
        self.auth = auth
        self.bus: queue.Bus | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> queue.Bus:
        """Connects, creates the streams if needed and starts consuming; returns the bus."""
        self.bus = await queue.connect(self.nats_url, name=f"fnas-{self.durable}", **self.auth)
        # The trainers own their consumer's ack_wait / max_deliver.
        await self.bus.ensure_streams(replicas=self.stream_replicas)
        self._tasks.append(
            asyncio.create_task(
                # Order does not matter (results are keyed by sample index), so batch for speed.
                self.bus.consume_batches(events.ALL_TRAIN_RESULTS, self.durable, self.handler, self._stop),
                name=f"{self.durable}-results",
            )
        )
        if self.on_end is not None:
            ends = events.search_ends_consumer(self.durable)
            self._tasks.append(
                asyncio.create_task(
                    self.bus.consume(events.SEARCH_ENDS, ends, self.on_end, self._stop), name=ends
                )
            )
        return self.bus

    async def close(self) -> None:
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await task
        if self.bus is not None:
            await self.bus.close()
