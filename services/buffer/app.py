"""The buffer as a service: the BufferService servicer, its LMDB store and its result consumer.

`BufferApp` is what both `fnas serve buffer` and the in-process harness run.
"""

from __future__ import annotations

import logging

import grpc

from fnas import events
from fnas.results_feed import ResultsFeed
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
        self.feed = ResultsFeed(
            cfg.nats_url,
            events.BUFFER,
            self.servicer.on_results,
            stream_replicas=cfg.stream_replicas,
            # An ended search leaves memory (the store keeps it): else memory grows with every search.
            on_end=self.servicer.on_search_end,
            **cfg.nats_auth(),
        )

    def register(self, server: grpc.aio.Server) -> tuple[str, ...]:
        buffer_pb2_grpc.add_BufferServiceServicer_to_server(self.servicer, server)
        return (SERVICE_NAME,)

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """The service token required on every call when one is set (health and reflection stay open)."""
        return self.cfg.service_auth([SERVICE_NAME])

    async def warm_up(self) -> None:
        await self.feed.start()
        log.info("buffer ready")

    async def close(self) -> None:
        await self.feed.close()
        self.store.close()
