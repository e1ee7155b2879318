"""The loop of one search: propose a batch, train it, learn from it, checkpoint.

Every step is committed to the agent store before the next one starts, so a
restarted agent picks the loop up where it stood: a batch that was proposed but
not learned from is republished (the queue drops jobs it already holds, the
store drops results it already has) and the strategy resumes from its
checkpointed state, RNG included. Results are learned from in sample-index
order once the whole batch is in, which makes a seeded search with the tabular
trainer give the same trajectory every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from fnas import spaces
from fnas.v1 import common_pb2, queue_pb2, search_pb2
from services.agent import final_selection, fnas, fnas_run, metrics, strategies
from services.agent.fnas import modules
from services.agent.spec import FNAS_STRATEGIES
from services.agent.store import AgentStore, LoopState, Pending

log = logging.getLogger(__name__)

FINAL_STATES = (
    search_pb2.SEARCH_STATE_SUCCEEDED,
    search_pb2.SEARCH_STATE_FAILED,
    search_pb2.SEARCH_STATE_CANCELLED,
)
# Re-check the budget's wall clock and cancellation at least this often while waiting.
_WAIT_S = 1.0


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

    async def run(self) -> None:
        try:
            await self._run()
        except Exception as e:  # a broken search must not take the agent down
            log.exception("search %s failed", self.search_id)
            await self._finish(search_pb2.SEARCH_STATE_FAILED, f"{type(e).__name__}: {e}")

    async def _run(self) -> None:
        if self.spec.strategy in FNAS_STRATEGIES:
            strategy = fnas.make(
                self.spec.strategy,
                self.space,
                self.spec.seed,
                self.spec.batch_size,
                fnas.config_from_spec(self.spec),
            )
            await fnas_run.open_search(self, strategy)
        else:
            strategy = strategies.make(
                self.spec.strategy, self.space, seed=self.spec.seed, batch_size=self.spec.batch_size
            )
        self.batch_size = strategy.batch_size
        saved = self.store.checkpoint(self.search_id)
        if saved is None:
            loop = LoopState()
        else:
            strategy.load_state(saved[0])
            loop = saved[1]
        while True:
            # An fnas plan can be all trusted and train nothing: it is still learned from before the next.
            planned = isinstance(strategy, fnas.FnasStrategy) and bool(strategy.plan)
            if not loop.pending and not planned:
                stop = self._stop_reason()
                if stop is not None:
                    await self._finish(*stop)
                    return
                await self._propose(strategy, loop)
                self.store.commit(self.search_id, lambda s: None, strategy.state(), loop)
            # Concurrently: each publish waits for its PubAck, one after the other would serialise them.
            stored = self.store.results(self.search_id, [p.index for p in loop.pending])
            missing = [p for p, r in zip(loop.pending, stored, strict=True) if r is None]
            await asyncio.gather(*(self.publish_job(self._job(p)) for p in missing))
            results = await self._gather(loop.pending)
            if results is None:
                await self._finish(*self._stop_reason(waiting=True))
                return
            await self._learn(strategy, loop, results)

    def _stop_reason(self, waiting: bool = False) -> tuple[int, str] | None:
        status = self.store.status(self.search_id)
        budget = self.spec.budget
        policy = fnas_run.policy_samples(status)
        if self._cancelled:
            return search_pb2.SEARCH_STATE_CANCELLED, ""
        if budget.max_seconds and time.time() - status.created_at >= budget.max_seconds:
            return search_pb2.SEARCH_STATE_SUCCEEDED, ""
        if waiting:
            return None
        if budget.max_activated_samples and status.activated_samples >= budget.max_activated_samples:
            return search_pb2.SEARCH_STATE_SUCCEEDED, ""
        if budget.max_policy_samples and policy >= budget.max_policy_samples:
            return search_pb2.SEARCH_STATE_SUCCEEDED, ""
        reached = status.HasField("best") and status.best.reward.value >= budget.target_reward
        if budget.HasField("target_reward") and reached:
            return search_pb2.SEARCH_STATE_SUCCEEDED, ""
        return None

    async def _propose(self, strategy: strategies.Strategy, loop: LoopState) -> None:
        """Fills loop.pending with the next batch: warm-start architectures first."""
        if isinstance(strategy, fnas.FnasStrategy) and (loop.warm_started or not self.spec.warm_start):
            await fnas_run.propose(self, strategy, loop)
            return
        status = self.store.status(self.search_id)
        n = self.batch_size
        budget = self.spec.budget
        if budget.max_activated_samples:
            n = min(n, budget.max_activated_samples - status.activated_samples)
        if budget.max_policy_samples:
            n = min(n, budget.max_policy_samples - status.policy_samples_trained)
        if not loop.warm_started and self.spec.warm_start:
            # Known architectures are trained and reported, not learned from
            # as policy samples (the policy has no behaviour log-prob for them).
            batch = [(tuple(a.tokens), float("nan")) for a in self.spec.warm_start]
            loop.warm_started = True
        else:
            batch = [(p.tokens, p.log_prob) for p in strategy.propose(n)]
        loop.pending = [Pending(loop.next_index + i, list(t), lp) for i, (t, lp) in enumerate(batch)]
        loop.next_index += len(batch)

    def _job(self, p: Pending) -> queue_pb2.TrainJob:
        return queue_pb2.TrainJob(
            job_id=f"{self.search_id}/{p.index}",
            search_id=self.search_id,
            sample_index=p.index,
            architecture=common_pb2.Architecture(space=self.spec.space, tokens=p.tokens),
            task=self.spec.task,
            reward=self.spec.reward,
            use_pool=modules(self.spec).akp and not self.space.tabular,
            pool_task=self.spec.pool_task,
            # Distinct per sample, fixed by the search seed: reproducible training.
            seed=(self.spec.seed * 1_000_003 + p.index) % (1 << 63),
            behaviour_log_prob=p.log_prob,
        )

    async def _gather(self, pending: list[Pending]) -> list[queue_pb2.TrainResult] | None:
        """Waits for every result of the batch; None when the search must stop meanwhile."""
        while True:
            results = self.store.results(self.search_id, [p.index for p in pending])
            if all(r is not None for r in results):
                return results
            if self._stop_reason(waiting=True) is not None:
                return None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _WAIT_S)

    async def _learn(
        self, strategy: strategies.Strategy, loop: LoopState, results: list[queue_pb2.TrainResult]
    ) -> None:
        if isinstance(strategy, fnas.FnasStrategy) and strategy.plan:
            await fnas_run.learn(self, strategy, loop, results)
            return
        ok = [
            (p, r)
            for p, r in zip(loop.pending, results, strict=True)
            if r.outcome == queue_pb2.TRAIN_OUTCOME_OK
        ]
        if not ok:
            raise RuntimeError(f"every sample of a batch failed to train; first error: {results[0].error}")
        learn = [(p, r) for p, r in ok if p.log_prob == p.log_prob]  # NaN: warm start, not a policy sample
        train_stats = {}
        if learn:
            train_stats = strategy.update(
                [strategies.Feedback(tuple(p.tokens), r.reward.value, p.log_prob) for p, r in learn]
            )
        samples = [
            common_pb2.Sample(
                architecture=r.architecture,
                reward=r.reward,
                source=common_pb2.SAMPLE_SOURCE_TRAINED,
                behaviour_log_prob=p.log_prob if p.log_prob == p.log_prob else 0.0,
                index=p.index,
            )
            for p, r in ok
        ]
        loop.pending = []

        def mutate(status: search_pb2.SearchStatus) -> None:
            status.policy_samples_trained += len(learn)
            status.updates += 1 if learn else 0
            status.sample_speedup = fnas_run.speedup(status)

        def events(status: search_pb2.SearchStatus) -> list[search_pb2.SearchEvent]:
            out = [self._event(loop, sample=s) for s in samples]
            out.append(self._event(loop, update=status))
            return out

        status, new_events = self.store.commit(
            self.search_id, mutate, strategy.state(), loop, samples, events
        )
        metrics.observe_batch(status, len(learn), train_stats)
        await self.on_events(self.search_id, new_events)

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
        await self.on_events(self.search_id, new_events)
