"""`fnas search`: run a search and report its best architectures.

Without --target it starts the whole cluster in this process (NATS, agent,
trainers), which is the embedded default; with --target host:port it submits
to a running agent.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from google.protobuf.descriptor import FieldDescriptor

from fnas.client import AgentClient
from fnas.v1 import common_pb2, search_pb2
from fnas_cli import connection, output

REWARDS = {
    "accuracy": common_pb2.COST_METRIC_NONE,
    "latency": common_pb2.COST_METRIC_LATENCY,
    "mult-adds": common_pb2.COST_METRIC_MULT_ADDS,
}

#: The limits --fnas can set, by name.
FNAS_FIELDS = common_pb2.FnasOptions.DESCRIPTOR.fields_by_name


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="run a search and print its best architectures")
    add_spec_arguments(p)
    connection.add_arguments(p, target_required=False)
    p.add_argument("--trainers", type=int, default=2, help="trainer workers of the in-process cluster")
    p.add_argument("--data-dir", type=Path, default=Path("fnas-data"), help="state of the in-process cluster")
    p.add_argument("--json", type=Path, help="write the result (trajectory, best architectures) here")
    p.add_argument("--plot", type=Path, help="reward vs activated samples PNG (default: next to --json)")
    p.add_argument("--top", type=int, default=10, help="how many best architectures to print")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def add_spec_arguments(p: argparse.ArgumentParser) -> None:
    """The SearchSpec flags."""
    p.add_argument("--space", required=True, help="space id, see `fnas spaces`")
    p.add_argument(
        "--strategy",
        default="ppo",
        help="ppo, random, evolution, tpe, bananas, fnas (PPO + modules), fnas-uac, fnas-aeb (default: ppo)",
    )
    for module, what in (
        ("uac", "critic (paper 4.2)"),
        ("aeb", "experience buffer (5)"),
        ("akp", "pool (4.3)"),
    ):
        p.add_argument(f"--no-{module}", action="store_true", help=f"fnas: switch the {what} off")
    p.add_argument("--critic-snapshot", default="", help="fnas: start the critic from this snapshot id")
    p.add_argument(
        "--critic-history",
        default="",
        help="fnas: pre-train the critic on these searches (comma-separated ids)",
    )
    p.add_argument(
        "--fnas",
        type=fnas_option,
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help=f"fnas: set a SearchSpec.fnas limit (repeatable); FIELD is one of {', '.join(FNAS_FIELDS)}",
    )
    p.add_argument("--budget", type=int, default=200, help="activated (trained) samples")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the policy and the search: the same seed, the same search (on real training with AKP, "
        "only with one trainer: README)",
    )
    p.add_argument(
        "--batch-size", type=whole, default=0, help="samples per policy update (0: strategy default)"
    )
    p.add_argument(
        "--reward",
        choices=sorted(REWARDS),
        default="accuracy",
        help="accuracy alone, or Eq. 2 with latency or Mult-Adds as the cost",
    )
    p.add_argument("--target-latency-ms", type=float, default=0.0, help="T of Eq. 2 with --reward latency")
    p.add_argument("--target-mult-adds", type=int, default=0, help="T of Eq. 2 with --reward mult-adds")
    p.add_argument("--alpha", type=float, help="exponent when the cost is <= T (default -0.07)")
    p.add_argument("--beta", type=float, help="exponent when the cost is > T (default -0.07)")
    p.add_argument(
        "--dataset", default="", help="trained spaces: digits, synthetic, npz:<path>, imagefolder:<path>"
    )
    p.add_argument("--epochs", type=whole, default=0, help="proxy-task epochs per sample (trained spaces)")
    p.add_argument(
        "--simulated-seconds",
        type=float,
        default=0.0,
        help="tabular spaces: emulated training time per sample",
    )
    p.add_argument("--name", default="", help="a label shown by `fnas ls`")
    p.add_argument("--pool-task", default="", help="AKP transfer: initialise from pool blocks of this task")
    p.add_argument(
        "--pool-epochs",
        type=whole,
        default=0,
        help="AKP: epochs of a sample warm from the pool for every block (0: half of --epochs)",
    )
    p.add_argument(
        "--final-top-k",
        type=whole,
        help="final selection: architectures retrained at the end (default: 10, tables 0)",
    )
    p.add_argument(
        "--final-epochs", type=whole, default=0, help="epochs of the final retrain (0: 2 x epochs)"
    )


def whole(text: str) -> int:
    """A whole number >= 0 that fits the spec's 32-bit counts (protobuf would refuse it unnamed)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def fnas_option(text: str) -> tuple[str, float | int]:
    """FIELD=VALUE of --fnas, typed as the FnasOptions field; spec validation checks the range."""
    name, sep, raw = text.partition("=")
    field = FNAS_FIELDS.get(name)
    if not sep or field is None:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE with FIELD one of {', '.join(FNAS_FIELDS)}")
    if field.type != FieldDescriptor.TYPE_DOUBLE:
        try:
            return name, whole(raw)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{name}: {e}") from None
    try:
        return name, float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: {raw!r} is not a number") from None


