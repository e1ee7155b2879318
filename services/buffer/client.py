"""Client of BufferService, and the buffer port of one search that the agent's batch assembly uses.

Every call has a deadline; all buffer RPCs are idempotent (Add is keyed by
sample index, Sample with a seed and min_observed is a pure function of the
first N results), so all are retried on UNAVAILABLE / DEADLINE_EXCEEDED.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from fnas.retry import ServiceClient
from fnas.v1 import buffer_pb2, buffer_pb2_grpc, common_pb2
from services.buffer.aeb import Entry, Replay

#: Sample attempts before giving up (each waits up to the buffer's sample_wait_s first).
SAMPLE_ATTEMPTS = 30


class BufferClient(ServiceClient):
    """BufferService over one gRPC channel; use as an async context manager."""

    stub_class = buffer_pb2_grpc.BufferServiceStub

    async def add(self, search_id: str, samples: Sequence[common_pb2.Sample]) -> int:
        """Records trained samples by hand; returns the buffer size."""
        return (
            await self.call(self.stub.Add, buffer_pb2.AddRequest(search_id=search_id, samples=samples))
        ).size

    async def sample(
        self,
        search_id: str,
        n: int,
        beta: float,
        seed: int,
        min_observed: int,
        capacity: int = 0,
        temperature: float = 0.0,
    ) -> list[Replay]:
        """n replays with normalised weights from the buffer after the first min_observed results."""
        request = buffer_pb2.SampleRequest(
            search_id=search_id,
            n=n,
            beta=beta,
            seed=seed,
            min_observed=min_observed,
            capacity=capacity,
            temperature=temperature,
        )
        reply = await self.call(self.stub.Sample, request, attempts=SAMPLE_ATTEMPTS)
        return [
            Replay(
                Entry(
                    s.sample.index,
                    tuple(s.sample.architecture.tokens),
                    s.sample.reward.value,
                    s.sample.behaviour_log_prob,
                ),
                s.weight,
            )
            for s in reply.samples
        ]

    async def stats(self, search_id: str, capacity: int = 0) -> tuple[int, int]:
        """(buffer size, results observed) of a search."""
        reply = await self.call(
            self.stub.Stats, buffer_pb2.BufferStatsRequest(search_id=search_id, capacity=capacity)
        )
        return reply.size, reply.observed


class BufferUnavailable(RuntimeError):
    """The buffer gave no replays (down or failing past every retry): the batch goes without them."""


class RemoteBuffer:
    """The buffer port (services.agent.assemble.BufferPort) of one search over a BufferClient."""

    def __init__(self, client: BufferClient, search_id: str) -> None:
        self.client, self.search_id = client, search_id

    async def sample(
        self, n: int, beta: float, seed: int, min_observed: int, capacity: int, temperature: float
    ) -> list[Replay]:
        """The buffer service's replays for this search; BufferUnavailable when it gave none."""
        try:
            return await self.client.sample(
                self.search_id, n, beta, seed, min_observed, capacity, temperature
            )
        except grpc.RpcError as e:
            raise BufferUnavailable(f"{e.code().name}: {e.details()}") from e
