"""The agent as a service: the AgentService servicer, its store and its queue.

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
from fnas.v1 import agent_pb2, agent_pb2_grpc, search_pb2, search_pb2_grpc
from services.agent.config import AgentConfig
from services.agent.servicer import AgentServicer
from services.agent.store import AgentStore
from services.buffer.client import BufferClient
from services.critic.client import CriticClient

log = logging.getLogger(__name__)
SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name
#: The same API under its name before v0.2, served beside it until fnas.v2 (deprecated in the proto).
DEPRECATED_NAME = search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name


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
        self.servicer = AgentServicer(
            self.store,
            bus=None,
            max_searches=cfg.max_searches,
            critic=self.critic,
            buffer=self.buffer,
            limits=limits,
        )
        #: Bearer tokens -> tenants; None: AgentService is open (every caller is the anonymous tenant).
        self.tokens = auth.TokenTable.load(cfg.auth_tokens_file, cfg.auth_tokens)
        self.feed = ResultsFeed(
            cfg.nats_url,
            events.AGENT,
            self.servicer.on_results,
            stream_replicas=cfg.stream_replicas,
            **cfg.nats_auth(),
        )

    def register(self, server: grpc.aio.Server) -> tuple[str, ...]:
        agent_pb2_grpc.add_AgentServiceServicer_to_server(self.servicer, server)
        search_pb2_grpc.add_SearchServiceServicer_to_server(self.servicer, server)  # same methods by name
        return SERVICE_NAME, DEPRECATED_NAME

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
        """Server interceptors: bearer-token authentication of AgentService when tokens are set."""
        return [] if self.tokens is None else [auth.BearerAuth(self.tokens, [SERVICE_NAME, DEPRECATED_NAME])]

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
