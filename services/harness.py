"""The in-process cluster: an embedded nats-server and every service in one process.

The services are the same objects that `fnas serve <name>` runs, bound to free
loopback ports; only the addresses differ from a multi-process or multi-host
deployment. Used by `fnas up`, by `fnas search` without --target, by the
benchmarks and by the tests.

    async with Cluster(data_dir, trainers=2) as cluster:
        async with AgentClient(cluster.agent_address) as client: ...
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from fnas import metrics, serving
from fnas.nats_server import EmbeddedNats
from services.agent.app import AgentApp
from services.agent.config import AgentConfig
from services.buffer.app import BufferApp
from services.buffer.config import BufferConfig
from services.critic.app import CriticApp
from services.critic.config import CriticConfig
from services.pool.app import PoolApp
from services.pool.config import PoolConfig
from services.trainer.config import TrainerConfig
from services.trainer.evaluate import default_evaluator
from services.trainer.worker import TrainerWorker

log = logging.getLogger(__name__)


class Cluster:
    """NATS + agent + critic + buffer + pool + trainers in this process; an async context manager."""

    def __init__(
        self,
        data_dir: Path | str = "fnas-data",
        trainers: int = 2,
        nats_url: str | None = None,
        metrics_port: int | None = None,
        auth_tokens: str = "",
        agent_port: int = 0,
        trainer_settings: dict | None = None,
    ) -> None:
        """`auth_tokens`: `tenant:token,...` the agent requires (AgentConfig.auth_tokens); empty: open.

        `agent_port`: the agent's gRPC port on 127.0.0.1 (0: a free one). `trainer_settings`:
        TrainerConfig fields of every trainer (width_mult, image_side...; the defaults otherwise).
        """
        self.trainer_settings = trainer_settings or {}
        self.data_dir = Path(data_dir)
        self.auth_tokens = auth_tokens
        self.agent_port = agent_port
        self.n_trainers = trainers
        self.metrics_port = metrics_port
        self.nats = None if nats_url else EmbeddedNats(self.data_dir / "nats")
        self.nats_url = nats_url
        self.agent_address = ""
        self.agent: AgentApp | None = None
        # Critic (UAC) and buffer (AEB) share one gRPC server of their own.
        self.critic: CriticApp | None = None
        self.buffer: BufferApp | None = None
        self.critic_address = self.buffer_address = ""
        # The AKP pool (paper 4.3) shares that server; the trainers initialise their models from it.
        self.pool: PoolApp | None = None
        self.pool_address = ""
        self.workers: list[TrainerWorker] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> Cluster:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def start(self) -> None:
        if self.nats is not None:
            self.nats.start()
            self.nats_url = self.nats.url
        if self.metrics_port is not None:
            self.metrics_port = metrics.start_http(self.metrics_port, addr="127.0.0.1")
        self.critic = CriticApp(CriticConfig(nats_url=self.nats_url, data_dir=self.data_dir, port=0))
        self.buffer = BufferApp(BufferConfig(nats_url=self.nats_url, data_dir=self.data_dir, port=0))
        self.pool = PoolApp(PoolConfig(data_dir=self.data_dir, port=0))
        address, helpers_ready = await self._serve_helpers([self.critic, self.buffer, self.pool])
        self.critic_address = self.buffer_address = self.pool_address = address
        agent_cfg = AgentConfig(
            nats_url=self.nats_url,
            data_dir=self.data_dir,
            port=self.agent_port,
            critic_address=self.critic_address,
            buffer_address=self.buffer_address,
            auth_tokens=self.auth_tokens,
        )
        self.agent = AgentApp(agent_cfg)
        # The agent's own server settings (request size limit included), as `fnas serve agent` applies them.
        server_cfg = self.agent.server_config(grace_s=1.0)
        running = await serving.start([self.agent.register], server_cfg, self.agent.interceptors())
        self.agent_address = f"127.0.0.1:{running.port}"
        ready = asyncio.Event()

        async def warm_up() -> None:
            await self.agent.warm_up()
            ready.set()

        self._tasks.append(asyncio.create_task(serving.serve(running, warm_up, server_cfg, self._stop)))
        for i in range(self.n_trainers):
            cfg = TrainerConfig(
                nats_url=self.nats_url, trainer_id=f"trainer-{i}", data_dir=self.data_dir,
                pool_address=self.pool_address, **self.trainer_settings,
            )  # fmt: skip
            worker = TrainerWorker(cfg, default_evaluator(cfg.heartbeat_s, cfg))
            self.workers.append(worker)
            self._tasks.append(asyncio.create_task(worker.run(self._stop), name=f"trainer-{i}"))
        async with asyncio.timeout(30):
            await ready.wait()
            await helpers_ready.wait()
        log.info(
            "cluster up: agent %s, nats %s, %d trainers", self.agent_address, self.nats_url, self.n_trainers
        )

    async def stop(self) -> None:
        self._stop.set()  # the server drains its RPCs and the trainers finish their jobs first
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.agent is not None:
            await self.agent.close()
        for app in (self.critic, self.buffer, self.pool):
            if app is not None:
                await app.close()
        if self.nats is not None:
            self.nats.stop()

    async def _serve_helpers(self, apps: list) -> tuple[str, asyncio.Event]:
        """Serves `apps` (critic, buffer) on one server; returns its address and a warmed-up event."""
        server_cfg = serving.ServerConfig(host="127.0.0.1", port=0, grace_s=1.0)
        running = await serving.start([app.register for app in apps], server_cfg)
        ready = asyncio.Event()

        async def warm_up() -> None:
            for app in apps:
                await app.warm_up()
            ready.set()

        self._tasks.append(asyncio.create_task(serving.serve(running, warm_up, server_cfg, self._stop)))
        return f"127.0.0.1:{running.port}", ready
