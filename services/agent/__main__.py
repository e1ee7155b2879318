"""`python -m services.agent` (also `fnas serve agent`): run the SearchService.

Flags override FNAS_AGENT_<FIELD> variables, which override the defaults.
SIGTERM or SIGINT stop it gracefully; running searches resume on the next start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from fnas import config, logs, serving
from services.agent.config import AgentConfig

log = logging.getLogger("services.agent")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Adds one flag per AgentConfig field (--nats-url, --port...) to `parser` (or a new one)."""
    p = parser or argparse.ArgumentParser(prog="python -m services.agent", description=__doc__)
    return config.add_flags(p, AgentConfig, "agent")


async def run(cfg: AgentConfig) -> None:
    """Serves until SIGTERM/SIGINT."""
    from services.agent.app import AgentApp  # torch: only when serving, not for --help

    app = AgentApp(cfg)
    server_cfg = app.server_config()
    running = await serving.start([app.register], server_cfg, app.interceptors())
    try:
        await serving.serve(running, app.warm_up, server_cfg)
    finally:
        await app.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        cfg = config.from_args(AgentConfig, "agent", args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logs.setup(cfg.log_level)
    log.info("agent config %s", config.redacted(cfg))  # secrets masked
    asyncio.run(run(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
