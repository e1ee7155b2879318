"""Pool fixtures: pool_dir -> pool_server (real gRPC on 127.0.0.1:0, real LMDB) -> pool (a client)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch

from fnas import serving
from services.pool.app import PoolApp
from services.pool.client import PoolClient
from services.pool.config import PoolConfig

torch.set_num_threads(1)


@pytest.fixture
def pool_dir(tmp_path: Path) -> Path:
    """The data dir of the test's pool (its LMDB lives in <pool_dir>/pool)."""
    return tmp_path / "data"


@pytest.fixture
async def pool_server(pool_dir: Path) -> AsyncIterator[tuple[PoolApp, str]]:
    """A served PoolApp with a 1 MiB initial map (so tests exercise its growth); yields (app, address)."""
    app = PoolApp(PoolConfig(data_dir=pool_dir, port=0, map_size_mb=1, sync=False))
    cfg = serving.ServerConfig(port=0, grace_s=0.5)
    running = await serving.start([app.register], cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(serving.serve(running, app.warm_up, cfg, stop))
    try:
        yield app, f"127.0.0.1:{running.port}"
    finally:
        stop.set()
        await task
        await app.close()


@pytest.fixture
async def pool(pool_server: tuple[PoolApp, str]) -> AsyncIterator[PoolClient]:
    """A client of the test's pool, with few retries (a refused call should fail fast)."""
    async with PoolClient(pool_server[1], timeout_s=10, attempts=2) as client:
        yield client
