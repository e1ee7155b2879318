"""What the CLI shows and writes: a progress bar, the result table, JSON and a plot."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

from google.protobuf import json_format

from fnas.sources import SOURCES, label
from fnas.v1 import common_pb2, search_pb2


class Progress:
    """A tqdm bar of activated samples with rate, ETA and the best reward; off unless stderr is a terminal."""

    def __init__(self, total: int, enabled: bool = True, stream=sys.stderr) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=max(total, 1),
            unit="sample",
            desc="activated",
            file=stream,
            disable=None if enabled else True,  # None: off when the stream is not a terminal
            dynamic_ncols=True,
        )

    def show(self, done: int, best: float) -> None:
        if self.bar.disable:
            return
        self.bar.set_postfix_str(f"best {best:.4f}", refresh=False)
        self.bar.update(min(done, self.bar.total) - self.bar.n)

    def close(self) -> None:
        self.bar.close()


#: Below this many audited samples the calibration error is printed as not yet meaningful.
MIN_AUDITS = 10


def activated_order(trajectory: list[common_pb2.Sample]) -> dict[int, int]:
    """Sample index -> its place among the trained (activated) samples, 1-based, in sample order."""
    trained = sorted(s.index for s in trajectory if s.source == common_pb2.SAMPLE_SOURCE_TRAINED)
    return {index: n for n, index in enumerate(trained, 1)}


def table_of(status: search_pb2.SearchStatus):
    """The benchmark table of a tabular space by the search's reward (fnas.standing.Table), else None."""
    return _table(status.spec.space, status.spec.reward.SerializeToString(deterministic=True))


@functools.cache  # the result table and the plot ask for the same one: rewarding 26,206 rows once
def _table(space_id: str, reward: bytes):
    from fnas import spaces, standing

    if not _tabular(space_id):
        return None
    return standing.Table(spaces.get(space_id), common_pb2.RewardSpec.FromString(reward))


def print_result(
    status: search_pb2.SearchStatus,
    top: list[common_pb2.Sample],
    seconds: float,
    trajectory: list[common_pb2.Sample] = (),
) -> None:
    """The summary, the sources of the policy samples and the best architectures, with their standing."""
    state = search_pb2.SearchState.Name(status.state).removeprefix("SEARCH_STATE_").lower()
    print(
        f"search {status.search_id} {state} in {seconds:.1f}s: {status.activated_samples} activated "
        f"(trained) samples, {status.updates} policy updates, {status.failed_samples} failed"
    )
    if status.error:
        print(f"error: {status.error}")
    if status.policy_samples_critic or status.policy_samples_buffer or status.policy_samples_recall:
        # The sources only the critic and buffer give, where they ran (the counts: an agent whose specs
        # did not yet say which modules ran).
        m = status.spec.modules
        parts = [f"{status.policy_samples_trained} trained"]
        if m.uac or status.policy_samples_critic:
            parts.append(f"{status.policy_samples_critic} trusted to the critic")
        if m.aeb or status.policy_samples_buffer:
            parts.append(f"{status.policy_samples_buffer} replayed from the buffer")
        parts.append(f"{status.policy_samples_recall} recalled (trained before in this search)")
        print(
            f"policy samples: {', '.join(parts)}; "
            f"sample speedup {status.sample_speedup:.2f}x (policy samples per activated sample)"
        )
        if status.policy_samples_critic or status.calibration_samples:
            print(calibration_line(status))
    print(compute_line(status))
    table = table_of(status)
    order = activated_order(trajectory) if trajectory else {}
    mnas = status.spec.space == "mnas"
    header = [f"{'rank':>4} {'reward':>8} {'accuracy':>8} {'latency_ms':>10}"]
    header += [f" {'mult_adds':>12}"] if mnas else []
    header += [f" {'activated#':>10}"] if order else []
    header += [f"  {'table rank':<22}"] if table is not None else []
    print(f"{''.join(header)}  architecture")
    for rank, s in enumerate(top, 1):
        r = s.reward
        # Columns as parts: an f-string times a boolean is evaluated even where it is not shown.
        line = [f"{rank:>4} {r.value:>8.4f} {r.accuracy:>8.4f} {r.latency_ms:>10.3f}"]
        line += [f" {r.mult_adds:>12,}"] if mnas else []
        line += [f" {order.get(s.index, ''):>10}"] if order else []
        line += [f"  {table.standing(r.value)!s:<22}"] if table is not None else []
        print(f"{''.join(line)}  {_short(s.architecture.tokens)}")
    if order:
        print("activated#: the trained sample that found it (1 = the first trained)")
    _print_akp_and_final(status, order)


