"""`fnas bench ceiling`: how far a critic could rank a tabular space's top, given most of its table.

Reaching the top-0.1% means landing one of a few dozen architectures that
may sit a few validation nodes above hundreds of others. This benchmark fits
the critic's value net (paper 6.1: 4 x 200 PReLU, L_V = |V - R|, the space's
embedding) on k - 1 of k folds of the whole table, predicts the held-out fold,
and asks how well the out-of-fold predictions separate

- the top-0.1% from the rest of the top-1% (AUC; 0.5 is chance), and
- the top-1% from the next 4% (the top-5% without the top-1%).

A search's critic learns from a few hundred samples, not from tens of
thousands, so these figures are a generous ceiling for a critic with this net
and this embedding: where the first AUC is near 0.5, the last step of a
search is close to a draw among the top-1% architectures it trains, and
mainly the rate at which it trains them can speed it up (`last_step` in
`fnas bench search` measures that draw in the searches themselves). The benchmark reads the table; it is a
property of the space, not of a search.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fnas.standing import top_share
from fnas_bench import report
from fnas_bench.akp_bench import spearman

#: Folds, passes over the training folds, minibatch and Adam learning rate of each fit.
FOLDS = 5
EPOCHS = 30
BATCH = 256
LR = 1e-3


def auc(score: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counting half: the Mann-Whitney
    U of the two groups over the number of pairs."""
    from scipy import stats  # here, not at the top: `fnas --help` builds this command's parser

    a, b = score[positive], score[negative]
    if not len(a) or not len(b):
        raise ValueError("auc needs at least one positive and one negative")
    return float(stats.mannwhitneyu(a, b).statistic / (len(a) * len(b)))


def out_of_fold(
    x: np.ndarray, y: np.ndarray, seed: int, folds: int = FOLDS, epochs: int = EPOCHS
) -> np.ndarray:
    """Predictions of the value net for every row, each from a net that never saw that row."""
    import torch  # here, not at the top: `fnas --help` must not wait for torch

    from services.critic.model import Scale, mlp, value_loss

    if folds < 2:
        raise ValueError(f"need >= 2 folds, got {folds}")
    fold = np.random.default_rng(seed).integers(0, folds, len(y))
    xs, pred = torch.from_numpy(x.astype(np.float32)), np.zeros(len(y))
    for f in range(folds):
        train = fold != f
        generator = torch.Generator().manual_seed(seed * folds + f)
        net = mlp(x.shape[1], generator=generator)
        scale = Scale.of(y[train].tolist())  # the critic's robust standardisation of its targets
        xt = xs[torch.from_numpy(train)]
        yt = torch.from_numpy(((y[train] - scale.loc) / scale.scale).astype(np.float32))
        opt = torch.optim.Adam(net.parameters(), lr=LR)
        for _ in range(epochs):
            order = torch.randperm(len(yt), generator=generator)
            for i in range(0, len(yt), BATCH):
                idx = order[i : i + BATCH]
                loss = value_loss(net(xt[idx]).squeeze(1), yt[idx]).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            pred[~train] = net(xs[torch.from_numpy(~train)]).squeeze(1).double().numpy()
    return pred


def separation(pred: np.ndarray, y: np.ndarray, thresholds: dict[str, float]) -> dict:
    """How well `pred` separates the table's targets (see the module docstring)."""
    top01, top1 = y >= thresholds["top0.1"], y >= thresholds["top1"]
    top5 = y >= top_share(y, 0.05)
    return {
        "architectures": len(y),
        "top0.1": int(top01.sum()),
        "top1": int(top1.sum()),
        "spearman": spearman(pred, y),
        "spearman_within_top1": spearman(pred[top1], y[top1]),
        "auc_top0.1_vs_rest_of_top1": auc(pred, top01, top1 & ~top01),
        "auc_top1_vs_next_4pct": auc(pred, top1, top5 & ~top1),
        # The share of the top-0.1% among the top-1%: the chance that a trained top-1% architecture is
        # a top-0.1% one when nothing tells them apart.
        "base_rate_top0.1_in_top1": float(top01.sum() / top1.sum()),
    }


