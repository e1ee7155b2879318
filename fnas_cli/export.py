"""`fnas export`: the chosen architecture of a search as a PyTorch module and its trained weights.

    fnas export --search ID --rank 1 --out DIR            # the embedded default's data dir (fnas-data)
    fnas export --target HOST:PORT --search ID --out DIR  # a running agent

The rank is the final selection's (paper 6.2), or the search's own when no final selection ran. The weights
come from a retrain done here, not from the trainers: the same recipe, epochs, seed and split as the final
retrain (from scratch), so on a CPU the result is bit-identical to what the final selection measured, and
trainers never have to keep every model they train. Trainer settings (width multiplier, input side, batch
size, learning rate, data seed) are read as the trainers read them (FNAS_TRAINER_* variables, then the
defaults); flags override them. DIR gets architecture.json (with the input recipe, `preprocess`), model.py
(build(), load() and preprocess(); torch alone, no fnas install) and weights.safetensors (no pickle).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path

from fnas.v1 import common_pb2, search_pb2
from fnas_cli import connection

_MODEL_PY = '''"""{title}

Architecture {key} of the `mnas` space ({blocks} blocks).
Needs torch and safetensors alone: build() makes the network, load() adds the trained weights
(weights.safetensors, next to this file), and preprocess() turns raw images into the network's input
the way training saw them.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

TOKENS = {tokens}
NUM_CLASSES = {num_classes}
INPUT_SHAPE = {input_shape}
WIDTH_MULT = {width_mult}
#: Raw images (as the dataset stores them) -> the input: x * SCALE, (x - MEAN[c]) / STD[c] per channel c,
#: then a bilinear resize (align_corners=False) to SIDE x SIDE.
PREPROCESS = json.loads({preprocess!r})
WEIGHTS = Path(__file__).with_name("weights.safetensors")
#: The network's layer plan: stem, the searched blocks' layers, head (fnas.spaces.mnas.plan).
PLAN = json.loads({plan!r}, object_hook=lambda d: SimpleNamespace(**d))


{network}

def build() -> MnasNet:
    """The network, freshly initialised (train it from scratch, or call load())."""
    return MnasNet(PLAN)


def load(path=WEIGHTS) -> MnasNet:
    """The network with the exported weights, ready to fine-tune or evaluate."""
    model = build()
    model.load_state_dict(safetensors.torch.load_file(str(path)), strict=True)
    return model


