"""The MnasNet factorised hierarchical search space (Tan et al. 2019), the space the paper searches.

Seven blocks over the MobileNetV2 skeleton; each block picks six tokens, in this order: conv op, kernel,
squeeze-excite ratio, skip, filter multiplier and layer-count offset (MnasNet fig. 4). Every layer of a block
is the same op, as in MnasNet. This module decodes tokens into a layer plan and counts Mult-Adds and
parameters analytically; it must not import torch (services that only validate, dedup or embed tokens do not
install it). The torch model built from the same plan is `fnas.mnasnet.build_model`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fnas.spaces.base import SearchSpace

#: Conv op of a block: regular conv; depthwise-separable conv; inverted residual, expansion 3 or 6.
OPS = ("conv", "dwconv", "mbconv3", "mbconv6")
KERNELS = (3, 5)
SE_RATIOS = (0.0, 0.25)
SKIPS = ("none", "identity")
FILTER_MULTS = (0.75, 1.0, 1.25)
LAYER_DELTAS = (-1, 0, 1)

#: MobileNetV2 skeleton, one row per block: (base channels, base layer count, stride of the first layer).
BASE_BLOCKS = ((16, 1, 1), (24, 2, 2), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280

_FIELDS = ("op", "kernel", "se", "skip", "filters", "layers")
_CHOICES = (OPS, KERNELS, SE_RATIOS, SKIPS, FILTER_MULTS, LAYER_DELTAS)
_EXPANSION = {"mbconv3": 3, "mbconv6": 6}

#: MobileNetV2 itself (torchvision's mobilenet_v2): its t=1 first block is our depthwise-separable conv, the
#: rest are mbconv6; kernel 3, no SE, identity skips, base filters and layer counts.
MOBILENET_V2_TOKENS: tuple[int, ...] = (1, 0, 0, 1, 1, 1) + (3, 0, 0, 1, 1, 1) * 6

#: The standard config that `MnasSpace.describe` reports Mult-Adds and params for (ImageNet).
STANDARD_INPUT_SHAPE = (3, 224, 224)
STANDARD_NUM_CLASSES = 1000


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of `divisor`, never down by more than 10% (MobileNet's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class BlockChoice:
    """The decoded tokens of one block."""

    op: str
    kernel: int
    se_ratio: float
    skip: str
    filter_mult: float
    layer_delta: int
    base_channels: int
    base_layers: int
    stride: int

    @property
    def layers(self) -> int:
        """Layer count: the base count plus the offset, at least one."""
        return max(1, self.base_layers + self.layer_delta)


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a searched block, with the channel counts of a given width multiplier."""

    op: str
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    #: Channels the depthwise conv and the SE act on: in*expansion (mbconv), in (dwconv), out (conv).
    hidden_channels: int
    #: Squeeze width of the SE module, 0 for none.
    se_channels: int
    #: Identity residual: asked for and the input and output shapes match.
    residual: bool


@dataclass(frozen=True)
class NetworkPlan:
    """Every layer of one network: stem, the seven searched blocks, head and classifier."""

    in_channels: int
    stem_channels: int
    blocks: tuple[tuple[LayerSpec, ...], ...]
    head_channels: int
    num_classes: int


def decode(tokens: Sequence[int]) -> tuple[BlockChoice, ...]:
    """The choices of each block; the tokens must be valid (see `MnasSpace.validate`)."""
    n = len(_FIELDS)
    out = []
    for b, (channels, layers, stride) in enumerate(BASE_BLOCKS):
        t = tokens[b * n : (b + 1) * n]
        out.append(
            BlockChoice(
                op=OPS[t[0]],
                kernel=KERNELS[t[1]],
                se_ratio=SE_RATIOS[t[2]],
                skip=SKIPS[t[3]],
                filter_mult=FILTER_MULTS[t[4]],
                layer_delta=LAYER_DELTAS[t[5]],
                base_channels=channels,
                base_layers=layers,
                stride=stride,
            )
        )
    return tuple(out)


