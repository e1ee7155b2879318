"""GPU check of the trainer: its training loop's throughput against bare PyTorch loops, and GPU utilisation.

Run on a host with CUDA, with fnas installed (`pip install -e .`), or from a checkout with PYTHONPATH=.
(it needs only torch, numpy and scikit-learn's bundled digits):

    python scripts/gpu_check.py --out gpu_check.json

For each setup, the same `mnas` model (MobileNetV2's tokens) trains on data resident on the device:

- trainer: `services.trainer.train_loop.train`, the loop every train job runs (AdamW, one-cycle schedule,
  bf16 autocast on CUDA, channels_last, one host sync at the end);
- bare fp32: the loop a user would write first (AdamW, float32, default memory format);
- bare bf16: the bare loop with the trainer's bf16 autocast and channels_last, so the difference to
  "trainer" is the cost of the trainer's own bookkeeping (schedule, loss record, shuffling).

Then one real train job (digits) runs through the trainer's child process on the device, twice (cold, then
warm), and its figures (accuracy, latency, phase seconds) are reported.

Images per second come from the wall clock between two device synchronisations; GPU utilisation is the mean of
`nvidia-smi` samples (every 100 ms) taken while the timed steps run. On a CPU host the script runs too (for
a smoke test: --device cpu --steps 3), without the utilisation figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fnas import datasets
from fnas.mnasnet import build_model
from fnas.spaces.mnas import MOBILENET_V2_TOKENS
from services.trainer import train_loop

#: (name, dataset, image side, width multiplier, batch size): the default proxy task, and a bigger one.
SETUPS = (("proxy", "digits", 16, 0.5, 128), ("large", "synthetic", 32, 1.0, 512))


class UtilSampler:
    """Samples GPU utilisation with nvidia-smi in a thread while it is active."""

    def __init__(self, index: int, period_s: float = 0.1) -> None:
        self.index = index
        self.period_s = period_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.available = shutil.which("nvidia-smi") is not None

    def __enter__(self) -> UtilSampler:
        if self.available:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        query = [
            "nvidia-smi",
            f"--id={self.index}",
            "--query-gpu=utilization.gpu",
            "--format=csv,noheader,nounits",
        ]
        while not self._stop.is_set():
            try:
                out = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout.strip()
                self.samples.append(float(out.splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                pass
            self._stop.wait(self.period_s)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.samples) if self.samples else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn) -> tuple[float, float | None]:
    """Seconds of fn() between two synchronisations, and the mean GPU utilisation meanwhile."""
    sync(device)
    with UtilSampler(device.index or 0) if device.type == "cuda" else _NoSampler() as sampler:
        start = time.perf_counter()
        fn()
        sync(device)
        seconds = time.perf_counter() - start
    return seconds, sampler.mean


class _NoSampler:
    mean = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def bare_loop(model, data, steps: int, batch: int, bf16: bool) -> None:
    """The simplest training loop: random batches, AdamW, optional bf16 autocast."""
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    n = len(data.y_train)
    device = data.x_train.device
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, n, (batch,), device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def check(setup: tuple, device: torch.device, steps: int, warmup: int) -> dict:
    name, dataset, side, width, batch = setup
    raw = datasets.load(dataset, seed=0)
    data = train_loop.to_device(raw, device, side)
    bf16 = train_loop.use_bf16(device)
    recipe = train_loop.Recipe(batch_size=batch)
    results = {
        "setup": name,
        "dataset": dataset,
        "side": side,
        "width_mult": width,
        "batch": batch,
        "bf16": bf16,
    }

    def fresh(channels_last: bool):
        torch.manual_seed(0)
        model = build_model(MOBILENET_V2_TOKENS, data.num_classes, data.input_shape, width).to(device)
        return model.to(memory_format=torch.channels_last) if channels_last else model

    model = fresh(True)
    train_loop.train(model, data, warmup, recipe, seed=0, bf16=bf16)  # kernels chosen, allocator warm
    seconds, util = timed(device, lambda: train_loop.train(model, data, steps, recipe, seed=1, bf16=bf16))
    results["trainer"] = {"images_per_s": steps * batch / seconds, "gpu_util_pct": util, "seconds": seconds}

    # The bare fp32 loop feeds the default (NCHW-contiguous) layout.
    plain = train_loop.DeviceData(
        data.x_train.contiguous(), data.y_train, data.x_val.contiguous(), data.y_val, data.num_classes
    )
    for label, model_cl, use_bf16, feed in (
        ("bare_fp32", False, False, plain),
        ("bare_bf16", True, bf16, data),
    ):
        model = fresh(model_cl)
        bare_loop(model, feed, warmup, batch, use_bf16)
        seconds, util = timed(device, lambda m=model, f=feed, b=use_bf16: bare_loop(m, f, steps, batch, b))
        results[label] = {"images_per_s": steps * batch / seconds, "gpu_util_pct": util, "seconds": seconds}
    results["trainer_vs_bare_fp32"] = (
        results["trainer"]["images_per_s"] / results["bare_fp32"]["images_per_s"]
    )
    results["trainer_vs_bare_bf16"] = (
        results["trainer"]["images_per_s"] / results["bare_bf16"]["images_per_s"]
    )
    return results


def job_check(device: torch.device, epochs: int) -> dict:
    """One real train job (digits, MobileNetV2 tokens) through the trainer's child process on `device`."""
    import asyncio

    from fnas.v1 import common_pb2, queue_pb2
    from services.trainer.child import ChildProcess

    job = queue_pb2.TrainJob(
        job_id="gpu-check/0",
        architecture=common_pb2.Architecture(space="mnas", tokens=MOBILENET_V2_TOKENS),
        task=common_pb2.Task(dataset="digits", epochs=epochs),
        seed=1,
    )

    async def run() -> dict:
        child = ChildProcess({"device": str(device), "latency": "measured"})
        try:
            start = time.perf_counter()
            header, _ = await child.run(job, None)
            header["wall_s_with_child_start"] = time.perf_counter() - start
            start = time.perf_counter()
            again, _ = await child.run(job, None)  # the child is warm now: data resident, kernels chosen
            header["wall_s_warm"] = time.perf_counter() - start
            header["same_accuracy_twice"] = again.get("accuracy") == header.get("accuracy")
            header["child"] = child.info
        finally:
            await child.close()
        header.pop("losses", None)
        return header

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    p.add_argument("--steps", type=int, default=300, help="timed training steps per loop")
    p.add_argument("--warmup", type=int, default=30, help="untimed steps first")
    p.add_argument("--setups", default="proxy,large", help="comma-separated: proxy, large")
    p.add_argument("--out", type=Path, help="write the figures here as JSON")
    p.add_argument("--job-epochs", type=int, default=5, help="also run one train job in the child (0: skip)")
    args = p.parse_args(argv)
    device = train_loop.pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    chosen = [s for s in SETUPS if s[0] in args.setups.split(",")]
    info = {"device": str(device), "torch": torch.__version__, "steps": args.steps, "warmup": args.warmup}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    results = [check(s, device, args.steps, args.warmup) for s in chosen]
    job = job_check(device, args.job_epochs) if args.job_epochs else None
    if args.out:
        args.out.write_text(json.dumps({**info, "results": results, "job": job}, indent=1) + "\n")
    print(f"{info}")
    if job is not None:
        print(f"train job through the child: {job}")
    print(f"{'setup':<6} {'loop':<10} {'images/s':>10} {'gpu util %':>10}")
    for r in results:
        for loop in ("trainer", "bare_fp32", "bare_bf16"):
            util = r[loop]["gpu_util_pct"]
            util_text = "-" if util is None else f"{util:.0f}"
            print(f"{r['setup']:<6} {loop:<10} {r[loop]['images_per_s']:>10.0f} {util_text:>10}")
        print(f"{r['setup']:<6} trainer / bare fp32 = {r['trainer_vs_bare_fp32']:.2f}, "
              f"trainer / bare bf16 = {r['trainer_vs_bare_bf16']:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
