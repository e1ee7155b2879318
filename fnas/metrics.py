"""Prometheus metrics shared by the services: the gRPC latency interceptor and the HTTP endpoint.

The HTTP endpoint serves /metrics and /ready: a process without a gRPC server (a trainer)
answers its readiness probe there, 200 once every registered check passes (`set_ready`).

Names follow `fnas_<service>_<what>_<unit>` (STYLE.md §4); the service is the one
of the gRPC service's name (fnas.v1.PoolService -> pool), so a process that
hosts several services (the in-process harness) still reports them apart.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import grpc
import prometheus_client
from grpc import aio

#: gRPC service full name -> service label in metric names (one name per service, STYLE.md §1).
SERVICE_NAMES = {
    "fnas.v1.AgentService": "agent",
    "fnas.v1.CriticService": "critic",
    "fnas.v1.PoolService": "pool",
    "fnas.v1.BufferService": "buffer",
}
#: Former names still served (deprecated in the protos), counted under their service's label.
_FORMER_NAMES = {"fnas.v1.SearchService": "agent"}

_lock = threading.Lock()
_histograms: dict[str, prometheus_client.Histogram] = {}
_http_ports: dict[int, int] = {}
_ready_checks: dict[str, Callable[[], bool]] = {}

# RPCs span ~0.5 ms loopback calls to multi-second weight uploads.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def service_of(full_method: str) -> str | None:
    """'/fnas.v1.PoolService/PutBlocks' -> 'pool'; None for services outside FNAS (health, reflection)."""
    grpc_service = full_method.lstrip("/").split("/", 1)[0]
    return SERVICE_NAMES.get(grpc_service) or _FORMER_NAMES.get(grpc_service)


def rpc_latency(service: str) -> prometheus_client.Histogram:
    """The `fnas_<service>_rpc_latency_seconds` histogram (labels: method, code), created once."""
    with _lock:
        hist = _histograms.get(service)
        if hist is None:
            hist = prometheus_client.Histogram(
                f"fnas_{service}_rpc_latency_seconds",
                f"Server-side latency of {service} RPCs by method and status code.",
                ["method", "code"],
                buckets=_BUCKETS,
            )
            _histograms[service] = hist
        return hist


def set_ready(name: str, check: Callable[[], bool] | None) -> None:
    """Registers (or, with None, removes) a readiness check of this process under `name`."""
    with _lock:
        if check is None:
            _ready_checks.pop(name, None)
        else:
            _ready_checks[name] = check


def ready() -> bool:
    """True when at least one check is registered and every one passes."""
    with _lock:
        checks = list(_ready_checks.values())
    return bool(checks) and all(check() for check in checks)


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/ready":
        ok = ready()
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"ready\n" if ok else b"not ready\n"]
    return _metrics_app(environ, start_response)


_metrics_app = prometheus_client.make_wsgi_app()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no access log
        pass


def start_http(port: int, addr: str = "127.0.0.1") -> int:
    """Serves /metrics and /ready of this process on `port` (0: a free one); idempotent; returns the port."""
    with _lock:
        if port in _http_ports:
            return _http_ports[port]

        # prometheus_client's own server class, with the /ready route in front of its metrics app.
        class Server(prometheus_client.exposition.ThreadingWSGIServer):
            address_family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)[0][0]  # IPv6 pod IPs

        server = make_server(addr, port, _app, Server, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name=f"metrics-{port}", daemon=True).start()
        bound = int(server.server_port)
        _http_ports[port] = bound
        _http_ports[bound] = bound
        return bound


class RpcMetrics(aio.ServerInterceptor):
    """Records the latency and status code of every FNAS RPC (unary and streaming).

    Our own, not a kept library's: py-grpc-prometheus (0.8.0, the maintained one in the index)
    intercepts only the synchronous `grpc.ServerInterceptor`, and every FNAS server is `grpc.aio`.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        service = service_of(handler_call_details.method)
        if handler is None or service is None:
            return handler
        hist = rpc_latency(service)
        method = handler_call_details.method.rsplit("/", 1)[-1]
        kind = "unary" if not handler.request_streaming else "stream"
        kind += "_unary" if not handler.response_streaming else "_stream"
        behaviour = getattr(handler, kind)
        wrap = _wrap_stream if inspect.isasyncgenfunction(behaviour) else _wrap_unary
        wrapped = wrap(behaviour, hist, method)
        factory = getattr(grpc, f"{kind}_rpc_method_handler")
        return factory(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _code(context: aio.ServicerContext, exc: BaseException | None) -> str:
    # abort() and set_code() leave the code on the context; an escaping exception is UNKNOWN to the client.
    code = context.code()
    if code is not None:
        return code.name if isinstance(code, grpc.StatusCode) else str(code)
    if exc is None:
        return grpc.StatusCode.OK.name
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED.name
    return grpc.StatusCode.UNKNOWN.name


def _wrap_unary(behaviour: Callable[..., Any], hist: prometheus_client.Histogram, method: str) -> Any:
    async def wrapped(request: Any, context: aio.ServicerContext) -> Any:
        start = time.perf_counter()
        exc: BaseException | None = None
        try:
            result = behaviour(request, context)
            return await result if inspect.isawaitable(result) else result
        except BaseException as e:
            exc = e
            raise
        finally:
            hist.labels(method, _code(context, exc)).observe(time.perf_counter() - start)

    return wrapped


def _wrap_stream(behaviour: Callable[..., Any], hist: prometheus_client.Histogram, method: str) -> Any:
    async def wrapped(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        start = time.perf_counter()
        exc: BaseException | None = None
        try:
            async for item in behaviour(request, context):
                yield item
        except BaseException as e:
            exc = e
            raise
        finally:
            hist.labels(method, _code(context, exc)).observe(time.perf_counter() - start)

    return wrapped
