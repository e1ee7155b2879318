"""PoolService: store trained blocks, answer block queries with adapted weights (paper 4.3).

Requests are checked in full before anything is stored; a bad one gets INVALID_ARGUMENT "<field>: <reason>".
LMDB writes, weight decoding and shape adaptation run in worker threads so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import threading

import grpc
import lmdb
import numpy as np
import safetensors.numpy

from fnas import spaces
from fnas.bounds import clip
from fnas.v1 import pool_pb2, pool_pb2_grpc
from services.pool import metrics
from services.pool.adapt import DTYPES, TensorSpec, adapt_block
from services.pool.store import NewBlock, PoolStore

log = logging.getLogger(__name__)
MAX_TASK_CHARS = 1024
MAX_JOB_ID_BYTES = 256
#: safetensors dtype codes -> numpy names (bfloat16 has none: trainers send their float32 master weights).
_SAFETENSORS_DTYPES = {
    "F16": "float16",
    "F32": "float32",
    "F64": "float64",
    "I32": "int32",
    "I64": "int64",
    "U8": "uint8",
    "BOOL": "bool",
}


class BadRequest(ValueError):
    """A request field that cannot be served; str() is '<field>: <reason>'."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")


def _space(arch) -> tuple[spaces.SearchSpace, tuple[int, ...]]:
    """The architecture's space and canonical tokens; BadRequest names the field."""
    if not arch.space:
        raise BadRequest("architecture.space", "required")
    try:
        space = spaces.get(arch.space)
    except spaces.UnknownSpace as e:
        raise BadRequest("architecture.space", str(e)) from None
    if space.tabular:
        raise BadRequest("architecture.space", f"{space.id} is a benchmark table; it has no weights to pool")
    try:
        tokens = space.validate(arch.tokens)
    except spaces.InvalidArchitecture as e:
        raise BadRequest("architecture.tokens", str(e)) from None
    canonical = getattr(space, "canonical", None)
    return space, tuple(canonical(tokens)) if canonical else tokens


def _position(space: spaces.SearchSpace, field: str, position: int, seen: set[int]) -> None:
    if position >= len(space.blocks):
        raise BadRequest(field, f"is {position}; {space.id} has blocks 0..{len(space.blocks) - 1}")
    if position in seen:
        raise BadRequest(field, f"duplicate position {position}")
    seen.add(position)


def _task(task: str, required: bool) -> None:
    if required and not task:
        raise BadRequest("task", "required (the dataset that trained the blocks)")
    if len(task) > MAX_TASK_CHARS:
        raise BadRequest("task", f"longer than {MAX_TASK_CHARS} characters")


def check_put(request: pool_pb2.PutBlocksRequest) -> tuple[str, list[NewBlock]]:
    """The space id and the blocks to store, with their embeddings; BadRequest on any bad field."""
    space, tokens = _space(request.architecture)
    _task(request.task, required=True)
    if not request.source_job_id:
        raise BadRequest("source_job_id", "required (a repeated put with the same id is ignored)")
    if len(request.source_job_id.encode()) > MAX_JOB_ID_BYTES:  # it is an LMDB key: at most 511 bytes
        raise BadRequest("source_job_id", f"longer than {MAX_JOB_ID_BYTES} bytes")
    if not request.blocks:
        raise BadRequest("blocks", "required: at least one block")
    out, seen = [], set()
    for i, block in enumerate(request.blocks):
        field = f"blocks[{i}]"
        _position(space, f"{field}.position", block.position, seen)
        embedding = space.block_embedding(tokens, block.position)
        if block.embedding and (
            len(block.embedding) != len(embedding) or not np.allclose(block.embedding, embedding)
        ):
            raise BadRequest(
                f"{field}.embedding", f"does not match block {block.position} of the architecture"
            )
        if block.iterations == 0:
            raise BadRequest(f"{field}.iterations", "must be > 0")
        shapes = _check_weights(f"{field}.weights", block.weights)
        out.append(NewBlock(block.position, embedding.tolist(), block.iterations, block.weights, shapes))
    return space.id, out


