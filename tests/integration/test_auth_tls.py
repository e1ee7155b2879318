"""AgentService on a real gRPC server with mTLS and bearer tokens: who gets in, who sees what, limits."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

import fnas_cli as cli
from fnas import serving
from fnas.client import AgentClient
from fnas.tls import ClientTLS
from fnas.v1 import common_pb2, search_pb2, search_pb2_grpc
from services.agent.app import SERVICE_NAME, AgentApp
from services.agent.config import AgentConfig

pytestmark = pytest.mark.timeout(60)

ALICE, BOB, CAROL = "alice-token-0123456789", "bob-token-0123456789ab", "carol-token-0123456789"
MAX_MESSAGE_BYTES = 64 * 1024


def spec(budget: int = 5, strategy: str = "ppo", **fields) -> common_pb2.SearchSpec:
    return common_pb2.SearchSpec(
        space="nasbench-graph/cora",
        strategy=strategy,
        budget=common_pb2.Budget(max_activated_samples=budget),
        **fields,
    )


@pytest.fixture
async def agent(tmp_path, nats_url, pki, caplog):
    """An agent with mTLS and three tenants (no trainers: its searches wait); yields (app, address, tls)."""
    caplog.set_level(logging.DEBUG)
    cfg = AgentConfig(
        nats_url=nats_url,
        data_dir=tmp_path,
        port=0,
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        tls_client_ca=pki.ca,
        auth_tokens=f"alice:{ALICE},bob:{BOB},carol:{CAROL}",
        max_searches_per_tenant=2,
        max_budget_samples=1000,
        max_message_bytes=MAX_MESSAGE_BYTES,
        critic_address="127.0.0.1:1",  # never reached: the tests' critic_history is refused before
    )
    app = AgentApp(cfg)
    server_cfg = app.server_config(grace_s=0.5)
    run = await serving.start([app.register], server_cfg, app.interceptors())
    stop = asyncio.Event()
    task = asyncio.create_task(serving.serve(run, app.warm_up, server_cfg, stop))
    address = f"127.0.0.1:{run.port}"
    tls = ClientTLS(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    for _ in range(200):
        if (
            await serving.health_status(address, SERVICE_NAME, credentials=tls.credentials())
            == serving.SERVING
        ):
            break
        await asyncio.sleep(0.05)
    try:
        yield app, address, tls
    finally:
        stop.set()
        await task
        await app.close()
        for secret in (ALICE, BOB, CAROL):
            assert secret not in caplog.text  # secrets never logged


async def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    return e.value.code(), e.value.details()


async def test_without_or_with_a_wrong_token_is_unauthenticated(agent):
    app, address, tls = agent
    for token in (None, "wrong-token-0123456789", ALICE[:-1]):
        async with AgentClient(address, token=token, tls=tls) as client:
            code, details = await code_of(client.submit(spec()))
            assert code == grpc.StatusCode.UNAUTHENTICATED, details
            assert details.startswith("authorization: ")
            for call in (client.list(), client.get("0123456789ab")):
                assert (await code_of(call))[0] == grpc.StatusCode.UNAUTHENTICATED
    assert app.store.statuses() == []  # nothing stored


async def test_the_former_service_name_answers_with_the_same_rules(agent):
    """fnas.v1.SearchService (the agent's name before v0.2, deprecated in the proto) is served beside
    AgentService by the same servicer: same data, same authentication; health knows both names."""
    _app, address, tls = agent
    async with AgentClient(address, token=ALICE, tls=tls) as client:
        search_id = await client.submit(spec())
    old = search_pb2.DESCRIPTOR.services_by_name["SearchService"]
    assert old.GetOptions().deprecated
    with pytest.warns(DeprecationWarning, match="AgentClient"):
        from fnas.client import SearchClient
    assert SearchClient is AgentClient
    creds = tls.credentials()
    for token, code in ((ALICE, grpc.StatusCode.OK), (None, grpc.StatusCode.UNAUTHENTICATED)):
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        async with grpc.aio.secure_channel(address, creds) as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            call = stub.GetSearch(search_pb2.GetSearchRequest(search_id=search_id), metadata=metadata)
            if code == grpc.StatusCode.OK:
                assert (await call).status.search_id == search_id
            else:
                assert (await code_of(call))[0] == code
    assert await serving.health_status(address, old.full_name, credentials=creds) == serving.SERVING


async def test_tls_refuses_plaintext_unknown_ca_and_missing_client_certificate(agent, pki):
    app, address, tls = agent
    bad = {
        "plaintext": None,
        "no client certificate": ClientTLS(ca=pki.ca),
        "client certificate of another CA": ClientTLS(ca=pki.ca, cert=pki.rogue_cert, key=pki.rogue_key),
        "server not trusted": ClientTLS(ca=pki.rogue_ca, cert=pki.client_cert, key=pki.client_key),
    }
    for case, client_tls in bad.items():
        async with AgentClient(address, timeout_s=2, token=ALICE, tls=client_tls) as client:
            code, _ = await code_of(client.submit(spec()))
            assert code == grpc.StatusCode.UNAVAILABLE, case
    async with AgentClient(address, token=ALICE, tls=tls) as client:
        assert await client.submit(spec())
    assert len(app.store.statuses()) == 1


async def test_a_tenant_sees_and_cancels_only_its_own_searches(agent):
    _app, address, tls = agent
    async with (
        AgentClient(address, token=ALICE, tls=tls) as alice,
        AgentClient(address, token=BOB, tls=tls) as bob,
    ):
        mine = await alice.submit(spec())
        theirs = await bob.submit(spec())
        assert (await alice.get(mine)).tenant == "alice"
        assert [s.search_id for s in await alice.list()] == [mine]
        assert [s.search_id for s in await bob.list()] == [theirs]
        unknown = "0123456789ab"
        for name, call in (
            ("get", lambda c, i: c.get(i)),
            ("cancel", lambda c, i: c.cancel(i)),
            ("top", lambda c, i: c.top(i)),
            ("watch", lambda c, i: anext(aiter(c.watch(i)))),
        ):
            # Another tenant's search answers word for word like an id that does not exist.
            code, details = await code_of(call(bob, mine))
            assert (code, details.replace(mine, unknown)) == await code_of(call(bob, unknown)), name
            assert code == grpc.StatusCode.NOT_FOUND and details.startswith("search_id: "), details
        assert (await alice.get(mine)).state == search_pb2.SEARCH_STATE_RUNNING  # bob's cancel did nothing
        # Pre-training a critic on another tenant's results would leak them: refused like unknown results.
        code, details = await code_of(bob.submit(spec(strategy="fnas-uac", critic_history=[mine])))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details == f"critic_history[0]: no stored results of {mine!r}"
        assert (await alice.cancel(mine)).state == search_pb2.SEARCH_STATE_CANCELLED
        assert (await bob.get(theirs)).state == search_pb2.SEARCH_STATE_RUNNING


async def test_limits_answer_resource_exhausted_with_the_reason(agent):
    app, address, tls = agent
    async with (
        AgentClient(address, token=ALICE, tls=tls) as alice,
        AgentClient(address, token=CAROL, tls=tls) as carol,
    ):
        code, details = await code_of(alice.submit(spec(budget=1001)))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details == "budget.max_activated_samples: 1001 exceeds this agent's limit of 1000"
        first = [await alice.submit(spec()) for _ in range(2)]
        code, details = await code_of(alice.submit(spec()))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details == "tenant 'alice' already runs 2 searches (limit 2)"
        assert await carol.submit(spec())  # one tenant's limit does not block another
        await alice.cancel(first[0])
        assert await alice.submit(spec())  # a finished search frees its slot
        huge = spec(warm_start=[common_pb2.Architecture(tokens=[0, 1, 2, 3, 4])] * 20_000)
        code, _ = await code_of(alice.submit(huge))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # bigger than max_message_bytes
    assert len(app.store.statuses()) == 4


async def test_cli_sends_the_token_and_client_certificate(agent, pki, capsys, monkeypatch):
    _app, address, tls = agent
    async with AgentClient(address, token=ALICE, tls=tls) as alice:
        mine = await alice.submit(spec(name="from-python"))
    files = ["--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)]
    monkeypatch.delenv("FNAS_TOKEN", raising=False)
    assert await asyncio.to_thread(cli.main, ["ls", "--target", address, *files, "--token", ALICE]) == 0
    assert mine in capsys.readouterr().out
    assert await asyncio.to_thread(cli.main, ["ls", "--target", address, *files]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    monkeypatch.setenv("FNAS_TOKEN", BOB)  # the variable works too; bob sees none of alice's searches
    # Another tenant's search is an unknown id to bob: the same exit code and message as one.
    assert await asyncio.to_thread(cli.main, ["cancel", "--target", address, *files, mine]) == 2
    theirs = capsys.readouterr().err
    assert await asyncio.to_thread(cli.main, ["cancel", "--target", address, *files, "0123456789ab"]) == 2
    assert theirs.replace(mine, "0123456789ab") == capsys.readouterr().err and "no search" in theirs
