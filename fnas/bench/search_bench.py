"""`fnas bench search`: sample efficiency of the strategies on NAS-Bench-Graph, and the mesh's cost.

For each space, strategy and seed, a search runs in the plain in-memory loop
(strategy + the trainer's own tabular evaluator, nothing else). The first
`mesh_seeds` seeds also run through the real mesh (in-process cluster: NATS,
agent, trainers over gRPC); the mesh must give the identical trajectory (it is
checked and reported), and the wall time per activated sample of the two is the
mesh's overhead. Reaching a target means a trained sample's true reward
crossed the threshold; the thresholds come from the whole table, which only
this benchmark and the trainer read.

`workers` > 1 runs the plain runs (`run_one`, one per space, strategy and seed)
in that many worker processes, all submitted at once so every core stays busy;
each run is seeded and shares nothing with the others, so the figures are the
same as with one.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from asyncio.subprocess import PIPE
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fnas import spaces
from fnas.bench import fnas_bench
from fnas.bench.plain_loop import run_plain, samples_to_reach
from fnas.reward import RewardFn
from fnas.v1 import common_pb2, queue_pb2
from services.agent import strategies
from services.trainer.evaluate import TabularEvaluator

TARGETS = {"top0.1": 0.001, "top1": 0.01}
BEST_AT = (100, 300, 1000)
#: Longest answer line of a worker: a transfer source's critic snapshot is about 1 MB of base64.
ANSWER_LIMIT = 64 * 2**20


@dataclass(frozen=True)
class Setup:
    space: spaces.SearchSpace
    reward: common_pb2.RewardSpec


def reward_spec(space: spaces.SearchSpace, kind: str) -> common_pb2.RewardSpec:
    """accuracy: validation accuracy alone; latency: Eq. 2 with T = the space's 25th latency percentile."""
    if kind == "accuracy":
        return common_pb2.RewardSpec(cost=common_pb2.COST_METRIC_NONE)
    if kind == "latency":
        target = float(np.percentile(space.table()["latency_ms"], 25))
        return common_pb2.RewardSpec(cost=common_pb2.COST_METRIC_LATENCY, target_latency_ms=target)
    raise ValueError(f"--reward must be accuracy or latency, got {kind!r}")


def thresholds(setup: Setup) -> dict[str, float]:
    """Reward that the best `q` share of the space's unique architectures reach."""
    table = setup.space.table()
    fn = RewardFn.from_spec(setup.reward)
    rewards = np.array(
        [fn(a, lat) for a, lat in zip(table["valid_accuracy"], table["latency_ms"], strict=True)]
    )
    ordered = np.sort(rewards)[::-1]
    return {name: float(ordered[max(1, math.ceil(q * len(ordered))) - 1]) for name, q in TARGETS.items()}


def evaluator(setup: Setup) -> Callable[[tuple[int, ...]], float]:
    """The trainer's tabular evaluation as a plain function of the tokens."""
    tabular = TabularEvaluator()

    def evaluate(tokens: tuple[int, ...]) -> float:
        job = queue_pb2.TrainJob(
            architecture=common_pb2.Architecture(space=setup.space.id, tokens=tokens), reward=setup.reward
        )
        return tabular.reward(job).value

    return evaluate


def summarise(counts: Sequence[int | None], budget: int) -> dict:
    """Median and IQR of samples-to-target over seeds; a seed that never reached counts as budget+1."""
    reached = [c for c in counts if c is not None]
    filled = np.array([c if c is not None else budget + 1 for c in counts], dtype=float)
    q1, med, q3 = np.percentile(filled, [25, 50, 75])
    return {
        # None when the median seed did not reach the target within the budget.
        "median": float(med) if med <= budget else None,
        "iqr": [float(q1), float(q3)],
        "reached_fraction": len(reached) / len(counts),
        "per_seed": list(counts),
    }


