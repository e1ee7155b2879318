"""The mesh's identity (issue 21): the internal services answer only calls that carry the service token.

Real processes (`fnas serve ...`) bound to every interface, as in a container: the critic, buffer and
pool refuse a stranger (no token, a wrong one) with UNAUTHENTICATED on every RPC, while the agent and
the trainers, which carry the token, run a whole `fnas` search through them. NATS refuses a client
without the user. `fnas serve` refuses to bind beyond loopback without an identity unless told
--insecure, and /metrics listens on loopback unless told otherwise.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.request

import grpc
import nats
import pytest
from mesh import Mesh, free_port

from fnas import serving
from fnas.v1 import buffer_pb2, common_pb2, critic_pb2, pool_pb2, search_pb2
from services.buffer.client import BufferClient
from services.critic.client import CriticClient
from services.pool.client import PoolClient

pytestmark = pytest.mark.e2e

TOKEN = "e2e-service-token-0123456789abcdef"
EXPOSED = ["--host", "0.0.0.0"]


@pytest.fixture
def mesh(tmp_path):
    m = Mesh(tmp_path, nats_auth=True, service_token=TOKEN).start_nats()
    yield m
    m.close()


def every_rpc() -> list[tuple[str, str, object]]:
    """(service, method, request): one call of every RPC of the three internal services."""
    arch = common_pb2.Architecture(space="nasbench-graph/cora", tokens=[8, 0, 1, 1, 1])
    sample = common_pb2.Sample(architecture=arch, reward=common_pb2.Reward(value=0.99), index=999)
    return [
        ("critic", "OpenSearch", critic_pb2.OpenSearchRequest(search_id="x", space=arch.space)),
        ("critic", "Predict", critic_pb2.PredictRequest(search_id="x", architectures=[arch])),
        ("critic", "Observe", critic_pb2.ObserveRequest(search_id="x", samples=[sample])),
        ("critic", "ExportSnapshot", critic_pb2.ExportSnapshotRequest(search_id="x")),
        ("critic", "ImportSnapshot", critic_pb2.ImportSnapshotRequest(space=arch.space)),
        ("buffer", "Add", buffer_pb2.AddRequest(search_id="x", samples=[sample])),
        ("buffer", "Sample", buffer_pb2.SampleRequest(search_id="x", n=1)),
        ("buffer", "Stats", buffer_pb2.BufferStatsRequest(search_id="x")),
        ("pool", "QueryBlocks", pool_pb2.QueryBlocksRequest(architecture=arch)),
        ("pool", "PutBlocks", pool_pb2.PutBlocksRequest(architecture=arch)),
        ("pool", "Stats", pool_pb2.PoolStatsRequest()),
    ]


async def codes(address: dict[str, str], token: str) -> dict[str, grpc.StatusCode]:
    """The status code of every internal RPC called by someone holding `token` ('': none)."""
    clients = {
        "critic": CriticClient(address["critic"], token=token),
        "buffer": BufferClient(address["buffer"], token=token),
        "pool": PoolClient(address["pool"], token=token),
    }
    out = {}
    try:
        for service, method, request in every_rpc():
            try:
                await getattr(clients[service].stub, method)(request, timeout=5)
                out[f"{service}.{method}"] = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as e:
                out[f"{service}.{method}"] = e.code()
    finally:
        for client in clients.values():
            await client.close()
    return out


@pytest.mark.timeout(180)
async def test_internal_services_refuse_strangers_and_serve_the_mesh(mesh):
    ports = {name: free_port() for name in ("critic", "buffer", "pool")}
    address = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    helpers = [mesh.start_helper(name, ports[name], EXPOSED) for name in ("critic", "buffer")]
    helpers.append(mesh.start_pool(ports["pool"], EXPOSED))
    agent = mesh.start_agent(
        ["--critic-address", address["critic"], "--buffer-address", address["buffer"], *EXPOSED]
    )
    trainers = [mesh.start_trainer(f"t{i}", extra=["--pool-address", address["pool"]]) for i in range(2)]
    await mesh.wait_ready(agent, helpers, trainers)

    # The mesh itself carries the token: a whole fnas search through critic and buffer.
    spec = common_pb2.SearchSpec(
        space="nasbench-graph/cora",
        strategy="fnas",
        seed=2,
        budget=common_pb2.Budget(max_activated_samples=40),
    )
    async with mesh.client() as client:
        search_id = await client.submit(spec)
        await asyncio.wait_for(_until_finished(client, search_id), 120)
        status = await client.get(search_id)
    assert status.state == search_pb2.SEARCH_STATE_SUCCEEDED, status.error
    assert status.activated_samples == 40 and status.policy_samples_critic + status.policy_samples_buffer > 0
    assert "critic unavailable" not in agent.text() and "buffer unavailable" not in agent.text()

    # A stranger, with no token or a wrong one, is refused on every RPC; the token opens them.
    for token in ("", "wrong-token-0123456789abcdef"):
        refused = await codes(address, token)
        assert set(refused.values()) == {grpc.StatusCode.UNAUTHENTICATED}, refused
    allowed = await codes(address, TOKEN)
    assert grpc.StatusCode.UNAUTHENTICATED not in allowed.values(), allowed
    for name, port in ports.items():  # probes need no token
        assert await serving.health_status(f"127.0.0.1:{port}") == serving.SERVING, name
    # NATS answers only its user.
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await nats.connect(mesh.nats.url, max_reconnect_attempts=0, allow_reconnect=False, connect_timeout=5)
    for proc in (*helpers, agent):
        assert TOKEN not in proc.text(), f"{proc.name} logged the service token"


async def _until_finished(client, search_id: str) -> None:
    async for event in client.watch(search_id):
        if event.HasField("finished"):
            return


def serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fnas_cli", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def listening_on(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp writes them) of the sockets listening on `port`."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, hex_port = local.rsplit(":", 1)
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    out.add(addr)
    return out


@pytest.mark.timeout(120)
async def test_an_exposed_bind_needs_an_identity_or_insecure_and_metrics_stay_on_loopback(tmp_path):
    port, metrics_port = free_port(), free_port()
    base = ["pool", "--port", str(port), "--data-dir", str(tmp_path), "--grace-s", "0"]
    refused = serve(*base, "--host", "0.0.0.0")
    out, _ = refused.communicate(timeout=60)
    assert refused.returncode == 2, out
    (line,) = [text for text in out.splitlines() if text.strip()]
    assert line.startswith("error: host: 0.0.0.0") and "service_token" in line and "insecure" in line, line

    allowed = serve(*base, "--host", "0.0.0.0", "--insecure", "--metrics-port", str(metrics_port))
    try:
        await asyncio.to_thread(_wait_line, allowed, "pool ready")
        assert listening_on(metrics_port) == {"0100007F"}, "/metrics must listen on 127.0.0.1 only"
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert "fnas_pool_blocks" in text
        # A process exports only its own service's metrics (issue 23), though `fnas serve` knows them all.
        others = {
            line.split()[2].split("_")[1] for line in text.splitlines() if line.startswith("# TYPE fnas_")
        }
        assert others == {"pool"}, others
    finally:
        allowed.kill()
        allowed.wait(10)


def _wait_line(proc: subprocess.Popen, text: str) -> None:
    for line in proc.stdout:
        if text in line:
            return
    raise AssertionError(f"the process ended without logging {text!r} (exit {proc.wait()})")
