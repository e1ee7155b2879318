"""The mnas space (tokens, dedup, embeddings, analytic counts) and its torch model."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from fnas.mnasnet import build_model, count_mult_adds, count_params
from fnas.spaces import InvalidArchitecture, get
from fnas.spaces.mnas import BASE_BLOCKS, MOBILENET_V2_TOKENS, MnasSpace, make_divisible

torch.set_num_threads(1)

SMALL = {"num_classes": 10, "input_shape": (3, 32, 32), "width_mult": 0.35}


@pytest.fixture
def space() -> MnasSpace:
    """The registry's mnas space."""
    s = get("mnas")
    assert isinstance(s, MnasSpace)
    return s


def random_archs(space: MnasSpace, n: int, seed: int) -> list[tuple[int, ...]]:
    rng = np.random.default_rng(seed)
    return [space.random_tokens(rng) for _ in range(n)]


def hook_counts(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Mult-Adds of conv and linear layers, counted by forward hooks on one image."""
    total = 0

    def conv(m: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += kh * kw * (m.in_channels // m.groups) * m.out_channels * out.shape[2] * out.shape[3]

    def linear(m: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += m.in_features * m.out_features

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(conv)
        elif isinstance(m, nn.Linear):
            m.register_forward_hook(linear)
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    return total


def test_tokens_names_and_sizes(space: MnasSpace) -> None:
    assert len(space.vocab) == 42 == len(space.token_names)
    assert space.token_names[:6] == ("b1.op", "b1.kernel", "b1.se", "b1.skip", "b1.filters", "b1.layers")
    assert space.token_names[7] == "b2.kernel"
    assert space.blocks[1] == tuple(range(6, 12)) and len(space.blocks) == 7
    assert space.embedding_size == 7 * (4 + 2 + 2 + 2 + 3 + 3) == 112
    t = MOBILENET_V2_TOKENS
    assert space.embedding(t).shape == (112,) and space.embedding(t).sum() == 42
    assert all(space.block_embedding(t, b).shape == (16,) for b in range(7))
    # Blocks 1 and 7 have base layer count 1: offsets -1 and 0 both give one layer.
    assert space.size() == 288**5 * 192**2


def test_validation_names_the_position(space: MnasSpace) -> None:
    bad = list(MOBILENET_V2_TOKENS)
    bad[7] = 2
    with pytest.raises(InvalidArchitecture, match=r"token 7 \(b2\.kernel\) is 2, allowed range is 0\.\.1"):
        space.validate(bad)
    bad[7], bad[41] = 0, -1
    with pytest.raises(InvalidArchitecture, match=r"token 41 \(b7\.layers\) is -1, allowed range is 0\.\.2"):
        build_model(bad)
    with pytest.raises(InvalidArchitecture, match="takes 42 tokens"):
        space.key(MOBILENET_V2_TOKENS[:-1])
    with pytest.raises(InvalidArchitecture, match="got 43"):
        count_mult_adds((*MOBILENET_V2_TOKENS, 0))


def test_key_merges_only_equal_networks(space: MnasSpace) -> None:
    t = list(MOBILENET_V2_TOKENS)
    fewer = list(t)
    fewer[5] = 0  # block 1: max(1, 1 - 1) == 1 layer, same network as offset 0
    assert space.key(fewer) == space.key(t) == "100111-300111-300111-300111-300111-300111-300111"
    assert space.canonical(fewer) == tuple(t)
    assert np.array_equal(space.embedding(fewer), space.embedding(t))
    assert np.array_equal(space.block_embedding(fewer, 0), space.block_embedding(t, 0))
    other = list(t)
    other[11] = 0  # block 2 offset -1: one layer instead of two, a different network
    assert space.key(other) != space.key(t)
    keys = {space.key(a) for a in random_archs(space, 200, seed=1)}
    assert len(keys) == 200


def test_describe_mobilenet_v2(space: MnasSpace) -> None:
    d = space.describe(MOBILENET_V2_TOKENS)
    assert [b["channels"] for b in d["blocks"]] == [16, 24, 32, 64, 96, 160, 320]
    assert [b["layers"] for b in d["blocks"]] == [1, 2, 3, 4, 3, 3, 1]
    assert d["blocks"][0]["op"] == "dwconv" and d["blocks"][1]["op"] == "mbconv6"
    # torchvision's mobilenet_v2: 3,504,872 params and 300.77M Mult-Adds (the paper's "MBv2 300M").
    assert d["params"] == 3_504_872
    assert d["mult_adds"] == 300_774_272
    assert 290e6 < d["mult_adds"] < 310e6


def test_mobilenet_v2_model_matches_counts() -> None:
    model = build_model(MOBILENET_V2_TOKENS)
    assert sum(p.numel() for p in model.parameters()) == 3_504_872
    assert hook_counts(model, (3, 224, 224)) == 300_774_272


@pytest.mark.parametrize(
    ("config", "seed"),
    [
        (SMALL, 2),
        ({"num_classes": 1000, "input_shape": (3, 224, 224), "width_mult": 1.0}, 3),
        ({"num_classes": 10, "input_shape": (1, 8, 8), "width_mult": 0.5}, 4),
        ({"num_classes": 100, "input_shape": (3, 33, 47), "width_mult": 1.3}, 5),
    ],
)
def test_analytic_counts_equal_hooks(space: MnasSpace, config: dict, seed: int) -> None:
    for tokens in random_archs(space, 4, seed):
        model = build_model(tokens, **config)
        assert count_params(tokens, **config) == sum(p.numel() for p in model.parameters())
        assert count_mult_adds(tokens, **config) == hook_counts(model, config["input_shape"])


def test_fifty_random_models_forward(space: MnasSpace) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, *SMALL["input_shape"])
    seen_ops = set()
    for tokens in random_archs(space, 50, seed=6):
        model = build_model(tokens, **SMALL)
        model.train()
        out = model(x)
        assert out.shape == (2, 10)
        assert torch.isfinite(out).all()
        seen_ops |= {b["op"] for b in space.describe(tokens)["blocks"]}
    assert seen_ops == {"conv", "dwconv", "mbconv3", "mbconv6"}


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 1, 1)])
def test_tiny_inputs_work(space: MnasSpace, shape: tuple[int, int, int]) -> None:
    for tokens in [MOBILENET_V2_TOKENS, *random_archs(space, 3, seed=7)]:
        model = build_model(tokens, num_classes=10, input_shape=shape, width_mult=0.35)
        out = model(torch.randn(2, *shape))
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        out.sum().backward()
        assert all(p.grad is not None for p in model.parameters())


def test_block_state_dicts_are_disjoint_and_cover(space: MnasSpace) -> None:
    tokens = random_archs(space, 1, seed=8)[0]
    model = build_model(tokens, **SMALL)
    assert len(model.blocks) == 7
    full = set(model.state_dict())
    per_block = [{f"blocks.{i}.{k}" for k in model.blocks[i].state_dict()} for i in range(7)]
    others = {k for k in full if not k.startswith("blocks.")}
    assert all(k.split(".")[0] in {"stem", "head", "classifier"} for k in others)
    assert sum(len(b) for b in per_block) + len(others) == len(full)
    assert set().union(*per_block) | others == full
    block_params = sum(p.numel() for b in model.blocks for p in b.parameters())
    rest = sum(p.numel() for m in (model.stem, model.head, model.classifier) for p in m.parameters())
    assert block_params + rest == sum(p.numel() for p in model.parameters())
    # A block's weights load into the same block of another model of the same tokens.
    twin = build_model(tokens, **SMALL)
    twin.blocks[3].load_state_dict(model.blocks[3].state_dict())
    saved, loaded = model.blocks[3].state_dict(), twin.blocks[3].state_dict()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)


def test_block_structure_follows_tokens(space: MnasSpace) -> None:
    t = list(MOBILENET_V2_TOKENS)
    t[12:18] = [0, 1, 1, 0, 2, 2]  # block 3: conv 5x5, SE 0.25, no skip, 1.25x filters, 3 + 1 layers
    model = build_model(t)
    block = model.blocks[2]
    assert len(block) == 4
    first = block[0].body[0][0]
    assert isinstance(first, nn.Conv2d) and first.kernel_size == (5, 5) and first.stride == (2, 2)
    assert first.out_channels == make_divisible(32 * 1.25) == 40
    assert not any(layer.residual for layer in block)
    assert all(any(type(m).__name__ == "SqueezeExcite" for m in layer.modules()) for layer in block)
    # Identity skip: every layer but the strided first one of block 2.
    assert [layer.residual for layer in model.blocks[1]] == [False, True]


def test_bad_config_rejected() -> None:
    with pytest.raises(ValueError, match="input_shape"):
        build_model(MOBILENET_V2_TOKENS, input_shape=(32, 32))
    with pytest.raises(ValueError, match="width_mult"):
        count_params(MOBILENET_V2_TOKENS, width_mult=0)


def test_space_module_does_not_import_torch() -> None:
    code = (
        "import sys; from fnas.spaces import get; s = get('mnas'); "
        "s.describe(s.random_tokens(__import__('numpy').random.default_rng(0))); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_base_blocks_are_mobilenet_v2() -> None:
    assert [c for c, _, _ in BASE_BLOCKS] == [16, 24, 32, 64, 96, 160, 320]
    assert make_divisible(16 * 0.75) == 16 and make_divisible(20) == 24 and make_divisible(320 * 0.35) == 112