def run(
    space_ids: Sequence[str],
    strategy_names: Sequence[str],
    reward_kind: str,
    seeds: int,
    budget: int,
    mesh_seeds: int,
    data_dir: Path,
    progress: Callable[[str], None] = print,
    transfer_from: str | None = None,
    workers: int = 1,
) -> dict:
    """Runs the benchmark; returns the JSON-ready result.

    `transfer_from` (a space id) adds the critic-transfer runs: fnas on each
    other space, from scratch and from a critic pre-trained on that space.
    `workers` > 1 runs the plain runs in that many processes (same figures);
    the mesh runs always run here, after them.
    """
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if workers == 1 or mesh_seeds:  # searches are timed in this process too
        _torch_setup()
    space_ids, strategy_names = list(dict.fromkeys(space_ids)), list(dict.fromkeys(strategy_names))
    for name in strategy_names:
        if name not in strategies.STRATEGIES and name not in fnas_bench.STRATEGIES:
            known = ", ".join([*strategies.STRATEGIES, *fnas_bench.STRATEGIES])
            raise ValueError(f"unknown strategy {name!r}; choose one of: {known}")
    setups = {}
    for space_id in dict.fromkeys([*space_ids, *([transfer_from] if transfer_from else [])]):
        space = spaces.get(space_id)
        if not space.tabular:
            raise ValueError(f"{space_id} is not a benchmark table; fnas bench search needs nasbench-graph/*")
        setups[space_id] = Setup(space, reward_spec(space, reward_kind))
    targets = {space_id: thresholds(setup) for space_id, setup in setups.items()}

    def task(space_id: str, name: str, seed: int, **fields) -> dict:
        spec = {"space": space_id, "reward": reward_kind, "strategy": name, "seed": seed, "budget": budget}
        return {"id": f"{space_id} {name} seed {seed}", **spec, **fields}

    tasks = [
        task(space_id, name, seed, samples=seed < mesh_seeds)
        for space_id in space_ids
        for name in strategy_names
        for seed in range(seeds)
    ]
    if transfer_from:
        others = [s for s in space_ids if s != transfer_from]
        known = space_ids if "fnas" in strategy_names else []
        tasks += fnas_bench.transfer_tasks(transfer_from, others, seeds, known, task)
    results = _execute(tasks, workers, progress)

    out: dict = {
        "reward": reward_kind,
        "seeds": seeds,
        "budget": budget,
        "mesh_seeds": mesh_seeds,
        "spaces": {},
    }
    for space_id in space_ids:
        result = {"thresholds": targets[space_id], "strategies": {}}
        for name in strategy_names:
            runs = [results[f"{space_id} {name} seed {seed}"] for seed in range(seeds)]
            result["strategies"][name] = _strategy(runs, budget, targets[space_id])
        ppo = result["strategies"].get("ppo")
        for stats in result["strategies"].values():
            for target in TARGETS:
                base, mine = (ppo or {}).get(target, {}).get("median"), stats[target]["median"]
                stats[target]["ratio_to_ppo"] = base / mine if base and mine else None
        out["spaces"][space_id] = result
    for space_id in space_ids if mesh_seeds else []:
        for name in strategy_names:
            progress(f"{space_id} {name}: {min(mesh_seeds, seeds)} seeds through the mesh")
            runs = [results[f"{space_id} {name} seed {seed}"] for seed in range(seeds)]
            stats = out["spaces"][space_id]["strategies"][name]
            stats.update(_mesh_stats(setups[space_id], name, runs, budget, mesh_seeds, data_dir))
    if transfer_from:
        done = {
            sid: res["strategies"]["fnas"]
            for sid, res in out["spaces"].items()
            if "fnas" in res["strategies"]
        }
        others = {sid: targets[sid] for sid in space_ids if sid != transfer_from}
        out["transfer"] = fnas_bench.transfer(transfer_from, others, seeds, budget, summarise, results, done)
    return out


def _strategy(runs: Sequence[dict], budget: int, targets: dict[str, float]) -> dict:
    """The figures of one strategy from its plain runs (`run_one`'s results, in seed order)."""
    curves = [r["rewards"] for r in runs]
    stats = {
        target: summarise([samples_to_reach(c, t) for c in curves], budget) for target, t in targets.items()
    }
    stats["best_at"] = {
        str(n): float(np.median([max(c[:n]) for c in curves])) for n in BEST_AT if n <= budget
    }
    stats["running_best_median"] = np.median(np.maximum.accumulate(np.array(curves), axis=1), axis=0).tolist()
    if "fnas" in runs[0]:
        stats["fnas"] = fnas_bench.summary([r["fnas"] for r in runs])
    return stats


def _mesh_stats(setup, name, runs, budget, mesh_seeds, data_dir) -> dict:
    """The first `mesh_seeds` seeds through the mesh: identical trajectory? and the wall-time overhead."""
    mesh = asyncio.run(_mesh(setup, name, min(mesh_seeds, len(runs)), budget, data_dir))
    stats: dict = {}
    if "samples" in runs[0]:  # every policy sample with its source, not only the trained ones
        stats["mesh_matches_plain"] = all(
            fnas_bench.mesh_samples(m[0]) == runs[i]["samples"] for i, m in enumerate(mesh)
        )
    else:
        stats["mesh_matches_plain"] = all(
            [s.reward.value for s in m[0]] == runs[i]["rewards"] for i, m in enumerate(mesh)
        )
    plain_s = [r["seconds"] for r in runs]
    per_sample = [(m[1] - plain_s[i]) / budget * 1000 for i, m in enumerate(mesh)]
    stats["overhead_ms_per_sample"] = float(np.median(per_sample))
    stats["mesh_ms_per_sample"] = float(np.median([m[1] / budget * 1000 for m in mesh]))
    stats["plain_ms_per_sample"] = float(np.median(plain_s[: len(mesh)]) / budget * 1000)
    return stats