def compute_line(status: search_pb2.SearchStatus) -> str:
    """The search's compute: trainer-seconds of training (the paper's GPU hours); setup, evaluation apart."""
    if not status.spec.task.simulated_seconds and _tabular(status.spec.space):  # only a table lookup's time
        return "compute: no training (the benchmark table answers every sample)"
    line = (
        f"compute: {status.trainer_seconds:.1f} trainer-seconds of training "
        f"({status.trainer_seconds / 3600:.3f} trainer-hours), {status.trainer_setup_seconds:.1f} s setup, "
        f"{status.trainer_evaluate_seconds:.1f} s evaluation"
    )
    if status.final_ranking:
        line += f"; final selection {status.final_trainer_seconds:.1f} s"
    return line


def _tabular(space_id: str) -> bool:
    from fnas import spaces

    try:
        return spaces.get(space_id).tabular
    except spaces.UnknownSpace:  # a space of a newer agent
        return False


def calibration_line(status: search_pb2.SearchStatus) -> str:
    """The critic's calibration check: its mean error where it claimed to be right, in reward units."""
    n = status.calibration_samples
    if not status.HasField("calibration_error") or n < MIN_AUDITS:
        return f"critic calibration: not yet meaningful ({n} of the {MIN_AUDITS} audited samples it needs)"
    return (
        f"critic calibration: mean |V - R| {status.calibration_error:.4f} (reward units) "
        f"over {n} audited samples (would-be trusted, trained anyway)"
    )


def _print_akp_and_final(status: search_pb2.SearchStatus, order: dict[int, int]) -> None:
    """The AKP hit ratio (paper 4.3) and the final selection's ranking (paper 6.2), when there are any.

    `order` (sample index -> activated#) numbers the final candidates as the best architectures' table
    does; without a trajectory they carry their sample index.
    """
    matched, queried = status.pool_blocks_matched, status.pool_blocks_queried
    if queried:
        task = status.spec.task
        print(
            f"AKP: {matched}/{queried} blocks initialised from the pool, hit ratio {matched / queried:.3f}; "
            f"{status.pool_warm_samples} samples warm from the pool trained {_epochs(task.pool_epochs)}, "
            f"the other {status.activated_samples - status.pool_warm_samples} {_epochs(task.epochs)}"
        )
    if not status.final_ranking:
        return
    print(f"final selection: the top {len(status.final_ranking)} retrained for "
          f"{_epochs(status.final_ranking[0].epochs)}, ranked by final reward")  # fmt: skip
    found = "activated#" if order else "sample"
    print(f"{'final':>5} {'reward':>8} {'accuracy':>8} {'search':>8} {found:>10}  architecture")
    for c in status.final_ranking:
        r = c.final_reward
        figures = f"{'failed':>8} {'':>8}" if c.error else f"{r.value:>8.4f} {r.accuracy:>8.4f}"
        tokens = _short(c.sample.architecture.tokens)
        error = f"  {c.error}" if c.error else ""
        which = order.get(c.sample.index, "") if order else c.sample.index
        print(f"{c.rank:>5} {figures} {c.sample.reward.value:>8.4f} {which:>10}  {tokens}{error}")


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _final(c: search_pb2.FinalCandidate) -> dict:
    return {
        "rank": c.rank,
        "final_reward": c.final_reward.value,
        "final_accuracy": c.final_reward.accuracy,
        "epochs": c.epochs,
        "seed": c.seed,
        "error": c.error,
        "search_sample": _sample(c.sample),
    }


def _short(tokens) -> str:
    text = ",".join(str(t) for t in tokens)
    return text if len(text) <= 60 else text[:57] + "..."


