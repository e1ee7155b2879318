"""The plain in-memory search loop: the yardstick the distributed mesh is compared with.

The agent's loop without the mesh, for every strategy: the same batch steps
(`services.agent.batch`: plan, settle recalls, fresh feedback, replays), with
the critic and buffer cores called in-process instead of over gRPC and the
trainer's evaluation as a plain function. Samples are numbered as the agent
numbers them (plan order, then replays), the critic and buffer observe each
trained result under its index, and their requests name the same
`min_observed`, so a seeded search gives the agent's trajectory exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.agent import batch
from services.agent.batch import BatchContext, Recalls
from services.agent.strategies import Strategy
from services.buffer.aeb import Entry
from services.buffer.core import BufferCore, LocalBuffer
from services.critic.core import CriticCore, LocalCritic
from services.critic.decision import DecisionConfig


@dataclass
class PlainRun:
    """What one plain search produced."""

    #: Every policy sample in index order: (SampleSource, tokens, reward).
    samples: list[tuple[int, tuple[int, ...], float]] = field(default_factory=list)
    #: The trained (activated) samples in order, each a distinct architecture: (tokens, reward).
    trajectory: list[tuple[tuple[int, ...], float]] = field(default_factory=list)
    calibration_error: float | None = None
    audits: int = 0

    def count(self, source: int) -> int:
        return sum(s == source for s, _, _ in self.samples)

    @property
    def sample_speedup(self) -> float:
        """Policy samples per activated sample."""
        return len(self.samples) / max(len(self.trajectory), 1)


def run_plain(
    strategy: Strategy, evaluate: Callable[[tuple[int, ...]], float], budget: int, **options: Any
) -> PlainRun:
    """`arun_plain` in a fresh event loop: runs `strategy` until `budget` activated samples (or it
    converges); `options` are arun_plain's keywords."""
    return asyncio.run(arun_plain(strategy, evaluate, budget, **options))


async def arun_plain(
    strategy: Strategy,
    evaluate: Callable[[tuple[int, ...]], float],
    budget: int,
    *,
    critic: CriticCore | None = None,
    buffer: BufferCore | None = None,
    search_id: str = "plain",
    decision: DecisionConfig | None = None,
    snapshot_id: str = "",
    history: Sequence[str] = (),
) -> PlainRun:
    """Runs `strategy` until `budget` activated samples, or until it converges; the critic and buffer
    cores default to fresh in-memory ones, opened with the decision, snapshot and history given."""
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    critic = (critic if critic is not None else CriticCore()) if strategy.uses_critic else None
    buffer = (buffer if buffer is not None else BufferCore()) if strategy.uses_buffer else None
    if critic is not None:
        critic.open(search_id, strategy.space.id, strategy.seed, decision, snapshot_id, history)
    critic_port = LocalCritic(critic, search_id) if critic is not None else None
    buffer_port = LocalBuffer(buffer, search_id) if buffer is not None else None
    run, recalls = PlainRun(), Recalls(strategy.space.key)
    next_index = idle = 0
    while len(run.trajectory) < budget and idle < batch.MAX_IDLE_BATCHES:
        observed = len(run.trajectory)
        context = BatchContext(
            size=strategy.batch_size,
            max_trained=min(strategy.batch_size, budget - observed),
            observed=observed,
            recalls=recalls,
            critic=critic_port,
            buffer=buffer_port,
            progress=observed / budget,
        )
        plan = batch.settle(await strategy.plan(context), recalls)
        if not plan:
            break
        rewards = {}
        for pos, p in enumerate(plan):
            if p.trains:  # the agent publishes these as TrainJobs with index next_index + pos
                reward = rewards[pos] = float(evaluate(p.tokens))
                run.trajectory.append((p.tokens, reward))
                if critic is not None:
                    critic.observe(search_id, strategy.space.id, next_index + pos, p.tokens, reward)
                if buffer is not None:
                    buffer.add(search_id, Entry(next_index + pos, p.tokens, reward, p.log_prob))
        fresh = batch.fresh_feedback(plan, rewards, strategy.audits)
        learned = [f for pos, f in fresh if plan[pos].learned]
        replayed = [f for _, f in await strategy.replays(context, len(learned))]
        if learned or replayed:
            strategy.update(learned + replayed)
        for pos, reward in rewards.items():
            recalls.add(plan[pos].tokens, next_index + pos, reward)
        idle = 0 if rewards else idle + 1
        run.samples.extend((f.source, f.tokens, f.reward) for f in learned + replayed)
        next_index += len(plan) + len(replayed)
    run.calibration_error = strategy.calibration_error()
    run.audits = len(strategy.audits)
    return run


def samples_to_reach(rewards: Sequence[float], threshold: float) -> int | None:
    """1-based count of activated samples until the first reward >= threshold; None if never."""
    for i, r in enumerate(rewards, start=1):
        if r >= threshold:
            return i
    return None
