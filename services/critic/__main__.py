"""`python -m services.critic` (also `fnas serve critic`): run the CriticService.

Flags override FNAS_CRITIC_<FIELD> variables, which override the defaults.
SIGTERM or SIGINT stop it gracefully; histories and nets are reloaded on the next start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from fnas import config, logs, serving
from services.critic.config import CriticConfig

log = logging.getLogger("services.critic")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Adds one flag per CriticConfig field (--nats-url, --port...) to `parser` (or a new one)."""
    p = parser or argparse.ArgumentParser(prog="python -m services.critic", description=__doc__)
    return config.add_flags(p, CriticConfig, "critic")


async def run(cfg: CriticConfig) -> None:
    """Serves until SIGTERM/SIGINT."""
    from services.critic.app import CriticApp  # torch: only when serving, not for --help

    app = CriticApp(cfg)
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
        cfg = config.from_args(CriticConfig, "critic", args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logs.setup(cfg.log_level)
    log.info("critic config %s", config.redacted(cfg))  # secrets masked
    asyncio.run(run(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
