"""The loop of one search, for every strategy: plan a batch, train it, learn from it, checkpoint.

Every step is committed to the agent store before the next one starts, so a
restarted agent picks the loop up where it stood: a batch that was planned but
not learned from is republished (the queue drops jobs it already holds, the
store drops results it already has) and the strategy resumes from its
checkpointed state, RNG included. The plan is part of the loop's checkpoint, so
an agent restarted between planning and learning neither asks the critic again
nor loses which samples were trusted or recalled; what a batch taught and the
next batch's plan are one commit. Results are learned from in
plan order once the whole batch is in, which makes a seeded search with the
tabular trainer give the same trajectory every time, and the plain in-memory
loop (`fnas_bench.plain_loop`, the same `services.agent.batch` steps) give it
too. When the budget is spent, final selection is the loop's last step.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import tenacity

from fnas import spaces, waits
from fnas.queue import PUBLISH_ERRORS
from fnas.v1 import common_pb2, queue_pb2, search_pb2
from fnas.v1.common_pb2 import (
    SAMPLE_SOURCE_BUFFER,
    SAMPLE_SOURCE_CRITIC,
    SAMPLE_SOURCE_RECALL,
    SAMPLE_SOURCE_TRAINED,
)
from services.agent import batch, final_selection, metrics, registry
from services.agent.batch import BatchContext, Feedback, Planned, Recalls
from services.agent.fnas_strategy import modules
from services.agent.spec import sample_seed, uses_buffer, uses_critic
from services.agent.store import AgentStore, LoopState
from services.agent.strategies import Strategy
from services.buffer.client import RemoteBuffer
from services.critic.client import RemoteCritic

log = logging.getLogger(__name__)

FINAL_STATES = (
    search_pb2.SEARCH_STATE_SUCCEEDED,
    search_pb2.SEARCH_STATE_FAILED,
    search_pb2.SEARCH_STATE_CANCELLED,
)
# Re-check the budget's wall clock and cancellation at least this often while waiting.
_WAIT_S = 1.0
# Waits before publishing again what the bus did not take: doubling from the first to the last.
_FIRST_PAUSE_S, _MAX_PAUSE_S = 1.0, 30.0


class MissingService(RuntimeError):
    """The search needs a critic or buffer service that this agent was not given."""


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


class SearchRun:
    """Drives one search to a final state; `notify` wakes it when a result arrives."""

    def __init__(
        self,
        search_id: str,
        store: AgentStore,
        publish_job: Callable[[queue_pb2.TrainJob], Awaitable[None]],
        on_events: Callable[[str, list[search_pb2.SearchEvent]], Awaitable[None]],
        critic=None,
        buffer=None,
    ) -> None:
        self.search_id = search_id
        # CriticClient / BufferClient of the fnas strategies (services.critic.client, services.buffer.client).
        self.critic, self.buffer = critic, buffer
        self.store = store
        self.publish_job = publish_job
        self.on_events = on_events
        self.spec = store.status(search_id).spec
        self.space = spaces.get(self.spec.space)
        self._wake = asyncio.Event()
        self._cancelled = False

    def notify(self) -> None:
        self._wake.set()

    def cancel(self) -> None:
        self._cancelled = True
        self._wake.set()

    async def wait(self) -> bool:
        """Waits until a result arrives or a second passes; False once the search is cancelled."""
        if self._cancelled:
            return False
        self._wake.clear()
        await waits.wait_event(self._wake, _WAIT_S)
        return not self._cancelled

    async def run(self) -> None:
        try:
            await self._run()
        except Exception as e:  # a broken search must not take the agent down
            log.exception("search %s failed", self.search_id)
            await self._finish(search_pb2.SEARCH_STATE_FAILED, f"{type(e).__name__}: {e}")

    async def _run(self) -> None:
        strategy = registry.from_spec(self.spec, self.space)
        await self._open_modules()
        saved = self.store.checkpoint(self.search_id)
        if saved is None:
            loop = LoopState()
        else:
            strategy.load_state(saved[0])
            loop = saved[1]
        recalls = Recalls(self.space.key)
        for s in self.store.samples(self.search_id):
            if s.source == SAMPLE_SOURCE_TRAINED:
                recalls.add(s.architecture.tokens, s.index, s.reward.value)
        stop = None
        if not loop.plan:  # a new search, or one that stopped between batches
            status = self.store.status(self.search_id)
            stop = self._stop_reason(loop, status)
            if stop is None:
                await self._plan(strategy, loop, recalls, status)
                # Results may arrive before the batch is learned: the plan must survive a restart.
                self.store.commit(self.search_id, lambda s: None, strategy.state(), loop)
        pause = _FIRST_PAUSE_S
        while stop is None and loop.plan:
            jobs = loop.jobs()
            stored = self.store.results(self.search_id, [i for i, _ in jobs])
            # Each publish waits for its PubAck: together, and while the first results come in.
            publishing = asyncio.ensure_future(
                asyncio.gather(
                    *(
                        self.publish_job(self._job(i, p))
                        for (i, p), r in zip(jobs, stored, strict=True)
                        if r is None
                    )
                )
            )
            publishing.add_done_callback(lambda _: self.notify())  # a failed publish ends the wait
            try:
                results = await self._gather([i for i, _ in jobs], publishing)
            except PUBLISH_ERRORS as e:
                # The plan is committed and a job's id is its message id (JetStream drops repeats): wait
                # for the bus, however long it is away, and publish the jobs that have no result again.
                log.warning(
                    "search %s: the bus did not take its jobs (%s: %s); publishes its jobs again in %.0f s",
                    self.search_id, type(e).__name__, e, pause,
                )  # fmt: skip
                if not await self._pause(pause):
                    stop = self._interrupted()
                    break
                pause = min(2 * pause, _MAX_PAUSE_S)
                continue
            finally:
                publishing.cancel()
            pause = _FIRST_PAUSE_S
            if results is None:
                stop = self._interrupted()
                break
            stop = await self._learn(strategy, loop, results, recalls)
            # A batch of recalls awaits nothing: let the watchers and the other searches have their turn.
            await asyncio.sleep(0)
        await self._finish(*(stop or (search_pb2.SEARCH_STATE_SUCCEEDED, "")))

    async def _pause(self, seconds: float) -> bool:
        """Waits about `seconds`; False (within a second) when the search is cancelled or out of time."""
        deadline = time.monotonic() + seconds
        while self._interrupted() is None:
            if time.monotonic() >= deadline:
                return True
            await self.wait()
        return False

    async def _open_modules(self) -> None:
        """Creates the search's critic (idempotent, also on resume), from a snapshot or history if asked."""
        if uses_critic(self.spec):
            if self.critic is None:
                raise MissingService("this agent has no critic service (set --critic-address)")
            await self.critic.open_search(
                self.search_id,
                self.space.id,
                self.spec.seed,
                self.spec.fnas,
                self.spec.critic_snapshot,
                list(self.spec.critic_history),
                self.store.status(self.search_id).tenant,
            )
        if uses_buffer(self.spec) and self.buffer is None:
            raise MissingService("this agent has no buffer service (set --buffer-address)")

    def _interrupted(self) -> tuple[int, str] | None:
        """Why the search must stop even in the middle of a batch: cancelled, or out of time."""
        budget = self.spec.budget
        if self._cancelled:
            return search_pb2.SEARCH_STATE_CANCELLED, ""
        if (
            budget.max_seconds
            and time.time() - self.store.status(self.search_id).created_at >= budget.max_seconds
        ):
            return search_pb2.SEARCH_STATE_SUCCEEDED, ""
        return None

    def _stop_reason(self, loop: LoopState, status: search_pb2.SearchStatus) -> tuple[int, str] | None:
        """Why the search must stop before its next batch, if it must (`status`: the search's now)."""
        if (interrupted := self._interrupted()) is not None:
            return interrupted
        budget = self.spec.budget
        if budget.max_activated_samples and status.activated_samples >= budget.max_activated_samples:
            return search_pb2.SEARCH_STATE_SUCCEEDED, ""
        if budget.max_policy_samples and policy_samples(status) >= budget.max_policy_samples:
            return search_pb2.SEARCH_STATE_SUCCEEDED, ""
        reached = status.HasField("best") and status.best.reward.value >= budget.target_reward
        if budget.HasField("target_reward") and reached:
            return search_pb2.SEARCH_STATE_SUCCEEDED, ""
        if loop.idle_batches >= batch.MAX_IDLE_BATCHES:
            log.info("search %s converged: %d batches trained nothing new", self.search_id, loop.idle_batches)
            return search_pb2.SEARCH_STATE_SUCCEEDED, ""
        return None

    def _context(
        self, strategy: Strategy, loop: LoopState, recalls: Recalls, status: search_pb2.SearchStatus
    ) -> BatchContext:
        """The budget's limits on the next batch and the search's modules, as of `status`."""
        budget = self.spec.budget
        size = max_trained = strategy.batch_size
        if budget.max_activated_samples:
            max_trained = min(max_trained, budget.max_activated_samples - status.activated_samples)
            progress = loop.plan_observed / budget.max_activated_samples
        else:
            progress = policy_samples(status) / max(budget.max_policy_samples, 1)
        if budget.max_policy_samples:
            size = min(size, budget.max_policy_samples - policy_samples(status))
        return BatchContext(
            size=size,
            max_trained=max_trained,
            observed=loop.plan_observed,
            recalls=recalls,
            critic=RemoteCritic(self.critic, self.search_id, self.space.id)
            if uses_critic(self.spec)
            else None,
            buffer=RemoteBuffer(self.buffer, self.search_id) if uses_buffer(self.spec) else None,
            progress=progress,
        )

    async def _plan(
        self, strategy: Strategy, loop: LoopState, recalls: Recalls, status: search_pb2.SearchStatus
    ) -> None:
        """Plans the next batch into loop.plan: the warm-start architectures first, then the strategy's."""
        loop.plan_index = loop.next_index
        loop.plan_observed = status.activated_samples
        if not loop.warm_started and self.spec.warm_start:
            # Known architectures are trained and reported, not learned from as policy samples.
            plan = [Planned(tuple(a.tokens), math.nan, SAMPLE_SOURCE_TRAINED) for a in self.spec.warm_start]
            loop.warm_started = True
        else:
            plan = await strategy.plan(self._context(strategy, loop, recalls, status))
        loop.plan = batch.settle(plan, recalls)
        loop.next_index += len(loop.plan)

    def _job(self, index: int, p: Planned) -> queue_pb2.TrainJob:
        return queue_pb2.TrainJob(
            job_id=f"{self.search_id}/{index}",
            search_id=self.search_id,
            sample_index=index,
            architecture=common_pb2.Architecture(space=self.spec.space, tokens=p.tokens),
            task=self.spec.task,
            reward=self.spec.reward,
            use_pool=modules(self.spec).akp and not self.space.tabular,
            pool_task=self.spec.pool_task,
            seed=sample_seed(self.spec, index),
            behaviour_log_prob=p.log_prob,
            replayable=uses_buffer(self.spec),  # the buffer stores no search it never replays
        )

    async def _gather(
        self, indices: list[int], publishing: asyncio.Future
    ) -> list[queue_pb2.TrainResult] | None:
        """Waits for every result of the batch and the acks of its jobs; None when the search must
        stop meanwhile. Raises what a publish of its jobs raised."""
        while True:
            if publishing.done():
                publishing.result()
            results = self.store.results(self.search_id, indices)
            if all(r is not None for r in results) and publishing.done():
                return results
            if self._interrupted() is not None:
                return None
            await self.wait()

    async def _learn(
        self, strategy: Strategy, loop: LoopState, results: list[queue_pb2.TrainResult], recalls: Recalls
    ) -> tuple[int, str] | None:
        """The strategy's update on trained, recalled, trusted and replayed samples, and the next plan.

        Both are one commit: a restart before it learns the batch again and plans the same next one
        (the plan depends on nothing that could change meanwhile: the next batch's jobs are published
        after the commit). Returns why the search stops instead of planning, if it does.
        """
        plan, base = loop.plan, loop.plan_index
        trained = {
            index - base: r
            for (index, _), r in zip(loop.jobs(), results, strict=True)
            if r.outcome == queue_pb2.TRAIN_OUTCOME_OK
        }
        if results and not trained:
            raise RuntimeError(f"every sample of a batch failed to train; first error: {results[0].error}")
        fresh = batch.fresh_feedback(
            plan, {pos: r.reward.value for pos, r in trained.items()}, strategy.audits
        )
        learned = [f for pos, f in fresh if plan[pos].learned]
        now = self.store.status(self.search_id)
        replayed = await strategy.replays(self._context(strategy, loop, recalls, now), len(learned))
        feedback = learned + [f for _, f in replayed]
        train_stats = strategy.update(feedback) if feedback else {}
        wanted = [plan[pos].recall_of for pos, _ in fresh if plan[pos].recall_of >= 0]
        recalled = {r.sample_index: r.reward for r in self.store.results(self.search_id, wanted) if r}
        samples = []
        for pos, f in fresh:
            p = plan[pos]
            if p.source == SAMPLE_SOURCE_CRITIC:
                reward = None  # the critic predicts the reward's value alone
            elif p.recall_of >= 0:
                reward = recalled.get(p.recall_of)
            else:
                reward = trained[p.copy_of if p.copy_of >= 0 else pos].reward
            samples.append(self._sample(f, base + pos, reward))
        samples += [self._sample(f, loop.next_index + j) for j, (_, f) in enumerate(replayed)]
        loop.next_index += len(replayed)
        for pos, r in trained.items():
            recalls.add(plan[pos].tokens, base + pos, r.reward.value)
        loop.idle_batches = 0 if trained else loop.idle_batches + 1
        loop.plan = []
        counts = Counter(f.source for f in feedback)
        calibration = strategy.calibration_error()

        def mutate(status: search_pb2.SearchStatus) -> None:
            status.policy_samples_trained += counts[SAMPLE_SOURCE_TRAINED]
            status.policy_samples_critic += counts[SAMPLE_SOURCE_CRITIC]
            status.policy_samples_buffer += counts[SAMPLE_SOURCE_BUFFER]
            status.policy_samples_recall += counts[SAMPLE_SOURCE_RECALL]
            status.updates += 1 if feedback else 0
            if calibration is not None:
                status.calibration_error = calibration
            status.calibration_samples = len(strategy.audits)
            status.sample_speedup = speedup(status)

        def events(status: search_pb2.SearchStatus) -> list[search_pb2.SearchEvent]:
            return [*(self._event(loop, sample=s) for s in samples), self._event(loop, update=status)]

        # The stop check and the next plan see this batch's counts before they are committed.
        mutate(now)
        stop = self._stop_reason(loop, now)
        if stop is None:
            await self._plan(strategy, loop, recalls, now)
        status, new_events = self.store.commit(
            self.search_id, mutate, strategy.state(), loop, samples, events
        )
        metrics.observe_batch(status, counts, train_stats)
        await self.on_events(self.search_id, new_events)
        return stop

    def _sample(self, f: Feedback, index: int, reward: common_pb2.Reward | None = None) -> common_pb2.Sample:
        return common_pb2.Sample(
            architecture=common_pb2.Architecture(space=self.space.id, tokens=f.tokens),
            # Trusted and replayed samples carry only the reward value (the critic predicts no accuracy).
            reward=reward if reward is not None else common_pb2.Reward(value=f.reward),
            source=f.source,
            behaviour_log_prob=0.0 if math.isnan(f.log_prob) else f.log_prob,
            index=index,
        )

    def _event(self, loop: LoopState, **kind) -> search_pb2.SearchEvent:
        event = search_pb2.SearchEvent(search_id=self.search_id, seq=loop.next_seq, **kind)
        loop.next_seq += 1
        return event

    async def _finish(self, state: int, error: str = "") -> None:
        if state == search_pb2.SEARCH_STATE_SUCCEEDED and not await final_selection.run(self):
            state = search_pb2.SEARCH_STATE_CANCELLED  # cancelled during the final selection (paper 6.2)
        saved = self.store.checkpoint(self.search_id)
        loop = saved[1] if saved else LoopState()

        def mutate(status: search_pb2.SearchStatus) -> None:
            status.state = state
            status.error = error

        status, new_events = self.store.commit(
            self.search_id, mutate, loop=loop, events=lambda s: [self._event(loop, finished=s)]
        )
        metrics.observe_finished(status)
        log.info("search %s finished: %s %s", self.search_id, search_pb2.SearchState.Name(state), error)
        # Trainers, critic and buffer learn of the end from its event: it goes out, however long it takes.
        async for attempt in tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(PUBLISH_ERRORS),
            wait=tenacity.wait_exponential(multiplier=_FIRST_PAUSE_S, max=_MAX_PAUSE_S),
            before_sleep=tenacity.before_sleep_log(log, logging.WARNING),
        ):
            with attempt:
                await self.on_events(self.search_id, new_events)
