"""Final selection (paper 6.2): retrain the search's top-k architectures for longer and rank them again.

The proxy reward of a short training run ranks architectures only roughly, so when the budget is spent the
k best distinct trained architectures are trained again for `final_epochs` (from scratch, so that they
compete on equal terms) and ranked by that final reward. The retrains are ordinary TrainJobs with
`final_rank` set; their results come back on the results stream and are kept apart from the search's
samples (they are no activated samples, and carry the original sample's index, so the critic and the buffer,
which drop an index they have seen, ignore them). Everything is stored before it is used, so an agent that
restarts mid-selection republishes only the retrains whose result it lacks.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from fnas.v1 import common_pb2, queue_pb2, search_pb2
from services.agent.spec import sample_seed

if TYPE_CHECKING:
    from services.agent.search_run import SearchRun
    from services.agent.store import AgentStore

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 10
MAX_TOP_K = 100
#: The final schedule is this many times the search's proxy epochs unless the spec says otherwise.
DEFAULT_EPOCH_FACTOR = 2


def top_k(spec: common_pb2.SearchSpec, tabular: bool) -> int:
    """How many architectures to retrain: the spec's final_top_k, else 10 (0 for benchmark tables)."""
    if spec.HasField("final_top_k"):
        return spec.final_top_k
    return 0 if tabular else DEFAULT_TOP_K  # a table answers the same figures again: nothing to gain


def epochs(spec: common_pb2.SearchSpec) -> int:
    """Epochs of the final schedule."""
    return spec.final_epochs or DEFAULT_EPOCH_FACTOR * max(1, spec.task.epochs)


def job_id(search_id: str, rank: int) -> str:
    """Job id (and queue message id) of the retrain of the rank-th architecture."""
    return f"{search_id}/final/{rank}"


def _key(search_id: str, rank: int) -> bytes:
    return f"{search_id}/final/{rank:04d}".encode()


def store_result(store: AgentStore, result: queue_pb2.TrainResult) -> bool:
    """Keeps a final-selection result once (redeliveries are dropped); True when it was new."""
    with store.env.begin(write=True) as txn:
        if txn.get(result.search_id.encode(), db=store.db["searches"]) is None:
            return False  # no search of this agent
        # Beside the search's checkpoint: the state a restarted selection resumes from.
        key = _key(result.search_id, result.final_rank)
        return txn.put(key, result.SerializeToString(), db=store.db["checkpoints"], overwrite=False)


def stored_results(store: AgentStore, search_id: str, ranks: range) -> dict[int, queue_pb2.TrainResult]:
    """The final-selection results received so far, by rank."""
    out = {}
    with store.env.begin() as txn:
        for rank in ranks:
            raw = txn.get(_key(search_id, rank), db=store.db["checkpoints"])
            if raw is not None:
                out[rank] = queue_pb2.TrainResult.FromString(raw)
    return out


def candidates(store: AgentStore, search_id: str, key, k: int) -> list[common_pb2.Sample]:
    """The k best distinct trained architectures (by `key`), best search reward first."""
    best: dict[str, common_pb2.Sample] = {}
    for sample in store.samples(search_id):
        if sample.source != common_pb2.SAMPLE_SOURCE_TRAINED:
            continue
        arch = key(sample.architecture.tokens)
        if arch not in best or sample.reward.value > best[arch].reward.value:
            best[arch] = sample
    return sorted(best.values(), key=lambda s: (-s.reward.value, s.index))[:k]


async def run(search: SearchRun) -> bool:
    """Runs the final selection of a search whose budget is spent; False when it was cancelled meanwhile."""
    spec, store, search_id = search.spec, search.store, search.search_id
    k = top_k(spec, search.space.tabular)
    status = store.status(search_id)
    if k == 0 or status.final_ranking:
        return True
    chosen = candidates(store, search_id, search.space.key, k)
    if not chosen:
        return True
    n_epochs = epochs(spec)
    ranks = range(1, len(chosen) + 1)
    jobs = {
        r: queue_pb2.TrainJob(
            job_id=job_id(search_id, r),
            search_id=search_id,
            sample_index=s.index,
            architecture=s.architecture,
            task=common_pb2.Task(dataset=spec.task.dataset, epochs=n_epochs),
            reward=spec.reward,
            use_pool=False,  # from scratch: every candidate on equal terms (paper 6.2)
            seed=sample_seed(spec, s.index),  # the sample's own: export repeats it
            final_rank=r,
            replayable=False,  # no search sample (paper 6.2)
        )
        for r, s in zip(ranks, chosen, strict=True)
    }
    have = stored_results(store, search_id, ranks)
    log.info("search %s: final selection of %d architectures, %d epochs", search_id, len(chosen), n_epochs)
    await asyncio.gather(*(search.publish_job(job) for r, job in jobs.items() if r not in have))
    while len(have) < len(chosen):
        if not await search.wait():
            return False
        have = stored_results(store, search_id, ranks)
    ranking = rank(chosen, [have[r] for r in ranks], n_epochs, [jobs[r].seed for r in ranks])

    def mutate(s: search_pb2.SearchStatus) -> None:
        del s.final_ranking[:]
        s.final_ranking.extend(ranking)
        # Its compute, apart from the search's: every phase of the retrains.
        s.final_trainer_seconds = sum(
            r.setup_seconds + r.train_seconds + r.evaluate_seconds for r in have.values()
        )

    store.commit(search_id, mutate)
    best = ranking[0]
    log.info(
        "search %s: final selection done; best final reward %.4f (search rank %d)",
        search_id, best.final_reward.value, 1 + [c.index for c in chosen].index(best.sample.index),
    )  # fmt: skip
    return True


def rank(
    chosen: list[common_pb2.Sample], results: list[queue_pb2.TrainResult], n_epochs: int, seeds: list[int]
) -> list[search_pb2.FinalCandidate]:
    """Candidates ordered by final reward (failed retrains last, then by search order); ranks from 1."""
    out = []
    for sample, result, seed in zip(chosen, results, seeds, strict=True):
        ok = result.outcome == queue_pb2.TRAIN_OUTCOME_OK
        out.append(
            search_pb2.FinalCandidate(
                sample=sample,
                final_reward=result.reward if ok else None,
                epochs=n_epochs,
                seed=seed,
                error="" if ok else (result.error or "retrain failed"),
            )
        )
    order = sorted(range(len(out)), key=lambda i: (bool(out[i].error), -out[i].final_reward.value, i))
    ranked = [out[i] for i in order]
    for r, candidate in enumerate(ranked, 1):
        candidate.rank = r
    return ranked
