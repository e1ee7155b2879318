"""The gRPC service skeleton every `services/<name>/__main__.py` runs (STYLE.md §3).

`start` binds the server with health (everything NOT_SERVING until warm-up),
reflection (v1 and v1alpha) and the metrics interceptor; `serve` warms up, flips health to
SERVING, waits for SIGTERM/SIGINT (or a stop event) and shuts down gracefully:
readiness fails first, then in-flight RPCs get `grace_s` to finish.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from fnas import bounds, events, metrics, tls, waits

log = logging.getLogger(__name__)

#: Send/receive limit for messages; gRPC's default 4 MiB is too small for block weights.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING

#: Registers one servicer on the server and returns the full names it answers (from the proto DESCRIPTOR).
Register = Callable[[aio.Server], Sequence[str]]


def message_size_options(max_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """gRPC channel/server options raising both message-size limits to max_bytes."""
    return [("grpc.max_send_message_length", max_bytes), ("grpc.max_receive_message_length", max_bytes)]


@dataclass(frozen=True)
class ServerConfig:
    """Where and how a gRPC service listens."""

    host: str = "127.0.0.1"
    """Bind address; 0.0.0.0 (or [::]) to accept other hosts."""
    port: int = 0
    """gRPC port; 0 picks a free one (tests, the in-process harness)."""
    metrics_port: int | None = None
    """Prometheus /metrics port; None serves no endpoint."""
    metrics_host: str = "127.0.0.1"
    """Address /metrics listens on (loopback unless another host scrapes it)."""
    grace_s: float = 10.0
    """Seconds in-flight RPCs get to finish on shutdown."""
    max_send_message_bytes: int = MAX_MESSAGE_BYTES
    """Largest message the server sends."""
    max_receive_message_bytes: int = MAX_MESSAGE_BYTES
    """Largest message the server accepts."""
    extra_options: tuple[tuple[str, Any], ...] = field(default=())
    """Further grpc server options."""
    tls_cert: Path | None = None
    """PEM server certificate; with tls_key the server speaks TLS only."""
    tls_key: Path | None = None
    """PEM private key of tls_cert."""
    tls_client_ca: Path | None = None
    """PEM CA bundle; set, every client must present a certificate it signed (mTLS)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be in 0..65535, got {self.metrics_port}")
        if self.grace_s < 0:
            raise ValueError("grace_s must be >= 0")
        if self.max_send_message_bytes <= 0 or self.max_receive_message_bytes <= 0:
            raise ValueError("message size limits must be > 0")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key: set both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca: needs tls_cert and tls_key (mTLS is on top of TLS)")

    @property
    def grpc_options(self) -> list[tuple[str, Any]]:
        """Server options: the message-size limits and extra_options."""
        return [
            ("grpc.max_send_message_length", self.max_send_message_bytes),
            ("grpc.max_receive_message_length", self.max_receive_message_bytes),
            *self.extra_options,
        ]


class _Undecodable:
    """Stands in for a request whose bytes did not parse, so the handler can refuse it properly."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class RequestGuard(aio.ServerInterceptor):
    """Checks what every FNAS request shares before its handler runs, answering INVALID_ARGUMENT.

    A request that does not parse gets 'request: ...' (gRPC itself would answer
    UNKNOWN, the code of a crashed handler); a non-finite number or an over-long
    string anywhere in it gets its field path (fnas.bounds); a `search_id` that no search can
    have (too long for an LMDB key, or not a subject token: fnas.events) gets
    'search_id: ...'. Whether a search_id is required stays the handler's call.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        parse = handler.request_deserializer

        def guarded(data: bytes) -> Any:
            try:
                return parse(data)
            except Exception as e:  # DecodeError, or anything else a broken message raises
                return _Undecodable(e)

        kind = "unary" if not handler.request_streaming else "stream"
        kind += "_unary" if not handler.response_streaming else "_stream"
        behaviour = getattr(handler, kind)
        checked = _checked_stream if handler.request_streaming else _checked_unary
        factory = getattr(grpc, f"{kind}_rpc_method_handler")
        return factory(
            checked(behaviour), request_deserializer=guarded, response_serializer=handler.response_serializer
        )


async def _check_request(request: Any, context: aio.ServicerContext) -> None:
    if isinstance(request, _Undecodable):
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"request: not a valid message ({type(request.error).__name__})"
        )
    if (problem := bounds.violation(request)) is not None:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
    search_id = getattr(request, "search_id", None)
    if isinstance(search_id, str) and search_id:
        problem = events.search_id_problem(search_id)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"search_id: {problem}")


def _checked_unary(behaviour: Any) -> Any:
    if inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: aio.ServicerContext) -> Any:
            await _check_request(request, context)
            async for item in behaviour(request, context):
                yield item

        return stream

    async def unary(request: Any, context: aio.ServicerContext) -> Any:
        await _check_request(request, context)
        result = behaviour(request, context)
        return await result if inspect.isawaitable(result) else result

    return unary


