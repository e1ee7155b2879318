"""`fnas watch`, `fnas ls`, `fnas cancel`: manage searches of a running agent."""

from __future__ import annotations

import argparse
import asyncio
import time

from fnas.v1 import search_pb2
from fnas_cli import connection, output


def add(sub: argparse._SubParsersAction) -> None:
    for name, func, text in (
        ("watch", watch, "follow a search until it finishes"),
        ("ls", ls, "list the searches of an agent"),
        ("cancel", cancel, "cancel a running search"),
    ):
        p = sub.add_parser(name, help=text)
        connection.add_arguments(p)
        if name != "ls":
            p.add_argument("search_id", help="the id `fnas search` printed (see `fnas ls`)")
        p.set_defaults(func=lambda args, f=func: asyncio.run(f(args)))


def _state(status: search_pb2.SearchStatus) -> str:
    return search_pb2.SearchState.Name(status.state).removeprefix("SEARCH_STATE_").lower()


async def watch(args: argparse.Namespace) -> int:
    async with connection.client(args) as client:
        status = await client.get(args.search_id)
        bar = output.Progress(status.spec.budget.max_activated_samples)
        trajectory = []
        async for event in client.watch(args.search_id):
            if event.HasField("sample"):
                trajectory.append(event.sample)
            for field in ("update", "finished"):
                if event.HasField(field):
                    s = getattr(event, field)
                    bar.show(s.activated_samples, s.best.reward.value)
        bar.close()
        status = await client.get(args.search_id)
        output.print_result(status, await client.top(args.search_id), _ran(status), trajectory)
    return 0


def _ran(status: search_pb2.SearchStatus) -> float:
    """Seconds the search ran: until its end (its last update) once it ended, until now otherwise."""
    end = time.time() if status.state == search_pb2.SEARCH_STATE_RUNNING else status.updated_at
    return end - status.created_at


async def ls(args: argparse.Namespace) -> int:
    async with connection.client(args) as client:
        searches = await client.list()
    print(f"{'search':<14} {'state':<10} {'space':<26} {'strategy':<10} {'activated':>9} {'best':>8}  name")
    for s in searches:
        print(
            f"{s.search_id:<14} {_state(s):<10} {s.spec.space:<26} {s.spec.strategy:<10} "
            f"{s.activated_samples:>9} {s.best.reward.value:>8.4f}  {s.spec.name}"
        )
    return 0


async def cancel(args: argparse.Namespace) -> int:
    async with connection.client(args) as client:
        status = await client.cancel(args.search_id)
    print(f"search {status.search_id}: {_state(status)}, {status.activated_samples} activated samples")
    return 0
