"""Fuzzing gRPC servicers: hypothesis strategies for any protobuf message, and a server in a thread.

`messages(cls)` draws random and malformed messages of `cls` from its descriptor
(every scalar range, NaN and infinities, unknown enum values, long and odd
strings, nested and repeated fields), mixed with `hints` per field name so that
some draws get past the first checks. `ServerThread` runs a grpc.aio server on
its own event loop, so that hypothesis (which drives synchronous tests) can call
it through a plain grpc channel. `call` sends raw bytes to a method and returns
the status code, so undecodable requests can be sent too.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from google.protobuf import descriptor as d
from google.protobuf import message_factory
from google.protobuf.message import DecodeError, Message
from hypothesis import strategies as st
from timing import scaled

#: "<field>: <reason>", the field possibly nested and indexed: "samples[0].reward.value: must be finite".
FIELD_REASON = re.compile(r"^[a-z_]+(\[\d+\])?(\.[a-z_]+(\[\d+\])?)*: \S")
#: A handler that raised (UNKNOWN) or broke (INTERNAL) crashed on the input: never acceptable.
CRASH = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})

_INTS = {
    d.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    d.FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    d.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    d.FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_ODD_TEXT = st.sampled_from(
    ["", " ", "a.b", "*", ">", "x/1", "\x00", "é", "a" * 600, "../../etc/passwd", "a" * 5000, "é" * 1025]
)
#: The longest error detail a reply may carry: values are echoed cut (fnas.bounds.clip), never whole.
MAX_DETAILS_CHARS = 600


def _scalar(field: d.FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t in _INTS:
        lo, hi = _INTS[t]
        return st.one_of(st.integers(lo, hi), st.integers(max(lo, -3), min(hi, 40)))
    if t == d.FieldDescriptor.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if t == d.FieldDescriptor.TYPE_FLOAT:
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if t == d.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == d.FieldDescriptor.TYPE_STRING:
        return st.one_of(st.text(max_size=24), _ODD_TEXT)
    if t == d.FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == d.FieldDescriptor.TYPE_ENUM:
        top = max(v.number for v in field.enum_type.values)
        return st.integers(-1, top + 2)  # proto3 enums are open: unknown values arrive too
    raise TypeError(f"unsupported field type {t} of {field.full_name}")


def messages(
    cls: type[Message], hints: Mapping[str, st.SearchStrategy[Any]] | None = None, depth: int = 3
) -> st.SearchStrategy[Message]:
    """Random messages of `cls`; `hints[field name]` (any depth) mixes in plausible values."""
    hints = hints or {}

    def value(field: d.FieldDescriptor) -> st.SearchStrategy[Any]:
        if field.type == d.FieldDescriptor.TYPE_MESSAGE:
            if depth <= 0:
                return st.just(None)
            inner = messages(message_factory.GetMessageClass(field.message_type), hints, depth - 1)
        else:
            inner = _scalar(field)
        drawn = st.lists(inner, max_size=4) if field.is_repeated else inner
        # A hint of a repeated field is a strategy of whole lists.
        return st.one_of(hints[field.name], drawn) if field.name in hints else drawn

    fields = {f.name: value(f) for f in cls.DESCRIPTOR.fields}

    def build(values: dict[str, Any]) -> Message:
        msg = cls()
        for name, v in values.items():
            if v is None:
                continue
            field = cls.DESCRIPTOR.fields_by_name[name]
            target = getattr(msg, name) if field.is_repeated else None
            if field.is_repeated and field.type == d.FieldDescriptor.TYPE_MESSAGE:
                target.extend(x for x in v if x is not None)
            elif field.is_repeated:
                target.extend(v)
            elif field.type == d.FieldDescriptor.TYPE_MESSAGE:
                getattr(msg, name).CopyFrom(v)
            else:
                setattr(msg, name, v)
        return msg

    return st.fixed_dictionaries({}, optional=fields).map(build)


def requests(
    cls: type[Message], hints: Mapping[str, st.SearchStrategy[Any]] | None = None
) -> st.SearchStrategy:
    """Serialized requests: mostly random messages of `cls`, sometimes raw random bytes."""
    return st.one_of(
        messages(cls, hints).map(lambda m: m.SerializeToString()),
        st.binary(max_size=80),
    )


def decodes(cls: type[Message], data: bytes) -> bool:
    """True when `data` parses as `cls` (gRPC then hands it to the handler)."""
    try:
        cls.FromString(data)
    except (DecodeError, RuntimeError, ValueError):
        return False
    return True


def call(
    channel: grpc.Channel, method: str, data: bytes, timeout_s: float = 5.0, streaming: bool = False
) -> tuple[grpc.StatusCode, str]:
    """Sends raw request bytes to `method` ('/pkg.Service/Method'); (status code, details).

    The deadline is `timeout_s` stretched by the machine's load (`scaled`).
    """
    timeout_s = scaled(timeout_s)
    try:
        if streaming:
            stream = channel.unary_stream(method)(data, timeout=timeout_s)
            next(stream, None)  # the first event, if any, then leave it
            stream.cancel()
            return grpc.StatusCode.OK, ""
        channel.unary_unary(method)(data, timeout=timeout_s)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details() or ""


def check_reply(cls: type[Message], data: bytes, code: grpc.StatusCode, details: str) -> None:
    """The reply contract: no crash, and INVALID_ARGUMENT names the field and the reason.

    `data` is the request as sent; bytes that do not parse must be refused as
    INVALID_ARGUMENT 'request: ...', not crash the handler (UNKNOWN).
    """
    if code == grpc.StatusCode.CANCELLED:
        return  # our own stream.cancel()
    assert code not in CRASH, f"{code.name}: {details}"
    if not decodes(cls, data):  # fnas.serving.RequestGuard answers for the handler
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("request: "), details
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert FIELD_REASON.match(details), f"INVALID_ARGUMENT without '<field>: <reason>': {details!r}"
    assert len(details) <= MAX_DETAILS_CHARS, f"{code.name} echoed {len(details)} characters: {details[:200]}"


class ServerThread:
    """An asyncio loop in a daemon thread; `run(coro)` runs a coroutine there and returns its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="fuzz-server")
        self.thread.start()

    def run(self, coro: Awaitable[Any], timeout_s: float = 60.0) -> Any:
        """Runs `coro` on the server loop and waits for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self, cleanup: Callable[[], Awaitable[Any]] | None = None) -> None:
        """Runs `cleanup` on the loop, then stops the loop and the thread."""
        if cleanup is not None:
            self.run(cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
