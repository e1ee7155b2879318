"""Shared fixtures: a real nats-server per test (free port, tmp store), a connected bus, a poller,
and test certificates (`pki`).

Chain: nats_store -> nats_server -> nats_url -> bus.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from timing import scaled

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
    """Polls `check` (sync or async) until it returns true; fails the test after a scaled timeout_s."""
    deadline = time.monotonic() + scaled(timeout_s)
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


@dataclass(frozen=True)
class Pki:
    """Test certificates: a CA, a server (127.0.0.1, localhost) and a client it signed, and a rogue client."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_cert: Path
    rogue_key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _issue(out: Path, name: str, ca: str, usage: str, san: str = "") -> None:
    """A P-256 key and a certificate for it signed by <out>/<ca>.pem, valid for a day."""
    ext = out / f"{name}.ext"
    ext.write_text(f"extendedKeyUsage={usage}\n" + (f"subjectAltName={san}\n" if san else ""))
    key, csr = out / f"{name}.key", out / f"{name}.csr"
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(out / f"{ca}.pem"), "-CAkey", str(out / f"{ca}.key"),
        "-CAcreateserial", "-out", str(out / f"{name}.pem"), "-days", "1", "-extfile", str(ext),
    )  # fmt: skip


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Certificates made with the openssl CLI at test time (the cryptography package is not installed)."""
    out = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "rogue-ca"):
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(out / f"{ca}.key"), "-out", str(out / f"{ca}.pem"), "-days", "1",
            "-subj", f"/CN=fnas-test-{ca}",
        )  # fmt: skip
    _issue(out, "server", "ca", "serverAuth", "IP:127.0.0.1,DNS:localhost")
    _issue(out, "client", "ca", "clientAuth")
    _issue(out, "rogue", "rogue-ca", "clientAuth")
    return Pki(
        ca=out / "ca.pem",
        server_cert=out / "server.pem",
        server_key=out / "server.key",
        client_cert=out / "client.pem",
        client_key=out / "client.key",
        rogue_ca=out / "rogue-ca.pem",
        rogue_cert=out / "rogue.pem",
        rogue_key=out / "rogue.key",
    )
