"""`fnas bench search`: sample efficiency of the strategies on NAS-Bench-Graph, and the mesh's cost.

For each space, strategy and seed, a search runs in the plain in-memory loop
(strategy + the trainer's own tabular evaluator, nothing else). The first
`mesh_seeds` seeds also run through the real mesh (in-process cluster: NATS,
agent, trainers over gRPC); the mesh must give the identical trajectory (it is
checked and reported), and the wall time per activated sample of the two is the
mesh's overhead. Reaching a target means a trained sample's true reward
crossed the threshold; the thresholds come from the whole table, which only
this benchmark and the trainer read.

`workers` > 1 runs the plain runs in that many worker processes
(`fnas_bench.search_workers`), with the same figures as one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fnas.v1 import common_pb2
from fnas_bench import MESH_REPEATS, plain_search, search_workers
from fnas_bench.plain_loop import samples_to_reach
from fnas_bench.reach_stats import ratio, summarise
from fnas_bench.tabular import TARGETS, Setup, thresholds
from services.agent import registry

BEST_AT = (100, 300, 1000)
#: Budgets of the test-accuracy view (NASLib's convention: what the search would return at each).
TEST_AT = (25, 50, 100, 200, 500)


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
    mesh_repeats: int = MESH_REPEATS,
) -> dict:
    """Runs the benchmark; returns the JSON-ready result.

    `transfer_from` (a space id) adds the critic-transfer runs: fnas on each
    other space, from scratch and from a critic pre-trained on that space.
    `workers` > 1 runs the plain runs in that many processes (same figures);
    the mesh runs always run here, after them, `mesh_repeats` times each.
    """
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if mesh_repeats < 1:
        raise ValueError(f"--mesh-repeats must be >= 1, got {mesh_repeats}")
    if workers == 1 or mesh_seeds:  # searches are timed in this process too
        search_workers.torch_setup()
    space_ids, strategy_names = list(dict.fromkeys(space_ids)), list(dict.fromkeys(strategy_names))
    for name in strategy_names:
        if name not in registry.NAMES:
            known = ", ".join(registry.NAMES)
            raise ValueError(f"unknown strategy {name!r}; choose one of: {known}")
    setups = {
        space_id: Setup.of(space_id, reward_kind)
        for space_id in dict.fromkeys([*space_ids, *([transfer_from] if transfer_from else [])])
    }
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
        tasks += plain_search.transfer_tasks(transfer_from, others, seeds, known, task, tasks)
    results = search_workers.execute(tasks, workers, progress)

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
                t = stats[target]
                t["ratio_to_ppo"] = None
                if ppo:
                    t["ratio_to_ppo"], t["ratio_to_ppo_ci90"] = ratio(ppo[target], t, budget)
        out["spaces"][space_id] = result
    for space_id in space_ids if mesh_seeds else []:
        for name in strategy_names:
            progress(f"{space_id} {name}: {min(mesh_seeds, seeds)} seeds through the mesh")
            runs = [results[f"{space_id} {name} seed {seed}"] for seed in range(seeds)]
            stats = out["spaces"][space_id]["strategies"][name]
            stats.update(
                _mesh_stats(
                    setups[space_id],
                    name,
                    runs,
                    budget,
                    mesh_seeds,
                    data_dir,
                    mesh_repeats,
                    lambda seed, space_id=space_id, name=name: search_workers.run_one(
                        task(space_id, name, seed)
                    )["seconds"],
                )
            )
    if transfer_from:
        done = {
            sid: res["strategies"]["fnas"]
            for sid, res in out["spaces"].items()
            if "fnas" in res["strategies"]
        }
        others = {sid: targets[sid] for sid in space_ids if sid != transfer_from}
        out["transfer"] = plain_search.transfer(transfer_from, others, seeds, budget, results, done)
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
    if "test" in runs[0]:
        stats["test_at"] = test_at([r["rewards"] for r in runs], [r["test"] for r in runs], budget)
    stats["running_best_median"] = np.median([_running_best(c, budget) for c in curves], axis=0).tolist()
    stats["last_step"] = last_step(curves, targets)
    stats["accounting"] = plain_search.summary([r["accounting"] for r in runs])
    return stats


def test_at(rewards: Sequence[Sequence[float]], tests: Sequence[Sequence[float]], budget: int) -> dict:
    """Mean and standard error over seeds of the test accuracy of the architecture each search would
    return after n activated samples: its best by reward (the first of equals), the test-regret view."""
    out = {}
    for n in (n for n in TEST_AT if n <= budget):
        picked = [t[int(np.argmax(r[:n]))] for r, t in zip(rewards, tests, strict=True) if r]
        se = float(np.std(picked, ddof=1) / np.sqrt(len(picked))) if len(picked) > 1 else None
        out[str(n)] = {"mean": float(np.mean(picked)), "se": se}
    return out


def _running_best(curve: Sequence[float], budget: int) -> np.ndarray:
    """Best reward so far after each activated sample; a search that converged early keeps its best."""
    best = np.maximum.accumulate(np.asarray(curve, dtype=float))
    return np.pad(best, (0, budget - len(best)), mode="edge") if 0 < len(best) < budget else best


def last_step(curves: Sequence[Sequence[float]], targets: dict[str, float]) -> dict:
    """Trained samples at or above the top-1% reward, up to each seed's first top-0.1% one, pooled over seeds.

    `share` (top-0.1% ones / top-1% ones) is the chance per top-1% sample of being a top-0.1% one. Near the
    table's own share (`fnas bench ceiling`), the search picks among its top 1% about as well as a draw, and
    mainly training more of the top 1% gets it to the top 0.1% sooner.
    """
    top1 = top01 = 0
    for curve in curves:
        n = samples_to_reach(curve, targets["top0.1"])
        top1 += sum(r >= targets["top1"] for r in (curve if n is None else curve[:n]))
        top01 += n is not None
    return {"top1_samples": top1, "top0.1_samples": top01, "share": top01 / top1 if top1 else None}


def _mesh_stats(setup, name, runs, budget, mesh_seeds, data_dir, repeats, plain_seconds) -> dict:
    """The first `mesh_seeds` seeds through the mesh: identical trajectory? and the wall-time overhead.

    Each seed runs `repeats` times, each time plain (`plain_seconds(seed)`, in this process) and then
    through the mesh: one pair's overhead moves by a quarter with the machine's load, so the figure is
    the median of the pairs (and of the seeds).
    """
    mesh = asyncio.run(
        _mesh(setup, name, min(mesh_seeds, len(runs)), budget, data_dir, repeats, plain_seconds)
    )
    stats: dict = {}
    if "samples" in runs[0]:  # every policy sample with its source, not only the trained ones
        stats["mesh_matches_plain"] = all(
            plain_search.mesh_samples(m["samples"]) == runs[m["seed"]]["samples"] for m in mesh
        )
    else:
        stats["mesh_matches_plain"] = all(
            [s.reward.value for s in m["samples"]] == runs[m["seed"]]["rewards"] for m in mesh
        )

    # ms per activated sample of each run: a search that converged before its budget trained fewer.
    for m in mesh:
        n = len(runs[m["seed"]]["rewards"])
        m["mesh_ms"], m["plain_ms"] = m["mesh_s"] / n * 1000, m["plain_s"] / n * 1000

    def median(key) -> float:
        """Median over the seeds of each seed's median over its repeats."""
        by_seed: dict[int, list[float]] = {}
        for m in mesh:
            by_seed.setdefault(m["seed"], []).append(key(m))
        return float(np.median([np.median(v) for v in by_seed.values()]))

    stats["overhead_ms_per_sample"] = median(lambda m: m["mesh_ms"] - m["plain_ms"])
    stats["mesh_ms_per_sample"] = median(lambda m: m["mesh_ms"])
    stats["plain_ms_per_sample"] = median(lambda m: m["plain_ms"])
    stats["mesh_repeats"] = repeats
    stats["overhead_ms_per_run"] = [m["mesh_ms"] - m["plain_ms"] for m in mesh]
    return stats