def plan(
    tokens: Sequence[int], in_channels: int = 3, num_classes: int = 1000, width_mult: float = 1.0
) -> NetworkPlan:
    """The layer plan of the network the tokens denote, at a global width multiplier."""
    _check_config(in_channels, num_classes, width_mult)
    tokens = _SPACE.validate(tokens)
    stem = make_divisible(STEM_CHANNELS * width_mult)
    cin = stem
    blocks = []
    for choice in decode(tokens):
        cout = make_divisible(choice.base_channels * choice.filter_mult * width_mult)
        layers = []
        for i in range(choice.layers):
            stride = choice.stride if i == 0 else 1
            if choice.op in _EXPANSION:
                hidden = cin * _EXPANSION[choice.op]
            else:
                hidden = cin if choice.op == "dwconv" else cout
            # Squeeze width from the layer input, as in MnasNet's and EfficientNet's reference code.
            se = max(1, int(cin * choice.se_ratio)) if choice.se_ratio > 0 else 0
            residual = choice.skip == "identity" and stride == 1 and cin == cout
            layers.append(LayerSpec(choice.op, choice.kernel, stride, cin, cout, hidden, se, residual))
            cin = cout
        blocks.append(tuple(layers))
    # MobileNetV2 never narrows the head conv below 1280 channels.
    head = make_divisible(HEAD_CHANNELS * max(1.0, width_mult))
    return NetworkPlan(in_channels, stem, tuple(blocks), head, num_classes)


