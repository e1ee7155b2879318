"""`fnas bench akp`: does pool initialisation (AKP, paper 4.3) make short proxy training rank architectures
right sooner? The paper's Fig. 3c, measured.

1. A pool is built on a source task: `source_archs` random `mnas` architectures train `source_epochs` epochs
   each and give their blocks to a real PoolService (gRPC, LMDB in the data dir).
2. `archs` other random architectures train on the target task: `true_epochs` epochs from scratch give
   their "true" ranking; then, for each e in `epochs`, an e-epoch run from scratch and an e-epoch run
   initialised from the source task's blocks (QueryBlocks with task = source, the standard iteration count).
   The two runs of one architecture and e share the seed (fresh init, data order): only the blocks differ.
3. Spearman rho of each e's ranking against the true one; the epochs needed for rho >= 0.8 from scratch and
   with the pool, their ratio (the epoch speedup, DESIGN.md), and the pool's hit ratio.

Every run uses the trainer's recipe (one-cycle AdamW, BN recalibration; services/trainer/train_loop.py) with
a fixed step count per task, as in a search. Runs spread over `workers` processes of one torch thread each.
Seeds fixed: the same settings give the same figures.

Tasks: a dataset name (fnas.datasets), optionally "@LO-HI" to keep classes LO..HI. The default source task,
digits@0-4 (5-way: digits 0-4), differs from the target (10-way digits) in its labels, and it trains on the
0-4 images of the target's training split, never on validation images. Only the 7 searched blocks come from
the pool; stem, head and classifier start fresh. With the defaults the pool is built from other
architectures than the ranked ones, so most matches are adapted (kernels, channels, layers).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fnas.spaces.mnas import MnasSpace
from fnas_bench.akp_worker import steps

THRESHOLD = 0.8


@dataclass(frozen=True)
class AkpBenchConfig:
    """Settings of one benchmark run; the defaults fit 2 CPU cores and 15 minutes."""

    archs: int = 30
    epochs: tuple[int, ...] = (1, 2, 4, 8)
    true_epochs: int = 24
    true_seeds: int = 1
    task: str = "digits"
    source_task: str = "digits@0-4"
    source_archs: int = 30
    source_epochs: int = 16
    width: float = 0.25
    image_side: int = 8
    batch_size: int = 128
    seed: int = 0
    workers: int = 2

    def __post_init__(self) -> None:
        if self.archs < 3 or self.source_archs < 1:
            raise ValueError("--archs must be >= 3 and --source-archs >= 1")
        if not self.epochs or min(self.epochs) < 1 or self.true_epochs < max(self.epochs):
            raise ValueError("--epochs must be >= 1 each and --true-epochs at least the largest of them")
        if self.task == self.source_task:
            raise ValueError("--source-task must differ from --task (the pool transfers between tasks)")
        if self.true_seeds < 1:
            raise ValueError("--true-seeds must be >= 1")
        if self.workers < 1 or self.width <= 0 or self.image_side < 1 or self.batch_size < 1:
            raise ValueError("--workers, --width, --image-side and --batch-size must be positive")


def spearman(a, b) -> float:
    """Spearman's rank correlation (scipy; average ranks for ties); 0 when either side is constant."""
    from scipy import stats  # here, not at the top: `fnas --help` builds this command's parser

    a, b = np.asarray(a, float), np.asarray(b, float)
    if np.ptp(a) == 0 or np.ptp(b) == 0:  # scipy answers NaN with a warning: no ranking to compare
        return 0.0
    return float(stats.spearmanr(a, b).statistic)


def epochs_to(rho: dict[int, float], threshold: float = THRESHOLD) -> int | None:
    """The fewest epochs of the grid whose ranking reaches rho >= threshold; None if none does."""
    return next((e for e in sorted(rho) if rho[e] >= threshold), None)


def plan(cfg: AkpBenchConfig) -> tuple[list[tuple[int, ...]], list[dict], list[dict]]:
    """The target architectures, the source jobs and the target jobs (longest first, for load balance)."""
    space = MnasSpace()
    rng = np.random.default_rng(cfg.seed)
    targets = [space.random_tokens(rng) for _ in range(cfg.archs)]
    sources = [space.random_tokens(rng) for _ in range(cfg.source_archs)]
    common = {
        "width": cfg.width,
        "image_side": cfg.image_side,
        "batch_size": cfg.batch_size,
        "split_seed": cfg.seed,
    }
    source_jobs = [
        {
            **common,
            "id": f"source/{i}",
            "tokens": t,
            "task": cfg.source_task,
            "epochs": cfg.source_epochs,
            "seed": cfg.seed * 100_003 + 50_000 + i,
            "put_job_id": f"akp-bench-source/{i}",
        }
        for i, t in enumerate(sources)
    ]
    pool_iterations = steps(cfg.source_task, cfg.seed, cfg.source_epochs, cfg.batch_size)
    target_jobs = []
    for i, t in enumerate(targets):
        seed = cfg.seed * 100_003 + i
        job = {**common, "tokens": t, "task": cfg.task}
        # True runs get their own seeds: their init and data order must not favour the scratch runs.
        for k in range(cfg.true_seeds):
            target_jobs.append(
                {**job, "id": f"true/{k}/{i}", "epochs": cfg.true_epochs, "seed": seed + 20_000 * (k + 1)}
            )
        for e in cfg.epochs:
            target_jobs.append({**job, "id": f"scratch/{e}/{i}", "epochs": e, "seed": seed})
            target_jobs.append(
                {
                    **job,
                    "id": f"pool/{e}/{i}",
                    "epochs": e,
                    "seed": seed,
                    "pool_task": cfg.source_task,
                    "pool_iterations": pool_iterations,
                }
            )
    target_jobs.sort(key=lambda j: -j["epochs"])
    return targets, source_jobs, target_jobs