def _checked_stream(behaviour: Any) -> Any:
    async def requests(iterator: Any, context: aio.ServicerContext) -> Any:
        async for request in iterator:
            await _check_request(request, context)
            yield request

    if inspect.isasyncgenfunction(behaviour):

        async def stream(iterator: Any, context: aio.ServicerContext) -> Any:
            async for item in behaviour(requests(iterator, context), context):
                yield item

        return stream

    async def unary(iterator: Any, context: aio.ServicerContext) -> Any:
        result = behaviour(requests(iterator, context), context)
        return await result if inspect.isawaitable(result) else result

    return unary


#: grpc.reflection.v1 (what current grpcurl and IDEs ask first) beside v1alpha.
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def enable_reflection(names: Sequence[str], server: aio.Server) -> None:
    """Serves server reflection, v1 and v1alpha, listing `names` and both reflection services.

    grpcio-reflection (1.85) serves v1alpha only. The v1 proto only renamed the package: its
    messages are v1alpha's on the wire, so v1alpha's servicer answers v1 too, under v1's name.
    """
    servicer = reflection.aio.ReflectionServicer((*names, reflection.SERVICE_NAME, REFLECTION_V1))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(REFLECTION_V1, handlers),))


@dataclass(frozen=True)
class Running:
    """A started server: the server, its health servicer, the bound port and the registered names."""

    server: aio.Server
    probe: health.aio.HealthServicer
    port: int
    names: tuple[str, ...]


async def start(
    register: Sequence[Register], cfg: ServerConfig, interceptors: Sequence[aio.ServerInterceptor] = ()
) -> Running:
    """Creates, binds and starts the server; every health name is NOT_SERVING until `serve` warms up.

    `interceptors` run inside the metrics one (e.g. fnas.auth.BearerAuth), so
    refused calls are counted with their status code too. With cfg.tls_cert the
    port speaks TLS only (mTLS with cfg.tls_client_ca).
    """
    server = aio.server(
        interceptors=[metrics.RpcMetrics(), *interceptors, RequestGuard()], options=cfg.grpc_options
    )
    probe = health.aio.HealthServicer()  # "" starts as SERVING: set below, not ready until warm-up
    health_pb2_grpc.add_HealthServicer_to_server(probe, server)
    names = tuple(name for add in register for name in add(server))
    for name in ("", *names):
        await probe.set(name, NOT_SERVING)
    enable_reflection((*names, health.SERVICE_NAME), server)
    address = f"{cfg.host}:{cfg.port}"
    if cfg.tls_cert is not None and cfg.tls_key is not None:
        port = server.add_secure_port(
            address, tls.server_credentials(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca)
        )
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind gRPC on {cfg.host}:{cfg.port}")
    await server.start()
    log.info(
        "gRPC %s listening on %s:%d (%s)",
        ", ".join(names) or "(no services)",
        cfg.host,
        port,
        "mTLS" if cfg.tls_client_ca else "TLS" if cfg.tls_cert else "plaintext",
    )
    return Running(server, probe, port, names)


async def serve(
    run: Running,
    warm_up: Callable[[], Awaitable[None]],
    cfg: ServerConfig,
    stop_event: asyncio.Event | None = None,
) -> None:
    """Warms up, reports SERVING, waits for a stop, then shuts down gracefully.

    Without `stop_event` it stops on SIGTERM or SIGINT (the process's own
    service); with one (the in-process harness, tests) it installs no signal
    handlers and stops when the event is set.
    """
    if cfg.metrics_port is not None:
        metrics.start_http(cfg.metrics_port, addr=cfg.metrics_host)
    loop = asyncio.get_running_loop()
    stop = stop_event if stop_event is not None else asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT) if stop_event is None else ()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)  # before warm-up: a SIGTERM during warm-up still stops cleanly
    try:
        if not await _until_stopped(warm_up(), stop):
            log.warning("stopped during warm-up (e.g. NATS unreachable)")
        elif not stop.is_set():
            for name in ("", *run.names):
                await run.probe.set(name, SERVING)
            log.info("serving %s", ", ".join(run.names))
        await stop.wait()
    finally:
        await run.probe.enter_graceful_shutdown()  # readiness fails first,
        await run.server.stop(cfg.grace_s)  # then in-flight RPCs get grace_s to finish
        for sig in signals:
            loop.remove_signal_handler(sig)
        log.info("stopped %s", ", ".join(run.names))


async def _until_stopped(work: Awaitable[None], stop: asyncio.Event) -> bool:
    """Awaits `work` unless `stop` is set first (then cancels it); True when the work finished.

    A warm-up can wait forever (a NATS client retries an unreachable server without end), and
    a SIGTERM must still stop the process then.
    """
    task = asyncio.ensure_future(work)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        await waits.cancel(task)
    return not task.cancelled() and task.result() is None


async def health_status(
    target: str,
    service: str = "",
    timeout_s: float = 2.0,
    credentials: grpc.ChannelCredentials | None = None,
) -> int:
    """The health status a server reports for `service` (SERVING, NOT_SERVING...); raises on RPC errors.

    Pass `credentials` (fnas.tls.ClientTLS(...).credentials()) for a TLS server.
    """
    ch = aio.insecure_channel(target) if credentials is None else aio.secure_channel(target, credentials)
    async with ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
        )
    return int(reply.status)


__all__ = [
    "MAX_MESSAGE_BYTES",
    "Register",
    "RequestGuard",
    "Running",
    "ServerConfig",
    "health_status",
    "serve",
    "start",
]
