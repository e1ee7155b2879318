"""`python -m services.trainer` (also `fnas serve trainer`): run one trainer worker.

Flags override FNAS_TRAINER_<FIELD> variables, which override the defaults.
SIGTERM or SIGINT stop it: the job in hand gets --grace-s to finish, else it is
handed back to the queue at once; the exit code is 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fnas import config, logs, metrics
from services.trainer.config import TrainerConfig

if TYPE_CHECKING:
    from services.trainer.evaluate import Evaluator

log = logging.getLogger("services.trainer")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Adds one flag per TrainerConfig field (--nats-url, --ack-wait-s...) to `parser` (or a new one)."""
    p = parser or argparse.ArgumentParser(prog="python -m services.trainer", description=__doc__)
    return config.add_flags(p, TrainerConfig, "trainer")


def config_from_args(args: argparse.Namespace) -> TrainerConfig:
    """The effective config: flags, then environment, then defaults."""
    return config.from_args(TrainerConfig, "trainer", args)


async def run(cfg: TrainerConfig, evaluator: Evaluator | None = None) -> None:
    """Runs one worker until SIGTERM/SIGINT."""
    # Imported here, not at the top: `fnas serve pool` builds every service's flags, and a process
    # registers and exports only its own service's metrics (the worker module defines the trainer's).
    from services.trainer.evaluate import default_evaluator
    from services.trainer.worker import TrainerWorker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await TrainerWorker(cfg, evaluator or default_evaluator(cfg.heartbeat_s, cfg)).run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logs.setup(cfg.log_level)
    # Before anything imports torch: its thread pools size themselves from these on import.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(cfg.torch_threads))
    log.info("trainer config %s", config.redacted(cfg))  # secrets masked
    if cfg.metrics_port is not None:
        metrics.start_http(cfg.metrics_port, addr=cfg.metrics_host)
    asyncio.run(run(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
