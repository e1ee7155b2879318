"""The agent as a service: the SearchService servicer, its store and its queue.

`AgentApp` is what both `fnas serve agent` and the in-process harness run:
register() adds the servicer to a gRPC server, warm_up() opens the store,
connects to NATS, starts the results consumer and resumes running searches,
close() stops all that.
"""

from __future__ import annotations

import logging

import grpc

from fnas import auth, events, serving, tenancy
from fnas.results_feed import ResultsFeed
from fnas.v1 import search_pb2, search_pb2_grpc
from services.agent.config import AgentConfig
from services.agent.servicer import SearchServicer
from services.agent.store import AgentStore
from services.buffer.client import BufferClient
from services.critic.client import CriticClient

log = logging.getLogger(__name__)
SERVICE_NAME = search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name


class AgentApp:
    """One agent: servicer + LMDB store + NATS bus + results consumer."""

    def __init__(self, cfg: AgentConfig) -> None:
        import torch

        # The policy is tiny: more threads only contend with the trainers (TECH-NOTES, PyTorch).
        torch.set_num_threads(cfg.torch_threads)
        self.cfg = cfg
        self.store = AgentStore(cfg.data_dir / "agent")
        # The fnas strategies' critic and buffer (DESIGN.md step 2 and 6); channels connect lazily.
        tls = cfg.client_tls()
        kw = {"tls": tls, "patience_s": cfg.module_patience_s, "token": cfg.service_token}
        self.critic = CriticClient(cfg.critic_address, **kw) if cfg.critic_address else None
        self.buffer = BufferClient(cfg.buffer_address, **kw) if cfg.buffer_address else None
        limits = tenancy.Limits(cfg.max_searches_per_tenant, cfg.max_budget_samples, cfg.max_budget_seconds)
        self.servicer = SearchServicer(
            self.store,
            bus=None,
            max_searches=cfg.max_searches,
            critic=self.critic,
            buffer=self.buffer,
            limits=limits,
        )
        #: Bearer tokens -> tenants; None: SearchService is open (every caller is the anonymous tenant).
        self.tokens = auth.TokenTable.load(cfg.auth_tokens_file, cfg.auth_tokens)
        self.feed = ResultsFeed(
            cfg.nats_url,
            events.AGENT,
            self.servicer.on_results,
            stream_replicas=cfg.stream_replicas,
            **cfg.nats_auth(),
        )

    def register(self, server: grpc.aio.Server) -> str:
        search_pb2_grpc.add_SearchServiceServicer_to_server(self.servicer, server)
        return SERVICE_NAME

    def server_config(self, **overrides) -> serving.ServerConfig:
        """The gRPC server settings of this agent's config (address, TLS, request size limit)."""
        cfg = self.cfg
        values = dict(
            host=cfg.host,
            port=cfg.port,
            metrics_port=cfg.metrics_port,
            metrics_host=cfg.metrics_host,
            grace_s=cfg.grace_s,
            max_receive_message_bytes=cfg.max_message_bytes,
            **cfg.server_tls(),
        )
        return serving.ServerConfig(**(values | overrides))

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """Server interceptors: bearer-token authentication of SearchService when tokens are set."""
        return [] if self.tokens is None else [auth.BearerAuth(self.tokens, [SERVICE_NAME])]

    async def warm_up(self) -> None:
        self.servicer.bus = await self.feed.start()
        resumed = self.servicer.resume()
        log.info("agent ready: %d searches resumed", resumed)

    async def close(self) -> None:
        await self.servicer.close()
        await self.feed.close()
        for client in (self.critic, self.buffer):
            if client is not None:
                await client.close()
        self.store.close()