def conv_out_size(size: int, kernel: int, stride: int) -> int:
    """Output side of a conv with 'same' padding kernel // 2; never below 1, so tiny inputs keep working."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def count_mult_adds(
    tokens: Sequence[int],
    input_shape: Sequence[int] = STANDARD_INPUT_SHAPE,
    num_classes: int = STANDARD_NUM_CLASSES,
    width_mult: float = 1.0,
) -> int:
    """Multiply-adds of one forward pass of one image: every conv and linear layer (MnasNet's convention)."""
    return _count(tokens, input_shape, num_classes, width_mult)[0]


def count_params(
    tokens: Sequence[int],
    input_shape: Sequence[int] = STANDARD_INPUT_SHAPE,
    num_classes: int = STANDARD_NUM_CLASSES,
    width_mult: float = 1.0,
) -> int:
    """Trainable parameters: conv and linear weights and biases, BatchNorm scales and shifts."""
    return _count(tokens, input_shape, num_classes, width_mult)[1]


def _count(
    tokens: Sequence[int], input_shape: Sequence[int], num_classes: int, width_mult: float
) -> tuple[int, int]:
    c, h, w = _check_shape(input_shape)
    p = plan(tokens, c, num_classes, width_mult)
    h, w = conv_out_size(h, 3, 2), conv_out_size(w, 3, 2)
    mult_adds = 9 * c * p.stem_channels * h * w
    params = 9 * c * p.stem_channels + 2 * p.stem_channels
    for block in p.blocks:
        for layer in block:
            ma, pa, h, w = _layer_counts(layer, h, w)
            mult_adds += ma
            params += pa
    last = p.blocks[-1][-1].out_channels
    mult_adds += last * p.head_channels * h * w + p.head_channels * num_classes
    params += last * p.head_channels + 2 * p.head_channels + p.head_channels * num_classes + num_classes
    return mult_adds, params


def _layer_counts(layer: LayerSpec, h: int, w: int) -> tuple[int, int, int, int]:
    """Mult-Adds and params of one layer at input side h x w, and the output side."""
    k2, cin, cout, hid = layer.kernel**2, layer.in_channels, layer.out_channels, layer.hidden_channels
    ho, wo = conv_out_size(h, layer.kernel, layer.stride), conv_out_size(w, layer.kernel, layer.stride)
    if layer.op == "conv":
        mult_adds = k2 * cin * cout * ho * wo
        params = k2 * cin * cout + 2 * cout
    else:
        mult_adds = params = 0
        if layer.op in _EXPANSION:  # 1x1 expansion at the input resolution
            mult_adds += cin * hid * h * w
            params += cin * hid + 2 * hid
        mult_adds += k2 * hid * ho * wo + hid * cout * ho * wo  # depthwise, then linear 1x1 projection
        params += k2 * hid + 2 * hid + hid * cout + 2 * cout
    if layer.se_channels:  # two 1x1 convs with bias on the pooled 1x1 map
        mult_adds += 2 * hid * layer.se_channels
        params += 2 * hid * layer.se_channels + layer.se_channels + hid
    return mult_adds, params, ho, wo


def _check_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (channels, height, width), all >= 1; got {tuple(input_shape)}")
    return shape  # type: ignore[return-value]


def _check_config(in_channels: int, num_classes: int, width_mult: float) -> None:
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not width_mult > 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")


class MnasSpace(SearchSpace):
    """MnasNet's space: 7 blocks x (op, kernel, SE, skip, filters, layers), 42 tokens.

    Dedup: a block whose base layer count is 1 (blocks 1 and 7) gets one layer from both offsets -1 and 0, so
    `canonical` maps -1 to 0 there; `key`, `size` and the embeddings all use the canonical tokens. Other
    coincidences depend on the width multiplier the network is trained at (e.g. two filter multipliers that
    round to the same multiple of 8, or a skip that no layer of a one-layer block can use) and are not merged:
    the key is a property of the tokens, not of one training config.
    """

    id = "mnas"
    token_names = tuple(f"b{b + 1}.{f}" for b in range(len(BASE_BLOCKS)) for f in _FIELDS)
    vocab = tuple(len(c) for _ in BASE_BLOCKS for c in _CHOICES)
    blocks = tuple(tuple(range(b * len(_FIELDS), (b + 1) * len(_FIELDS))) for b in range(len(BASE_BLOCKS)))

    def canonical(self, tokens: Sequence[int]) -> tuple[int, ...]:
        """The validated tokens with the layer offset rewritten to the one that states the layer count."""
        out = list(self.validate(tokens))
        layers_at = _FIELDS.index("layers")
        for b, (_, base_layers, _) in enumerate(BASE_BLOCKS):
            i = self.blocks[b][layers_at]
            count = max(1, base_layers + LAYER_DELTAS[out[i]])
            out[i] = LAYER_DELTAS.index(count - base_layers)
        return tuple(out)

    def key(self, tokens: Sequence[int]) -> str:
        """The canonical tokens, one group of digits per block: "100111-300111-..."."""
        t = self.canonical(tokens)
        return "-".join("".join(str(t[i]) for i in block) for block in self.blocks)

    def size(self) -> int:
        total = 1
        for _, base_layers, _ in BASE_BLOCKS:
            layer_counts = len({max(1, base_layers + d) for d in LAYER_DELTAS})
            total *= len(OPS) * len(KERNELS) * len(SE_RATIOS) * len(SKIPS) * len(FILTER_MULTS) * layer_counts
        return total

    def describe(self, tokens: Sequence[int]) -> dict[str, Any]:
        """Per-block choices, and Mult-Adds and params at 3x224x224, 1000 classes, width 1.0."""
        tokens = self.validate(tokens)
        p = plan(tokens)
        blocks = [
            {
                "block": b + 1,
                "op": c.op,
                "kernel": c.kernel,
                "se_ratio": c.se_ratio,
                "skip": c.skip,
                "filter_mult": c.filter_mult,
                "channels": p.blocks[b][-1].out_channels,
                "layers": c.layers,
                "stride": c.stride,
            }
            for b, c in enumerate(decode(tokens))
        ]
        mult_adds, params = _count(tokens, STANDARD_INPUT_SHAPE, STANDARD_NUM_CLASSES, 1.0)
        return {
            "key": self.key(tokens),
            "blocks": blocks,
            "mult_adds": mult_adds,
            "params": params,
            "config": {
                "input_shape": list(STANDARD_INPUT_SHAPE),
                "num_classes": STANDARD_NUM_CLASSES,
                "width_mult": 1.0,
            },
        }

    def embedding(self, tokens: Sequence[int]) -> np.ndarray:
        """One-hot embedding of the canonical tokens, so one network has one embedding."""
        return super().embedding(self.canonical(tokens))

    def block_embedding(self, tokens: Sequence[int], block: int) -> np.ndarray:
        """One-hot embedding of one block's canonical tokens (16 values), the pool's block key (paper 4.3)."""
        return super().block_embedding(self.canonical(tokens), block)

    def random_tokens(self, rng: np.random.Generator) -> tuple[int, ...]:
        """A uniformly random token list (every token list is valid in this space)."""
        return tuple(int(rng.integers(n)) for n in self.vocab)


# Stateless; plan() validates through it.
_SPACE = MnasSpace()
