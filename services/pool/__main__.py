"""`python -m services.pool` (also `fnas serve pool`): run the PoolService (AKP, paper 4.3).

Flags override FNAS_POOL_<FIELD> variables, which override the defaults.
SIGTERM or SIGINT stop it gracefully; every committed block is there on the next start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from fnas import config, logs, serving
from services.pool.config import PoolConfig

log = logging.getLogger("services.pool")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Adds one flag per PoolConfig field (--data-dir, --port...) to `parser` (or a new one)."""
    p = parser or argparse.ArgumentParser(prog="python -m services.pool", description=__doc__)
    return config.add_flags(p, PoolConfig, "pool")


async def run(cfg: PoolConfig) -> None:
    """Serves until SIGTERM/SIGINT."""
    from services.pool.app import PoolApp  # lmdb, safetensors: only when serving, not for --help

    app = PoolApp(cfg)
    server_cfg = serving.ServerConfig(
        host=cfg.host, port=cfg.port, metrics_port=cfg.metrics_port, grace_s=cfg.grace_s, **cfg.server_tls()
    )
    running = await serving.start([app.register], server_cfg)
    try:
        await serving.serve(running, app.warm_up, server_cfg)
    finally:
        await app.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        cfg = config.from_args(PoolConfig, "pool", args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logs.setup(cfg.log_level)
    log.info("pool config %s", config.redacted(cfg))  # secrets masked
    asyncio.run(run(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
