"""Shape adaptation of pooled block weights: kernels, channels, layers, and real mnas blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fnas.mnasnet import build_model
from fnas.spaces.mnas import MnasSpace
from services.pool.adapt import TensorSpec, adapt_block, fresh
from services.pool.client import weights

RNG = np.random.default_rng(0)


def arrays(**shapes) -> dict[str, np.ndarray]:
    return {
        name.replace("_", "."): RNG.standard_normal(shape).astype(np.float32)
        for name, shape in shapes.items()
    }


def test_equal_shapes_load_as_they_are():
    src = arrays(w=(8, 4, 3, 3), b=(8,))
    out, notes = adapt_block(src, [TensorSpec("w", (8, 4, 3, 3)), TensorSpec("b", (8,))], RNG)
    assert notes == []
    assert all(np.array_equal(out[k], src[k]) for k in src)


def test_kernel_5_to_3_is_centre_cropped():
    src = arrays(w=(4, 4, 5, 5))
    out, notes = adapt_block(src, [TensorSpec("w", (4, 4, 3, 3))], RNG)
    np.testing.assert_array_equal(out["w"], src["w"][:, :, 1:4, 1:4])
    assert any("kernel 5->3 crop" in n for n in notes)


def test_kernel_3_to_5_zero_pad_computes_the_same_conv():
    """A zero-padded kernel with padding 2 gives exactly the 3x3 conv with padding 1."""
    src = arrays(w=(6, 6, 3, 3))
    out, notes = adapt_block(src, [TensorSpec("w", (6, 6, 5, 5))], RNG)
    w5 = out["w"]
    assert np.all(w5[:, :, 0, :] == 0) and np.all(w5[:, :, :, 4] == 0)
    np.testing.assert_array_equal(w5[:, :, 1:4, 1:4], src["w"])
    x = torch.randn(2, 6, 7, 7)
    y3 = F.conv2d(x, torch.from_numpy(src["w"]), padding=1)
    y5 = F.conv2d(x, torch.from_numpy(w5), padding=2)
    torch.testing.assert_close(y3, y5, rtol=1e-5, atol=1e-5)
    assert any("kernel 3->5 zero-pad" in n for n in notes)


def test_channels_are_sliced_or_padded_with_a_fresh_init():
    src = {
        "0.weight": RNG.standard_normal((16, 8, 1, 1)).astype(np.float32),
        "1.weight": np.full(16, 3.0, np.float32),  # BN scale
        "1.bias": np.full(16, 2.0, np.float32),
        "1.running_var": np.full(16, 5.0, np.float32),
    }
    target = [
        TensorSpec("0.weight", (24, 4, 1, 1)),
        TensorSpec("1.weight", (24,)),
        TensorSpec("1.bias", (24,)),
        TensorSpec("1.running_var", (24,)),
    ]
    out, notes = adapt_block(src, target, RNG)
    np.testing.assert_array_equal(out["0.weight"][:16], src["0.weight"][:, :4])  # leading channels kept
    padded = out["0.weight"][16:]
    assert padded.std() > 0  # a fresh Kaiming init, not dead zeros
    np.testing.assert_array_equal(out["1.weight"][16:], 1.0)
    np.testing.assert_array_equal(out["1.bias"][16:], 0.0)
    np.testing.assert_array_equal(out["1.running_var"][16:], 1.0)
    np.testing.assert_array_equal(out["1.weight"][:16], 3.0)
    assert any("dim 0 channels 16->24 pad" in n for n in notes)
    assert any("dim 1 channels 8->4 slice" in n for n in notes)


def test_missing_layers_reuse_the_nearest_trained_layer():
    src = arrays(**{"0_w": (4, 4, 3, 3), "1_w": (4, 4, 3, 3)})
    out, notes = adapt_block(src, [TensorSpec(f"{i}.w", (4, 4, 3, 3)) for i in range(4)], RNG)
    np.testing.assert_array_equal(out["3.w"], src["1.w"])
    np.testing.assert_array_equal(out["2.w"], src["1.w"])
    assert "3.w: from 1.w" in notes


def test_unknown_or_rank_changed_tensors_start_fresh_and_extra_ones_are_reported():
    src = arrays(a=(4, 4, 3, 3), extra=(3,))
    out, notes = adapt_block(src, [TensorSpec("a", (4,)), TensorSpec("new", (2, 2, 1, 1))], RNG)
    np.testing.assert_array_equal(out["a"], np.zeros(4))  # rank differs: fresh (a 1-D non-scale: zeros)
    assert out["new"].shape == (2, 2, 1, 1)
    assert any("a: fresh" in n for n in notes) and any("new: fresh" in n for n in notes)
    assert any("2 trained tensors unused" in n for n in notes)


def test_fresh_follows_the_model_init_roles():
    rng = np.random.default_rng(1)
    assert np.all(fresh(TensorSpec("x.running_mean", (3,)), rng) == 0)
    assert np.all(fresh(TensorSpec("x.num_batches_tracked", (), "int64"), rng) == 0)
    conv = fresh(TensorSpec("x.weight", (64, 8, 3, 3)), rng)
    assert abs(conv.std() - np.sqrt(2 / (64 * 9))) < 0.01


@pytest.mark.parametrize("width", [0.25, 0.5])
def test_any_mnas_block_loads_into_any_other(width):
    """Blocks of one random network, adapted to another's layout, load strictly and run."""
    space, rng = MnasSpace(), np.random.default_rng(3)
    src_model = build_model(space.random_tokens(rng), 10, (1, 8, 8), 0.25)
    dst_model = build_model(space.random_tokens(rng), 10, (1, 8, 8), width)
    for src, dst in zip(src_model.blocks, dst_model.blocks, strict=True):
        source = {k: v.numpy() for k, v in src.state_dict().items()}
        target = [TensorSpec(s.name, tuple(s.shape), s.dtype) for s in weights.tensor_specs(dst)]
        out, _ = adapt_block(source, target, rng)
        dst.load_state_dict(
            {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}, strict=True
        )
    dst_model.eval()
    assert torch.isfinite(dst_model(torch.randn(2, 1, 8, 8))).all()
