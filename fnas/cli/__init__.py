"""The `fnas` command line: one subcommand per module of this package.

Every subcommand module exposes `add(subparsers)`, which registers its parser
and sets `func`. Bad input raises ValueError (InvalidArchitecture, UnknownSpace,
a bad flag value): one line on stderr, exit code 2, as argparse does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc

from fnas.cli import arch, bench, cluster, export, jobs, search, snapshot, spaces

COMMANDS = (spaces, arch, search, jobs, snapshot, cluster, bench, export)
_BAD_INPUT = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fnas", description="FNAS: fast reinforcement-learning neural architecture search."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except ValueError as e:  # InvalidArchitecture, UnknownSpace, bad values...
        print(f"fnas {args.command}: error: {e}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as e:
        print(f"fnas {args.command}: error: {e.code().name}: {e.details()}", file=sys.stderr)
        return 2 if e.code() in _BAD_INPUT else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