async def _mesh(setup, name, seeds, budget, data_dir, repeats, plain_seconds) -> list[dict]:
    """Runs seeds 0..seeds-1 through the in-process cluster, `repeats` times each, each time after the
    same plain run (in a thread, the cluster idle); per run its seed, sample events in order, and the
    wall seconds of both."""
    from fnas.client import AgentClient
    from services.harness import Cluster

    runs = []
    async with Cluster(data_dir, trainers=1) as cluster, AgentClient(cluster.agent_address) as client:
        for seed in range(seeds):
            spec = common_pb2.SearchSpec(
                space=setup.space.id,
                strategy=name,
                seed=seed,
                reward=setup.reward,
                budget=common_pb2.Budget(max_activated_samples=budget),
            )
            for _ in range(repeats):
                plain_s = await asyncio.to_thread(plain_seconds, seed)
                started = time.perf_counter()
                search_id = await client.submit(spec)
                samples = [e.sample async for e in client.watch(search_id) if e.HasField("sample")]
                runs.append(
                    {
                        "seed": seed,
                        "samples": samples,
                        "mesh_s": time.perf_counter() - started,
                        "plain_s": plain_s,
                    }
                )
    return runs


def table(result: dict) -> str:
    """The figures as a text table: one row per space and strategy."""
    rows = [
        f"reward: {result['reward']}, {result['seeds']} seeds, budget {result['budget']} activated samples",
        f"{'space':<26} {'strategy':<10} {'top0.1 median [IQR]':>22} {'reached':>7} {'x ppo [90% CI]':>19} "
        f"{'top1 median [IQR]':>20} {'reached':>7} {'best@100':>8} {'best@300':>8} {'best@1000':>9} "
        f"{'overhead ms':>11}",
    ]
    for space_id, res in result["spaces"].items():
        for name, st in res["strategies"].items():
            cells = []
            for target in ("top0.1", "top1"):
                t = st[target]
                med = "-" if t["median"] is None else f"{t['median']:g}"  # 74.5 stays 74.5
                cells.append(
                    (f"{med} [{t['iqr'][0]:.0f}, {t['iqr'][1]:.0f}]", f"{t['reached_fraction']:.0%}")
                )
            ratio = _ratio_cell(st["top0.1"].get("ratio_to_ppo"), st["top0.1"].get("ratio_to_ppo_ci90"))
            best = [f"{st['best_at'].get(str(n), float('nan')):.4f}" for n in BEST_AT]
            overhead = st.get("overhead_ms_per_sample")
            rows.append(
                f"{space_id:<26} {name:<10} {cells[0][0]:>22} {cells[0][1]:>7} "
                f"{ratio:>19} {cells[1][0]:>20} {cells[1][1]:>7} "
                f"{best[0]:>8} {best[1]:>8} {best[2]:>9} "
                f"{'-' if overhead is None else f'{overhead:.2f}':>11}"
            )
        rows.append(
            f"{'':<26} thresholds: " + ", ".join(f"{k} >= {v:.4f}" for k, v in res["thresholds"].items())
        )
        shares = [
            f"{name} {st['last_step']['top0.1_samples']}/{st['last_step']['top1_samples']}"
            for name, st in res["strategies"].items()
        ]
        rows.append(f"{'':<26} top-0.1% of the top-1% samples up to the first top-0.1%: " + ", ".join(shares))
        for name, st in res["strategies"].items():
            if "test_at" in st:
                cells = [
                    f"@{n} {v['mean']:.4f}" + ("" if v["se"] is None else f" ± {v['se']:.4f}")
                    for n, v in st["test_at"].items()
                ]
                rows.append(
                    f"{'':<26} {name} test accuracy of its best by reward (mean ± SE): " + ", ".join(cells)
                )
    return "\n".join(rows)


def _ratio_cell(ratio: float | None, interval: list[float] | None) -> str:
    """'1.64 [0.66, 5.10]': a ratio of medians and its bootstrap interval ('-' where undefined)."""
    cell = "-" if ratio is None else f"{ratio:.2f}"
    return cell if interval is None else f"{cell} [{interval[0]:.2f}, {interval[1]:.2f}]"


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
