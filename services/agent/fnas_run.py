"""The steps of a search run that differ for the `fnas` strategies: plan a batch, learn from it.

`SearchRun` calls these with itself; the batch assembly is
`services.agent.assemble` (the code the plain loop runs too), with the critic
and buffer services behind their gRPC ports. The plan is part of the strategy's
checkpoint, so an agent restarted between planning and learning neither asks
the critic again nor loses which samples were trusted.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from fnas.v1 import common_pb2, queue_pb2, search_pb2
from services.agent import assemble, metrics
from services.agent.assemble import BUFFER, CRITIC, RECALL, TRAINED, Planned
from services.agent.fnas import FnasStrategy
from services.agent.spec import uses_buffer, uses_critic
from services.agent.store import LoopState, Pending
from services.buffer.client import RemoteBuffer
from services.critic.client import RemoteCritic

if TYPE_CHECKING:
    from services.agent.search_run import SearchRun

SOURCES = {
    TRAINED: common_pb2.SAMPLE_SOURCE_TRAINED,
    CRITIC: common_pb2.SAMPLE_SOURCE_CRITIC,
    BUFFER: common_pb2.SAMPLE_SOURCE_BUFFER,
    RECALL: common_pb2.SAMPLE_SOURCE_RECALL,
}


class MissingService(RuntimeError):
    """The search needs a critic or buffer service that this agent was not given."""


async def open_search(run: SearchRun, strategy: FnasStrategy) -> None:
    """Creates the search's critic (idempotent, so also on resume), from a snapshot or history if asked."""
    if uses_critic(run.spec):
        if run.critic is None:
            raise MissingService("this agent has no critic service (set --critic-address)")
        await run.critic.open_search(
            run.search_id,
            run.space.id,
            run.spec.seed,
            run.spec.fnas,
            run.spec.critic_snapshot,
            list(run.spec.critic_history),
            run.store.status(run.search_id).tenant,
        )
    if uses_buffer(run.spec) and run.buffer is None:
        raise MissingService("this agent has no buffer service (set --buffer-address)")


async def propose(run: SearchRun, strategy: FnasStrategy, loop: LoopState) -> None:
    """Plans the next batch (critic decisions included) and queues its train jobs in loop.pending."""
    status = run.store.status(run.search_id)
    budget = run.spec.budget
    max_trained = strategy.batch_size
    if budget.max_activated_samples:
        max_trained = min(max_trained, budget.max_activated_samples - status.activated_samples)
    critic = RemoteCritic(run.critic, run.search_id, run.space.id) if uses_critic(run.spec) else None
    prior = bool(run.spec.critic_snapshot or run.spec.critic_history)
    plan = await assemble.plan_batch(strategy, critic, status.activated_samples, max_trained, prior)
    strategy.plan = [p.to_dict() for p in plan]
    strategy.plan_index, strategy.plan_observed = loop.next_index, status.activated_samples
    loop.pending = [
        Pending(loop.next_index + pos, list(p.tokens), p.log_prob) for pos, p in enumerate(plan) if p.trains
    ]
    loop.next_index += len(plan)


async def learn(
    run: SearchRun, strategy: FnasStrategy, loop: LoopState, results: list[queue_pb2.TrainResult]
) -> None:
    """PPO update on trained + trusted + replayed samples; commits counters, events and checkpoint."""
    plan = [Planned.from_dict(d) for d in strategy.plan]
    base = strategy.plan_index
    by_index = {p.index: r for p, r in zip(loop.pending, results, strict=True)}
    trained: dict[int, queue_pb2.TrainResult] = {}
    for pos, p in enumerate(plan):
        r = by_index.get(base + pos) if p.trains else None
        if r is not None and r.outcome == queue_pb2.TRAIN_OUTCOME_OK:
            trained[pos] = r
    if results and not trained:
        raise RuntimeError(f"every sample of a batch failed to train; first error: {results[0].error}")
    fresh = assemble.fresh_feedback(strategy, plan, {pos: r.reward.value for pos, r in trained.items()})
    budget = run.spec.budget
    if budget.max_activated_samples:
        progress = strategy.plan_observed / budget.max_activated_samples
    else:
        status = run.store.status(run.search_id)
        progress = policy_samples(status) / max(budget.max_policy_samples, 1)
    buffer = RemoteBuffer(run.buffer, run.search_id) if uses_buffer(run.spec) else None
    replayed = await assemble.replays(strategy, buffer, len(fresh), strategy.plan_observed, progress)
    feedback = [f for _, f in fresh] + [f for _, f in replayed]
    train_stats = strategy.update(feedback) if feedback else {}
    samples = []
    for pos, f in fresh:
        p = plan[pos]
        shared = f.source in (TRAINED, RECALL)
        reward = trained[p.copy_of if p.copy_of >= 0 else pos].reward if shared else None
        samples.append(_sample(run, f, base + pos, reward))
    samples += [_sample(run, f, loop.next_index + j) for j, (_, f) in enumerate(replayed)]
    loop.next_index += len(replayed)
    loop.pending = []
    strategy.plan = []
    counts = Counter(f.source for f in feedback)
    calibration = strategy.calibration_error()

    def mutate(status: search_pb2.SearchStatus) -> None:
        status.policy_samples_trained += counts[TRAINED]
        status.policy_samples_critic += counts[CRITIC]
        status.policy_samples_buffer += counts[BUFFER]
        status.policy_samples_recall += counts[RECALL]
        status.updates += 1 if feedback else 0
        if calibration is not None:
            status.calibration_error = calibration
        status.calibration_samples = len(strategy.audits)
        status.sample_speedup = speedup(status)

    def events(status: search_pb2.SearchStatus) -> list[search_pb2.SearchEvent]:
        return [*(run._event(loop, sample=s) for s in samples), run._event(loop, update=status)]

    status, new_events = run.store.commit(run.search_id, mutate, strategy.state(), loop, samples, events)
    metrics.observe_batch(status, counts[TRAINED], train_stats)
    metrics.observe_sources(status, counts[CRITIC], counts[BUFFER], counts[RECALL])
    await run.on_events(run.search_id, new_events)


def policy_samples(status: search_pb2.SearchStatus) -> int:
    """Samples the policy learned from, of every source."""
    return (
        status.policy_samples_trained
        + status.policy_samples_critic
        + status.policy_samples_buffer
        + status.policy_samples_recall
    )


def speedup(status: search_pb2.SearchStatus) -> float:
    """Sample speedup: policy samples of every source per activated sample."""
    return policy_samples(status) / max(status.activated_samples, 1)


def _sample(run: SearchRun, f, index: int, reward: common_pb2.Reward | None = None) -> common_pb2.Sample:
    return common_pb2.Sample(
        architecture=common_pb2.Architecture(space=run.space.id, tokens=f.tokens),
        # Trusted and replayed samples carry only the reward value (the critic predicts no accuracy).
        reward=reward if reward is not None else common_pb2.Reward(value=f.reward),
        source=SOURCES[f.source],
        behaviour_log_prob=f.log_prob,
        index=index,
    )
