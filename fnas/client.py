"""A small typed client of the agent (AgentService), for users who drive searches from code.

    async with AgentClient("127.0.0.1:50051") as client:
        search_id = await client.submit(spec)
        async for event in client.watch(search_id):
            ...
        best = await client.top(search_id, k=5)

Every call has a deadline; reads (get, list, top) are retried on UNAVAILABLE /
DEADLINE_EXCEEDED, submit is not (it is not idempotent). An agent with
authentication needs `token=` (the tenant's bearer token); one with TLS needs
`tls=ClientTLS(ca=...)` (and cert/key for mTLS).

`SearchClient`, the name before v0.2, still works and warns (DeprecationWarning).
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from typing import Any

from fnas.retry import DEFAULT_TIMEOUT_S, channel, retrying
from fnas.tls import ClientTLS
from fnas.v1 import agent_pb2_grpc, common_pb2, search_pb2


class AgentClient:
    """AgentService over one gRPC channel; use as an async context manager."""

    def __init__(
        self,
        target: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        token: str | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        """`token`: bearer token of the caller's tenant; `tls`: how to reach a TLS agent (None: plaintext)."""
        self.target = target
        self.timeout_s = timeout_s
        self._channel = channel(target, tls=tls, token=token)
        self._stub = agent_pb2_grpc.AgentServiceStub(self._channel)

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def submit(self, spec: common_pb2.SearchSpec) -> str:
        """Starts a search; returns its id. INVALID_ARGUMENT names a bad field."""
        response = await self._stub.SubmitSearch(
            search_pb2.SubmitSearchRequest(spec=spec), timeout=self.timeout_s
        )
        return response.search_id

    async def get(self, search_id: str) -> search_pb2.SearchStatus:
        request = search_pb2.GetSearchRequest(search_id=search_id)
        return (await self._read(self._stub.GetSearch, request)).status

    async def list(self) -> list[search_pb2.SearchStatus]:
        return list((await self._read(self._stub.ListSearches, search_pb2.ListSearchesRequest())).searches)

    async def top(self, search_id: str, k: int = 10) -> list[common_pb2.Sample]:
        request = search_pb2.GetTopArchitecturesRequest(search_id=search_id, k=k)
        return list((await self._read(self._stub.GetTopArchitectures, request)).samples)

    async def export_critic_snapshot(self, search_id: str) -> tuple[str, bytes]:
        """(snapshot id, safetensors bytes) of the search's critic, stored as the caller's snapshot."""
        request = search_pb2.ExportCriticSnapshotRequest(search_id=search_id)
        reply = await self._read(self._stub.ExportCriticSnapshot, request)
        return reply.snapshot_id, reply.weights

    async def import_critic_snapshot(self, weights: bytes, space: str) -> str:
        """Stores exported snapshot bytes for `space` as the caller's; returns the snapshot id."""
        request = search_pb2.ImportCriticSnapshotRequest(weights=weights, space=space)
        return (await self._read(self._stub.ImportCriticSnapshot, request)).snapshot_id

    async def cancel(self, search_id: str) -> search_pb2.SearchStatus:
        request = search_pb2.CancelSearchRequest(search_id=search_id)
        return (await self._read(self._stub.CancelSearch, request)).status

    async def watch(self, search_id: str, after_seq: int = 0) -> AsyncIterator[search_pb2.SearchEvent]:
        """Every event of the search in order, until it finishes; resumes after a dropped stream."""
        seq = after_seq
        async for attempt in retrying():
            with attempt:
                stream = self._stub.WatchSearch(
                    search_pb2.WatchSearchRequest(search_id=search_id, after_seq=seq)
                )
                async for event in stream:
                    seq = event.seq
                    yield event
                return

    async def _read(self, method, request):
        async for attempt in retrying():
            with attempt:
                return await method(request, timeout=self.timeout_s)
        raise AssertionError("unreachable: retrying() reraises")


def __getattr__(name: str) -> Any:
    if name == "SearchClient":
        warnings.warn("fnas.client.SearchClient is now AgentClient", DeprecationWarning, stacklevel=2)
        return AgentClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
