"""The torch network of an `mnas` token list: stem, seven searched blocks, head, classifier.

Built from `fnas.spaces.mnas.plan`, the same plan the analytic counters walk, so `count_mult_adds` and
`count_params` equal what hooks count on this model. Each searched block is `model.blocks[i]`, a module whose
state_dict holds exactly that block's weights: the knowledge pool stores and loads weights per block (paper
4.3). Convs pad kernel // 2, so a stride-2 conv on a 1x1 map gives 1x1 and tiny inputs (8x8 digits) work.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fnas.spaces.mnas import LayerSpec, NetworkPlan, count_mult_adds, count_params, plan

__all__ = ["MnasNet", "SearchedLayer", "SqueezeExcite", "build_model", "count_mult_adds", "count_params"]


def _conv_bn(
    cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: channel gates from the pooled map through a 1x1 bottleneck."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = torch.sigmoid(self.expand(torch.relu(self.reduce(s))))
        return x * s


class SearchedLayer(nn.Module):
    """One layer of a searched block: conv, separable conv or inverted residual, optional SE and skip."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        parts: list[nn.Module] = []
        se = [SqueezeExcite(spec.hidden_channels, spec.se_channels)] if spec.se_channels else []
        if spec.op == "conv":
            parts += [_conv_bn(spec.in_channels, spec.out_channels, spec.kernel, spec.stride), *se]
        else:
            if spec.op != "dwconv":  # mbconv: 1x1 expansion first
                parts.append(_conv_bn(spec.in_channels, spec.hidden_channels, 1))
            hid = spec.hidden_channels
            parts.append(_conv_bn(hid, hid, spec.kernel, spec.stride, groups=hid))
            parts += se
            # Linear bottleneck: no activation after the projection (MobileNetV2 sec. 3.2).
            parts.append(_conv_bn(hid, spec.out_channels, 1, relu=False))
        self.body = nn.Sequential(*parts)
        self.residual = spec.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MnasNet(nn.Module):
    """Stem conv, `blocks` (the seven searched blocks, an nn.ModuleList), head 1x1 conv, pool, classifier.

    Built from a layer plan (fnas.spaces.mnas.NetworkPlan, or anything with its fields), so that
    `fnas export` can write this class beside a literal plan into a model.py that needs torch alone.
    """

    def __init__(self, p: NetworkPlan, dropout: float = 0.0) -> None:
        super().__init__()
        self.stem = _conv_bn(p.in_channels, p.stem_channels, 3, 2)
        self.blocks = nn.ModuleList(nn.Sequential(*(SearchedLayer(s) for s in block)) for block in p.blocks)
        self.head = _conv_bn(p.blocks[-1][-1].out_channels, p.head_channels, 1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(p.head_channels, p.num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's MobileNetV2 initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        x = self.head(x).mean((2, 3))
        return self.classifier(x)


def build_model(
    tokens: Sequence[int],
    num_classes: int = 1000,
    input_shape: Sequence[int] = (3, 224, 224),
    width_mult: float = 1.0,
    *,
    dropout: float = 0.0,
) -> MnasNet:
    """The network of an mnas token list; InvalidArchitecture for bad tokens, ValueError for bad config.

    `input_shape` is (channels, height, width); the network takes any spatial size, the shape only fixes the
    input channels here (and the counts in `count_mult_adds`).
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (channels, height, width), all >= 1; got {tuple(input_shape)}")
    return MnasNet(plan(tokens, shape[0], num_classes, width_mult), dropout)
