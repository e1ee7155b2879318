"""The critic as a service: the CriticService servicer, its LMDB store and its result consumer.

`CriticApp` is what both `fnas serve critic` and the in-process harness run:
register() adds the servicer to a gRPC server, warm_up() opens the store,
connects to NATS and starts the durable consumer of train results, close()
stops all that.
"""

from __future__ import annotations

import logging

import grpc

from fnas import events
from fnas.results_feed import ResultsFeed
from fnas.v1 import critic_pb2, critic_pb2_grpc
from services.critic.config import CriticConfig
from services.critic.core import CriticCore
from services.critic.servicer import CriticServicer
from services.critic.store import CriticStore

log = logging.getLogger(__name__)
SERVICE_NAME = critic_pb2.DESCRIPTOR.services_by_name["CriticService"].full_name


class CriticApp:
    """One critic: servicer + LMDB store + NATS consumer."""

    def __init__(self, cfg: CriticConfig) -> None:
        import torch

        # Deterministic and fast for 200-unit MLPs (TECH-NOTES, PyTorch).
        torch.set_num_threads(cfg.torch_threads)
        self.cfg = cfg
        self.store = CriticStore(cfg.data_dir / "critic")
        self.core = CriticCore(store=self.store)
        self.servicer = CriticServicer(self.core, wait_s=cfg.predict_wait_s)
        self.feed = ResultsFeed(
            cfg.nats_url,
            events.CRITIC,
            self.servicer.on_results,
            stream_replicas=cfg.stream_replicas,
            # An ended search leaves memory (the store keeps it): else memory grows with every search.
            on_end=self.servicer.on_search_end,
            **cfg.nats_auth(),
        )

    def register(self, server: grpc.aio.Server) -> tuple[str, ...]:
        critic_pb2_grpc.add_CriticServiceServicer_to_server(self.servicer, server)
        return (SERVICE_NAME,)

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """The service token required on every call when one is set (health and reflection stay open)."""
        return self.cfg.service_auth([SERVICE_NAME])

    async def warm_up(self) -> None:
        await self.feed.start()
        log.info("critic ready")

    async def close(self) -> None:
        await self.feed.close()
        self.store.close()
