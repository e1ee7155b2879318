"""The buffer as a service: the BufferService servicer, its LMDB store and its result consumer.

`BufferApp` is what both `fnas serve buffer` and the in-process harness run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from fnas import events, queue
from fnas.v1 import buffer_pb2, buffer_pb2_grpc
from services.buffer.config import BufferConfig
from services.buffer.core import BufferCore
from services.buffer.servicer import BufferServicer
from services.buffer.store import BufferStore

log = logging.getLogger(__name__)
SERVICE_NAME = buffer_pb2.DESCRIPTOR.services_by_name["BufferService"].full_name


class BufferApp:
    """One buffer: servicer + LMDB store + NATS consumer."""

    def __init__(self, cfg: BufferConfig) -> None:
        self.cfg = cfg
        self.store = BufferStore(cfg.data_dir / "buffer")
        self.core = BufferCore(store=self.store)
        self.servicer = BufferServicer(self.core, wait_s=cfg.sample_wait_s)
        self._stop = asyncio.Event()
        self._consumer: asyncio.Task | None = None
        self._bus: queue.Bus | None = None

    def register(self, server: grpc.aio.Server) -> str:
        buffer_pb2_grpc.add_BufferServiceServicer_to_server(self.servicer, server)
        return SERVICE_NAME

    async def warm_up(self) -> None:
        self._bus = await queue.connect(self.cfg.nats_url, name="fnas-buffer", **self.cfg.nats_auth())
        await self._bus.ensure_streams()
        self._consumer = asyncio.create_task(
            # Order does not matter (results are keyed by sample index), so batch for speed.
            self._bus.consume(events.ALL_TRAIN_RESULTS, events.BUFFER, self._on_result, self._stop, batch=64),
            name="buffer-results",
        )
        log.info("buffer ready")

    async def _on_result(self, subject: str, data: bytes) -> None:
        await self.servicer.on_result(data)

    async def close(self) -> None:
        self._stop.set()
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._consumer, 10)
        if self._bus is not None:
            await self._bus.close()
        self.store.close()
