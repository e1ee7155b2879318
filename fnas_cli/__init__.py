"""The `fnas` command line: one subcommand per module of this package.

Every subcommand module exposes `add(subparsers)`, which registers its parser
and sets `func`. Bad input raises ValueError (InvalidArchitecture, UnknownSpace,
a bad flag value): one line on stderr, exit code 2, as argparse does.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence

import grpc

from fnas_cli import arch, bench, cluster, export, jobs, search, snapshot, spaces

COMMANDS = (spaces, arch, search, jobs, snapshot, cluster, bench, export)
_BAD_INPUT = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fnas", description="FNAS: fast reinforcement-learning neural architecture search."
    )
    parser.add_argument("--version", action="version", version=f"fnas {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add(sub)
    _name_commands(parser)
    return parser


def _name_commands(parser: argparse.ArgumentParser) -> None:
    """Gives every command its full name (`fnas bench search`), which its error messages start with."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                child.set_defaults(command_name=child.prog)
                _name_commands(child)


def _version() -> str:
    try:
        return importlib.metadata.version("fnas")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout without installing
        return "unknown"


#: Top-level modules of the `all` extra (pyproject.toml): a command that needs one says how to get it.
FULL_INSTALL = frozenset({"torch", "optuna", "sklearn", "nas_bench_graph", "matplotlib"})
#: What the `bench` extra adds to `all`: checked before a benchmark starts, as each imports it only
#: when it computes its figures, minutes in.
BENCH_INSTALL = frozenset({"scipy"})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A client retries a missing agent a few times: the final error is one line, the retries are noise.
    logging.getLogger("fnas.retry").setLevel(logging.ERROR)
    try:
        if args.command == "bench":
            for name in sorted(BENCH_INSTALL):
                if importlib.util.find_spec(name) is None:
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return args.func(args) or 0
    except ValueError as e:  # InvalidArchitecture, UnknownSpace, bad values...
        print(f"{args.command_name}: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        top = (e.name or "").partition(".")[0]
        if top in FULL_INSTALL:
            how = (
                "the full install: pip install 'fnas[all]' "
                "(without it, only `fnas serve pool` and `fnas serve buffer` run)"
            )
        elif top in BENCH_INSTALL:
            how = "the benchmarks' install: pip install 'fnas[bench]'"
        else:
            raise
        print(f"{args.command_name}: error: this needs {e.name}, which comes with {how}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as e:
        print(f"{args.command_name}: error: {_rpc_error(e, args)}", file=sys.stderr)
        return 2 if e.code() in _BAD_INPUT else 1
    except BrokenPipeError:  # `fnas watch | head`: the reader left; end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


def _rpc_error(e: grpc.aio.AioRpcError, args: argparse.Namespace) -> str:
    if e.code() == grpc.StatusCode.UNAVAILABLE and getattr(args, "target", None):
        return f"no agent answers at {args.target} (UNAVAILABLE); start one with `fnas up`, or check --target"
    return f"{e.code().name}: {e.details()}"


if __name__ == "__main__":
    sys.exit(main())
