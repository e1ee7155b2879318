"""Client of PoolService, for trainers and benchmarks (no torch here: see services/pool/client/weights.py).

Every call has a deadline, and every call is retried on UNAVAILABLE / DEADLINE_EXCEEDED: queries and
stats are reads, and a put is idempotent by its source_job_id (a repeat stores nothing).

    async with PoolClient(address) as pool:
        reply = await pool.query(arch, task="digits", iterations=steps, blocks=block_queries(model.blocks))
        await pool.put(arch, task="digits", source_job_id=job.job_id, blocks=put_blocks(model.blocks, steps))
"""

from __future__ import annotations

from collections.abc import Sequence

from fnas.retry import DEFAULT_TIMEOUT_S, channel, retrying
from fnas.tls import ClientTLS
from fnas.v1 import common_pb2, pool_pb2, pool_pb2_grpc

#: Weights travel in these calls: a block of a wide network is megabytes, so allow more than a read.
TRANSFER_TIMEOUT_S = 60.0


class PoolClient:
    """PoolService over one gRPC channel; use as an async context manager."""

    def __init__(
        self,
        target: str,
        timeout_s: float = TRANSFER_TIMEOUT_S,
        tls: ClientTLS | None = None,
        attempts: int = 5,
        token: str = "",
    ) -> None:
        """`tls`: reach a TLS (or mTLS) server; None: plaintext. `attempts` bounds the retries of a call.

        `token`: the mesh's service token, sent as a bearer token on every call.
        """
        self.target = target
        self.timeout_s = timeout_s
        self.attempts = attempts
        self._channel = channel(target, tls=tls, token=token or None)
        self.stub = pool_pb2_grpc.PoolServiceStub(self._channel)

    async def __aenter__(self) -> PoolClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def put(
        self,
        architecture: common_pb2.Architecture,
        task: str,
        source_job_id: str,
        blocks: Sequence[pool_pb2.Block],
    ) -> pool_pb2.PutBlocksResponse:
        """Stores the blocks of one trained architecture; a repeat of source_job_id answers duplicate."""
        request = pool_pb2.PutBlocksRequest(
            architecture=architecture, task=task, source_job_id=source_job_id, blocks=blocks
        )
        return await self._call(self.stub.PutBlocks, request)

    async def query(
        self,
        architecture: common_pb2.Architecture,
        blocks: Sequence[pool_pb2.BlockQuery],
        task: str = "",
        iterations: int = 0,
        min_similarity: float = 0.0,
        seed: int = 0,
    ) -> pool_pb2.QueryBlocksResponse:
        """The best stored match of each queried block, adapted to its layout; task "" means any task."""
        request = pool_pb2.QueryBlocksRequest(
            architecture=architecture,
            task=task,
            iterations=iterations,
            blocks=blocks,
            min_similarity=min_similarity,
            seed=seed,
        )
        return await self._call(self.stub.QueryBlocks, request)

    async def stats(self) -> pool_pb2.PoolStatsResponse:
        """Blocks stored (in all and per task) and the hit ratio since the service started."""
        return await self._call(self.stub.Stats, pool_pb2.PoolStatsRequest(), timeout_s=DEFAULT_TIMEOUT_S)

    async def _call(self, method, request, timeout_s: float | None = None):
        async for attempt in retrying(attempts=self.attempts):
            with attempt:
                return await method(request, timeout=timeout_s or self.timeout_s)
        raise AssertionError("unreachable: retrying() reraises")
