"""The plain runs of `fnas bench search`, their accounting, and critic transfer.

Every strategy runs the agent's batch steps in memory (`fnas_bench.plain_loop`).
Its curve is the trained (activated) samples' rewards in order, each a distinct
architecture, so "reached" means a trained sample's true reward crossed the
threshold; recalls, predictions and replays never count. Besides the usual
figures each run reports the policy samples by source, the sample speedup
(policy samples per activated sample) and, with a critic, its calibration
error on audited samples.

Transfer (paper 3.1, 7.2): for each seed, an `fnas` search on the source space
(e.g. cora) exports its critic as a snapshot, and the same seed's search on a
target space (citeseer, pubmed) starts from it; compared with the same search
started from an untrained critic.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Collection, Sequence

import numpy as np

from fnas.sources import SOURCES, label
from fnas_bench.plain_loop import PlainRun, run_plain, samples_to_reach
from fnas_bench.reach_stats import ratio, summarise
from services.agent import registry
from services.critic.core import CriticCore

LABELS = tuple(label(s) for s in SOURCES)


def plain(
    space,
    evaluate: Callable[[tuple[int, ...]], float],
    name: str,
    seed: int,
    budget: int,
    critic: CriticCore | None = None,
    snapshot_id: str = "",
    search_id: str = "plain",
) -> PlainRun:
    """One plain search with the defaults a SearchSpec without options gets."""
    strategy = registry.make(name, space, seed)
    return run_plain(strategy, evaluate, budget, critic=critic, snapshot_id=snapshot_id, search_id=search_id)


def plain_result(
    space,
    evaluate: Callable[[tuple[int, ...]], float],
    name: str,
    seed: int,
    budget: int,
    *,
    snapshot: str = "",
    export: bool = False,
    samples: bool = False,
) -> dict:
    """One plain search as JSON-ready data: what a `--workers` process sends back to the benchmark.

    `snapshot` (base64 safetensors) starts the critic from a transfer snapshot; `export` adds this
    search's critic as one. `samples` adds every policy sample's [source, reward], for the mesh check.
    Each search gets a fresh core: searches share nothing in it but snapshots, which travel as bytes.
    """
    core = CriticCore()
    # The search ids the agent would use; they name the critic's search and snapshot, nothing random.
    search_id = f"{space.id}/{seed}" if snapshot or export else "plain"
    snapshot_id = core.import_snapshot(base64.b64decode(snapshot), space.id) if snapshot else ""
    run = plain(space, evaluate, name, seed, budget, core, snapshot_id, search_id)
    out: dict = {"rewards": [r for _, r in run.trajectory], "accounting": facts(run)}
    if space.tabular:  # the benchmark may read the table: the test view of what the search would return
        out["test"] = [space.lookup(t).test_accuracy for t, _ in run.trajectory]
    if samples:
        out["samples"] = [[label(s), r] for s, _, r in run.samples]
    if export:
        out["snapshot"] = base64.b64encode(core.export(search_id)[1]).decode("ascii")
    return out


def facts(run: PlainRun) -> dict:
    """What `summary` needs of one run, as plain numbers."""
    return {
        "policy_samples": {label(s): run.count(s) for s in SOURCES},
        "activated_samples": len(run.trajectory),
        "sample_speedup": run.sample_speedup,
        "calibration_error": run.calibration_error,
        "audits": run.audits,
    }


def summary(runs: Sequence[dict]) -> dict:
    """Median accounting over seeds (`facts` of each): policy samples by source, speedup, calibration."""
    errors = [r["calibration_error"] for r in runs if r["calibration_error"] is not None]
    return {
        "policy_samples": {s: float(np.median([r["policy_samples"][s] for r in runs])) for s in LABELS},
        "activated_samples": float(np.median([r["activated_samples"] for r in runs])),
        "sample_speedup": float(np.median([r["sample_speedup"] for r in runs])),
        "calibration_error": float(np.median(errors)) if errors else None,
        "audited": float(np.median([r["audits"] for r in runs])),
    }


def mesh_samples(events: Sequence) -> list[list]:
    """[source, reward] of a mesh search's sample events, as `plain_result(samples=True)` has them."""
    return [[label(s.source), s.reward.value] for s in events]