def result_dict(
    status: search_pb2.SearchStatus, top: list[common_pb2.Sample], trajectory: list[common_pb2.Sample]
) -> dict:
    """The JSON result of a search: status, best architectures, and the trajectory in sample order."""
    return {
        "search_id": status.search_id,
        "state": search_pb2.SearchState.Name(status.state),
        "spec": json_format.MessageToDict(status.spec, preserving_proto_field_name=True),
        "activated_samples": status.activated_samples,
        "policy_samples": {
            "trained": status.policy_samples_trained,
            "critic": status.policy_samples_critic,
            "buffer": status.policy_samples_buffer,
            "recall": status.policy_samples_recall,
        },
        # FNAS accounting: policy samples per activated sample, and the UAC calibration check.
        "sample_speedup": status.sample_speedup,
        "calibration_error": status.calibration_error if status.HasField("calibration_error") else None,
        "calibration_samples": status.calibration_samples,
        "failed_samples": status.failed_samples,
        # Compute: trainer-seconds of the search's jobs by phase, and of the final selection apart.
        "compute": {
            "trainer_seconds": status.trainer_seconds,
            "setup_seconds": status.trainer_setup_seconds,
            "evaluate_seconds": status.trainer_evaluate_seconds,
            "final_selection_seconds": status.final_trainer_seconds,
        },
        "updates": status.updates,
        "top": [_sample(s) for s in top],
        "akp": {
            "blocks_queried": status.pool_blocks_queried,
            "blocks_matched": status.pool_blocks_matched,
            "hit_ratio": (status.pool_blocks_matched / status.pool_blocks_queried)
            if status.pool_blocks_queried
            else None,
            # The rule (paper Table 4): a sample warm from the pool for every block trains pool_epochs.
            "warm_samples": status.pool_warm_samples,
            "pool_epochs": status.spec.task.pool_epochs,
            "epochs": status.spec.task.epochs,
        },
        "final_ranking": [_final(c) for c in status.final_ranking],
        "trajectory": [_sample(s) for s in trajectory],
    }


def _sample(s: common_pb2.Sample) -> dict:
    return {
        "index": s.index,
        "tokens": list(s.architecture.tokens),
        "reward": s.reward.value,
        "accuracy": s.reward.accuracy,
        "latency_ms": s.reward.latency_ms,
        "mult_adds": s.reward.mult_adds,
        "params": s.reward.params,
        "source": label(s.source),
    }


def write_json(path: Path, status, top, trajectory) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result_dict(status, top, trajectory), indent=1) + "\n")


def plot_trajectory(
    path: Path, trajectory: list[common_pb2.Sample], title: str, top_reward: float | None = None
) -> None:
    """Every policy sample's reward against the activated samples so far, by source, with the running
    best of the trained ones (paper Fig. 4) and, for a table, the reward of its top 0.1%."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points: dict[str, tuple[list[int], list[float]]] = {label(source): ([], []) for source in SOURCES}
    activated, best, running = 0, float("-inf"), []
    for s in sorted(trajectory, key=lambda s: s.index):
        source = label(s.source)
        if source == "trained":
            activated += 1
            best = max(best, s.reward.value)
            running.append(best)
        xs, ys = points.setdefault(source, ([], []))
        xs.append(activated)
        ys.append(s.reward.value)
    fig, ax = plt.subplots(figsize=(7, 4))
    style = {
        "trained": dict(color="tab:blue", marker="o", label="trained (activated)"),
        "critic": dict(color="tab:orange", marker="^", label="trusted to the critic (V)"),
        "buffer": dict(color="tab:purple", marker="s", label="replayed from the buffer"),
        "recall": dict(color="tab:gray", marker="x", label="recalled (trained once)"),
    }
    for name, (xs, ys) in points.items():
        if xs:
            ax.scatter(xs, ys, s=8, alpha=0.5, **style.get(name, {"label": name}))
    ax.plot(range(1, len(running) + 1), running, color="tab:green", label="best trained so far")
    if top_reward is not None:
        ax.axhline(top_reward, color="tab:red", linestyle="--", linewidth=1, label="table's top 0.1%")
    ax.set_xlabel("activated (trained) samples")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
