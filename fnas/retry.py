"""Client side of gRPC: channels with the message-size options, deadlines, and retries.

Every call sets `timeout=` (DEFAULT_TIMEOUT_S unless the call knows better), and
only idempotent calls are retried, only on UNAVAILABLE or DEADLINE_EXCEEDED
(STYLE.md §5):

    async for attempt in retry.retrying():
        with attempt:
            reply = await stub.Predict(request, timeout=retry.DEFAULT_TIMEOUT_S)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import tenacity
from grpc import aio

from fnas.auth import bearer_metadata
from fnas.serving import MAX_MESSAGE_BYTES, message_size_options
from fnas.tls import ClientTLS

log = logging.getLogger(__name__)

#: Deadline of one RPC attempt, in seconds.
DEFAULT_TIMEOUT_S = 10.0
#: Status codes worth another attempt: the server was away or slow, and the call is idempotent.
TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def channel(
    target: str,
    *,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    options: Sequence[tuple[str, Any]] = (),
    interceptors: Sequence[aio.ClientInterceptor] | None = None,
    tls: ClientTLS | None = None,
    token: str | None = None,
) -> aio.Channel:
    """A grpc.aio channel to `target` ("host:port") that sends and receives big messages.

    With `tls` it is a TLS channel (mTLS when tls has a client certificate);
    `token` is sent as `authorization: Bearer <token>` on every call: as call
    credentials over TLS, as metadata otherwise (gRPC refuses call credentials
    on an insecure channel; use that only on loopback or a trusted network).
    """
    opts = [*message_size_options(max_message_bytes), *options]
    if tls is None:
        if token:
            interceptors = [*(interceptors or ()), *_metadata_interceptors(bearer_metadata(token))]
        return aio.insecure_channel(target, options=opts, interceptors=interceptors)
    creds = tls.credentials()
    if token:
        creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
    return aio.secure_channel(target, creds, options=[*opts, *tls.options()], interceptors=interceptors)


def _with_metadata(
    details: aio.ClientCallDetails, extra: tuple[tuple[str, str], ...]
) -> aio.ClientCallDetails:
    metadata = aio.Metadata(*(details.metadata or ()), *extra)
    return aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


def _metadata_interceptors(extra: tuple[tuple[str, str], ...]) -> list[aio.ClientInterceptor]:
    """Client interceptors adding `extra` metadata to every call (unary and streaming)."""

    class UnaryUnary(aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation, details, request):
            return await continuation(_with_metadata(details, extra), request)

    class UnaryStream(aio.UnaryStreamClientInterceptor):
        async def intercept_unary_stream(self, continuation, details, request):
            return await continuation(_with_metadata(details, extra), request)

    class StreamUnary(aio.StreamUnaryClientInterceptor):
        async def intercept_stream_unary(self, continuation, details, request_iterator):
            return await continuation(_with_metadata(details, extra), request_iterator)

    class StreamStream(aio.StreamStreamClientInterceptor):
        async def intercept_stream_stream(self, continuation, details, request_iterator):
            return await continuation(_with_metadata(details, extra), request_iterator)

    return [UnaryUnary(), UnaryStream(), StreamUnary(), StreamStream()]


def is_transient(exc: BaseException) -> bool:
    """True for an RPC error whose code is UNAVAILABLE or DEADLINE_EXCEEDED."""
    return isinstance(exc, grpc.RpcError) and exc.code() in TRANSIENT_CODES


def retrying(
    attempts: int = 5,
    initial_s: float = 0.05,
    max_wait_s: float = 2.0,
    jitter_s: float = 0.05,
    max_delay_s: float | None = None,
    retry_if: Callable[[BaseException], bool] = is_transient,
) -> tenacity.AsyncRetrying:
    """Retry policy for idempotent calls: exponential backoff with jitter, bounded, reraises at the end.

    `max_delay_s`: no new attempt once that long has passed since the first. `retry_if`: which
    errors are worth another attempt (default: gRPC's UNAVAILABLE and DEADLINE_EXCEEDED).
    """
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    stop = tenacity.stop_after_attempt(attempts)
    if max_delay_s is not None:
        stop |= tenacity.stop_after_delay(max_delay_s)
    return tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(retry_if),
        wait=tenacity.wait_exponential_jitter(multiplier=initial_s, max=max_wait_s, jitter=jitter_s),
        stop=stop,
        reraise=True,
        before_sleep=tenacity.before_sleep_log(log, logging.WARNING),
    )


class ServiceClient:
    """One gRPC channel and stub with a deadline on every call; an async context manager.

    Subclasses set `stub_class` and call `self.call(self.stub.Method, request)`,
    which retries on UNAVAILABLE / DEADLINE_EXCEEDED: use it for idempotent RPCs only.
    """

    stub_class: type

    def __init__(
        self,
        target: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        tls: Any = None,
        patience_s: float | None = None,
        token: str = "",
    ) -> None:
        """`tls`: a fnas.tls.ClientTLS to reach a TLS (or mTLS) server; None: plaintext.

        `patience_s`: no new attempt of a call once that long has passed since its first
        (None: only the attempt count bounds it). `token`: the mesh's service token, sent
        as a bearer token on every call.
        """
        self.target = target
        self.timeout_s = timeout_s
        self.patience_s = patience_s
        self._channel = channel(target, tls=tls, token=token or None)
        self.stub = self.stub_class(self._channel)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def call(
        self,
        method,
        request,
        timeout_s: float | None = None,
        attempts: int = 5,
    ):
        async for attempt in retrying(attempts=attempts, max_delay_s=self.patience_s):
            with attempt:
                return await method(request, timeout=timeout_s or self.timeout_s)
        raise AssertionError("unreachable: retrying() reraises")
