"""The `fnas bench akp` command: its flags, the printed figures and the plot like the paper's Fig. 3c."""

from __future__ import annotations

import argparse
from pathlib import Path

from fnas_bench import akp_bench, report
from fnas_bench.akp_bench import THRESHOLD, AkpBenchConfig, run


def plot(result: dict, path: Path) -> None:
    """Spearman rho against proxy epochs, from scratch and with the pool (the paper's Fig. 3c)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for mode, style in (("scratch", "o--"), ("pool", "s-")):
        xs = [int(e) for e in result["rho"][mode]]
        ax.plot(
            xs,
            list(result["rho"][mode].values()),
            style,
            label=f"{mode} (rho >= 0.8 at {result['epochs_to_rho_0.8'][mode] or 'none'})",
        )
    ax.axhline(THRESHOLD, color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("proxy epochs per architecture")
    ax.set_ylabel("Spearman rho vs the fully trained ranking")
    cfg = result["config"]
    ax.set_title(
        f"AKP on {cfg['task']} from a pool on {cfg['source_task']} ({cfg['archs']} archs)", fontsize=9
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers `fnas bench akp` on the `fnas bench` subparsers."""
    d = AkpBenchConfig()
    p = sub.add_parser(
        "akp",
        help="AKP: epochs to rank architectures right, from scratch vs pool (Fig. 3c)",
        description=akp_bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--archs", type=int, default=d.archs, help="target architectures ranked")
    p.add_argument("--epochs", default=",".join(map(str, d.epochs)), help="proxy epochs compared")
    p.add_argument("--true-epochs", type=int, default=d.true_epochs, help="epochs of the true ranking")
    p.add_argument(
        "--true-seeds", type=int, default=d.true_seeds, help="full trainings averaged per architecture"
    )
    p.add_argument("--task", default=d.task, help="target task (a dataset; NAME@LO-HI keeps classes LO..HI)")
    p.add_argument("--source-task", default=d.source_task, help="task the pool is built on")
    p.add_argument(
        "--source-archs", type=int, default=d.source_archs, help="architectures that fill the pool"
    )
    p.add_argument(
        "--source-epochs", type=int, default=d.source_epochs, help="their epochs (the pool's fairness count)"
    )
    p.add_argument("--width", type=float, default=d.width, help="width multiplier of every network")
    p.add_argument("--image-side", type=int, default=d.image_side, help="images are resized to this side")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="training minibatch size")
    p.add_argument("--seed", type=int, default=d.seed, help="seeds the architectures, split and training")
    p.add_argument(
        "--workers", type=int, default=d.workers, help="training processes (one torch thread each)"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("fnas-data/bench-akp"),
        help="the run's pool lives in a temporary folder here",
    )
    p.add_argument("--out", type=Path, default=Path("bench-out/akp"), help="writes OUT.json and OUT.png")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """`fnas bench akp`: runs, prints the figures, writes the JSON and the PNG."""
    try:
        epochs = tuple(int(e) for e in args.epochs.split(",") if e.strip())
    except ValueError:
        raise ValueError(f"--epochs must be comma-separated integers, got {args.epochs!r}") from None
    cfg = AkpBenchConfig(
        archs=args.archs,
        epochs=epochs,
        true_epochs=args.true_epochs,
        true_seeds=args.true_seeds,
        task=args.task,
        source_task=args.source_task,
        source_archs=args.source_archs,
        source_epochs=args.source_epochs,
        width=args.width,
        image_side=args.image_side,
        batch_size=args.batch_size,
        seed=args.seed,
        workers=args.workers,
    )
    result = run(cfg, args.data_dir)
    report.emit(result, table(result), args.out, plot)
    return 0


def table(result: dict) -> str:
    """The figures as text: rho per epoch count, epochs to rho >= 0.8, speedup, hit ratio."""
    lines = ["epochs   rho scratch   rho pool"]
    for e in result["rho"]["scratch"]:
        lines.append(f"{e:>6}   {result['rho']['scratch'][e]:>11.3f}   {result['rho']['pool'][e]:>8.3f}")
    reach, speedup = result["epochs_to_rho_0.8"], result["epoch_speedup"]
    scratch, pool = (reach[m] or "not reached" for m in ("scratch", "pool"))
    lines.append(
        f"epochs to rho >= 0.8: scratch {scratch}, pool {pool}"
        f"; epoch speedup {f'{speedup:.2f}x' if speedup else 'n/a'}"
    )
    lines.append(
        f"hit ratio {result['hit_ratio']:.3f} ({result['blocks_matched']}/{result['blocks_queried']} blocks, "
        f"mean similarity {result['mean_similarity']:.2f}, {result['adapted_fraction']:.0%} adapted)"
    )
    cpu, workers = result["cpu_seconds"], result["config"]["workers"]
    lines.append(
        f"{result['seconds']['total']:.0f} s wall; training took {cpu:.0f} CPU s "
        f"({cpu / workers / 60:.1f} min on {workers} free cores)"
    )
    return "\n".join(lines)
