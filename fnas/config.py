"""Service configuration: a frozen dataclass per service, filled from flags and FNAS_<SERVICE>_<FIELD>.

Precedence: explicit flags, then environment variables, then the dataclass
defaults. Each field's docstring becomes its --help text, so flags, variables
and docs cannot drift apart.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def env_var(prefix: str, name: str) -> str:
    """FNAS_<PREFIX>_<NAME>, e.g. FNAS_TRAINER_NATS_URL."""
    return f"FNAS_{prefix.upper()}_{name.upper()}"


def parse_field(cls: type, name: str, raw: str) -> Any:
    """Parses one field's text (from the environment or a flag); ValueError names the field."""
    kind = next(str(f.type) for f in dataclasses.fields(cls) if f.name == name)
    try:
        if "None" in kind and raw.strip().lower() in ("", "none"):
            return None
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("bool"):
            if raw.strip().lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError
            return raw.strip().lower() in ("1", "true", "yes")
        if kind.startswith("Path"):
            return Path(raw)
        return raw
    except ValueError:
        raise ValueError(f"{name}: {raw!r} is not a valid {kind}") from None


def from_env(cls: type[T], prefix: str, environ: Mapping[str, str] | None = None, **overrides: Any) -> T:
    """Defaults, then FNAS_<PREFIX>_<FIELD> variables, then explicit (non-None) overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        raw = env.get(env_var(prefix, f.name))
        if raw is not None:
            values[f.name] = parse_field(cls, f.name, raw)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)


def add_flags(parser: argparse.ArgumentParser, cls: type, prefix: str) -> argparse.ArgumentParser:
    """One flag per field (--nats-url, --ack-wait-s...), default None so the environment still applies."""
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=_flag_parser(cls, f.name),
            default=None,
            help=f"{docs.get(f.name, '')} (env {env_var(prefix, f.name)}, default {f.default!r})",
        )
    return parser


def from_args(cls: type[T], prefix: str, args: argparse.Namespace) -> T:
    """The effective config: flags, then environment, then defaults."""
    names = {f.name for f in dataclasses.fields(cls)}
    return from_env(cls, prefix, **{k: v for k, v in vars(args).items() if k in names})


def _flag_parser(cls: type, name: str):
    def parse(raw: str):
        try:
            return parse_field(cls, name, raw)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = name  # argparse names the type in its error message
    return parse


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (the --help text of its flag)."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        named = isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        if named and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = str(nxt.value.value).strip()
    return docs
