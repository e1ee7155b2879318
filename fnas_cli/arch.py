"""`fnas arch describe`: decode a token list of a space."""

from __future__ import annotations

import argparse
import json

from fnas import spaces


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("arch", help="work with single architectures")
    asub = p.add_subparsers(dest="arch_command", required=True, metavar="ACTION")
    d = asub.add_parser("describe", help="decode tokens; figures and rank for tabular spaces")
    d.add_argument("--space", required=True, help="space id (see `fnas spaces`)")
    d.add_argument("--tokens", required=True, help="comma-separated token indices, e.g. 1,2,3,4,5")
    d.add_argument("--json", action="store_true", help="print JSON instead of text")
    d.set_defaults(func=describe)


def parse_tokens(text: str) -> list[int]:
    """'1, 2,3' -> [1, 2, 3]; ValueError with the offending item otherwise."""
    items = [t.strip() for t in text.split(",")]
    try:
        return [int(t) for t in items]
    except ValueError:
        bad = next(t for t in items if not t.lstrip("-").isdigit())
        raise ValueError(f"--tokens must be comma-separated integers, got {bad!r}") from None


def describe(args: argparse.Namespace) -> int:
    space = spaces.get(args.space)
    tokens = space.validate(parse_tokens(args.tokens))
    info = {"space": space.id, "tokens": list(tokens), "key": space.key(tokens), **space.describe(tokens)}
    if space.tabular:
        entry = space.lookup(tokens)
        info["benchmark"] = {
            "valid_accuracy": entry.valid_accuracy,
            "test_accuracy": entry.test_accuracy,
            "latency_ms": entry.latency_ms,
            "params": entry.params,
            "rank_by_valid_accuracy": space.rank(tokens),
            "architectures": space.size(),
        }
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        _print(info)
    return 0


def _print(info: dict, indent: str = "") -> None:
    for k, v in info.items():
        if isinstance(v, dict):
            print(f"{indent}{k}:")
            _print(v, indent + "  ")
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            print(f"{indent}{k}:")
            for i, item in enumerate(v):
                print(f"{indent}  [{i}] " + ", ".join(f"{a}={b}" for a, b in item.items()))
        else:
            print(
                f"{indent}{k}: {v:,}"
                if isinstance(v, int) and not isinstance(v, bool)
                else f"{indent}{k}: {v}"
            )
