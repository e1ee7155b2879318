"""Token tables, secret redaction, the bearer interceptor on a real server, and NATS credentials."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from fnas import auth, config, queue, retry, serving
from fnas.nats_server import EmbeddedNats
from fnas.v1 import pool_pb2, pool_pb2_grpc

pytestmark = pytest.mark.timeout(30)

ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789ab"
POOL = pool_pb2.DESCRIPTOR.services_by_name["PoolService"].full_name


def test_token_table_maps_tokens_to_tenants_and_hides_them():
    table = auth.TokenTable.parse(f"# tenants\nalice:{ALICE}\n\nbob : {BOB}\n")
    assert table.tenant(ALICE) == "alice" and table.tenant(BOB) == "bob"
    assert table.tenant(ALICE[:-1]) is None and table.tenant("") is None
    assert table.tenants == {"alice", "bob"}
    assert ALICE not in repr(table) and BOB not in repr(table)
    assert auth.TokenTable.parse(f"alice:{ALICE},bob:{BOB}").tenant(BOB) == "bob"  # env form


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("alice", "expected tenant:token"),
        ("alice:short", ">= 16 characters"),
        (f"bad tenant:{ALICE}", "tenant must match"),
        (f"alice:{ALICE}\nbob:{ALICE}", "duplicate token"),
    ],
)
def test_token_table_errors_name_the_entry_never_the_token(text, reason):
    with pytest.raises(ValueError, match=reason) as e:
        auth.TokenTable.parse(text, source="tokens.txt")
    assert ALICE not in str(e.value) and "entry" in str(e.value)


def test_token_table_load(tmp_path):
    assert auth.TokenTable.load(None, "") is None  # auth off
    path = tmp_path / "tokens"
    path.write_text(f"alice:{ALICE}\n")
    assert auth.TokenTable.load(path, f"bob:{BOB}").tenants == {"alice", "bob"}
    with pytest.raises(ValueError, match="auth_tokens_file: cannot read"):
        auth.TokenTable.load(tmp_path / "missing")
    (tmp_path / "empty").write_text("# nobody\n")
    with pytest.raises(ValueError, match="no entries"):
        auth.TokenTable.load(tmp_path / "empty")


@dataclass(frozen=True)
class _Cfg(config.TransportSecurity):
    nats_url: str = "nats://fnas:hunter2-password@nats:4222"
    auth_tokens: str = ""
    auth_tokens_file: str = "/etc/fnas/tokens"


def test_redacted_masks_secrets_and_url_credentials():
    cfg = _Cfg(nats_user="fnas", nats_password="hunter2-password", auth_tokens=f"alice:{ALICE}")
    text = str(config.redacted(cfg))
    assert "hunter2" not in text and ALICE not in text
    shown = config.redacted(cfg)
    assert shown["nats_password"] == shown["auth_tokens"] == "***"
    assert shown["nats_url"] == "nats://fnas:***@nats:4222"
    assert shown["auth_tokens_file"] == "/etc/fnas/tokens" and shown["nats_user"] == "fnas"
    assert config.redact_url("tls://s3cret-token@nats:4222") == "tls://***@nats:4222"  # token in the URL
    assert config.redact_url("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
    with pytest.raises(ValueError, match="nats_password: needs nats_user"):
        _Cfg(nats_password="x")
    with pytest.raises(ValueError, match="tls_cert and tls_key"):
        _Cfg(tls_cert="/a.pem")


class Pool(pool_pb2_grpc.PoolServiceServicer):
    """Answers Stats with the number of blocks = length of the caller's tenant name."""

    async def Stats(self, request, context):
        return pool_pb2.PoolStatsResponse(blocks=len(auth.current_tenant()))


@pytest.fixture
async def guarded():
    """A PoolService behind BearerAuth, on a real server; yields its address."""

    def add(server):
        pool_pb2_grpc.add_PoolServiceServicer_to_server(Pool(), server)
        return POOL

    table = auth.TokenTable({ALICE: "alice", BOB: "bob"})
    run = await serving.start([add], serving.ServerConfig(port=0), [auth.BearerAuth(table, [POOL])])
    try:
        yield f"127.0.0.1:{run.port}"
    finally:
        await run.server.stop(0)