async def _run_jobs(
    jobs: list[dict], workers: list[asyncio.subprocess.Process], label: str
) -> dict[str, dict]:
    todo = list(jobs)
    results: dict[str, dict] = {}

    async def drive(proc: asyncio.subprocess.Process) -> None:
        while todo:
            job = todo.pop(0)
            proc.stdin.write((json.dumps(job) + "\n").encode())
            await proc.stdin.drain()
            line = await proc.stdout.readline()
            if not line:
                raise RuntimeError(f"akp worker exited (code {await proc.wait()}) during {job['id']}")
            result = json.loads(line)
            if "error" in result:
                raise RuntimeError(f"{job['id']}: {result['error']}")
            results[job["id"]] = result
            print(f"\r{label}: {len(results)}/{len(jobs)} runs", end="", file=sys.stderr, flush=True)

    await asyncio.gather(*(drive(p) for p in workers))
    print(file=sys.stderr)
    return results


async def _bench(cfg: AkpBenchConfig, data_dir: Path) -> dict:
    from fnas import serving
    from services.pool.app import PoolApp
    from services.pool.client import PoolClient
    from services.pool.config import PoolConfig

    pool = PoolApp(PoolConfig(data_dir=data_dir, port=0, sync=False))
    server_cfg = serving.ServerConfig(port=0, grace_s=1.0)
    running = await serving.start([pool.register], server_cfg)
    stop = asyncio.Event()
    served = asyncio.create_task(serving.serve(running, pool.warm_up, server_cfg, stop))
    address = f"127.0.0.1:{running.port}"
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fnas_bench.akp_worker",
            "--pool",
            address,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(cfg.workers)
    ]
    try:
        _, source_jobs, target_jobs = plan(cfg)
        t0 = time.perf_counter()
        source = await _run_jobs(source_jobs, workers, f"pool on {cfg.source_task}")
        t1 = time.perf_counter()
        target = await _run_jobs(target_jobs, workers, f"ranking on {cfg.task}")
        t2 = time.perf_counter()
        async with PoolClient(address) as client:
            stats = await client.stats()
    finally:
        for w in workers:
            w.stdin.close()
            await w.wait()
        stop.set()
        await served
        await pool.close()
    return summarise(cfg, source, target, stats, {"source": t1 - t0, "target": t2 - t1, "total": t2 - t0})


def summarise(cfg: AkpBenchConfig, source: dict, target: dict, stats, seconds: dict) -> dict:
    """The figures of the benchmark from the runs' results."""
    n = cfg.archs
    per_seed = [[target[f"true/{k}/{i}"]["accuracy"] for i in range(n)] for k in range(cfg.true_seeds)]
    true = np.mean(per_seed, axis=0).tolist()  # the true ranking: mean accuracy over the true seeds
    acc = {
        m: {e: [target[f"{m}/{e}/{i}"]["accuracy"] for i in range(n)] for e in cfg.epochs}
        for m in ("scratch", "pool")
    }
    rho = {m: {e: spearman(acc[m][e], true) for e in cfg.epochs} for m in acc}
    reach = {m: epochs_to(rho[m]) for m in rho}
    pool_runs = [r for k, r in target.items() if k.startswith("pool/")]
    queried = sum(r["queried"] for r in pool_runs)
    matched = sum(r["matched"] for r in pool_runs)
    sims = [s for r in pool_runs for s in r["similarity"]]
    return {
        "config": {**asdict(cfg), "epochs": list(cfg.epochs)},
        "rho": {m: {str(e): round(v, 4) for e, v in r.items()} for m, r in rho.items()},
        "epochs_to_rho_0.8": reach,
        "epoch_speedup": reach["scratch"] / reach["pool"] if reach["scratch"] and reach["pool"] else None,
        "hit_ratio": matched / queried if queried else 0.0,
        "blocks_queried": queried,
        "blocks_matched": matched,
        "mean_similarity": float(np.mean(sims)) if sims else 0.0,
        "adapted_fraction": sum(r["adapted"] for r in pool_runs) / matched if matched else 0.0,
        "pool_blocks": stats.blocks,
        "source_accuracy_mean": float(np.mean([r["accuracy"] for r in source.values()])),
        # Agreement of two full trainings with different seeds: the ceiling any short ranking can reach.
        "true_seed_rho": spearman(per_seed[0], per_seed[1]) if cfg.true_seeds > 1 else None,
        "true_accuracy": true,
        "true_accuracy_per_seed": per_seed,
        "accuracy": {m: {str(e): v for e, v in a.items()} for m, a in acc.items()},
        "archs": [MnasSpace().key(t) for t in plan(cfg)[0]],
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "job_seconds": round(sum(r["seconds"] for r in (*source.values(), *target.values())), 1),
        "cpu_seconds": round(sum(r.get("cpu_seconds", 0.0) for r in (*source.values(), *target.values())), 1),
    }


def run(cfg: AkpBenchConfig, data_dir: Path) -> dict:
    """Runs the benchmark (blocking) with a fresh pool in a temporary folder under data_dir."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="akp-", dir=data_dir) as tmp:
        return asyncio.run(_bench(cfg, Path(tmp)))


def add_parser(sub) -> None:
    """Registers `fnas bench akp` (flags and output live in fnas_bench.akp_report)."""
    from fnas_bench import akp_report

    akp_report.add_parser(sub)