def transfer_tasks(
    source: str,
    targets: Sequence[str],
    seeds: int,
    known: Collection[str],
    task: Callable[..., dict],
    planned: Sequence[dict],
) -> list[dict]:
    """The runs of the critic transfer, as tasks of the benchmark (`task(space, strategy, seed, **fields)`).

    Per seed, a source run exports its critic, and its `then` tasks (one per target) start from that
    snapshot. Where the benchmark already plans the same `fnas` run of `source` (in `planned`), that task
    exports instead of the search running twice (it is updated in place). Scratch runs only for the
    targets whose `fnas` runs the benchmark does not do anyway (`known`).
    """
    by_id = {t["id"]: t for t in planned}
    out = []
    for seed in range(seeds):
        then = [task(t, "fnas", seed, id=_transfer_id(t, seed, f"from {source}")) for t in targets]
        own = by_id.get(task(source, "fnas", seed)["id"])
        if own is not None:
            own.update(export=True, then=then)
        else:
            out.append(
                task(
                    source,
                    "fnas",
                    seed,
                    id=_transfer_id(source, seed, "transfer source"),
                    export=True,
                    then=then,
                )
            )
    out += [
        task(t, "fnas", seed, id=_transfer_id(t, seed, "transfer scratch"))
        for t in targets
        if t not in known
        for seed in range(seeds)
    ]
    return out


def _transfer_id(space: str, seed: int, role: str) -> str:
    return f"{space} fnas seed {seed} ({role})"


def transfer(
    source: str,
    thresholds: dict[str, dict[str, float]],
    seeds: int,
    budget: int,
    results: dict[str, dict],
    scratch: dict[str, dict] | None = None,
) -> dict:
    """Activated samples to each target with and without a critic pre-trained on `source`.

    `thresholds` maps each target space to its targets; `results` holds the finished `transfer_tasks`
    by id. `scratch` may hold the benchmark's own `fnas` figures per space (same seeds and budget, hence
    the same runs), which are then reused instead of run again.
    """
    out: dict = {"source": source, "budget": budget, "spaces": {}}
    for target, targets in thresholds.items():
        known = (scratch or {}).get(target)
        roles = (
            {"transfer": f"from {source}"}
            if known
            else {"scratch": "transfer scratch", "transfer": f"from {source}"}
        )
        curves = {
            kind: [results[_transfer_id(target, seed, role)]["rewards"] for seed in range(seeds)]
            for kind, role in roles.items()
        }
        res: dict = {
            kind: {t: summarise([samples_to_reach(c, v) for c in cs], budget) for t, v in targets.items()}
            for kind, cs in curves.items()
        }
        if known:
            res["scratch"] = {t: known[t] for t in targets}
        for t in targets:
            gain = ratio(res["scratch"][t], res["transfer"][t], budget)
            res[f"speedup_{t}"], res[f"speedup_{t}_ci90"] = gain
        out["spaces"][target] = res
    return out


def table(result: dict) -> str:
    """Rows of each strategy's accounting (sources, speedup, calibration) and of the transfer runs."""
    rows = []
    for space_id, res in result["spaces"].items():
        for name, st in res["strategies"].items():
            f = st["accounting"]
            p = f["policy_samples"]
            cal = "-" if f["calibration_error"] is None else f"{f['calibration_error']:.4f}"
            rows.append(
                f"{space_id:<26} {name:<10} policy samples trained/critic/buffer/recall {p['trained']:.0f}/"
                f"{p['critic']:.0f}/{p['buffer']:.0f}/{p['recall']:.0f} per {f['activated_samples']:.0f} "
                f"activated: speedup {f['sample_speedup']:.2f}x, calibration error {cal} "
                f"({f['audited']:.0f} audited)"
            )
    tr = result.get("transfer")
    if tr:
        rows.append(
            f"critic transfer from {tr['source']} (medians of activated samples, scratch -> transfer):"
        )
        for space_id, res in tr["spaces"].items():
            cells = []
            for t in ("top0.1", "top1"):
                a, b = res["scratch"][t]["median"], res["transfer"][t]["median"]
                sp, (lo, hi) = res[f"speedup_{t}"], res[f"speedup_{t}_ci90"]
                gain = "-" if sp is None else f"{sp:.2f}x"
                cells.append(f"{t} {a or '-'} -> {b or '-'} ({gain}, 90% CI {lo:.2f}-{hi:.2f}x)")
            rows.append(f"  {space_id:<26} " + "; ".join(cells))
    return "\n".join(rows)