def preprocess(images) -> torch.Tensor:
    """Raw images, (N, H, W) or (N, C, H, W) numbers as the dataset stores them, as the network's input."""
    x = torch.as_tensor(images, dtype=torch.float32)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    p = PREPROCESS
    x = x * p["scale"]
    mean = torch.tensor(p["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(p["std"], dtype=torch.float32).view(1, -1, 1, 1)
    x = (x - mean) / std
    side = p["resize"]["side"]
    if side and tuple(x.shape[2:]) != (side, side):
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    return x


if __name__ == "__main__":
    print(load())
'''


def network_source() -> str:
    """The source of the network's modules (fnas.mnasnet), for a model.py that needs torch alone."""
    import inspect

    from fnas import mnasnet

    parts = [mnasnet._conv_bn, mnasnet.SqueezeExcite, mnasnet.SearchedLayer, mnasnet.MnasNet]
    return "\n\n".join(inspect.getsource(p) for p in parts)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a searched architecture as a PyTorch module and its weights")
    p.add_argument("--search", required=True, help="search id")
    p.add_argument("--rank", type=int, default=1, help="rank in the final selection (default 1: the best)")
    p.add_argument("--out", type=Path, required=True, help="directory to write")
    connection.add_arguments(p, target_required=False)
    p._option_string_actions["--target"].help = "host:port of a running agent; default: read --data-dir"
    p.add_argument("--data-dir", type=Path, default=Path("fnas-data"), help="the embedded default's state")
    for flag, kind in (("--width-mult", float), ("--image-side", int), ("--batch-size", int), ("--lr", float),
                       ("--data-seed", int), ("--val-fraction", float)):  # fmt: skip
        p.add_argument(flag, type=kind, help="trainer setting (default: as the trainers read it)")
    p.add_argument("--device", default="cpu", help="device of the retrain (default cpu: reproducible)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.rank < 1:
        raise ValueError(f"--rank must be >= 1, got {args.rank}")
    status, top = asyncio.run(_fetch(args))
    candidate = choose(status, top, args.rank)
    export(args, status, candidate)
    return 0


async def _fetch(args: argparse.Namespace) -> tuple[search_pb2.SearchStatus, list[common_pb2.Sample]]:
    if args.target:
        async with connection.client(args) as client:
            status = await client.get(args.search)
            return status, ([] if status.final_ranking else await client.top(args.search, args.rank))
    from services.agent.servicer import top
    from services.agent.store import AgentStore

    path = args.data_dir / "agent"
    if not path.is_dir():
        raise ValueError(
            f"no agent data in {args.data_dir} (pass --data-dir, or --target for a running agent)"
        )
    store = AgentStore(path)
    try:
        status = store.status(args.search)
        if status is None:
            raise ValueError(f"no search {args.search!r} in {args.data_dir}")
        return status, top(store, status, args.rank)
    finally:
        store.close()


def choose(
    status: search_pb2.SearchStatus, top: list[common_pb2.Sample], rank: int
) -> search_pb2.FinalCandidate:
    """The rank-th architecture: from the final selection, else the search's own ranking."""
    if status.spec.space != "mnas":
        raise ValueError(
            f"export needs a trained space (mnas); search {status.search_id} is {status.spec.space}"
        )
    if status.final_ranking:
        if rank > len(status.final_ranking):
            raise ValueError(
                f"--rank {rank}: the final selection has {len(status.final_ranking)} architectures"
            )
        return status.final_ranking[rank - 1]
    if rank > len(top):
        raise ValueError(f"--rank {rank}: search {status.search_id} has {len(top)} trained architectures")
    from services.agent.spec import sample_seed

    sample = top[rank - 1]
    # No final selection: reproduce the search's own training of it.
    return search_pb2.FinalCandidate(
        rank=rank, sample=sample, epochs=status.spec.task.epochs, seed=sample_seed(status.spec, sample.index)
    )


def export(args: argparse.Namespace, status: search_pb2.SearchStatus, c: search_pb2.FinalCandidate) -> None:
    """Retrains the candidate as the final selection did and writes DIR."""
    import safetensors.torch

    from fnas import datasets, spaces
    from fnas.spaces.mnas import plan
    from fnas.v1 import queue_pb2
    from services.trainer.config import TrainerConfig
    from services.trainer.job import JobRunner, Settings
    from services.trainer.mnas_evaluator import settings_of

    names = ("width_mult", "image_side", "batch_size", "lr", "data_seed", "val_fraction")
    cfg = TrainerConfig.from_env(device=args.device, **{n: getattr(args, n) for n in names})
    runner = JobRunner(Settings(**settings_of(cfg)))
    job = queue_pb2.TrainJob(
        job_id=f"{status.search_id}/export/{c.rank}",
        architecture=c.sample.architecture,
        task=common_pb2.Task(dataset=status.spec.task.dataset, epochs=c.epochs),
        reward=status.spec.reward,
        seed=c.seed,
    )
    print(f"retraining rank {c.rank} for {c.epochs} epochs on {job.task.dataset} ...", file=sys.stderr)
    out = runner.run(job)
    args.out.mkdir(parents=True, exist_ok=True)
    # Plain contiguous CPU tensors: safetensors stores no strides (the trainer trains channels_last).
    state = {k: v.detach().to("cpu").contiguous() for k, v in out.model.state_dict().items()}
    # Written like the other two files, so all three get the same permissions.
    (args.out / "weights.safetensors").write_bytes(safetensors.torch.save(state))
    space = spaces.get("mnas")
    tokens = list(c.sample.architecture.tokens)
    shape = runner.data(job.task.dataset).input_shape
    raw = datasets.load(job.task.dataset, seed=cfg.data_seed, val_fraction=cfg.val_fraction,
                        image_side=cfg.image_side)  # fmt: skip
    preprocess = {
        "scale": raw.input_scale,
        "mean": [raw.mean] * shape[0],
        "std": [raw.std] * shape[0],
        "resize": {"side": cfg.image_side, "method": "bilinear", "align_corners": False},
    }
    final = c.final_reward if c.HasField("final_reward") else None
    meta = {
        "search_id": status.search_id,
        "rank": c.rank,
        "space": "mnas",
        "tokens": tokens,
        "key": space.key(tokens),
        "dataset": job.task.dataset,
        "num_classes": out.model.classifier[-1].out_features,
        "input_shape": list(shape),
        "width_mult": cfg.width_mult,
        "epochs": c.epochs,
        "seed": c.seed,
        "accuracy": out.accuracy,
        "final_reward": final.value if final else None,
        "final_accuracy": final.accuracy if final else None,
        "search_reward": c.sample.reward.value,
        "mult_adds": out.mult_adds,
        "params": out.params,
        "trainer_settings": settings_of(cfg),
        # Raw images -> the network's input, as in training (model.py's preprocess() applies it).
        "preprocess": preprocess,
        # The compute of this export's retrain, by phase (apart from the search's and final selection's).
        "trainer_seconds": out.seconds,
        "blocks": space.describe(tokens)["blocks"],
    }
    (args.out / "architecture.json").write_text(json.dumps(meta, indent=1) + "\n")
    title = f"Rank {c.rank} of FNAS search {status.search_id} ({job.task.dataset}), written by fnas export."
    source = _MODEL_PY.format(
        title=title,
        key=meta["key"],
        blocks=len(space.blocks),
        tokens=tuple(tokens),
        num_classes=meta["num_classes"],
        input_shape=tuple(shape),
        width_mult=cfg.width_mult,
        preprocess=json.dumps(preprocess),
        plan=json.dumps(dataclasses.asdict(plan(tokens, shape[0], meta["num_classes"], cfg.width_mult))),
        network=network_source(),
    )
    (args.out / "model.py").write_text(source)
    measured = meta["final_accuracy"]
    print(
        f"wrote {args.out}/model.py, weights.safetensors, architecture.json: validation accuracy "
        f"{out.accuracy:.4f}"
        + ("" if measured is None else f" (final selection measured {measured:.4f})")
        + f"; the retrain took {sum(out.seconds.values()):.1f} trainer-seconds"
    )