def run(space_ids: Sequence[str], seeds: int = 3, progress: Callable[[str], None] = lambda _: None) -> dict:
    """`separation` of the out-of-fold value net for each space's validation accuracy, per seed and mean."""
    from fnas_bench import tabular  # here: it imports the trainer, which `fnas --help` must not

    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    out: dict = {"folds": FOLDS, "epochs": EPOCHS, "seeds": seeds, "spaces": {}}
    for space_id in space_ids:
        setup = tabular.Setup.of(space_id, "accuracy")
        space, table = setup.space, setup.space.table()
        x = np.stack([space.embedding(space.tokens_for_key(k)) for k in table["key"]])
        y = np.asarray(table["valid_accuracy"], dtype=np.float64)
        thresholds, per_seed = tabular.thresholds(setup), []
        for seed in range(seeds):
            progress(f"{space_id}: seed {seed}, fitting {FOLDS} value nets on {len(y)} architectures")
            per_seed.append(separation(out_of_fold(x, y, seed), y, thresholds))
        out["spaces"][space_id] = {k: float(np.mean([r[k] for r in per_seed])) for k in per_seed[0]} | {
            "per_seed": per_seed
        }
    return out


def table(result: dict) -> str:
    """Means over the seeds, with each AUC's range."""
    rows = [
        f"{'space':<26} {'rho':>6} {'rho top1':>9} "
        f"{'AUC 0.1|1 (range)':>18} {'AUC 1|5 (range)':>16} {'base rate':>10}"
    ]
    for space_id, r in result["spaces"].items():
        cells = []
        for key in ("auc_top0.1_vs_rest_of_top1", "auc_top1_vs_next_4pct"):
            seen = [s[key] for s in r["per_seed"]]
            cells.append(f"{r[key]:.3f} ({min(seen):.2f}-{max(seen):.2f})")
        rows.append(
            f"{space_id:<26} {r['spearman']:6.3f} {r['spearman_within_top1']:9.3f} "
            f"{cells[0]:>18} {cells[1]:>16} {r['base_rate_top0.1_in_top1']:10.3f}"
        )
    rows.append(
        "rho: Spearman of the out-of-fold value net over the table; AUC 0.1|1: top-0.1% against the rest\n"
        "of the top-1%; AUC 1|5: top-1% against the next 4% (0.5 = chance); base rate: the top-0.1%'s\n"
        "share of the top-1%, the chance that a trained top-1% architecture is a top-0.1% one"
    )
    return "\n".join(rows)


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["spaces"])
    keys = {
        "auc_top0.1_vs_rest_of_top1": "top-0.1% vs rest of top-1%",
        "auc_top1_vs_next_4pct": "top-1% vs next 4%",
    }
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.35
    for i, (key, label) in enumerate(keys.items()):
        mean = np.array([result["spaces"][n][key] for n in names])
        seen = [[s[key] for s in result["spaces"][n]["per_seed"]] for n in names]
        spread = [mean - [min(v) for v in seen], [max(v) for v in seen] - mean]
        ax.bar(
            np.arange(len(names)) + (i - 0.5) * width,
            mean,
            width,
            yerr=spread,
            capsize=3,
            label=label,
        )
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(np.arange(len(names)), [n.split("/")[-1] for n in names])
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("AUC, out-of-fold value net")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_parser(sub) -> None:
    """Registers `fnas bench ceiling` on the `fnas bench` subparsers."""
    p = sub.add_parser("ceiling", help="how well the critic's net, fitted on most of a table, ranks its top")
    p.add_argument(
        "--space",
        default="nasbench-graph/cora,nasbench-graph/citeseer,nasbench-graph/pubmed",
        help="comma-separated tabular spaces",
    )
    p.add_argument("--seeds", type=int, default=3, help="fold draws and net initialisations, averaged")
    p.add_argument("--out", type=Path, default=Path("bench-out/ceiling"), help="writes OUT.json and OUT.png")
    p.set_defaults(func=main)


def main(args) -> int:
    result = run(
        [s.strip() for s in args.space.split(",") if s.strip()],
        args.seeds,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    report.emit(result, table(result), args.out, plot)
    return 0
