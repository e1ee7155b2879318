"""The plain in-memory loop of the `fnas` strategies: the agent's batch assembly without the mesh.

Same code path as the agent (`services.agent.assemble`), with the critic and
buffer cores called in-process instead of over gRPC, and the trainer's
evaluation as a plain function. Samples are numbered as the agent numbers them
(plan order, then replays), the critic and buffer observe each trained result
under its index, and their requests name the same `min_observed`, so a seeded
search gives the agent's trajectory exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from services.agent import assemble
from services.agent.fnas import FnasStrategy
from services.buffer.aeb import Entry
from services.buffer.core import BufferCore, LocalBuffer
from services.critic.core import CriticCore, LocalCritic
from services.critic.decision import DecisionConfig


@dataclass
class FnasRun:
    """What one plain fnas search produced."""

    #: Every policy sample in index order: (source, tokens, reward).
    samples: list[tuple[str, tuple[int, ...], float]] = field(default_factory=list)
    #: The trained (activated) samples in order: (tokens, reward).
    trajectory: list[tuple[tuple[int, ...], float]] = field(default_factory=list)
    calibration_error: float | None = None
    audits: int = 0

    def count(self, source: str) -> int:
        return sum(s == source for s, _, _ in self.samples)

    @property
    def sample_speedup(self) -> float:
        """Policy samples per activated sample."""
        return len(self.samples) / max(len(self.trajectory), 1)


def run_plain_fnas(
    strategy: FnasStrategy,
    evaluate: Callable[[tuple[int, ...]], float],
    budget: int,
    *,
    critic: CriticCore | None = None,
    buffer: BufferCore | None = None,
    search_id: str = "plain",
    decision: DecisionConfig | None = None,
    snapshot_id: str = "",
    history: Sequence[str] = (),
) -> FnasRun:
    """Runs `strategy` until `budget` activated samples; cores default to fresh in-memory ones."""
    return asyncio.run(
        arun_plain_fnas(
            strategy,
            evaluate,
            budget,
            critic=critic,
            buffer=buffer,
            search_id=search_id,
            decision=decision,
            snapshot_id=snapshot_id,
            history=history,
        )
    )


async def arun_plain_fnas(
    strategy: FnasStrategy,
    evaluate: Callable[[tuple[int, ...]], float],
    budget: int,
    *,
    critic: CriticCore | None = None,
    buffer: BufferCore | None = None,
    search_id: str = "plain",
    decision: DecisionConfig | None = None,
    snapshot_id: str = "",
    history: Sequence[str] = (),
) -> FnasRun:
    """`run_plain_fnas` inside a running event loop."""
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    critic = critic if critic is not None else CriticCore()
    buffer = buffer if buffer is not None else BufferCore()
    if strategy.fnas.uac:
        critic.open(search_id, strategy.space.id, strategy.seed, decision, snapshot_id, history)
    prior = bool(snapshot_id or history)
    return await _run(strategy, evaluate, budget, critic, buffer, search_id, prior)


async def _run(strategy, evaluate, budget, critic, buffer, search_id, prior) -> FnasRun:
    run = FnasRun()
    critic_port = LocalCritic(critic, search_id) if strategy.fnas.uac else None
    buffer_port = LocalBuffer(buffer, search_id) if strategy.fnas.aeb else None
    next_index = 0
    while len(run.trajectory) < budget:
        observed = len(run.trajectory)
        plan = await assemble.plan_batch(strategy, critic_port, observed, budget - observed, prior)
        rewards = {}
        for pos, p in enumerate(plan):
            if p.trains:  # the agent publishes these as TrainJobs with index next_index + pos
                reward = float(evaluate(p.tokens))
                rewards[pos] = reward
                run.trajectory.append((p.tokens, reward))
                critic.observe(search_id, strategy.space.id, next_index + pos, p.tokens, reward)
                buffer.add(search_id, Entry(next_index + pos, p.tokens, reward, p.log_prob))
        fresh = assemble.fresh_feedback(strategy, plan, rewards)
        replayed = await assemble.replays(strategy, buffer_port, len(fresh), observed, observed / budget)
        feedback = [f for _, f in fresh] + [f for _, f in replayed]
        strategy.update(feedback)
        run.samples.extend((f.source, f.tokens, f.reward) for f in feedback)
        next_index += len(plan) + len(replayed)
    run.calibration_error = strategy.calibration_error()
    run.audits = len(strategy.audits)
    return run
