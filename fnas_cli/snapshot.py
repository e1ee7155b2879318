"""`fnas snapshot export|import`: critic snapshots, to transfer a critic (paper 3.1, 7.2)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from fnas_cli import connection


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("snapshot", help="export or import a search's critic (transfer to another search)")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    e = verbs.add_parser("export", help="write a search's critic to a safetensors file; print its id")
    connection.add_arguments(e)
    e.add_argument("search_id", help="a search of yours that ran with the critic (fnas, fnas-uac)")
    e.add_argument("--out", type=Path, required=True, help="safetensors file to write")
    e.set_defaults(func=lambda args: asyncio.run(export(args)))
    i = verbs.add_parser("import", help="store a snapshot file as yours; print its id (--critic-snapshot ID)")
    connection.add_arguments(i)
    i.add_argument("file", type=Path, help="safetensors file from `fnas snapshot export`")
    i.add_argument("--space", required=True, help="the space it will start searches of")
    i.set_defaults(func=lambda args: asyncio.run(import_(args)))


async def export(args: argparse.Namespace) -> int:
    async with connection.client(args) as client:
        snapshot_id, weights = await client.export_critic_snapshot(args.search_id)
    args.out.write_bytes(weights)
    print(f"snapshot {snapshot_id} written to {args.out} ({len(weights):,} bytes)")
    return 0


async def import_(args: argparse.Namespace) -> int:
    try:
        weights = args.file.read_bytes()
    except OSError as e:
        raise ValueError(f"{args.file}: {e.strerror}") from None
    async with connection.client(args) as client:
        snapshot_id = await client.import_critic_snapshot(weights, args.space)
    print(f"snapshot {snapshot_id}: start a search from it with --critic-snapshot {snapshot_id}")
    return 0