def spec_from_args(args: argparse.Namespace) -> common_pb2.SearchSpec:
    """The SearchSpec the flags describe; the agent validates it."""
    if args.budget <= 0:
        raise ValueError(f"--budget must be > 0, got {args.budget}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.target_mult_adds < 0:  # a 64-bit count: beyond `whole`'s 32 bits
        raise ValueError(f"--target-mult-adds must be >= 0, got {args.target_mult_adds}")
    reward = common_pb2.RewardSpec(
        cost=REWARDS[args.reward],
        target_latency_ms=args.target_latency_ms,
        target_mult_adds=args.target_mult_adds,
    )
    if args.alpha is not None:
        reward.alpha = args.alpha
    if args.beta is not None:
        reward.beta = args.beta
    spec = common_pb2.SearchSpec(
        space=args.space,
        strategy=args.strategy,
        seed=args.seed,
        batch_size=args.batch_size,
        reward=reward,
        budget=common_pb2.Budget(max_activated_samples=args.budget),
        task=common_pb2.Task(
            dataset=args.dataset,
            epochs=args.epochs,
            pool_epochs=getattr(args, "pool_epochs", 0),
            simulated_seconds=args.simulated_seconds,
        ),
        name=args.name,
        pool_task=getattr(args, "pool_task", ""),
        final_epochs=getattr(args, "final_epochs", 0),
    )
    for module in ("uac", "aeb", "akp"):  # unset means on; only a switched-off module is written
        if getattr(args, f"no_{module}", False):
            setattr(spec.modules, module, False)
    for name, value in getattr(args, "fnas", []):
        setattr(spec.fnas, name, value)
    spec.critic_snapshot = getattr(args, "critic_snapshot", "")
    spec.critic_history.extend(h for h in getattr(args, "critic_history", "").split(",") if h)
    if getattr(args, "final_top_k", None) is not None:  # final selection (paper 6.2); unset: the default
        spec.final_top_k = args.final_top_k
    return spec


def run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    if args.trainers < 1:
        raise ValueError("--trainers must be >= 1")
    return asyncio.run(_run(args, spec))


async def _run(args: argparse.Namespace, spec: common_pb2.SearchSpec) -> int:
    if args.target:
        return await _search(args.target, spec, args)
    from services.agent.spec import validate
    from services.harness import Cluster

    # The agent would refuse these too, but only after the whole cluster had started.
    spec = validate(spec)
    _check_local_dataset(spec.task.dataset)
    async with Cluster(args.data_dir, trainers=args.trainers) as cluster:
        return await _search(cluster.agent_address, spec, args)


def _check_local_dataset(dataset: str) -> None:
    """ValueError when an npz: or imagefolder: dataset's path is missing (the trainers here would fail)."""
    for prefix in ("npz:", "imagefolder:"):
        if dataset.startswith(prefix) and not Path(dataset[len(prefix) :]).expanduser().exists():
            raise ValueError(f"--dataset {dataset}: no such file or folder")


async def _search(target: str, spec: common_pb2.SearchSpec, args: argparse.Namespace) -> int:
    # Token and TLS flags apply to a --target agent; the in-process cluster is plaintext and open.
    async with connection.client(args) if args.target else AgentClient(target) as client:
        search_id = await client.submit(spec)
        budget = spec.budget.max_activated_samples
        print(f"search {search_id}: {spec.space}, strategy {spec.strategy}, budget {budget}", file=sys.stderr)
        bar = output.Progress(spec.budget.max_activated_samples, enabled=not args.quiet)
        started = time.monotonic()
        trajectory: list[common_pb2.Sample] = []
        try:
            async for event in client.watch(search_id):
                if event.HasField("sample"):
                    trajectory.append(event.sample)
                elif event.HasField("update") or event.HasField("finished"):
                    status = event.update if event.HasField("update") else event.finished
                    bar.show(status.activated_samples, status.best.reward.value)
        except asyncio.CancelledError:
            await client.cancel(search_id)
            raise
        bar.close()
        status = await client.get(search_id)
        top = await client.top(search_id, args.top)
    output.print_result(status, top, time.monotonic() - started, trajectory)
    plot = args.plot or (args.json.with_suffix(".png") if args.json else None)
    if args.json:
        output.write_json(args.json, status, top, trajectory)
    if plot:
        table = output.table_of(status)
        title = f"{spec.space} {spec.strategy} seed {spec.seed}"
        output.plot_trajectory(plot, trajectory, title, table.top(0.001) if table else None)
    if args.json or plot:
        print(f"wrote {', '.join(str(p) for p in (args.json, plot) if p)}", file=sys.stderr)
    return 0 if status.state == search_pb2.SEARCH_STATE_SUCCEEDED else 1
