"""The `fnas` strategies in `fnas bench search`: plain runs, their accounting, and critic transfer.

`fnas`, `fnas-uac` and `fnas-aeb` run the agent's batch assembly in memory
(`fnas.bench.fnas_loop`). Their curve is the trained (activated) samples'
rewards in order, so "reached" means a trained sample's true reward crossed
the threshold; predictions and replays never count. Besides the usual figures
they report the policy samples by source, the sample speedup (policy samples
per activated sample) and the critic's calibration error on audited samples.

Transfer (paper 3.1, 7.2): for each seed, an `fnas` search on the source space
(e.g. cora) exports its critic as a snapshot, and the same seed's search on a
target space (citeseer, pubmed) starts from it; compared with the same search
started from an untrained critic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fnas.bench.fnas_loop import FnasRun, run_plain_fnas
from fnas.bench.plain_loop import samples_to_reach
from services.agent import fnas
from services.critic.core import CriticCore

STRATEGIES = tuple(fnas.VARIANTS)
SOURCES = ("trained", "critic", "buffer")


def plain(
    space,
    evaluate: Callable[[tuple[int, ...]], float],
    name: str,
    seed: int,
    budget: int,
    critic: CriticCore | None = None,
    snapshot_id: str = "",
    search_id: str = "plain",
) -> FnasRun:
    """One plain fnas search with the defaults a SearchSpec without options gets."""
    strategy = fnas.make(name, space, seed)
    return run_plain_fnas(
        strategy, evaluate, budget, critic=critic, snapshot_id=snapshot_id, search_id=search_id
    )


def summary(runs: Sequence[FnasRun]) -> dict:
    """Median accounting over seeds: policy samples by source, sample speedup, calibration error."""
    errors = [r.calibration_error for r in runs if r.calibration_error is not None]
    return {
        "policy_samples": {s: float(np.median([r.count(s) for r in runs])) for s in SOURCES},
        "activated_samples": float(np.median([len(r.trajectory) for r in runs])),
        "sample_speedup": float(np.median([r.sample_speedup for r in runs])),
        "calibration_error": float(np.median(errors)) if errors else None,
        "audited": float(np.median([r.audits for r in runs])),
    }


def mesh_samples(events: Sequence) -> list[tuple[str, float]]:
    """(source, reward) of a mesh search's sample events, as `FnasRun.samples` has them."""
    names = {1: "trained", 2: "critic", 3: "buffer"}
    return [(names[s.source], s.reward.value) for s in events]


def transfer(
    setups: dict[str, tuple[object, Callable, dict[str, float]]],
    source: str,
    seeds: int,
    budget: int,
    summarise: Callable[[Sequence[int | None], int], dict],
    progress: Callable[[str], None] = print,
    scratch: dict[str, dict] | None = None,
) -> dict:
    """Activated samples to each target with and without a critic pre-trained on `source`.

    `setups` maps each space id to (space, evaluate, thresholds); every space
    other than `source` is a target. `scratch` may hold the benchmark's own
    `fnas` figures per space (same seeds and budget, hence the same runs), which
    are then reused instead of run again.
    """
    space, evaluate, _ = setups[source]
    core = CriticCore()
    snapshots = []
    for seed in range(seeds):
        plain(space, evaluate, "fnas", seed, budget, critic=core, search_id=f"{source}/{seed}")
        snapshots.append(core.export(f"{source}/{seed}")[0])
    out: dict = {"source": source, "budget": budget, "spaces": {}}
    for target, (space, evaluate, thresholds) in setups.items():
        if target == source:
            continue
        progress(f"transfer {source} -> {target}: {seeds} seeds x {budget} samples")
        known = (scratch or {}).get(target)
        curves: dict[str, list[list[float]]] = {"transfer": []} if known else {"scratch": [], "transfer": []}
        for seed in range(seeds):
            if not known:
                curves["scratch"].append(
                    [r for _, r in plain(space, evaluate, "fnas", seed, budget).trajectory]
                )
            moved = plain(space, evaluate, "fnas", seed, budget, core, snapshots[seed], f"{target}/{seed}")
            curves["transfer"].append([r for _, r in moved.trajectory])
        res: dict = {
            kind: {t: summarise([samples_to_reach(c, v) for c in cs], budget) for t, v in thresholds.items()}
            for kind, cs in curves.items()
        }
        if known:
            res["scratch"] = {t: known[t] for t in thresholds}
        for t in thresholds:
            base, mine = res["scratch"][t]["median"], res["transfer"][t]["median"]
            res[f"speedup_{t}"] = base / mine if base and mine else None
        out["spaces"][target] = res
    return out


def table(result: dict) -> str:
    """Extra rows for the fnas strategies (sources, speedup, calibration) and the transfer runs."""
    rows = []
    for space_id, res in result["spaces"].items():
        for name, st in res["strategies"].items():
            f = st.get("fnas")
            if f is None:
                continue
            p = f["policy_samples"]
            cal = "-" if f["calibration_error"] is None else f"{f['calibration_error']:.4f}"
            rows.append(
                f"{space_id:<26} {name:<10} policy samples trained/critic/buffer {p['trained']:.0f}/"
                f"{p['critic']:.0f}/{p['buffer']:.0f} per {f['activated_samples']:.0f} activated: "
                f"speedup {f['sample_speedup']:.2f}x, calibration error {cal} ({f['audited']:.0f} audited)"
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
                sp = res[f"speedup_{t}"]
                cells.append(f"{t} {a or '-'} -> {b or '-'} ({'-' if sp is None else f'{sp:.2f}x'})")
            rows.append(f"  {space_id:<26} " + "; ".join(cells))
    return "\n".join(rows)
