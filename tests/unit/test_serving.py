"""The gRPC skeleton: health around warm-up, reflection, metrics, message sizes, graceful stop, retries."""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from fnas import metrics, retry, serving
from fnas.v1 import common_pb2, pool_pb2, pool_pb2_grpc

pytestmark = pytest.mark.timeout(20)

POOL = pool_pb2.DESCRIPTOR.services_by_name["PoolService"].full_name


class FakePool(pool_pb2_grpc.PoolServiceServicer):
    """A PoolService that checks its input, and whose Stats can be made slow."""

    def __init__(self) -> None:
        self.stats_delay_s = 0.0

    async def PutBlocks(self, request, context):
        if not request.architecture.space:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "architecture.space is required")
        return pool_pb2.PutBlocksResponse(stored=sum(len(b.weights) for b in request.blocks))

    async def Stats(self, request, context):
        await asyncio.sleep(self.stats_delay_s)
        return pool_pb2.PoolStatsResponse(blocks=7)


def register(pool: FakePool):
    def add(server: aio.Server) -> tuple[str, ...]:
        pool_pb2_grpc.add_PoolServiceServicer_to_server(pool, server)
        return (POOL,)

    return add


@pytest.fixture
async def pool_server():
    pool = FakePool()
    cfg = serving.ServerConfig(port=0, grace_s=2.0)
    run = await serving.start([register(pool)], cfg)
    try:
        yield pool, run, cfg
    finally:
        await run.server.stop(0)


async def test_health_not_serving_until_warm_up(pool_server):
    _pool, run, cfg = pool_server
    target = f"127.0.0.1:{run.port}"
    warm = asyncio.Event()
    stop = asyncio.Event()

    async def warm_up() -> None:
        await warm.wait()

    assert run.port > 0 and run.names == (POOL,)
    task = asyncio.create_task(serving.serve(run, warm_up, cfg, stop_event=stop))
    await asyncio.sleep(0.1)
    for name in ("", POOL):
        assert await serving.health_status(target, name) == health_pb2.HealthCheckResponse.NOT_SERVING
    warm.set()
    for _ in range(100):
        if await serving.health_status(target, POOL) == health_pb2.HealthCheckResponse.SERVING:
            break
        await asyncio.sleep(0.02)
    assert await serving.health_status(target, "") == health_pb2.HealthCheckResponse.SERVING
    assert await serving.health_status(target, POOL) == health_pb2.HealthCheckResponse.SERVING
    stop.set()
    await asyncio.wait_for(task, 5)
    with pytest.raises(aio.AioRpcError) as err:
        await serving.health_status(target, "", timeout_s=0.5)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


async def test_reflection_lists_service(pool_server):
    _pool, run, _cfg = pool_server
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async with aio.insecure_channel(f"127.0.0.1:{run.port}") as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        replies = [r async for r in stub.ServerReflectionInfo(iter([request]))]
        # v1 (same messages on the wire, another package): what current grpcurl asks first.
        v1 = ch.stream_stream(
            f"/{serving.REFLECTION_V1}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        replies_v1 = [r async for r in v1(iter([request]))]
        file_request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=POOL)
        (described,) = [r async for r in v1(iter([file_request]))]
    names = {s.name for s in replies[0].list_services_response.service}
    assert POOL in names and "grpc.health.v1.Health" in names
    assert {"grpc.reflection.v1alpha.ServerReflection", serving.REFLECTION_V1} <= names
    assert {s.name for s in replies_v1[0].list_services_response.service} == names
    assert described.file_descriptor_response.file_descriptor_proto  # the pool's proto, for grpcurl


async def test_metrics_and_big_messages(pool_server):
    _pool, run, _cfg = pool_server

    def count(method: str, code: str) -> float:
        labels = {"method": method, "code": code}
        return REGISTRY.get_sample_value("fnas_pool_rpc_latency_seconds_count", labels) or 0.0

    ok0, bad0 = count("PutBlocks", "OK"), count("PutBlocks", "INVALID_ARGUMENT")
    weights = b"\x01" * (6 * 1024 * 1024)  # above gRPC's default 4 MiB limit
    request = pool_pb2.PutBlocksRequest(
        architecture=common_pb2.Architecture(space="mnas", tokens=[1]),
        blocks=[pool_pb2.Block(weights=weights)],
    )
    async with retry.channel(f"127.0.0.1:{run.port}") as ch:
        stub = pool_pb2_grpc.PoolServiceStub(ch)
        reply = await stub.PutBlocks(request, timeout=retry.DEFAULT_TIMEOUT_S)
        with pytest.raises(aio.AioRpcError) as err:
            await stub.PutBlocks(pool_pb2.PutBlocksRequest(), timeout=retry.DEFAULT_TIMEOUT_S)
    assert reply.stored == len(weights)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert count("PutBlocks", "OK") == ok0 + 1
    assert count("PutBlocks", "INVALID_ARGUMENT") == bad0 + 1
    assert metrics.service_of("/fnas.v1.AgentService/SubmitSearch") == "agent"
    assert metrics.service_of("/grpc.health.v1.Health/Check") is None


async def test_sigterm_drains_in_flight_rpc(pool_server):
    pool, run, cfg = pool_server
    pool.stats_delay_s = 0.5
    target = f"127.0.0.1:{run.port}"

    async def warm_up() -> None:
        return None

    task = asyncio.create_task(serving.serve(run, warm_up, cfg))  # no stop_event: SIGTERM stops it
    for _ in range(100):
        if await serving.health_status(target) == health_pb2.HealthCheckResponse.SERVING:
            break
        await asyncio.sleep(0.02)
    async with aio.insecure_channel(target) as ch:
        slow = asyncio.ensure_future(
            pool_pb2_grpc.PoolServiceStub(ch).Stats(pool_pb2.PoolStatsRequest(), timeout=5)
        )
        await asyncio.sleep(0.1)  # the RPC is in flight
        os.kill(os.getpid(), signal.SIGTERM)  # handled by serve(): the test process lives on
        reply = await slow
    assert reply.blocks == 7  # finished within grace_s
    await asyncio.wait_for(task, 5)
    assert task.exception() is None


async def test_retrying_retries_only_transient_codes():
    def rpc_error(code: grpc.StatusCode) -> aio.AioRpcError:
        return aio.AioRpcError(code, aio.Metadata(), aio.Metadata(), details="x")

    calls: list[grpc.StatusCode] = []

    async def call(codes: list[grpc.StatusCode]) -> str:
        async for attempt in retry.retrying(attempts=3, initial_s=0.001, max_wait_s=0.01, jitter_s=0.001):
            with attempt:
                code = codes[len(calls)] if len(calls) < len(codes) else None
                calls.append(code)
                if code is not None:
                    raise rpc_error(code)
                return "ok"
        raise AssertionError("unreachable")

    assert await call([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED]) == "ok"
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(aio.AioRpcError) as err:
        await call([grpc.StatusCode.INVALID_ARGUMENT])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and len(calls) == 1
    calls.clear()
    with pytest.raises(aio.AioRpcError):  # bounded: the third UNAVAILABLE is re-raised
        await call([grpc.StatusCode.UNAVAILABLE] * 5)
    assert len(calls) == 3


def test_server_config_validates():
    with pytest.raises(ValueError):
        serving.ServerConfig(port=70000)
    with pytest.raises(ValueError):
        serving.ServerConfig(grace_s=-1)
    opts = dict(serving.ServerConfig(max_receive_message_bytes=123).grpc_options)
    assert opts["grpc.max_receive_message_length"] == 123
