"""PoolService through real gRPC over real LMDB: put/query round trip, adaptation, transfer, bad input."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from prometheus_client import REGISTRY

from fnas.mnasnet import build_model
from fnas.spaces.mnas import MOBILENET_V2_TOKENS, MnasSpace
from fnas.v1 import common_pb2, pool_pb2
from services.pool.client import weights

SPACE = MnasSpace()
TOKENS = list(MOBILENET_V2_TOKENS)
ARCH = common_pb2.Architecture(space="mnas", tokens=TOKENS)


def model(tokens=TOKENS, width=0.25, seed=0):
    torch.manual_seed(seed)
    return build_model(tokens, 10, (1, 8, 8), width)


async def test_round_trip_returns_the_stored_weights_unchanged(pool):
    trained = model(seed=1)
    reply = await pool.put(ARCH, "digits", "s/0", weights.put_blocks(trained.blocks, 120))
    assert (reply.stored, reply.duplicate) == (7, False)
    fresh = model(seed=2)
    answer = await pool.query(ARCH, weights.block_queries(fresh.blocks), task="digits", iterations=120)
    assert (answer.queried, answer.matched, answer.hit_ratio) == (7, 7, 1.0)
    assert all(m.similarity == pytest.approx(1.0) and not m.adapted for m in answer.matches)
    assert {(m.source_job_id, m.iterations, m.task) for m in answer.matches} == {("s/0", 120, "digits")}
    assert weights.load_matches(fresh.blocks, answer.matches) == list(range(7))
    for a, b in zip(trained.blocks, fresh.blocks, strict=True):
        for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert torch.equal(x, y), k
    again = await pool.put(ARCH, "digits", "s/0", weights.put_blocks(model(seed=3).blocks, 120))
    assert again.duplicate and again.stored == 0
    stats = await pool.stats()
    assert (stats.blocks, stats.jobs, dict(stats.blocks_by_task)) == (7, 1, {"digits": 7})
    assert (stats.queries, stats.blocks_queried, stats.blocks_matched, stats.hit_ratio) == (1, 7, 7, 1.0)
    assert REGISTRY.get_sample_value("fnas_pool_hit_ratio") == 1.0


async def test_other_shapes_are_adapted_and_say_so(pool):
    await pool.put(ARCH, "digits", "s/0", weights.put_blocks(model().blocks, 100))
    rng = np.random.default_rng(5)
    tokens = SPACE.random_tokens(rng)
    other = model(tokens, width=0.5)
    arch = common_pb2.Architecture(space="mnas", tokens=tokens)
    answer = await pool.query(arch, weights.block_queries(other.blocks), seed=7)
    assert answer.hit_ratio == 1.0  # fuzzy matching: every block finds its best match
    assert all(m.adapted and m.adaptations for m in answer.matches)
    for m in answer.matches:
        expected = (
            np.dot(SPACE.block_embedding(tokens, m.position), SPACE.block_embedding(TOKENS, m.position)) / 6
        )
        assert m.similarity == pytest.approx(expected)
    weights.load_matches(other.blocks, answer.matches)  # strict: every name and shape fits
    other.eval()
    assert torch.isfinite(other(torch.randn(2, 1, 8, 8))).all()
    repeat = await pool.query(arch, weights.block_queries(other.blocks), seed=7)
    assert [m.weights for m in repeat.matches] == [m.weights for m in answer.matches]  # seeded padding


async def test_transfer_between_tasks_follows_the_query_task(pool):
    await pool.put(ARCH, "synthetic", "t/0", weights.put_blocks(model().blocks, 100))
    queries = weights.block_queries(model().blocks, positions=[0, 3])
    assert (await pool.query(ARCH, queries, task="digits")).matched == 0
    source = await pool.query(ARCH, queries, task="synthetic")
    assert source.matched == 2 and {m.task for m in source.matches} == {"synthetic"}
    assert (await pool.query(ARCH, queries, task="")).matched == 2
    assert (await pool.query(ARCH, queries, task="digits")).hit_ratio == 0.0


def put_request(**changes) -> pool_pb2.PutBlocksRequest:
    request = pool_pb2.PutBlocksRequest(
        architecture=ARCH, task="digits", source_job_id="s/1", blocks=weights.put_blocks(model().blocks, 100)
    )
    for path, value in changes.items():
        target, *fields = path.split("__")
        obj = request if target == "req" else request.blocks[int(target[1:])]
        for f in fields[:-1]:
            obj = getattr(obj, f)
        if isinstance(value, list):
            getattr(obj, fields[-1])[:] = value
        else:
            setattr(obj, fields[-1], value)
    return request


BF16 = safetensors.torch.save({"w": torch.zeros(2, dtype=torch.bfloat16)})
BAD_PUTS = {
    "architecture.space: required": {"req__architecture__space": ""},
    "architecture.space: unknown space": {"req__architecture__space": "resnet"},
    "architecture.space: nasbench-graph/cora is a benchmark table": {
        "req__architecture__space": "nasbench-graph/cora"
    },
    "architecture.tokens: token 0": {"req__architecture__tokens": [9, *TOKENS[1:]]},
    "task: required": {"req__task": ""},
    "source_job_id: required": {"req__source_job_id": ""},
    "source_job_id: longer than 256 bytes": {"req__source_job_id": "j" * 300},
    "blocks[6].position: is 7": {"b6__position": 7},
    "blocks[6].position: duplicate position 0": {"b6__position": 0},
    "blocks[3].embedding: does not match": {"b3__embedding": [1.0] * 16},
    "blocks[2].iterations: must be > 0": {"b2__iterations": 0},
    "blocks[5].weights: not a safetensors file": {"b5__weights": b"not safetensors"},
    "blocks[5].weights: required": {"b5__weights": b""},
    "blocks[4].weights: tensor 'w' has dtype BF16": {"b4__weights": BF16},
}


@pytest.mark.parametrize("message", list(BAD_PUTS))
async def test_bad_put_is_invalid_argument_and_stores_nothing(pool, message):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await pool.stub.PutBlocks(put_request(**BAD_PUTS[message]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(message)
    stats = await pool.stats()
    assert (stats.blocks, stats.jobs) == (0, 0)
    assert not (await pool.put(ARCH, "digits", "s/1", weights.put_blocks(model().blocks, 100))).duplicate


def query_request(mutate) -> pool_pb2.QueryBlocksRequest:
    request = pool_pb2.QueryBlocksRequest(architecture=ARCH, blocks=weights.block_queries(model().blocks))
    mutate(request)
    return request


BAD_QUERIES = {
    "blocks: required": lambda r: r.ClearField("blocks"),
    "min_similarity: must be in [0, 1]": lambda r: setattr(r, "min_similarity", 1.5),
    "blocks[1].position: duplicate position 0": lambda r: setattr(r.blocks[1], "position", 0),
    "blocks[0].tensors: required": lambda r: r.blocks[0].ClearField("tensors"),
    "blocks[0].tensors[1].name: duplicate name": lambda r: setattr(
        r.blocks[0].tensors[1], "name", r.blocks[0].tensors[0].name
    ),
    "blocks[0].tensors[0].dtype: is 'complex64'": lambda r: setattr(
        r.blocks[0].tensors[0], "dtype", "complex64"
    ),
    "blocks[0].tensors[0].shape: [100000, 100000] exceeds": lambda r: (
        r.blocks[0].tensors[0].shape.__setitem__(slice(None), [100000, 100000])
    ),
    "architecture.tokens:": lambda r: r.architecture.tokens.append(0),
}


@pytest.mark.parametrize("message", list(BAD_QUERIES))
async def test_bad_query_is_invalid_argument(pool, message):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await pool.stub.QueryBlocks(query_request(BAD_QUERIES[message]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(message)
    assert (await pool.stats()).queries == 0


async def test_float16_weights_are_accepted_and_cast_to_the_query_dtype(pool):
    half = {k: v.half() if v.is_floating_point() else v for k, v in model().blocks[0].state_dict().items()}
    block = pool_pb2.Block(position=0, weights=safetensors.torch.save(half), iterations=10)
    await pool.put(ARCH, "digits", "h/0", [block])
    answer = await pool.query(ARCH, weights.block_queries(model().blocks, positions=[0]))
    arrays = safetensors.numpy.load(answer.matches[0].weights)
    assert {a.dtype.name for k, a in arrays.items() if "num_batches" not in k} == {"float32"}
