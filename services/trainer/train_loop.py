"""The proxy-task training loop: fixed iterations, AdamW with a one-cycle schedule, BN recalibration.

Pure torch (no gRPC, no NATS): the trainer's child process, `fnas export` and scripts/gpu_check.py all run it.
Fairness (paper 4.3): every sample of a task trains for the same number of optimizer steps on the same split
with the same recipe; only the architecture, its initialisation (scratch or pool) and the job's seed differ.

Device handling: channels_last everywhere (the mkldnn convolutions it selects run 2-3x faster on these CPUs,
TECH-NOTES); on CUDA the whole dataset stays resident on the GPU (no host-to-device copy per step) and the
forward and backward passes run under bf16 autocast while the weights stay float32.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fnas.datasets import Dataset, steps_per_epoch


@dataclass(frozen=True)
class Recipe:
    """How every sample is trained; equal for every sample of a search (paper 4.3)."""

    batch_size: int = 128
    lr: float = 0.01
    weight_decay: float = 1e-4
    #: Share of the steps spent warming the learning rate up (one-cycle schedule).
    warmup: float = 0.2
    #: Training images used to re-estimate BatchNorm statistics before evaluation; 0 skips it.
    bn_recalibration_images: int = 1024

    def __post_init__(self) -> None:
        if self.batch_size < 1 or not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.warmup < 1:
            raise ValueError(f"bad training recipe {self}")


@dataclass
class DeviceData:
    """A dataset's tensors on the training device, resized to the trainer's input side, channels_last."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) as the model sees it."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)


@dataclass
class TrainStats:
    """What one training run did."""

    iterations: int
    losses: list[float] = field(default_factory=list)


def pick_device(spec: str = "auto") -> torch.device:
    """The device for `spec`: "auto" is the first CUDA device when there is one, else the CPU."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r}: CUDA is not available on this host")
    return device


def use_bf16(device: torch.device, amp: str = "auto") -> bool:
    """bf16 autocast: "auto" turns it on for CUDA devices that support bf16; "bf16" forces it; "off" never."""
    if amp == "off":
        return False
    if amp == "bf16":
        return True
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def to_device(data: Dataset, device: torch.device, image_side: int = 0) -> DeviceData:
    """The dataset as tensors on `device`, bilinearly resized to image_side x image_side (0: as stored)."""

    def prep(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x).to(device)
        if image_side and tuple(t.shape[2:]) != (image_side, image_side):
            t = F.interpolate(t, size=(image_side, image_side), mode="bilinear", align_corners=False)
        return t.contiguous(memory_format=torch.channels_last)

    return DeviceData(
        prep(data.x_train),
        torch.from_numpy(data.y_train).to(device),
        prep(data.x_val),
        torch.from_numpy(data.y_val).to(device),
        data.num_classes,
    )


def iterations_for(epochs: int, n_train: int, recipe: Recipe) -> int:
    """The fixed step count of `epochs` proxy epochs (equal for every sample of the task)."""
    if epochs < 1:
        raise ValueError(f"task.epochs must be >= 1, got {epochs}")
    return epochs * steps_per_epoch(n_train, recipe.batch_size)


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def train(
    model: nn.Module,
    data: DeviceData,
    iterations: int,
    recipe: Recipe,
    seed: int,
    bf16: bool = False,
) -> TrainStats:
    """Trains `model` (already on data's device, channels_last) for exactly `iterations` steps."""
    device = data.x_train.device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, foreach=True)
    warm = max(1, int(recipe.warmup * iterations))

    def lr_at(step: int) -> float:  # linear warm-up, then cosine to zero: every run ends annealed
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, iterations - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    n = len(data.y_train)
    bs = min(recipe.batch_size, n)
    stats = TrainStats(iterations)
    losses: list[torch.Tensor] = []
    model.train()
    step = 0
    while step < iterations:
        order = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n - bs + 1, bs):
            if step >= iterations:
                break
            idx = order[start : start + bs]
            with _autocast(device, bf16):
                loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.detach())
            step += 1
    # One host sync at the end, not one per step (a .item() per step stalls the GPU pipeline).
    stats.losses = torch.stack(losses).float().cpu().tolist() if losses else []
    return stats


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module, x: torch.Tensor, images: int, bf16: bool = False, batch: int = 256
) -> None:
    """Re-estimates BatchNorm running statistics as exact averages over `images` training images.

    After a short proxy run the running statistics lag behind the fast-moving weights: measured on digits,
    evaluation with them gave 7.5% validation accuracy where batch statistics gave 40%. Recomputing them
    with the final weights is the usual fix in weight-sharing NAS (Guo et al. 2020, SPOS, sec. 3.3).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or images <= 0:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the exact mean over the batches below
    model.train()
    with _autocast(x.device, bf16):
        for start in range(0, min(images, len(x)), batch):
            model(x[start : min(start + batch, images)])
    for m, momentum in zip(bns, saved, strict=True):
        m.momentum = momentum


@torch.no_grad()
def accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool = False, batch: int = 512
) -> float:
    """Top-1 accuracy of `model` (eval mode) on (x, y)."""
    model.eval()
    correct = 0
    with _autocast(x.device, bf16):
        for start in range(0, len(x), batch):
            correct += int((model(x[start : start + batch]).argmax(1) == y[start : start + batch]).sum())
    return correct / max(1, len(y))
