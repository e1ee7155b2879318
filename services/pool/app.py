"""The pool as a service: the PoolService servicer and its LMDB store.

`PoolApp` is what both `fnas serve pool` and the in-process harness run:
register() adds the servicer to a gRPC server, warm_up() reports what the store
holds (the index was rebuilt from LMDB when the store opened), close() closes
the store.
"""

from __future__ import annotations

import logging

import grpc

from fnas.v1 import pool_pb2, pool_pb2_grpc
from services.pool.config import PoolConfig
from services.pool.servicer import PoolServicer
from services.pool.store import PoolStore

log = logging.getLogger(__name__)
SERVICE_NAME = pool_pb2.DESCRIPTOR.services_by_name["PoolService"].full_name


class PoolApp:
    """One pool: servicer + LMDB store (the store's only writer)."""

    def __init__(self, cfg: PoolConfig) -> None:
        self.cfg = cfg
        self.store = PoolStore(
            cfg.data_dir / "pool",
            map_size=cfg.map_size_mb << 20,
            max_map_size=cfg.max_map_size_gb << 30,
            sync=cfg.sync,
        )
        self.servicer = PoolServicer(self.store, cfg.max_tensor_elements)

    def register(self, server: grpc.aio.Server) -> tuple[str, ...]:
        pool_pb2_grpc.add_PoolServiceServicer_to_server(self.servicer, server)
        return (SERVICE_NAME,)

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """The service token required on every call when one is set (health and reflection stay open)."""
        return self.cfg.service_auth([SERVICE_NAME])

    async def warm_up(self) -> None:
        blocks, per_task = self.store.stats()
        log.info("pool ready: %d blocks %s, %d MiB map", blocks, per_task, self.store.map_size() >> 20)

    async def close(self) -> None:
        self.store.close()
