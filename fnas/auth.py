"""Bearer-token authentication of the client-facing gRPC API: tokens map to tenants.

A token table comes from a file (one `tenant:token` per line, `#` comments) or
from a comma-separated `tenant:token,...` string (an environment variable).
`BearerAuth` is a server interceptor: for the services it guards it reads
`authorization: Bearer <token>`, refuses a missing or unknown token with
UNAUTHENTICATED, and runs the handler with the caller's tenant in
`current_tenant()`; health and reflection stay open for probes. Tokens are
compared in constant time (digests, every entry, no early exit) and never
logged or shown in a repr.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import grpc
import prometheus_client
from grpc import aio

from fnas import metrics

log = logging.getLogger(__name__)

#: Tenant names: short, printable, safe in logs and metric labels.
TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
#: Shorter tokens are refused when a table is loaded: they could be guessed.
MIN_TOKEN_CHARS = 16
#: The tenant of every call when authentication is off.
ANONYMOUS = ""
#: The identity of the mesh's own services (a call that presented the service token).
SERVICE_TENANT = "fnas-service"

_TENANT: ContextVar[str] = ContextVar("fnas_tenant", default=ANONYMOUS)

_failures: dict[str, prometheus_client.Counter] = {}
_lock = threading.Lock()


def auth_failures(service: str) -> prometheus_client.Counter:
    """`fnas_<service>_auth_failures_total` (label reason: missing, malformed, unknown), created once."""
    with _lock:
        if service not in _failures:
            _failures[service] = prometheus_client.Counter(
                f"fnas_{service}_auth_failures_total",
                f"{service} RPCs refused as UNAUTHENTICATED, by reason (missing, malformed, unknown token).",
                ["reason"],
            )
        return _failures[service]


def current_tenant() -> str:
    """The authenticated tenant of the RPC being handled; ANONYMOUS ('') when authentication is off."""
    return _TENANT.get()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    """Bearer tokens -> tenant names; holds only digests of the tokens."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        """`tokens` maps each token to its tenant; ValueError on a bad tenant or a short token."""
        self._entries: list[tuple[bytes, str]] = []
        seen: set[bytes] = set()
        for i, (token, tenant) in enumerate(tokens.items()):
            _check_entry(tenant, token, f"entry {i + 1}")
            digest = _digest(token)
            if digest in seen:
                raise ValueError(f"entry {i + 1}: duplicate token")
            seen.add(digest)
            self._entries.append((digest, tenant))

    @classmethod
    def parse(cls, text: str, source: str = "tokens") -> TokenTable:
        """`tenant:token` entries, one per line or comma-separated; '#' starts a comment line.

        Errors name the source and line, never the token.
        """
        tokens: dict[str, str] = {}
        for n, line in enumerate(re.split(r"[\n,]", text), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            tenant, sep, token = line.partition(":")
            if not sep:
                raise ValueError(f"{source}: entry {n}: expected tenant:token")
            tenant, token = tenant.strip(), token.strip()
            _check_entry(tenant, token, f"{source}: entry {n}")
            if token in tokens:
                raise ValueError(f"{source}: entry {n}: duplicate token")
            tokens[token] = tenant
        return cls(tokens)

    @classmethod
    def load(cls, path: Path | None = None, inline: str = "") -> TokenTable | None:
        """The table of a file and/or an inline string; None when neither is given (auth off)."""
        parts = []
        if path is not None:
            try:
                parts.append(path.read_text())
            except OSError as e:
                raise ValueError(f"auth_tokens_file: cannot read {path}: {e.strerror}") from None
        if inline:
            parts.append(inline)
        if not parts:
            return None
        table = cls.parse("\n".join(parts), source=str(path) if path else "auth_tokens")
        if not table.tenants:
            raise ValueError("auth tokens: no entries (an empty table would refuse every call)")
        return table

    @property
    def tenants(self) -> frozenset[str]:
        """Every tenant that has at least one token."""
        return frozenset(t for _, t in self._entries)

    def tenant(self, token: str) -> str | None:
        """The tenant of `token`, or None; constant time in the token's content."""
        presented = _digest(token)
        found: str | None = None
        for digest, tenant in self._entries:  # no early exit: every entry is compared
            if hmac.compare_digest(presented, digest):
                found = tenant
        return found

    def __repr__(self) -> str:
        return f"TokenTable({len(self._entries)} tokens, tenants={sorted(self.tenants)})"


def _check_entry(tenant: str, token: str, where: str) -> None:
    if not TENANT_RE.match(tenant):
        raise ValueError(f"{where}: tenant must match {TENANT_RE.pattern}")
    check_token(token, f"{where}: token")


def check_token(token: str, where: str) -> None:
    """ValueError naming `where` unless `token` is long enough to resist guessing and has no spaces."""
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ValueError(f"{where} must be >= {MIN_TOKEN_CHARS} characters without spaces")


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata carrying `token` (for channels without TLS call credentials)."""
    return (("authorization", f"Bearer {token}"),)


class BearerAuth(aio.ServerInterceptor):
    """Authenticates every RPC of `services` (full names) against a TokenTable."""

    def __init__(self, tokens: TokenTable, services: Iterable[str]) -> None:
        self.tokens = tokens
        self.services = frozenset(services)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        service = details.method.lstrip("/").split("/", 1)[0]
        if handler is None or service not in self.services:
            return handler
        tenant, reason = self._authenticate(details.invocation_metadata or ())
        if tenant is None:
            auth_failures(metrics.service_of(service) or "grpc").labels(reason).inc()
            log.warning("refused %s: %s token", details.method, reason)
            return _replace(handler, _refuse(reason))
        return _replace(handler, lambda behaviour: _as_tenant(behaviour, tenant))

    def _authenticate(self, metadata: Iterable[tuple[str, Any]]) -> tuple[str | None, str]:
        values = [v for k, v in metadata if k == "authorization"]
        if not values:
            return None, "missing"
        scheme, _, token = str(values[0]).partition(" ")
        if len(values) > 1 or scheme.lower() != "bearer" or not token.strip():
            return None, "malformed"
        tenant = self.tokens.tenant(token.strip())
        return (tenant, "") if tenant is not None else (None, "unknown")


def _replace(handler: grpc.RpcMethodHandler, wrap: Callable[[Any], Any]) -> grpc.RpcMethodHandler:
    kind = "unary" if not handler.request_streaming else "stream"
    kind += "_unary" if not handler.response_streaming else "_stream"
    factory = getattr(grpc, f"{kind}_rpc_method_handler")
    return factory(
        wrap(getattr(handler, kind)),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _refuse(reason: str) -> Callable[[Any], Any]:
    message = {"missing": "no bearer token", "malformed": "malformed authorization metadata"}.get(
        reason, "invalid bearer token"
    )

    def wrap(_behaviour: Any) -> Any:
        async def refuse(request: Any, context: aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"authorization: {message}")

        return refuse

    return wrap


def _as_tenant(behaviour: Any, tenant: str) -> Any:
    # grpc.aio runs each RPC in its own task, whose context is a copy: setting the variable there
    # cannot leak into other RPCs, and needs no reset.
    if inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            _TENANT.set(tenant)
            async for item in behaviour(request, context):
                yield item

        return stream

    async def unary(request: Any, context: aio.ServicerContext) -> Any:
        _TENANT.set(tenant)
        result = behaviour(request, context)
        return await result if inspect.isawaitable(result) else result

    return unary


__all__ = [
    "ANONYMOUS",
    "SERVICE_TENANT",
    "BearerAuth",
    "TokenTable",
    "auth_failures",
    "bearer_metadata",
    "check_token",
    "current_tenant",
]
