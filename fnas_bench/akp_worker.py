"""A training worker of `fnas bench akp`: one process, one torch thread, jobs as JSON lines.

The benchmark starts one per core (`python -m fnas_bench.akp_worker --pool ADDRESS`), writes one job per line
to its stdin and reads one result per line from its stdout; nothing is pickled. A job trains one `mnas`
architecture on one proxy task with the trainer's recipe (services/trainer/train_loop.py), optionally
initialised from the pool first (QueryBlocks) and optionally giving its blocks to the pool after (PutBlocks),
both over real gRPC.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from functools import cache

import numpy as np

from fnas import datasets


@cache
def task_data(task: str, split_seed: int) -> datasets.Dataset:
    """A bench task: a dataset name, optionally "@lo-hi" to keep classes lo..hi (relabelled from 0)."""
    name, _, classes = task.partition("@")
    data = datasets.load(name, seed=split_seed)
    if not classes:
        return data
    lo, _, hi = classes.partition("-")
    keep = np.arange(int(lo), int(hi or lo) + 1)
    if len(keep) < 2 or keep[-1] >= data.num_classes:
        raise ValueError(f"task {task!r}: class range must hold 2+ of 0..{data.num_classes - 1}")
    tr, va = np.isin(data.y_train, keep), np.isin(data.y_val, keep)
    return datasets.Dataset(
        task,
        data.x_train[tr],
        data.y_train[tr] - keep[0],
        data.x_val[va],
        data.y_val[va] - keep[0],
        len(keep),
    )


@cache
def _device_data(task: str, split_seed: int, image_side: int):
    import torch

    from services.trainer import train_loop

    return train_loop.to_device(task_data(task, split_seed), torch.device("cpu"), image_side)


def steps(task: str, split_seed: int, epochs: int, batch_size: int) -> int:
    """The fixed optimizer-step count of `epochs` proxy epochs on a task (the pool's iterations)."""
    return epochs * datasets.steps_per_epoch(len(task_data(task, split_seed).y_train), batch_size)


async def run_job(job: dict, pool) -> dict:
    """Trains one architecture as the job says; returns its validation accuracy and pool figures."""
    import torch

    from fnas.mnasnet import build_model
    from fnas.v1 import common_pb2
    from services.pool.client import weights
    from services.trainer import train_loop

    t0, c0 = time.perf_counter(), time.process_time()
    data = _device_data(job["task"], job["split_seed"], job["image_side"])
    recipe = train_loop.Recipe(batch_size=job["batch_size"])
    iterations = train_loop.iterations_for(job["epochs"], len(data.y_train), recipe)
    torch.manual_seed(job["seed"])  # the fresh init: equal for the scratch and pool runs of one architecture
    model = build_model(job["tokens"], data.num_classes, data.input_shape, job["width"])
    model = model.to(memory_format=torch.channels_last)
    arch = common_pb2.Architecture(space="mnas", tokens=job["tokens"])
    out = {
        "id": job["id"],
        "iterations": iterations,
        "queried": 0,
        "matched": 0,
        "adapted": 0,
        "similarity": [],
    }
    if job.get("pool_task"):
        reply = await pool.query(
            arch,
            weights.block_queries(model.blocks),
            job["pool_task"],
            job["pool_iterations"],
            seed=job["seed"],
        )
        weights.load_matches(model.blocks, reply.matches)
        out.update(
            queried=reply.queried,
            matched=reply.matched,
            adapted=sum(m.adapted for m in reply.matches),
            similarity=[m.similarity for m in reply.matches],
        )
    train_loop.train(model, data, iterations, recipe, seed=job["seed"])
    train_loop.recalibrate_bn(model, data.x_train, recipe.bn_recalibration_images)
    out["accuracy"] = train_loop.accuracy(model, data.x_val, data.y_val)
    if job.get("put_job_id"):
        reply = await pool.put(
            arch, job["task"], job["put_job_id"], weights.put_blocks(model.blocks, iterations)
        )
        out["stored"] = reply.stored
    # CPU seconds too: on a shared machine wall time measures the neighbours as much as the run.
    out["seconds"], out["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
    return out


async def serve(pool_address: str) -> None:
    """Answers jobs from stdin until it closes; a failed job answers {"id", "error"}."""
    from services.pool.client import PoolClient

    async with PoolClient(pool_address) as pool:
        while line := await asyncio.to_thread(sys.stdin.readline):
            job = json.loads(line)
            try:
                result = await run_job(job, pool)
            except Exception as e:  # reported to the benchmark, which stops with this message
                result = {"id": job.get("id"), "error": f"{type(e).__name__}: {e}"}
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of a worker process."""
    p = argparse.ArgumentParser(prog="python -m fnas_bench.akp_worker", description=__doc__)
    p.add_argument("--pool", required=True, help="host:port of the PoolService")
    p.add_argument("--threads", type=int, default=1, help="torch threads (one per core is fastest)")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    asyncio.run(serve(args.pool))
    return 0


if __name__ == "__main__":
    sys.exit(main())
