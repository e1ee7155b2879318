"""`fnas serve NAME` (one service per process) and `fnas up` (the whole cluster in one process)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import socket
from pathlib import Path

SERVICES = ("agent", "critic", "pool", "buffer", "trainer")


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run one service in this process (flags: fnas serve NAME --help)")
    services = p.add_subparsers(dest="service", required=True, metavar="NAME")
    for name in SERVICES:
        module = importlib.import_module(f"services.{name}.__main__")
        s = services.add_parser(name, help=f"the {name} service", description=module.__doc__)
        module.build_parser(s)
        s.set_defaults(func=lambda args, m=module, s=s: m.main(_argv(args, s)))

    u = sub.add_parser("up", help="NATS, the agent and trainers in this process, until Ctrl-C")
    u.add_argument(
        "--port", type=int, default=50051, help="the agent's gRPC port on 127.0.0.1 (0: a free one)"
    )
    u.add_argument(
        "--data-dir", type=Path, default=Path("fnas-data"), help="where NATS and the services keep state"
    )
    u.add_argument("--trainers", type=int, default=2, help="trainer workers (tabular and real training)")
    u.add_argument("--metrics-port", type=int, default=9464, help="Prometheus /metrics port (0: a free one)")
    u.set_defaults(func=up)


def _argv(args: argparse.Namespace, service: argparse.ArgumentParser) -> list[str]:
    """The service's own flags back as argv, so `fnas serve X` and `python -m services.X` share main().

    Only the flags the service's parser defines: what the CLI keeps in `args` of its own stays out.
    """
    out = []
    for action in service._actions:
        value = getattr(args, action.dest, None)
        if action.option_strings and action.dest != "help" and value is not None:
            out += [action.option_strings[-1], str(value)]
    return out


def up(args: argparse.Namespace) -> int:
    if args.trainers < 1:
        raise ValueError("--trainers must be >= 1")
    for flag, port in (("--port", args.port), ("--metrics-port", args.metrics_port)):
        check_port_free(flag, port)
    return asyncio.run(_up(args))


def check_port_free(flag: str, port: int) -> None:
    """ValueError naming `flag` when `port` on 127.0.0.1 is taken or out of range (before anything starts)."""
    if not 0 <= port <= 65535:
        raise ValueError(f"{flag} must be in 0..65535, got {port}")
    if port == 0:
        return
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise ValueError(
                f"{flag} {port}: the port is already in use (another `fnas up`?); "
                f"pass {flag} with another port, or {flag} 0 for a free one"
            ) from None


async def _up(args: argparse.Namespace) -> int:
    from services.harness import Cluster

    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with Cluster(
        args.data_dir, trainers=args.trainers, metrics_port=args.metrics_port, agent_port=args.port
    ) as cluster:
        print(f"agent   {cluster.agent_address}   (fnas search --target {cluster.agent_address} ...)")
        print(f"nats    {cluster.nats_url}")
        print(f"metrics http://127.0.0.1:{cluster.metrics_port}/metrics")
        print(f"{args.trainers} trainers; data in {args.data_dir}; Ctrl-C stops", flush=True)
        await stop.wait()
    return 0
