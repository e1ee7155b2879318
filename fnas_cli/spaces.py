"""`fnas spaces`: every search space with its number of unique architectures."""

from __future__ import annotations

import argparse

from fnas import spaces


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("spaces", help="list the search spaces and their sizes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(f"{'space':<28} {'tokens':>6} {'architectures':>26}  kind")
    for space_id in spaces.SPACE_IDS:
        space = spaces.get(space_id)
        kind = "benchmark table" if space.tabular else "trained (PyTorch)"
        print(f"{space_id:<28} {len(space.vocab):>6} {space.size():>26,}  {kind}")
    return 0
