"""Latency of a model at batch 1 on the trainer's device: measured, or summed from a per-layer table.

- measured: the whole model, `warmup` untimed runs, then the median of `repeats` timed runs (MnasNet 3.1
  measures real latency on the target device; the median resists the noise of a shared host);
- table: each distinct layer (op, shapes, stride, input side) is timed once on this device and cached in a
  JSON table, and a model's latency is the sum over its layers, as in ProxylessNAS and FBNet's latency
  lookup tables; much cheaper once the table is warm, at the cost of ignoring effects between layers.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

MODES = ("measured", "table", "none")


def _timer(device: torch.device) -> Callable[[], float]:
    if device.type == "cuda":

        def now() -> float:
            torch.cuda.synchronize(device)  # kernels run asynchronously: wait before reading the clock
            return time.perf_counter()

        return now
    return time.perf_counter


@torch.inference_mode()
def measure(
    module: nn.Module, x: torch.Tensor, warmup: int = 5, repeats: int = 20, bf16: bool = False
) -> float:
    """Median milliseconds of one forward pass of `module` on `x` (eval mode), after `warmup` runs."""
    module.eval()
    now = _timer(x.device)
    times = []
    ctx = (
        torch.autocast(x.device.type, dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    )
    with ctx:
        for i in range(warmup + repeats):
            start = now()
            module(x)
            if i >= warmup:
                times.append((now() - start) * 1000.0)
    return statistics.median(times)


def model_latency(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    device: torch.device,
    warmup: int,
    repeats: int,
    bf16: bool,
) -> float:
    """Measured latency of the whole model at batch 1, channels_last."""
    x = torch.randn(1, *input_shape, device=device).contiguous(memory_format=torch.channels_last)
    return measure(model, x, warmup, repeats, bf16)


class LatencyTable:
    """Per-layer latencies of one device, cached in a JSON file shared by the trainers of a host."""

    def __init__(self, path: Path | None, warmup: int = 5, repeats: int = 20) -> None:
        self.path = path
        self.warmup = warmup
        self.repeats = repeats
        self.entries: dict[str, float] = self._read()
        self.measured = 0

    def _read(self) -> dict[str, float]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # a torn or foreign file: re-measure rather than fail the job
        return {str(k): float(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        merged = {**self._read(), **self.entries}  # other trainers may have added layers meanwhile
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".latency-")
        with os.fdopen(fd, "w") as f:
            json.dump(merged, f, sort_keys=True)
        os.replace(tmp, self.path)  # atomic: readers see the old or the new table, never half of one

    @torch.inference_mode()
    def model_latency(self, model: nn.Module, input_shape: tuple[int, int, int], bf16: bool) -> float:
        """Sum of the table's entries over the model's parts (stem, every layer, head, classifier)."""
        device = next(model.parameters()).device
        x = torch.randn(1, *input_shape, device=device).contiguous(memory_format=torch.channels_last)
        parts: list[nn.Module] = [
            model.stem,
            *(layer for block in model.blocks for layer in block),
            model.head,
        ]
        total, added = 0.0, False
        model.eval()
        for part in parts:
            key = f"{device.type}|{bf16}|{_signature(part)}|{tuple(x.shape)}"
            if key not in self.entries:
                self.entries[key] = measure(part, x, self.warmup, self.repeats, bf16)
                self.measured += 1
                added = True
            total += self.entries[key]
            x = part(x)
        classifier = nn.Sequential(_GlobalPool(), model.classifier)
        key = f"{device.type}|{bf16}|{_signature(model.classifier)}|{tuple(x.shape)}"
        if key not in self.entries:
            self.entries[key] = measure(classifier, x, self.warmup, self.repeats, bf16)
            added = True
        total += self.entries[key]
        if added:
            self._save()
        return total


class _GlobalPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


def _signature(module: nn.Module) -> str:
    """The layer's structure and weight shapes: equal for layers that time the same."""
    shapes = ",".join(f"{k}:{tuple(v.shape)}" for k, v in module.state_dict().items() if v.dim() > 0)
    convs = ",".join(f"{m.stride[0]}/{m.groups}" for m in module.modules() if isinstance(m, nn.Conv2d))
    return f"{module.__class__.__name__}:{getattr(module, 'residual', '')}:{convs}:{shapes}"
