"""`fnas bench load`: many concurrent searches on one host, with the tabular trainer.

The in-process cluster (NATS, agent, critic, buffer, trainers; the same code as
`fnas serve ...`) runs `searches` PPO searches at once on a NAS-Bench-Graph
table. Every client polls its search with GetSearch, as a dashboard would; each
call's latency is measured at the client (p50 / p99 over all RPCs). A sampler
reads the JetStream consumers every `sample_s`: the job backlog (jobs not yet
delivered or not yet acked by a trainer) and the result lag (results the agent
has not consumed). At the end every search must have SUCCEEDED with exactly
its budget counted, and the EVENTS stream must hold one OK result per counted
sample: errors and lost samples are reported, and expected to be 0.
"""

from __future__ import annotations

import asyncio
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fnas import events, waits
from fnas.client import AgentClient
from fnas.v1 import common_pb2, queue_pb2, search_pb2


@dataclass(frozen=True)
class LoadConfig:
    """One load run."""

    searches: int = 20
    """Searches submitted at once."""
    budget: int = 100
    """Activated samples per search."""
    trainers: int = 4
    """Trainer workers of the in-process cluster."""
    space: str = "nasbench-graph/cora"
    """A tabular space (the trainer looks results up)."""
    strategy: str = "ppo"
    """Strategy of every search."""
    simulated_s: float = 0.0
    """Emulated training seconds per sample (0: as fast as the table answers)."""
    poll_s: float = 0.2
    """Seconds between a client's GetSearch calls."""
    sample_s: float = 0.25
    """Seconds between reads of the queue lag."""

    def __post_init__(self) -> None:
        if min(self.searches, self.budget, self.trainers) < 1:
            raise ValueError("searches, budget and trainers must be >= 1")
        if self.simulated_s < 0 or self.poll_s <= 0 or self.sample_s <= 0:
            raise ValueError("simulated_s must be >= 0, poll_s and sample_s > 0")


async def run(cfg: LoadConfig, data_dir: Path, progress: Callable[[str], None] = lambda _: None) -> dict:
    """Runs the load and returns the figures (see the module docstring)."""
    from services.harness import Cluster  # services and torch: only when the benchmark runs

    data_dir.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix="load-", dir=data_dir))  # never resume an earlier run's searches
    latencies: list[float] = []
    errors: list[str] = []
    lag: list[tuple[float, int, int]] = []
    async with (
        Cluster(fresh, trainers=cfg.trainers) as cluster,
        AgentClient(cluster.agent_address) as client,
    ):
        stop = asyncio.Event()
        started, cpu0 = time.perf_counter(), _cpu_s()
        sampler = asyncio.create_task(_sample_lag(cluster, cfg.sample_s, started, lag, stop))

        async def timed(call):
            t0 = time.perf_counter()
            try:
                return await call
            finally:
                latencies.append(time.perf_counter() - t0)

        async def one(i: int) -> search_pb2.SearchStatus | None:
            try:
                search_id = await timed(client.submit(_spec(cfg, seed=i)))
                while True:
                    status = await timed(client.get(search_id))
                    if status.state != search_pb2.SEARCH_STATE_RUNNING:
                        return status
                    await asyncio.sleep(cfg.poll_s)
            except Exception as e:  # counted, not raised: the figures say how many
                errors.append(f"search {i}: {type(e).__name__}: {e}")
                return None

        statuses = await asyncio.gather(*(one(i) for i in range(cfg.searches)))
        wall_s, cpu_s = time.perf_counter() - started, _cpu_s() - cpu0
        stop.set()
        await sampler
        progress(f"{cfg.searches} searches done in {wall_s:.1f} s; checking the results stream")
        counted = await _stream_counts(cluster)
    figures = _figures(cfg, statuses, counted, latencies, errors, lag, wall_s)
    # The cluster shares one process: its CPU use says whether the host or the code set the pace.
    figures["cpu_seconds"] = cpu_s
    figures["cpu_cores_used"] = cpu_s / wall_s
    return figures


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _spec(cfg: LoadConfig, seed: int) -> common_pb2.SearchSpec:
    return common_pb2.SearchSpec(
        space=cfg.space,
        strategy=cfg.strategy,
        seed=seed,
        budget=common_pb2.Budget(max_activated_samples=cfg.budget),
        task=common_pb2.Task(simulated_seconds=cfg.simulated_s),
        name=f"load-{seed}",
    )


async def _sample_lag(cluster, every_s: float, t0: float, out: list, stop: asyncio.Event) -> None:
    """(seconds, job backlog, result lag) every `every_s` until stopped."""
    import nats

    nc = await nats.connect(cluster.nats_url)
    js = nc.jetstream()
    try:
        while not stop.is_set():
            try:
                jobs = await js.consumer_info(events.JOBS, events.TRAINER)
                results = await js.consumer_info(events.EVENTS, events.AGENT)
                backlog = int(jobs.num_pending or 0) + int(jobs.num_ack_pending or 0)
                out.append((time.perf_counter() - t0, backlog, int(results.num_pending or 0)))
            except Exception:  # a sample lost is not an error of the system under test
                pass
            await waits.wait_event(stop, every_s)
    finally:
        await nc.close()


async def _stream_counts(cluster) -> dict[str, int]:
    """OK TrainResults per search held by the EVENTS stream (one per job: JetStream de-duplicates)."""
    import nats

    nc = await nats.connect(cluster.nats_url)
    counts: dict[str, set[int]] = {}
    try:
        sub = await nc.jetstream().pull_subscribe(events.ALL_TRAIN_RESULTS, stream=events.EVENTS)
        while True:
            try:
                msgs = await sub.fetch(1024, timeout=1.0)
            except TimeoutError:
                break
            for msg in msgs:
                r = queue_pb2.TrainResult.FromString(msg.data)
                if r.outcome == queue_pb2.TRAIN_OUTCOME_OK and not r.final_rank:  # retrains are no samples
                    counts.setdefault(r.search_id, set()).add(r.sample_index)
                await msg.ack()
        await sub.unsubscribe()
    finally:
        await nc.close()
    return {k: len(v) for k, v in counts.items()}


