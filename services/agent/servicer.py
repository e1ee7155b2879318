"""AgentService: search jobs over gRPC, each driven by a SearchRun task."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

import grpc

from fnas import auth, events, spaces, tenancy, waits
from fnas.bounds import clip
from fnas.v1 import agent_pb2_grpc, common_pb2, queue_pb2, search_pb2
from services.agent import final_selection, metrics
from services.agent.search_run import FINAL_STATES, SearchRun
from services.agent.spec import SpecError, uses_buffer, uses_critic, validate
from services.agent.store import AgentStore

log = logging.getLogger(__name__)
MAX_TOP_K = 1000
#: Search ids are 12 hex characters; anything much longer is not one (and LMDB keys stop at 511 bytes).
MAX_SEARCH_ID_CHARS = events.MAX_SEARCH_ID_CHARS


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    """Owns the running searches of this agent and the results consumer that feeds them."""

    def __init__(
        self,
        store: AgentStore,
        bus,
        max_searches: int = 64,
        critic=None,
        buffer=None,
        limits: tenancy.Limits | None = None,
    ) -> None:
        self.store = store
        # Per-tenant and per-search limits (fnas/tenancy.py); the tenant comes from fnas.auth.
        self.limits = limits or tenancy.Limits()
        self.bus = bus
        self.max_searches = max_searches
        # Clients of the critic and buffer services, for the fnas strategies (None: not available).
        self.critic, self.buffer = critic, buffer
        self.runs: dict[str, SearchRun] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        #: One event per WatchSearch call, set when its search commits events.
        self._watchers: dict[str, set[asyncio.Event]] = {}
        #: Per running search, the task publishing its latest events to the bus.
        self._mirrors: dict[str, asyncio.Task] = {}

    # lifecycle
    def resume(self) -> int:
        """Restarts every search that was running when the agent stopped; returns how many."""
        running = [s for s in self.store.statuses() if s.state == search_pb2.SEARCH_STATE_RUNNING]
        for status in running:
            log.info("resuming search %s", status.search_id)
            self._launch(status.search_id)
        return len(running)

    async def close(self) -> None:
        for task in [*self.tasks.values(), *self._mirrors.values()]:
            task.cancel()
        await asyncio.gather(*self.tasks.values(), *self._mirrors.values(), return_exceptions=True)

    def _launch(self, search_id: str) -> None:
        run = SearchRun(
            search_id,
            self.store,
            self._publish_job,
            self._publish_events,
            critic=self.critic,
            buffer=self.buffer,
        )
        self.runs[search_id] = run
        task = asyncio.create_task(run.run(), name=f"search-{search_id}")
        self.tasks[search_id] = task
        metrics.RUNNING.inc()

        def done(_: asyncio.Task) -> None:
            self.runs.pop(search_id, None)
            self.tasks.pop(search_id, None)
            metrics.RUNNING.dec()

        task.add_done_callback(done)

    async def _publish_job(self, job: queue_pb2.TrainJob) -> None:
        await self.bus.publish(events.TRAIN_JOB, job, msg_id=job.job_id)

    async def _publish_events(self, search_id: str, new: list[search_pb2.SearchEvent]) -> None:
        """Wakes the search's watchers (the store is the record) and mirrors the events on the bus.

        The mirror, for consumers in other processes, is published in order but behind the
        search's loop, which no longer waits for its acks (1.3-1.9 ms a batch; end to end 2-10%
        less wall time per sample in four paired comparisons, inside the noise). A failed batch of
        it is logged; the search's end waits until all its events are out and fails the way a
        publish fails.
        """
        for wake in self._watchers.get(search_id, ()):
            wake.set()
        previous = self._mirrors.pop(search_id, None)
        if any(e.HasField("finished") for e in new):
            await self._send_events(search_id, new, after=previous)
        else:
            self._mirrors[search_id] = asyncio.create_task(self._mirror(search_id, new, previous))

    async def _mirror(
        self, search_id: str, new: list[search_pb2.SearchEvent], previous: asyncio.Task | None
    ) -> None:
        try:
            await self._send_events(search_id, new, after=previous)
        except Exception as e:  # the bus retried already (fnas.retry); the store keeps the events
            log.warning("events %d-%d of search %s not mirrored: %s", new[0].seq, new[-1].seq, search_id, e)

    async def _send_events(
        self, search_id: str, new: list[search_pb2.SearchEvent], after: asyncio.Task | None = None
    ) -> None:
        if after is not None:
            await asyncio.wait([after])  # it logged its own failure; order is what counts here
        await asyncio.gather(
            *(
                self.bus.publish(
                    events.search_event(search_id, event.WhichOneof("kind")),
                    event,
                    msg_id=f"event/{search_id}/{event.seq}",
                )
                for event in new
            )
        )

    async def on_results(self, datas: list[bytes]) -> None:
        """Handler of the durable results consumer: store once, count once, wake the searches.

        A fetched batch is decoded first and stored in one transaction.
        """
        results = [queue_pb2.TrainResult.FromString(d) for d in datas]
        woken = set()
        for r in results:
            # A final-selection retrain (paper 6.2), not a search sample.
            if r.final_rank and final_selection.store_result(self.store, r):
                woken.add(r.search_id)
        samples = [r for r in results if not r.final_rank]
        for r, status in zip(samples, self.store.add_results(samples), strict=True):
            if status is not None:
                metrics.observe_result(r, status)
                woken.add(r.search_id)
        for search_id in woken:
            if (run := self.runs.get(search_id)) is not None:
                run.notify()

    # RPCs
    async def SubmitSearch(self, request, context):
        try:
            spec = validate(request.spec)
        except SpecError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        for needed, client, name in (
            (uses_critic(spec), self.critic, "critic"),
            (uses_buffer(spec), self.buffer, "buffer"),
        ):
            if needed and client is None:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"strategy: {spec.strategy} needs a {name} service; this agent has none",
                )
        tenant = auth.current_tenant()
        await self._admit(spec, tenant, context)
        if len(self.runs) >= self.max_searches:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"this agent already runs {self.max_searches} searches"
            )
        search_id = uuid.uuid4().hex[:12]
        if uses_critic(spec):
            await self._open_critic(search_id, spec, tenant, context)
        now = time.time()
        self.store.put_status(
            search_pb2.SearchStatus(
                search_id=search_id,
                spec=spec,
                tenant=tenant,
                state=search_pb2.SEARCH_STATE_RUNNING,
                created_at=now,
                updated_at=now,
            )
        )
        self._launch(search_id)
        log.info("search %s submitted: %s %s", search_id, spec.space, spec.strategy)
        return search_pb2.SubmitSearchResponse(search_id=search_id)

    async def _open_critic(self, search_id: str, spec, tenant: str, context) -> None:
        """Creates the search's critic now, so a bad snapshot or history is refused, not a failed search."""
        try:
            await self.critic.open_search(
                search_id,
                spec.space,
                spec.seed,
                spec.fnas,
                spec.critic_snapshot,
                list(spec.critic_history),
                tenant,
            )
        except grpc.aio.AioRpcError as e:
            await _abort_as_spec(e, context)

    async def ExportCriticSnapshot(self, request, context):
        status = await self._status(request.search_id, context)
        if not uses_critic(status.spec) or self.critic is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"search_id: {status.spec.strategy} search has no critic"
            )
        try:
            snapshot_id, weights = await self.critic.export_snapshot(status.search_id, status.tenant)
        except grpc.aio.AioRpcError as e:
            await context.abort(e.code(), e.details() or "")
        return search_pb2.ExportCriticSnapshotResponse(snapshot_id=snapshot_id, weights=weights)

    async def ImportCriticSnapshot(self, request, context):
        if self.critic is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this agent has no critic service")
        try:
            snapshot_id = await self.critic.import_snapshot(
                request.weights, request.space, auth.current_tenant()
            )
        except grpc.aio.AioRpcError as e:
            await context.abort(e.code(), e.details() or "")
        return search_pb2.ImportCriticSnapshotResponse(snapshot_id=snapshot_id)

    async def GetSearch(self, request, context):
        return search_pb2.GetSearchResponse(status=await self._status(request.search_id, context))

    async def WatchSearch(self, request, context) -> AsyncIterator[search_pb2.SearchEvent]:
        await self._status(request.search_id, context)
        seq = request.after_seq
        # Cleared before each read of the store, so a commit during the read (or while the events
        # are sent) wakes the next wait at once; the one-second poll is only a safety net.
        wake = asyncio.Event()
        self._watchers.setdefault(request.search_id, set()).add(wake)
        try:
            while True:
                wake.clear()
                # Status first: a final state and its `finished` event are committed together, so a
                # watcher that already saw (or skipped) that event stops instead of waiting forever.
                final = self.store.status(request.search_id).state in FINAL_STATES
                for event in self.store.events(request.search_id, seq):
                    yield event
                    seq = event.seq
                    if event.HasField("finished"):
                        return
                if final:
                    return
                await waits.wait_event(wake, 1.0)
        finally:
            watchers = self._watchers.get(request.search_id, set())
            watchers.discard(wake)
            if not watchers:
                self._watchers.pop(request.search_id, None)

    async def CancelSearch(self, request, context):
        await self._status(request.search_id, context)
        run, task = self.runs.get(request.search_id), self.tasks.get(request.search_id)
        if run is not None:
            run.cancel()
            await asyncio.shield(task)
        return search_pb2.CancelSearchResponse(status=self.store.status(request.search_id))

    async def ListSearches(self, request, context):
        tenant = auth.current_tenant()
        mine = (s for s in self.store.statuses() if tenancy.may_access(s, tenant))
        searches = sorted(mine, key=lambda s: s.created_at)
        return search_pb2.ListSearchesResponse(searches=searches)

    async def GetTopArchitectures(self, request, context):
        status = await self._status(request.search_id, context)
        if request.k > MAX_TOP_K:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"k: must be <= {MAX_TOP_K}")
        return search_pb2.GetTopArchitecturesResponse(samples=top(self.store, status, request.k or 10))

    async def _status(self, search_id: str, context) -> search_pb2.SearchStatus:
        if not search_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "search_id: required")
        if len(search_id) > MAX_SEARCH_ID_CHARS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"search_id: longer than {MAX_SEARCH_ID_CHARS} characters"
            )
        status = self.store.status(search_id)
        if status is None or not tenancy.may_access(status, auth.current_tenant()):
            # Another tenant's search is answered exactly like an unknown id: nothing tells it exists.
            await context.abort(grpc.StatusCode.NOT_FOUND, f"search_id: no search {search_id!r}")
        return status

    async def _admit(self, spec: common_pb2.SearchSpec, tenant: str, context) -> None:
        """Refuses a search beyond the limits (RESOURCE_EXHAUSTED) or reading another tenant's results."""
        refusal = tenancy.budget_refusal(spec, self.limits) or tenancy.concurrency_refusal(
            tenant, (s.tenant for s in map(self.store.status, list(self.runs)) if s is not None), self.limits
        )
        if refusal:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        for i, other in enumerate(spec.critic_history):
            # Pre-training on another tenant's results would leak them into this tenant's critic; the
            # refusal is the critic's for a search it never saw, so it does not tell that one exists.
            known = self.store.status(other) if len(other) <= MAX_SEARCH_ID_CHARS else None
            if known is not None and not tenancy.may_access(known, tenant):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"critic_history[{i}]: no stored results of {clip(other)!r}",
                )


async def _abort_as_spec(error: grpc.aio.AioRpcError, context) -> None:
    """Passes the critic's refusal on, its field names turned into the SearchSpec's."""
    renamed = (("snapshot_id:", "critic_snapshot:"), ("history", "critic_history"), ("options.", "fnas."))
    details = error.details() or ""
    for critic_field, spec_field in renamed:
        if details.startswith(critic_field):
            details = spec_field + details[len(critic_field) :]
    await context.abort(error.code(), details)


def top(store: AgentStore, status: search_pb2.SearchStatus, k: int) -> list[common_pb2.Sample]:
    """The k best distinct trained architectures of a search, best first."""
    space = spaces.get(status.spec.space)
    best: dict[str, common_pb2.Sample] = {}
    for sample in store.samples(status.search_id):
        if sample.source != common_pb2.SAMPLE_SOURCE_TRAINED:
            continue
        key = space.key(sample.architecture.tokens)
        if key not in best or sample.reward.value > best[key].reward.value:
            best[key] = sample
    return sorted(best.values(), key=lambda s: (-s.reward.value, s.index))[:k]


__all__ = ["FINAL_STATES", "AgentServicer", "top"]