async def test_bearer_auth_passes_the_tenant_and_refuses_the_rest(guarded, caplog):
    caplog.set_level(logging.DEBUG)
    before = REGISTRY.get_sample_value("fnas_pool_auth_failures_total", {"reason": "unknown"})
    for token, blocks in ((ALICE, 5), (BOB, 3)):
        async with retry.channel(guarded, token=token) as ch:
            assert (
                await pool_pb2_grpc.PoolServiceStub(ch).Stats(pool_pb2.PoolStatsRequest())
            ).blocks == blocks
    for token, reason in ((None, "no bearer token"), ("wrong-token-0123456789", "invalid bearer token")):
        async with retry.channel(guarded, token=token) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await pool_pb2_grpc.PoolServiceStub(ch).Stats(pool_pb2.PoolStatsRequest())
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and reason in e.value.details()
    after = REGISTRY.get_sample_value("fnas_pool_auth_failures_total", {"reason": "unknown"})
    assert after == (before or 0) + 1
    # Probes need no token.
    assert await serving.health_status(guarded) in (serving.SERVING, serving.NOT_SERVING)
    assert ALICE not in caplog.text and BOB not in caplog.text and "wrong-token" not in caplog.text


async def test_nats_credentials(tmp_path):
    with EmbeddedNats(tmp_path / "nats", user="fnas", password="nats-password-123") as server:
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert b"nats-password-123" not in cmdline  # in a 0600 config file, not in `ps`
        bus = await queue.connect(server.url, "ok", user="fnas", password="nats-password-123")
        try:
            await bus.ensure_streams()
            assert (await bus.publish("fnas.agent.train_job", b"x", msg_id="a")).seq == 1
        finally:
            await bus.close()
        for creds in ({}, {"user": "fnas", "password": "wrong-password"}):
            # Refused at once, not retried forever: a misconfigured service fails its start-up.
            with pytest.raises(queue.NatsAuthError):
                await queue.connect(server.url, "refused", **creds)


@pytest.mark.parametrize(
    ("service", "fields", "refused"),
    [
        ("critic", {"host": "0.0.0.0"}, "host: 0.0.0.0"),
        ("pool", {"host": "10.0.0.5"}, "host: 10.0.0.5"),
        ("trainer", {"nats_url": "nats://nats:4222"}, "nats_url:"),
        ("trainer", {"nats_url": "nats://127.0.0.1:4222", "pool_address": "pool:50053"}, "pool_address:"),
        ("agent", {"host": "0.0.0.0", "service_token": "t" * 16}, "nats_url:"),  # exposed: NATS needs a user
        ("agent", {"critic_address": "critic:50052"}, "critic_address:"),
    ],
)
def test_a_service_beyond_loopback_needs_an_identity_unless_insecure(service, fields, refused):
    from services.agent.config import AgentConfig
    from services.critic.config import CriticConfig
    from services.pool.config import PoolConfig
    from services.trainer.config import TrainerConfig

    cls = {"agent": AgentConfig, "critic": CriticConfig, "pool": PoolConfig, "trainer": TrainerConfig}[
        service
    ]
    with pytest.raises(ValueError, match="^" + re.escape(refused)) as e:
        cls(**fields)
    assert "service_token" in str(e.value) or "credentials" in str(e.value)
    assert cls(**fields, insecure=True)  # told so, on a trusted network
    identified = {"service_token": "t" * 16, "nats_user": "fnas", "nats_password": "p"}
    assert cls(**(fields | identified))


def test_nats_credentials_in_the_url_count_and_loopback_needs_none():
    from services.trainer.config import TrainerConfig

    assert TrainerConfig(nats_url="tls://secret-token@nats:4222")
    assert TrainerConfig(nats_url="nats://localhost:4222")
    with pytest.raises(ValueError, match="service_token: must be >= 16"):
        TrainerConfig(service_token="short")
