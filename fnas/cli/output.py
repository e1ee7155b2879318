"""What the CLI shows and writes: a progress bar, the result table, JSON and a plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from google.protobuf import json_format

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


def print_result(status: search_pb2.SearchStatus, top: list[common_pb2.Sample], seconds: float) -> None:
    state = search_pb2.SearchState.Name(status.state).removeprefix("SEARCH_STATE_").lower()
    print(
        f"search {status.search_id} {state} in {seconds:.1f}s: {status.activated_samples} activated samples, "
        f"{status.updates} policy updates, {status.failed_samples} failed"
    )
    if status.error:
        print(f"error: {status.error}")
    if status.policy_samples_critic or status.policy_samples_buffer:  # the fnas modules (paper 4.2, 5)
        cal = f"{status.calibration_error:.4f}" if status.HasField("calibration_error") else "-"
        print(
            f"policy samples: {status.policy_samples_trained} trained, "
            f"{status.policy_samples_critic} critic, {status.policy_samples_buffer} buffer; "
            f"sample speedup {status.sample_speedup:.2f}x; "
            f"critic calibration error {cal} on {status.calibration_samples} audited"
        )
    header = f"{'rank':>4} {'reward':>8} {'accuracy':>8} {'latency_ms':>10} {'mult_adds':>12} {'sample':>6}"
    print(f"{header}  architecture")
    for rank, s in enumerate(top, 1):
        r = s.reward
        print(
            f"{rank:>4} {r.value:>8.4f} {r.accuracy:>8.4f} {r.latency_ms:>10.3f} {r.mult_adds:>12,} "
            f"{s.index:>6}  {_short(s.architecture.tokens)}"
        )
    _print_akp_and_final(status)


def _print_akp_and_final(status: search_pb2.SearchStatus) -> None:
    """The AKP hit ratio (paper 4.3) and the final selection's ranking (paper 6.2), when there are any."""
    matched, queried = status.pool_blocks_matched, status.pool_blocks_queried
    if queried:
        print(f"AKP: {matched}/{queried} blocks initialised from the pool, hit ratio {matched / queried:.3f}")
    if not status.final_ranking:
        return
    print(f"final selection: the top {len(status.final_ranking)} retrained for "
          f"{status.final_ranking[0].epochs} epochs, ranked by final reward")  # fmt: skip
    print(f"{'final':>5} {'reward':>8} {'accuracy':>8} {'search':>8} {'sample':>6}  architecture")
    for c in status.final_ranking:
        r = c.final_reward
        figures = f"{'failed':>8} {'':>8}" if c.error else f"{r.value:>8.4f} {r.accuracy:>8.4f}"
        tokens = _short(c.sample.architecture.tokens)
        error = f"  {c.error}" if c.error else ""
        print(f"{c.rank:>5} {figures} {c.sample.reward.value:>8.4f} {c.sample.index:>6}  {tokens}{error}")


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
        },
        # FNAS accounting: policy samples per activated sample, and the UAC calibration check.
        "sample_speedup": status.sample_speedup,
        "calibration_error": status.calibration_error if status.HasField("calibration_error") else None,
        "calibration_samples": status.calibration_samples,
        "failed_samples": status.failed_samples,
        "updates": status.updates,
        "top": [_sample(s) for s in top],
        "akp": {
            "blocks_queried": status.pool_blocks_queried,
            "blocks_matched": status.pool_blocks_matched,
            "hit_ratio": (status.pool_blocks_matched / status.pool_blocks_queried)
            if status.pool_blocks_queried
            else None,
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
        "source": common_pb2.SampleSource.Name(s.source).removeprefix("SAMPLE_SOURCE_").lower(),
    }


def write_json(path: Path, status, top, trajectory) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result_dict(status, top, trajectory), indent=1) + "\n")


def plot_trajectory(path: Path, trajectory: list[common_pb2.Sample], title: str) -> None:
    """Reward of each trained sample against activated samples, with the running best (paper Fig. 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = [s for s in trajectory if s.source == common_pb2.SAMPLE_SOURCE_TRAINED]
    rewards = [s.reward.value for s in trained]
    best, running = float("-inf"), []
    for r in rewards:
        best = max(best, r)
        running.append(best)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(range(1, len(rewards) + 1), rewards, s=6, alpha=0.5, label="trained sample")
    ax.plot(range(1, len(rewards) + 1), running, color="tab:green", label="best so far")
    ax.set_xlabel("activated samples")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
