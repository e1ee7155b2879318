"""Client of CriticService, and the critic port of one search that the agent's batch assembly uses.

Every call has a deadline. All critic RPCs are idempotent (OpenSearch creates
once, Predict with min_observed is a pure function of the first N results,
Observe is keyed by sample index), so all are retried on UNAVAILABLE /
DEADLINE_EXCEEDED; Predict waits patiently, since UNAVAILABLE is also how the
critic says "the results you need have not reached me yet".
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from fnas.retry import ServiceClient
from fnas.v1 import common_pb2, critic_pb2, critic_pb2_grpc
from services.critic.decision import Prediction, from_options


class CriticUnavailable(RuntimeError):
    """The critic gave no predictions (down, frozen, failing past every retry): train, do not trust."""


#: Predict attempts before giving up (each waits up to the critic's predict_wait_s first).
PREDICT_ATTEMPTS = 30


class CriticClient(ServiceClient):
    """CriticService over one gRPC channel; use as an async context manager."""

    stub_class = critic_pb2_grpc.CriticServiceStub

    async def open_search(
        self,
        search_id: str,
        space: str,
        seed: int,
        options: common_pb2.FnasOptions | None = None,
        snapshot_id: str = "",
        history: Sequence[str] = (),
        tenant: str = "",
    ) -> int:
        """Creates the search's critic (idempotent); returns the results it already holds.

        `snapshot_id` names one of `tenant`'s snapshots.
        """
        request = critic_pb2.OpenSearchRequest(
            search_id=search_id,
            space=space,
            seed=seed,
            options=options,
            snapshot_id=snapshot_id,
            history=history,
            tenant=tenant,
        )
        # Pre-training on a long history can take a while.
        return (await self.call(self.stub.OpenSearch, request, timeout_s=max(self.timeout_s, 120.0))).observed

    async def predict(
        self, search_id: str, space: str, tokens: Sequence[Sequence[int]], min_observed: int
    ) -> list[Prediction]:
        """(V, U, trusted, known) per token list, after the first min_observed results."""
        request = critic_pb2.PredictRequest(
            search_id=search_id,
            architectures=[common_pb2.Architecture(space=space, tokens=t) for t in tokens],
            min_observed=min_observed,
        )
        reply = await self.call(self.stub.Predict, request, attempts=PREDICT_ATTEMPTS)
        return [Prediction(p.value, p.uncertainty, p.trusted, p.known) for p in reply.predictions]

    async def observe(self, search_id: str, samples: Sequence[common_pb2.Sample]) -> int:
        request = critic_pb2.ObserveRequest(search_id=search_id, samples=samples)
        return (await self.call(self.stub.Observe, request)).observed

    async def export_snapshot(self, search_id: str, tenant: str = "") -> tuple[str, bytes]:
        """(snapshot id, safetensors bytes) of the search's critic, stored as `tenant`'s snapshot."""
        request = critic_pb2.ExportSnapshotRequest(search_id=search_id, tenant=tenant)
        reply = await self.call(self.stub.ExportSnapshot, request)
        return reply.snapshot_id, reply.weights

    async def import_snapshot(self, weights: bytes, space: str, tenant: str = "") -> str:
        """Stores exported snapshot bytes for `space` as `tenant`'s; returns the snapshot id."""
        request = critic_pb2.ImportSnapshotRequest(weights=weights, space=space, tenant=tenant)
        return (await self.call(self.stub.ImportSnapshot, request)).snapshot_id


class RemoteCritic:
    """The critic port (services.agent.assemble.CriticPort) of one search over a CriticClient."""

    def __init__(self, client: CriticClient, search_id: str, space: str) -> None:
        self.client, self.search_id, self.space = client, search_id, space

    async def predict(self, tokens: Sequence[Sequence[int]], min_observed: int) -> list[Prediction]:
        """The critic service's predictions for this search; CriticUnavailable when it gave none."""
        try:
            return await self.client.predict(self.search_id, self.space, tokens, min_observed)
        except grpc.RpcError as e:
            raise CriticUnavailable(f"{e.code().name}: {e.details()}") from e


def check_options(options: common_pb2.FnasOptions) -> None:
    """Raises fnas.config.FieldError for a UAC option the critic would refuse: the agent checks a
    search's options with this before it stores the search."""
    from_options(options)
