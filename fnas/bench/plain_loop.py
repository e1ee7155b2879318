"""The plain in-memory search loop: the yardstick the distributed mesh is compared with.

propose a batch -> evaluate each proposal -> update, until `budget` activated
samples. Every evaluated proposal is an activated sample, duplicates included:
MNAS trains a re-sampled architecture again, so nothing is cached here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from services.agent.strategies import Feedback, Strategy


def run_plain(
    strategy: Strategy, evaluate: Callable[[tuple[int, ...]], float], budget: int
) -> list[tuple[tuple[int, ...], float]]:
    """Runs `strategy` for `budget` evaluations; returns the (tokens, reward) trajectory in order.

    The last batch is cut to what is left of the budget and still updates the strategy.
    """
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    trajectory: list[tuple[tuple[int, ...], float]] = []
    while len(trajectory) < budget:
        proposals = strategy.propose(min(strategy.batch_size, budget - len(trajectory)))
        feedback = [Feedback(p.tokens, float(evaluate(p.tokens)), p.log_prob) for p in proposals]
        strategy.update(feedback)
        trajectory.extend((f.tokens, f.reward) for f in feedback)
    return trajectory


def samples_to_reach(rewards: Sequence[float], threshold: float) -> int | None:
    """1-based count of activated samples until the first reward >= threshold; None if never."""
    for i, r in enumerate(rewards, start=1):
        if r >= threshold:
            return i
    return None