def _check_weights(field: str, data: bytes) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of a safetensors payload; BadRequest if it is not a usable one."""
    if not data:
        raise BadRequest(field, "required (the block's state_dict as safetensors)")
    try:  # the header first: it names dtypes numpy lacks (bfloat16), which numpy's loader cannot report
        (size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + size])
        dtypes = {k: v["dtype"] for k, v in header.items() if k != "__metadata__"}
    except Exception as e:  # struct, JSON and key errors all mean "not safetensors"
        raise BadRequest(field, f"not a safetensors file ({type(e).__name__}: {e})") from None
    for name, dtype in dtypes.items():
        if _SAFETENSORS_DTYPES.get(dtype) not in DTYPES:
            raise BadRequest(
                field, f"tensor {clip(name)!r} has dtype {dtype}; send one of {', '.join(DTYPES)}"
            )
    try:
        arrays = safetensors.numpy.load(data)
    except Exception as e:  # safetensors raises several types for malformed payloads
        raise BadRequest(field, f"not a safetensors file ({type(e).__name__}: {e})") from None
    if not arrays:
        raise BadRequest(field, "holds no tensors")
    return {name: a.shape for name, a in arrays.items()}


def check_query(
    request: pool_pb2.QueryBlocksRequest, max_elements: int
) -> list[tuple[int, list[TensorSpec]]]:
    """(position, target tensor layout) per queried block; BadRequest on any bad field."""
    space, _ = _space(request.architecture)
    _task(request.task, required=False)
    if not 0.0 <= request.min_similarity <= 1.0:
        raise BadRequest("min_similarity", f"must be in [0, 1], got {request.min_similarity}")
    if not request.blocks:
        raise BadRequest("blocks", "required: at least one block to initialise")
    out, seen = [], set()
    for i, block in enumerate(request.blocks):
        field = f"blocks[{i}]"
        _position(space, f"{field}.position", block.position, seen)
        if not block.tensors:
            raise BadRequest(f"{field}.tensors", "required: the block's state_dict layout")
        specs, names = [], set()
        for j, t in enumerate(block.tensors):
            tf = f"{field}.tensors[{j}]"
            if not t.name or t.name in names:
                raise BadRequest(f"{tf}.name", "empty" if not t.name else f"duplicate name {clip(t.name)!r}")
            names.add(t.name)
            dtype = t.dtype or "float32"
            if dtype not in DTYPES:
                raise BadRequest(f"{tf}.dtype", f"is {clip(dtype)!r}; allowed: {', '.join(DTYPES)}")
            if int(np.prod(t.shape, dtype=np.float64)) > max_elements:
                raise BadRequest(f"{tf}.shape", f"{list(t.shape)} exceeds {max_elements} elements")
            specs.append(TensorSpec(t.name, tuple(t.shape), dtype))
        out.append((block.position, specs))
    return out


class PoolServicer(pool_pb2_grpc.PoolServiceServicer):
    """The AKP: one PoolStore, counters of queried and matched blocks."""

    def __init__(self, store: PoolStore, max_tensor_elements: int = 1 << 28) -> None:
        self.store = store
        self.max_tensor_elements = max_tensor_elements
        self._lock = threading.Lock()
        self.queries = self.queried = self.matched = 0
        metrics.BLOCKS.set(store.stats()[0])
        metrics.MAP_SIZE.set(store.map_size())

    async def PutBlocks(self, request, context):
        try:
            space_id, blocks = await asyncio.to_thread(check_put, request)
        except BadRequest as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        try:
            stored, duplicate = await asyncio.to_thread(
                self.store.put, space_id, request.task, request.source_job_id, blocks
            )
        except lmdb.MapFullError as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"pool storage is full: {e}")
        metrics.PUTS.labels("duplicate" if duplicate else "stored").inc()
        metrics.BLOCKS.set(self.store.stats()[0])
        metrics.MAP_SIZE.set(self.store.map_size())
        return pool_pb2.PutBlocksResponse(stored=stored, duplicate=duplicate)

    async def QueryBlocks(self, request, context):
        try:
            wanted = check_query(request, self.max_tensor_elements)
        except BadRequest as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        response = await asyncio.to_thread(self._query, request, wanted)
        with self._lock:
            self.queries += 1
            self.queried += response.queried
            self.matched += response.matched
            metrics.HIT_RATIO.set(self.matched / self.queried)
        metrics.QUERIES.inc()
        metrics.QUERIED.inc(response.queried)
        metrics.MATCHED.inc(response.matched)
        for m in response.matches:
            metrics.SIMILARITY.observe(m.similarity)
            if m.adapted:
                metrics.ADAPTED.inc()
        return response

    def _query(self, request: pool_pb2.QueryBlocksRequest, wanted) -> pool_pb2.QueryBlocksResponse:
        space, tokens = _space(request.architecture)
        response = pool_pb2.QueryBlocksResponse(queried=len(wanted))
        for position, specs in wanted:
            found = self.store.best(
                space.id,
                position,
                space.block_embedding(tokens, position),
                request.task,
                request.iterations,
                request.min_similarity,
                {s.name: s.shape for s in specs},
            )
            if found is None:
                continue
            entry, similarity = found
            source = safetensors.numpy.load(self.store.weights(entry.key))
            # Seeded per block: the same query gets the same fresh padding, whatever else was asked.
            rng = np.random.default_rng([request.seed, position])
            arrays, notes = adapt_block(source, specs, rng)
            contiguous = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
            response.matches.append(
                pool_pb2.BlockMatch(
                    position=position,
                    similarity=similarity,
                    weights=safetensors.numpy.save(contiguous),
                    adapted=bool(notes),
                    source_job_id=entry.source_job_id,
                    iterations=entry.iterations,
                    task=entry.task,
                    adaptations=notes,
                )
            )
        response.matched = len(response.matches)
        response.hit_ratio = response.matched / response.queried
        return response

    async def Stats(self, request, context):
        blocks, per_task = self.store.stats()
        jobs = await asyncio.to_thread(self.store.count_jobs)
        with self._lock:
            return pool_pb2.PoolStatsResponse(
                blocks=blocks,
                queries=self.queries,
                hit_ratio=self.matched / self.queried if self.queried else 0.0,
                blocks_by_task=per_task,
                jobs=jobs,
                blocks_queried=self.queried,
                blocks_matched=self.matched,
            )
