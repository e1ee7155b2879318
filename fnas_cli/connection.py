"""How the CLI reaches a running agent: --target, bearer token and TLS flags, shared by every command.

The token comes from --token or FNAS_TOKEN (prefer the variable: flags show in
`ps`); TLS files from --tls-ca / --tls-cert / --tls-key or FNAS_TLS_CA,
FNAS_TLS_CERT, FNAS_TLS_KEY. Setting any TLS file turns TLS on.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fnas.client import AgentClient
from fnas.tls import ClientTLS


def add_arguments(p: argparse.ArgumentParser, target_required: bool = True) -> None:
    """--target plus the token and TLS flags."""
    p.add_argument(
        "--target",
        required=target_required,
        help="host:port of the agent"
        + ("" if target_required else "; default: start the cluster in this process"),
    )
    p.add_argument("--token", help="bearer token of your tenant (default: $FNAS_TOKEN)")
    p.add_argument(
        "--tls-ca", type=Path, help="PEM CA bundle the agent's certificate chains to ($FNAS_TLS_CA)"
    )
    p.add_argument("--tls-cert", type=Path, help="PEM client certificate, for mTLS ($FNAS_TLS_CERT)")
    p.add_argument("--tls-key", type=Path, help="PEM key of --tls-cert ($FNAS_TLS_KEY)")
    p.add_argument("--tls-server-name", default="", help="name in the agent's certificate, if not the host")


def client(args: argparse.Namespace, target: str | None = None) -> AgentClient:
    """A AgentClient for the flags (or `target`), with the token and TLS they name."""
    token = getattr(args, "token", None) or os.environ.get("FNAS_TOKEN") or None
    files = {
        name: getattr(args, f"tls_{name}", None) or _env_path(f"FNAS_TLS_{name.upper()}")
        for name in ("ca", "cert", "key")
    }
    server_name = getattr(args, "tls_server_name", "") or ""
    tls = ClientTLS(**files, server_name=server_name) if any(files.values()) or server_name else None
    return AgentClient(target or args.target, token=token, tls=tls)


def _env_path(var: str) -> Path | None:
    value = os.environ.get(var)
    return Path(value) if value else None
