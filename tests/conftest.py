"""Shared fixtures: a real nats-server per test (free port, tmp store), a connected bus, a poller.

Chain: nats_store -> nats_server -> nats_url -> bus.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from fnas import queue
from fnas.nats_server import EmbeddedNats


@pytest.fixture
def nats_store(tmp_path: Path) -> Path:
    """The JetStream store directory of the test's nats-server."""
    return tmp_path / "nats-store"


@pytest.fixture
def nats_server(nats_store: Path) -> Iterator[EmbeddedNats]:
    """A nats-server with JetStream on 127.0.0.1 and a free port, stopped after the test."""
    server = EmbeddedNats(nats_store).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_url(nats_server: EmbeddedNats) -> str:
    """nats://127.0.0.1:<port> of the test's server."""
    return nats_server.url


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[queue.Bus]:
    """A connected bus (streams not yet created: tests choose ack_wait and max_deliver)."""
    b = await queue.connect(nats_url, name="test")
    try:
        yield b
    finally:
        await b.close()


async def assert_eventually(
    check: Callable[[], bool | Awaitable[bool]],
    timeout_s: float = 5.0,
    interval_s: float = 0.02,
    msg: str = "",
) -> None:
    """Polls `check` (sync or async) until it returns true; fails the test after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(msg or f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)


@pytest.fixture
def eventually() -> Callable[..., Awaitable[None]]:
    """The `assert_eventually` poller, as a fixture (test modules do not import conftest)."""
    return assert_eventually
