"""PoolService fed random and malformed requests over real gRPC: no crash, no garbage in its LMDB.

Plausible parts (valid mnas tokens, real safetensors payloads, block positions)
are mixed into the random messages so that draws reach the store; everything
the store then holds must load: metadata, weights and the job records.
"""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from protogen import ServerThread, call, check_reply, messages, requests

from fnas import serving, spaces
from fnas.v1 import common_pb2, pool_pb2
from services.pool.app import PoolApp
from services.pool.config import PoolConfig

pytestmark = pytest.mark.timeout(180)
FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MNAS = spaces.get("mnas")
WEIGHTS = safetensors.numpy.save({"conv.weight": np.ones((4, 2, 3, 3), dtype=np.float32)})
HINTS = {
    "space": st.sampled_from(["mnas", "nasbench-graph/cora", "nope", ""]),
    "tokens": st.tuples(*(st.integers(0, v - 1) for v in MNAS.vocab)).map(list),
    "task": st.sampled_from(["digits", "", "x" * 2000]),
    "source_job_id": st.sampled_from(["s1/1", "s1/2", "", "x" * 600]),
    "position": st.integers(0, 8),
    "iterations": st.integers(0, 100),
    "weights": st.sampled_from([WEIGHTS, WEIGHTS[:40], b"\x08" + b"\x00" * 7 + b"{}"]),
    "embedding": st.just([]),
    "min_similarity": st.floats(0, 1),
    "shape": st.lists(st.integers(0, 8), max_size=4),
    "dtype": st.sampled_from(["float32", "bfloat16", "int8", ""]),
    "name": st.sampled_from(["conv.weight", "x"]),
}
METHODS = {
    "/fnas.v1.PoolService/PutBlocks": pool_pb2.PutBlocksRequest,
    "/fnas.v1.PoolService/QueryBlocks": pool_pb2.QueryBlocksRequest,
    "/fnas.v1.PoolService/Stats": pool_pb2.PoolStatsRequest,
}
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A pool on a real server; yields (app, channel)."""
    tmp = tmp_path_factory.mktemp("fuzz-pool")
    thread = ServerThread()

    async def start():
        app = PoolApp(PoolConfig(data_dir=tmp, port=0, sync=False))
        run = await serving.start([app.register], serving.ServerConfig(port=0))
        await app.warm_up()
        return app, run

    app, run = thread.run(start())
    channel = grpc.insecure_channel(f"127.0.0.1:{run.port}")
    try:
        yield app, channel
    finally:
        channel.close()

        async def stop():
            await run.server.stop(0)
            await app.close()

        thread.close(stop)


def stored_garbage(app: PoolApp) -> list[str]:
    """Entries of the pool's LMDB that do not load."""
    bad = []
    with app.store.env.begin() as txn:
        for key, raw in txn.cursor(db=app.store.db["meta"]):
            meta = json.loads(raw)
            try:
                spaces.get(meta["space"])
                weights = txn.get(key, db=app.store.db["blocks"])
                assert weights and safetensors.numpy.load(bytes(weights))
                assert txn.get(meta["source_job_id"].encode(), db=app.store.db["jobs"]) is not None
            except Exception as e:
                bad.append(f"{key!r}: {type(e).__name__}: {e}")
    return bad


def plausible_put(blocks: list[pool_pb2.Block], tokens: list[int], job: str) -> bytes:
    request = pool_pb2.PutBlocksRequest(
        architecture=common_pb2.Architecture(space="mnas", tokens=tokens),
        task="digits",
        source_job_id=job,
        blocks=blocks,
    )
    return request.SerializeToString()


BLOCKS = st.builds(
    pool_pb2.Block,
    position=st.integers(0, 6),
    iterations=st.integers(1, 50),
    weights=HINTS["weights"],
)
PUTS = st.builds(
    plausible_put,
    st.lists(st.one_of(BLOCKS, messages(pool_pb2.Block, HINTS)), min_size=1, max_size=3),
    HINTS["tokens"],
    HINTS["source_job_id"],
)


@FUZZ
@given(method=st.sampled_from(sorted(METHODS)), data=st.data())
def test_pool_survives_random_requests_and_stores_no_garbage(pool, method, data):
    app, channel = pool
    cls = METHODS[method]
    plausible = PUTS if cls is pool_pb2.PutBlocksRequest else requests(cls, HINTS)
    raw = data.draw(st.one_of(requests(cls, HINTS), plausible))
    code, details = call(channel, method, raw, timeout_s=10.0)
    event(f"{method.rsplit('/', 1)[1]} {code.name} {details.split(':')[0][:30]}")
    check_reply(cls, raw, code, details)
    assert code in ALLOWED, f"{code.name}: {details}"
    assert stored_garbage(app) == []


@pytest.mark.parametrize("job", ["x" * 600, "s1/\x00", ""], ids=["long", "nul", "empty"])
def test_put_with_an_odd_source_job_id_is_refused_or_stored_cleanly(pool, job):
    app, channel = pool
    block = pool_pb2.Block(position=0, iterations=3, weights=WEIGHTS)
    raw = plausible_put([block], [0] * len(MNAS.vocab), job)
    code, details = call(channel, "/fnas.v1.PoolService/PutBlocks", raw)
    check_reply(pool_pb2.PutBlocksRequest, raw, code, details)
    assert code in ALLOWED, f"{code.name}: {details}"
    assert stored_garbage(app) == []
