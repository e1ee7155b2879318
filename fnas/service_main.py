"""The entry point every gRPC service shares (`python -m services.<name>`, `fnas serve <name>`).

Flags override FNAS_<SERVICE>_<FIELD> variables, which override the defaults;
bad values exit with code 2. The app class is imported only when serving, so
`--help` stays fast (apps pull in torch, LMDB...). An app provides register(),
warm_up() and close(), and may provide server_config() and interceptors().
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fnas import config, logs, serving


@dataclass(frozen=True)
class ServiceMain:
    """build_parser / run / main of one service."""

    name: str
    """Service name: flag prefix FNAS_<NAME>_..., logger services.<name>."""
    config_cls: type
    """The service's frozen config dataclass."""
    app: str
    """"module:Class" of the app, imported lazily."""
    doc: str = ""
    """--help description (the __main__ module's docstring)."""

    def build_parser(self, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
        """Adds one flag per config field (--nats-url, --port...) to `parser` (or a new one)."""
        p = parser or argparse.ArgumentParser(prog=f"python -m services.{self.name}", description=self.doc)
        return config.add_flags(p, self.config_cls, self.name)

    async def run(self, cfg: Any) -> None:
        """Serves until SIGTERM/SIGINT, then closes the app."""
        module, cls = self.app.split(":")
        app = getattr(importlib.import_module(module), cls)(cfg)
        if hasattr(app, "server_config"):
            server_cfg = app.server_config()
        else:
            server_cfg = serving.ServerConfig(
                host=cfg.host,
                port=cfg.port,
                metrics_port=cfg.metrics_port,
                metrics_host=cfg.metrics_host,
                grace_s=cfg.grace_s,
                **cfg.server_tls(),
            )
        interceptors = app.interceptors() if hasattr(app, "interceptors") else ()
        running = await serving.start([app.register], server_cfg, interceptors)
        try:
            await serving.serve(running, app.warm_up, server_cfg)
        finally:
            await app.close()

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Entry point; returns the process exit code."""
        args = self.build_parser().parse_args(argv)
        try:
            cfg = config.from_args(self.config_cls, self.name, args)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        logs.setup(cfg.log_level)
        logging.getLogger(f"services.{self.name}").info("%s config %s", self.name, config.redacted(cfg))
        asyncio.run(self.run(cfg))
        return 0
