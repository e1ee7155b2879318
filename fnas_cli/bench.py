"""`fnas bench ...`: benchmarks that print figures and write JSON and a PNG."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add(sub: argparse._SubParsersAction) -> None:
    from fnas_bench import MESH_REPEATS, akp_bench, ceiling, compute_bench, load_bench

    p = sub.add_parser("bench", help="benchmarks (figures, JSON and a plot)")
    bench = p.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    s = bench.add_parser(
        "search", help="sample efficiency of the strategies on NAS-Bench-Graph, and mesh overhead"
    )
    s.add_argument(
        "--space",
        default="nasbench-graph/cora",
        help="comma-separated tabular spaces, e.g. nasbench-graph/cora,nasbench-graph/citeseer",
    )
    s.add_argument(
        "--strategies",
        default="ppo,random,evolution",
        help=(
            "comma-separated: ppo, random, evolution, tpe (Optuna), bananas (MLP ensemble), "
            "fnas (all modules), fnas-uac, fnas-aeb (one module)"
        ),
    )
    s.add_argument(
        "--transfer-from",
        default=None,
        help="also run fnas on the other spaces from a critic pre-trained on this one (nasbench-graph/cora)",
    )
    s.add_argument(
        "--reward",
        choices=("accuracy", "latency"),
        default="accuracy",
        help="validation accuracy, or Eq. 2 with T = the space's 25th latency percentile",
    )
    s.add_argument("--seeds", type=int, default=10, help="searches per strategy and space (seeds 0..N-1)")
    s.add_argument("--budget", type=int, default=3000, help="activated samples per search")
    s.add_argument(
        "--mesh-seeds",
        type=int,
        default=1,
        help="seeds also run through the in-process mesh (overhead, identical-trajectory check)",
    )
    s.add_argument(
        "--mesh-repeats",
        type=int,
        default=MESH_REPEATS,
        help="plain-then-mesh runs of each mesh seed; the overhead is their median",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes for the plain runs (one per core; same figures, less wall time); 1 runs them here",
    )
    s.add_argument("--out", type=Path, default=Path("bench-out/search"), help="writes OUT.json and OUT.png")
    s.add_argument("--data-dir", type=Path, default=Path("fnas-data/bench"), help="state of the mesh runs")
    s.set_defaults(func=search)
    akp_bench.add_parser(bench)
    load_bench.add_parser(bench)
    ceiling.add_parser(bench)
    compute_bench.add_parser(bench)


def search(args: argparse.Namespace) -> int:
    from fnas_bench import plain_search, report, search_bench

    if args.seeds < 1 or args.budget < 1 or args.mesh_seeds < 0:
        raise ValueError("--seeds and --budget must be >= 1, --mesh-seeds >= 0")
    result = search_bench.run(
        [s.strip() for s in args.space.split(",") if s.strip()],
        [s.strip() for s in args.strategies.split(",") if s.strip()],
        args.reward,
        args.seeds,
        args.budget,
        args.mesh_seeds,
        args.data_dir,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        transfer_from=args.transfer_from,
        workers=args.workers,
        mesh_repeats=args.mesh_repeats,
    )
    text = "\n".join(t for t in (search_bench.table(result), plain_search.table(result)) if t)
    report.emit(result, text, args.out, search_bench.plot)
    return 0