def run_one(task: dict) -> dict:
    """One plain run, the unit of work of `--workers`: a task in, JSON-ready figures out.

    For every strategy the trajectory's rewards and the wall seconds; for the fnas
    ones also `fnas_bench.plain_result`'s accounting (and snapshot, when asked).
    """
    space = spaces.get(task["space"])
    evaluate = evaluator(Setup(space, reward_spec(space, task["reward"])))
    name, seed, budget = task["strategy"], task["seed"], task["budget"]
    started = time.perf_counter()
    if name in fnas_bench.STRATEGIES:  # the agent's batch assembly, critic and buffer in memory
        out = fnas_bench.plain_result(
            space,
            evaluate,
            name,
            seed,
            budget,
            snapshot=task.get("snapshot", ""),
            export=task.get("export", False),
            samples=task.get("samples", False),
        )
    else:
        out = {
            "rewards": [r for _, r in run_plain(strategies.make(name, space, seed=seed), evaluate, budget)]
        }
    out["seconds"] = time.perf_counter() - started
    return out


class _Finished:
    """The results of the tasks by id; a progress line for each, and the tasks it unlocks."""

    def __init__(self, tasks: Sequence[dict], progress: Callable[[str], None]) -> None:
        self.total, self.progress = _count(tasks), progress
        self.results: dict[str, dict] = {}

    def add(self, task: dict, result: dict) -> list[dict]:
        self.results[task["id"]] = result
        self.progress(f"{task['id']}: {result['seconds']:.1f} s ({len(self.results)}/{self.total})")
        # A transfer source's `then` tasks start from the critic it exported.
        return [{**t, "snapshot": result["snapshot"]} for t in task.get("then", ())]


def _count(tasks: Sequence[dict]) -> int:
    return sum(1 + _count(t.get("then", ())) for t in tasks)


def _execute(tasks: Sequence[dict], workers: int, progress: Callable[[str], None]) -> dict[str, dict]:
    """Runs the tasks and those they unlock; results by task id, equal whatever `workers` is."""
    finished = _Finished(tasks, progress)
    if workers == 1:
        queue = deque(tasks)
        while queue:
            task = queue.popleft()
            queue.extend(finished.add(task, run_one(task)))
    else:
        progress(f"{finished.total} plain runs in {workers} worker processes")
        asyncio.run(_in_workers(tasks, min(workers, finished.total), finished))
    return finished.results


async def _in_workers(tasks: Sequence[dict], workers: int, finished: _Finished) -> None:
    """Feeds the tasks to `workers` fresh interpreters (`_serve`), one at a time each, as JSON lines.

    Fresh processes, not forks of this one (its torch and gRPC threads do not survive a fork), and
    JSON, not pickle, across the pipe (tests/unit/test_no_pickle.py).
    """
    queue: asyncio.Queue[dict | None] = asyncio.Queue()
    for task in tasks:
        queue.put_nowait(task)
    unfinished = len(tasks)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fnas.bench.search_bench",
            stdin=PIPE,
            stdout=PIPE,
            env=env,
            limit=ANSWER_LIMIT,
        )
        for _ in range(workers)
    ]

    async def drive(proc: asyncio.subprocess.Process) -> None:
        nonlocal unfinished
        while (task := await queue.get()) is not None:
            wire = {k: v for k, v in task.items() if k != "then"}
            proc.stdin.write(json.dumps(wire).encode() + b"\n")
            await proc.stdin.drain()
            try:
                line = await proc.stdout.readline()
            except ValueError as e:  # longer than ANSWER_LIMIT: a fault here, not bad input
                raise RuntimeError(f"{task['id']}: {e}") from None
            if not line:
                raise RuntimeError(f"search worker exited (code {await proc.wait()}) during {task['id']}")
            result = json.loads(line)
            if "error" in result:  # a bad value stays a ValueError: the CLI answers it with exit code 2
                raise (ValueError if result["bad_input"] else RuntimeError)(
                    f"{task['id']}: {result['error']}"
                )
            for then in finished.add(task, result):
                queue.put_nowait(then)
                unfinished += 1
            unfinished -= 1
            if unfinished == 0:  # nothing left that could unlock more: every driver stops
                for _ in procs:
                    queue.put_nowait(None)

    ok = False
    try:
        async with asyncio.TaskGroup() as group:
            for proc in procs:
                group.create_task(drive(proc))
        ok = True
    except ExceptionGroup as e:
        raise e.exceptions[0] from None
    finally:
        for proc in procs:
            if ok:
                proc.stdin.close()  # end of input: the worker returns
            else:  # a failed benchmark does not wait for the other runs
                if proc.returncode is None:
                    proc.kill()
                await proc.stdout.read()  # wait() also waits for the pipe to close; a paused one never would
            await proc.wait()


