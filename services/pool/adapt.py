"""Shape adaptation: fit a stored block's weights to the shapes of the block a trainer asks for.

Blocks match by embedding (paper 4.3), but in the `mnas` space a block's shapes also depend on the previous
block's width, the global width multiplier and the layer count, so the best match rarely has the query's
exact shapes. The paper's fuzzy matching keeps the hit ratio near 100%; these rules make every match usable:

- tensors pair up by state_dict name; a name the source lacks whose first part is a layer index ("2.body...")
  takes the same tensor of the nearest source layer (a deeper block repeats its last trained layer, a
  shallower one keeps its first layers), else it stays freshly initialised;
- kernels (dims 2 and 3 of a 4-D conv weight) are centre-cropped (5 -> 3) or zero-padded (3 -> 5): a
  zero-padded kernel computes what the trained one did;
- channels (every other dim) are sliced when the source has more, and padded with a fresh initialisation
  (the model's own init: Kaiming normal fan-out convs, BN scale 1, shifts and means 0, variances 1) when it
  has fewer: zero channels would stay dead behind BatchNorm;
- a tensor whose rank differs, or that no source layer has, is freshly initialised.

Every departure from a plain copy is reported as a note, so a match says how it was adapted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: numpy dtypes the pool stores; bfloat16 has no numpy type (trainers send float32 master weights).
DTYPES = ("float16", "float32", "float64", "int32", "int64", "uint8", "bool")


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one tensor of the block to initialise."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


def fresh(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    """A freshly initialised tensor, following `fnas.mnasnet`'s init rules by the tensor's role."""
    shape, dtype = spec.shape, np.dtype(spec.dtype)
    leaf = spec.name.rsplit(".", 1)[-1]
    if len(shape) == 4:  # conv weight: Kaiming normal, fan-out mode (torchvision MobileNetV2)
        std = np.sqrt(2.0 / max(1, shape[0] * shape[2] * shape[3]))
        return (rng.standard_normal(shape) * std).astype(dtype)
    if len(shape) == 2:  # linear weight
        return (rng.standard_normal(shape) * 0.01).astype(dtype)
    if leaf in ("running_var", "weight"):  # BatchNorm variance and scale
        return np.ones(shape, dtype)
    return np.zeros(shape, dtype)  # biases, BN shifts and means, num_batches_tracked


def _layer_split(name: str) -> tuple[int, str] | None:
    head, _, rest = name.partition(".")
    return (int(head), rest) if head.isdigit() and rest else None


def _source_name(name: str, source: Mapping[str, np.ndarray]) -> str | None:
    """The source tensor that initialises `name`: the same name, else the nearest layer's (ties: lower)."""
    if name in source:
        return name
    split = _layer_split(name)
    if split is None:
        return None
    layer, rest = split
    layers = sorted(
        (abs(s[0] - layer), s[0]) for s in map(_layer_split, source) if s is not None and s[1] == rest
    )
    return f"{layers[0][1]}.{rest}" if layers else None


def _fit(src: np.ndarray, spec: TensorSpec, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """`src` brought to spec's shape; notes say what changed."""
    if src.shape == spec.shape:
        return src.astype(spec.dtype, copy=False), []
    out = fresh(spec, rng)
    notes = []
    src_idx: list[slice] = []
    dst_idx: list[slice] = []
    spatial = range(2, 4) if len(spec.shape) == 4 else range(0)
    for d, (s, t) in enumerate(zip(src.shape, spec.shape, strict=True)):
        if d in spatial:  # centred: crop the border of a bigger kernel, zero-pad a smaller one
            lo_s, lo_t = max(0, (s - t) // 2), max(0, (t - s) // 2)
        else:  # channels: the leading ones
            lo_s = lo_t = 0
        n = min(s, t)
        src_idx.append(slice(lo_s, lo_s + n))
        dst_idx.append(slice(lo_t, lo_t + n))
        if s != t:
            what = "kernel" if d in spatial else "channels"
            how = ("crop" if d in spatial else "slice") if s > t else ("zero-pad" if d in spatial else "pad")
            notes.append(f"dim {d} {what} {s}->{t} {how}")
    if any(d in spatial and s < t for d, (s, t) in enumerate(zip(src.shape, spec.shape, strict=True))):
        # Zero the whole kernel of the channels that come from the source, then paste the trained centre.
        channels = tuple(dst_idx[:2])
        out[channels] = 0
    out[tuple(dst_idx)] = src[tuple(src_idx)].astype(spec.dtype, copy=False)
    return out, notes


def adapt_block(
    source: Mapping[str, np.ndarray], target: Sequence[TensorSpec], rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The source block's weights fitted to `target` (exactly its names and shapes) and the notes.

    No notes means the weights load as they are (same names and shapes).
    """
    out: dict[str, np.ndarray] = {}
    notes: list[str] = []
    used: set[str] = set()
    for spec in target:
        name = _source_name(spec.name, source)
        if name is None or source[name].ndim != len(spec.shape):
            out[spec.name] = fresh(spec, rng)
            notes.append(f"{spec.name}: fresh (no trained tensor fits)")
            continue
        out[spec.name], changes = _fit(source[name], spec, rng)
        if name != spec.name:
            changes.insert(0, f"from {name}")
        notes += [f"{spec.name}: {c}" for c in changes]
        used.add(name)
    if unused := len(set(source) - used):
        notes.append(f"{unused} trained tensors unused (layers or parts the query lacks)")
    return out, notes
