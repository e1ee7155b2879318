"""A service's durable subscription to every TrainResult, from start-up to close.

The agent, critic and buffer each learn from the results stream the same way:
connect, make sure the streams exist, and feed every result to their servicer
through a durable consumer named after the service, so that a restarted
service resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fnas import events, queue
from fnas.delivery import BatchHandler


class ResultsFeed:
    """Connects to NATS and runs `handler(datas)` on every fetched batch of TrainResults; `close()` stops it.

    The handler stores a batch in one transaction (see `Bus.consume_batches`).
    """

    def __init__(
        self,
        nats_url: str,
        durable: str,
        handler: BatchHandler,
        *,
        stream_replicas: int = 1,
        **auth: Any,
    ):
        self.nats_url = nats_url
        self.durable = durable
        self.handler = handler
        #: num_replicas of the streams it creates or updates (the service's stream_replicas).
        self.stream_replicas = stream_replicas
        self.auth = auth
        self.bus: queue.Bus | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> queue.Bus:
        """Connects, creates the streams if needed and starts consuming; returns the bus."""
        self.bus = await queue.connect(self.nats_url, name=f"fnas-{self.durable}", **self.auth)
        # The trainers own their consumer's ack_wait / max_deliver.
        await self.bus.ensure_streams(replicas=self.stream_replicas)
        self._task = asyncio.create_task(
            # Order does not matter (results are keyed by sample index), so batch for speed.
            self.bus.consume_batches(events.ALL_TRAIN_RESULTS, self.durable, self.handler, self._stop),
            name=f"{self.durable}-results",
        )
        return self.bus

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10)
        if self.bus is not None:
            await self.bus.close()