def _torch_setup() -> None:
    """One torch thread, and torch's lazy imports done before any run's clock starts."""
    import torch

    torch.set_num_threads(1)  # the policy is tiny; more threads only contend (TECH-NOTES, PyTorch)
    # The first optimizer imports torch._dynamo (1-2 s): it would count in the first run of each process.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def _serve() -> int:
    """A worker (`python -m fnas.bench.search_bench`): a task per stdin line, its result per stdout line."""
    _torch_setup()
    answers, sys.stdout = sys.stdout, sys.stderr  # a stray print must not corrupt the answers
    while line := sys.stdin.readline():
        try:
            result = run_one(json.loads(line))
        except Exception as e:  # reported to the benchmark, which stops with this message
            result = {"error": f"{type(e).__name__}: {e}", "bad_input": isinstance(e, ValueError)}
        answers.write(json.dumps(result) + "\n")
        answers.flush()
    return 0


async def _mesh(setup, name, seeds, budget, data_dir) -> list[tuple[list[common_pb2.Sample], float]]:
    """Runs seeds 0..seeds-1 through the in-process cluster; (sample events in order, wall seconds) each."""
    from fnas.client import SearchClient
    from fnas.harness import Cluster

    runs = []
    async with Cluster(data_dir, trainers=1) as cluster, SearchClient(cluster.agent_address) as client:
        for seed in range(seeds):
            spec = common_pb2.SearchSpec(
                space=setup.space.id,
                strategy=name,
                seed=seed,
                reward=setup.reward,
                budget=common_pb2.Budget(max_activated_samples=budget),
            )
            started = time.perf_counter()
            search_id = await client.submit(spec)
            samples = [e.sample async for e in client.watch(search_id) if e.HasField("sample")]
            runs.append((samples, time.perf_counter() - started))
    return runs


def table(result: dict) -> str:
    """The figures as a text table: one row per space and strategy."""
    rows = [
        f"reward: {result['reward']}, {result['seeds']} seeds, budget {result['budget']} activated samples",
        f"{'space':<26} {'strategy':<10} {'top0.1 median [IQR]':>22} {'reached':>7} {'x ppo':>6} "
        f"{'top1 median [IQR]':>20} {'reached':>7} {'best@100':>8} {'best@300':>8} {'best@1000':>9} "
        f"{'overhead ms':>11}",
    ]
    for space_id, res in result["spaces"].items():
        for name, st in res["strategies"].items():
            cells = []
            for target in ("top0.1", "top1"):
                t = st[target]
                med = "-" if t["median"] is None else f"{t['median']:.0f}"
                cells.append(
                    (f"{med} [{t['iqr'][0]:.0f}, {t['iqr'][1]:.0f}]", f"{t['reached_fraction']:.0%}")
                )
            ratio = st["top0.1"].get("ratio_to_ppo")
            best = [f"{st['best_at'].get(str(n), float('nan')):.4f}" for n in BEST_AT]
            overhead = st.get("overhead_ms_per_sample")
            rows.append(
                f"{space_id:<26} {name:<10} {cells[0][0]:>22} {cells[0][1]:>7} "
                f"{'-' if ratio is None else f'{ratio:.2f}':>6} {cells[1][0]:>20} {cells[1][1]:>7} "
                f"{best[0]:>8} {best[1]:>8} {best[2]:>9} "
                f"{'-' if overhead is None else f'{overhead:.2f}':>11}"
            )
        rows.append(
            f"{'':<26} thresholds: " + ", ".join(f"{k} >= {v:.4f}" for k, v in res["thresholds"].items())
        )
    return "\n".join(rows)


def plot(result: dict, path: Path) -> None:
    """Median best-so-far reward against activated samples, one panel per space."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["spaces"])
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, space_id in zip(axes[0], names, strict=True):
        res = result["spaces"][space_id]
        for name, stats in res["strategies"].items():
            curve = stats["running_best_median"]
            ax.plot(range(1, len(curve) + 1), curve, label=name)
        for target, value in res["thresholds"].items():
            ax.axhline(value, color="grey", linestyle=":", linewidth=0.8)
            ax.text(1, value, target, fontsize=7, va="bottom")
        ax.set_xscale("log")
        ax.set_title(f"{space_id} ({result['reward']})")
        ax.set_xlabel("activated samples")
        ax.set_ylabel("best reward (median over seeds)")
        ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(_serve())