def _figures(cfg, statuses, counted, latencies, errors, lag, wall_s) -> dict:
    done = [s for s in statuses if s is not None]
    failed = [s for s in done if s.state != search_pb2.SEARCH_STATE_SUCCEEDED]
    errors = errors + [
        f"search {s.search_id}: {search_pb2.SearchState.Name(s.state)} {s.error}" for s in failed
    ]
    activated = sum(s.activated_samples for s in done)
    # Lost: a trained result in the stream the agent did not count (or a count without its result), or
    # a search that "succeeded" short of its budget. A search that failed is an error, counted above.
    succeeded = [s for s in done if s.state == search_pb2.SEARCH_STATE_SUCCEEDED]
    lost = sum(abs(counted.get(s.search_id, 0) - s.activated_samples) for s in done)
    lost += sum(max(0, cfg.budget - s.activated_samples) for s in succeeded)
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    backlog = np.array([b for _, b, _ in lag]) if lag else np.zeros(1)
    result_lag = np.array([r for _, _, r in lag]) if lag else np.zeros(1)
    return {
        "config": asdict(cfg),
        "wall_seconds": wall_s,
        "activated_samples": activated,
        "throughput_samples_per_s": activated / wall_s,
        "rpc_calls": len(latencies),
        "rpc_latency_ms": {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))},
        "queue": {
            "job_backlog_max": int(backlog.max()),
            "job_backlog_p50": float(np.percentile(backlog, 50)),
            "result_lag_max": int(result_lag.max()),
            "result_lag_p50": float(np.percentile(result_lag, 50)),
            "samples": [list(x) for x in lag],
        },
        "errors": len(errors),
        "error_messages": errors[:20],
        "lost_samples": lost,
        "searches": [
            {"search_id": s.search_id, "activated": s.activated_samples, "best": s.best.reward.value}
            for s in done
        ],
        "latencies_ms": [float(x) for x in ms],
    }


def table(result: dict) -> str:
    """The headline figures as text."""
    c, q, lat = result["config"], result["queue"], result["rpc_latency_ms"]
    return "\n".join(
        [
            f"{c['searches']} concurrent searches x {c['budget']} samples, "
            f"{c['trainers']} trainers, {c['space']}",
            f"throughput      {result['throughput_samples_per_s']:.1f} activated samples/s "
            f"({result['activated_samples']} in {result['wall_seconds']:.1f} s, "
            f"{result.get('cpu_cores_used', 0):.2f} CPU cores used)",
            f"RPC latency     p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms ({result['rpc_calls']} calls)",
            f"job backlog     max {q['job_backlog_max']}, p50 {q['job_backlog_p50']:.0f} jobs",
            f"result lag      max {q['result_lag_max']}, p50 {q['result_lag_p50']:.0f} results",
            f"errors          {result['errors']}",
            f"lost samples    {result['lost_samples']}",
        ]
    )


def plot(result: dict, path: Path) -> None:
    """Queue lag over time and the RPC latency distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    samples = result["queue"]["samples"]
    if samples:
        t, backlog, lag = zip(*samples, strict=True)
        a.plot(t, backlog, label="job backlog (pending + unacked)")
        a.plot(t, lag, label="result lag (agent consumer)")
    a.set_xlabel("seconds")
    a.set_ylabel("messages")
    a.set_title(f"{result['throughput_samples_per_s']:.0f} activated samples/s")
    a.legend()
    b.hist(result["latencies_ms"], bins=50)
    lat = result["rpc_latency_ms"]
    b.set_xlabel(f"client RPC latency, ms (p50 {lat['p50']:.1f}, p99 {lat['p99']:.1f})")
    b.set_ylabel("calls")
    b.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_parser(sub) -> None:
    """Registers `fnas bench load` on the `fnas bench` subparsers."""
    d = LoadConfig()
    p = sub.add_parser("load", help="many concurrent searches on one host: throughput, latency, queue lag")
    p.add_argument("--searches", type=int, default=d.searches, help="concurrent searches")
    p.add_argument("--budget", type=int, default=d.budget, help="activated samples per search")
    p.add_argument("--trainers", type=int, default=d.trainers, help="trainer workers")
    p.add_argument("--space", default=d.space, help="a tabular space")
    p.add_argument("--strategy", default=d.strategy, help="the strategy of every search (see fnas search)")
    p.add_argument("--simulated-seconds", type=float, default=d.simulated_s, help="emulated training time")
    p.add_argument(
        "--data-dir", type=Path, default=Path("fnas-data/bench-load"), help="state (a fresh subdir)"
    )
    p.add_argument("--out", type=Path, default=Path("bench-out/load"), help="writes OUT.json and OUT.png")
    p.set_defaults(func=main)


def main(args) -> int:
    """`fnas bench load`: runs, prints the figures, writes JSON and PNG; exit 1 on errors or lost samples."""
    import sys

    from fnas_bench import report

    cfg = LoadConfig(
        searches=args.searches,
        budget=args.budget,
        trainers=args.trainers,
        space=args.space,
        strategy=args.strategy,
        simulated_s=args.simulated_seconds,
    )
    result = asyncio.run(run(cfg, args.data_dir, progress=lambda s: print(s, file=sys.stderr, flush=True)))
    report.emit(result, table(result), args.out, plot)
    return 0 if result["errors"] == 0 and result["lost_samples"] == 0 else 1
