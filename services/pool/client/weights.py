"""The torch side of the pool, for the processes that train (trainers, `fnas bench akp`).

A searched block is a torch module whose state_dict is exactly that block's weights (`fnas.mnasnet`:
`model.blocks[i]`). These helpers turn blocks into PutBlocks payloads (safetensors), describe their shapes
for a QueryBlocks request, and load the matches back into a fresh model. The pool service itself works on
numpy arrays and never imports torch.

    matches = await pool.query(arch, task, iterations, block_queries(model.blocks), seed=job.seed)
    matched = load_matches(model.blocks, matches)
    ... train ...
    await pool.put(arch, task, job.job_id, put_blocks(model.blocks, tokens, iterations))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import safetensors.torch
import torch
from torch import nn

from fnas.v1 import pool_pb2


def state_bytes(module: nn.Module) -> bytes:
    """The module's state_dict as safetensors bytes (contiguous CPU copies; channels_last is fine)."""
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}
    return safetensors.torch.save(state)


def load_state_bytes(module: nn.Module, data: bytes) -> None:
    """Loads safetensors bytes into the module; every name and shape must match (strict)."""
    module.load_state_dict(safetensors.torch.load(data), strict=True)


def tensor_specs(module: nn.Module) -> list[pool_pb2.TensorSpec]:
    """Names, shapes and dtypes of the module's state_dict, the layout a match is adapted to."""
    return [
        pool_pb2.TensorSpec(name=k, shape=list(v.shape), dtype=str(v.dtype).removeprefix("torch."))
        for k, v in module.state_dict().items()
    ]


def block_queries(
    blocks: Sequence[nn.Module], positions: Iterable[int] | None = None
) -> list[pool_pb2.BlockQuery]:
    """One BlockQuery per block (all positions by default)."""
    chosen = range(len(blocks)) if positions is None else positions
    return [pool_pb2.BlockQuery(position=i, tensors=tensor_specs(blocks[i])) for i in chosen]


def put_blocks(blocks: Sequence[nn.Module], iterations: int) -> list[pool_pb2.Block]:
    """Every block's weights for PutBlocks; the pool derives the embeddings from the architecture."""
    return [
        pool_pb2.Block(position=i, weights=state_bytes(b), iterations=iterations)
        for i, b in enumerate(blocks)
    ]


def load_matches(blocks: Sequence[nn.Module], matches: Iterable[pool_pb2.BlockMatch]) -> list[int]:
    """Loads each match into its block (the rest keep their fresh init); returns the loaded positions."""
    loaded = []
    with torch.no_grad():
        for match in matches:
            load_state_bytes(blocks[match.position], match.weights)
            loaded.append(match.position)
    return loaded
