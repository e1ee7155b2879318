"""FNAS batch assembly (paper 4.2 and 5), shared by the agent and the plain in-memory loop.

One batch of the `fnas` strategy:

1. `plan_batch`: the policy proposes; the critic predicts (V, U) for each
   proposal from exactly the first `observed` trained results. Untrusted
   proposals are trained, or recalled when the search trained them before.
   Trusted ones take V as their reward (or, where the critic knows the
   architecture because this search trained it, are recalls of that result),
   at most `max_trusted_fraction` of the batch (paper 4.2's constraint): extra trusted
   proposals are dropped and the policy resamples until the batch is filled
   with untrusted ones; each resampling round draws at `resample_temperature`
   times the previous round's policy temperature (the stored log-probs are the
   tempered ones), so a collapsed policy still yields new architectures instead
   of training known ones again. A random `audit_fraction` of the would-be-trusted ones
   is trained anyway, so the critic's real error is measured where it claimed
   to be right (the calibration check); so is every other trained sample whose
   prediction was trusted (a local candidate ranked high, a stalled batch's pick):
   the critic trusts few policy samples it does not know, and these give the check
   a median of 18-25 audits per 1000 trained samples on NAS-Bench-Graph instead
   of 0. With `candidates` > 1 the policy draws that many proposals per open
   slot and the untrusted ones with the highest
   V + ucb * U are trained first (an extension of the paper's rule: among the
   samples the critic cannot vouch for, verify the most promising). With
   `local_candidates` > 0, one-token mutations of the best trained
   architectures join that ranking (never as trusted samples; those the
   critic already knows are skipped), carrying their log-prob under the
   policy: the policy learns from the good neighbours the critic finds.
   A critic started from a snapshot or earlier searches' histories (paper 3.1)
   answers the first batch as a critic without them would: it is chosen as
   from scratch (services.critic.search_critic: the transfer check).
2. The trained proposals are trained (the agent: TrainJobs on the queue).
3. `services.agent.batch.fresh_feedback`: trained and recalled results and
   trusted predictions, in plan order.
4. `replays`: up to `max_replay_fraction` of the PPO batch is drawn from the
   experience buffer (paper 5) with importance weights S_i and the stored
   behaviour log-prob (the PPO ratio's off-policy correction).
5. The strategy's PPO update on fresh + replays.

A critic that gives no predictions (down, frozen, failing past its retries)
degrades the batch instead of failing the search: the rest of the batch is
planned as if the critic trusted nothing (every proposal is trained), and a
buffer that gives no replays leaves the batch without them.

The critic and the buffer sit behind two small ports (an in-process core or a
gRPC client), so the agent and the plain loop run this same code and a seeded
search gives the same trajectory in both.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

from fnas.v1.common_pb2 import (
    SAMPLE_SOURCE_BUFFER,
    SAMPLE_SOURCE_CRITIC,
    SAMPLE_SOURCE_RECALL,
    SAMPLE_SOURCE_TRAINED,
)
from services.agent import metrics
from services.agent.batch import BatchContext, Feedback, Planned
from services.agent.strategies import Proposal
from services.buffer.client import BufferUnavailable
from services.critic.client import CriticUnavailable

if TYPE_CHECKING:
    from services.agent.fnas_strategy import FnasStrategy

log = logging.getLogger(__name__)


class PredictionLike(Protocol):
    value: float
    uncertainty: float
    trusted: bool
    known: bool


async def plan_batch(strategy: FnasStrategy, batch: BatchContext) -> list[Planned]:
    """The next batch: at most `batch.max_trained` train jobs, the rest trusted or recalled (see above)."""
    cfg, size = strategy.fnas, batch.size
    max_trained, critic = batch.max_trained, batch.critic
    if max_trained <= 0 or size <= 0:
        return []
    if not cfg.uac or critic is None:
        n = min(size, max_trained)
        return [Planned(p.tokens, p.log_prob, SAMPLE_SOURCE_TRAINED) for p in strategy.propose(n)]
    quota = math.floor(size * cfg.max_trusted_fraction)
    plan: list[Planned] = []
    dropped: list[tuple[Proposal, PredictionLike]] = []
    training: dict[str, int] = {}  # space key -> plan position of its train job
    n_trusted = n_jobs = 0
    critic_answers = True

    def repeat(p: Proposal, pred: PredictionLike, key: str) -> Planned | None:
        """An architecture this batch trains already, or the search trained before: no new job."""
        if key in training:
            return _planned(p, pred, SAMPLE_SOURCE_RECALL, copy_of=training[key])
        if (hit := batch.recalls.get(p.tokens)) is not None:  # e.g. before the critic's warmup ends
            return _planned(p, pred, SAMPLE_SOURCE_RECALL, recall_of=hit[0], recalled=hit[1])
        return None

    def train(p: Proposal, pred: PredictionLike, key: str) -> None:
        nonlocal n_jobs
        training[key] = len(plan)
        plan.append(_planned(p, pred, SAMPLE_SOURCE_TRAINED))
        n_jobs += 1

    for round_ in range(cfg.max_draw_rounds):
        if len(plan) >= size or n_jobs >= max_trained:
            break
        # Resampling rounds draw a whole batch: few calls even when most draws come back trusted.
        need = size - len(plan) if round_ == 0 else size
        proposals = strategy.propose(need * cfg.candidates, cfg.resample_temperature**round_)
        local = strategy.local_proposals(need * cfg.local_candidates) if round_ == 0 else []
        predictions = None
        if critic_answers:
            try:
                predictions = await critic.predict([p.tokens for p in proposals + local], batch.observed)
            except CriticUnavailable as e:
                log.warning("critic unavailable (%s): the rest of this batch is trained", e)
                metrics.DEGRADED.labels("critic").inc()
                critic_answers = False  # not asked again for this batch: each try waits its patience
        if predictions is None:
            predictions = [_UNPREDICTED] * (len(proposals) + len(local))
        # Local candidates only compete to be trained: what the critic already knows is skipped.
        untrusted = [
            (p, pred, batch.recalls.key(p.tokens))
            for p, pred in zip(local, predictions[len(proposals) :], strict=True)
            if not pred.known
        ]
        for p, pred in zip(proposals, predictions[: len(proposals)], strict=True):
            if len(plan) >= size or n_jobs >= max_trained:
                break
            key = batch.recalls.key(p.tokens)
            if key in training:
                plan.append(_planned(p, pred, SAMPLE_SOURCE_RECALL, copy_of=training[key]))
            elif not pred.trusted:
                untrusted.append((p, pred, key))
            elif n_trusted >= quota:
                dropped.append((p, pred))  # paper 4.2: thrown away, resampled
            elif pred.known or not strategy.draw_audit():
                hit = batch.recalls.get(p.tokens) if pred.known else None
                if hit is None:
                    plan.append(_planned(p, pred, SAMPLE_SOURCE_CRITIC, trusted=True))
                else:  # the critic knows it because this search trained it: a recall, not a prediction
                    plan.append(
                        _planned(
                            p, pred, SAMPLE_SOURCE_RECALL, trusted=True, recall_of=hit[0], recalled=hit[1]
                        )
                    )
                n_trusted += 1
            else:
                train(p, pred, key)
        if cfg.candidates > 1 or local:
            # Several untrusted candidates per slot: train the most promising first.
            untrusted.sort(key=lambda c: -(c[1].value + cfg.ucb * c[1].uncertainty))
        for p, pred, key in untrusted:
            if len(plan) >= size or n_jobs >= max_trained:
                break
            if (again := repeat(p, pred, key)) is not None:
                plan.append(again)
                continue
            train(p, pred, key)
    if n_jobs == 0 and dropped:
        # The policy keeps proposing what the critic trusts: train the least certain one so the search moves.
        p, pred = max(dropped, key=lambda d: (not d[1].known, d[1].uncertainty))
        plan.append(_planned(p, pred, SAMPLE_SOURCE_TRAINED))
        n_jobs += 1
    return _cap_trusted(plan, cfg.max_trusted_fraction)


@dataclass(frozen=True)
class _Unpredicted:
    """What a critic that gave no answer says of every proposal: nothing, so nothing is trusted."""

    value: float = math.nan
    uncertainty: float = math.nan
    trusted: bool = False
    known: bool = False


_UNPREDICTED = _Unpredicted()


def _planned(p: Proposal, pred: PredictionLike, source: int, **kw) -> Planned:
    if source == SAMPLE_SOURCE_TRAINED and pred.trusted and not pred.known:
        # Whatever put it on the queue (an audit draw, a local candidate's rank, a stalled batch), a
        # trained sample whose prediction the critic trusted measures its error where it claimed to be right.
        kw["audit"] = True
    return Planned(p.tokens, p.log_prob, source, float(pred.value), float(pred.uncertainty), **kw)


def _cap_trusted(plan: list[Planned], fraction: float) -> list[Planned]:
    """Drops trusted samples from the end until they are at most `fraction` of a short batch."""
    n_trusted = sum(p.trusted for p in plan)
    others = len(plan) - n_trusted
    allowed = n_trusted if fraction >= 1.0 else math.floor(others * fraction / (1.0 - fraction) + 1e-9)
    out = []
    for p in reversed(plan):
        if p.trusted and n_trusted > allowed:
            n_trusted -= 1
            continue
        out.append(p)
    out.reverse()
    return _renumber(out, plan)


def _renumber(kept: list[Planned], plan: list[Planned]) -> list[Planned]:
    """Fixes copy_of positions after samples were removed from the plan."""
    if len(kept) == len(plan):
        return kept
    new_pos, j = {}, 0
    for i, p in enumerate(plan):
        if j < len(kept) and kept[j] is p:
            new_pos[i] = j
            j += 1
    return [Planned(**(asdict(p) | {"copy_of": new_pos[p.copy_of]})) if p.copy_of >= 0 else p for p in kept]


async def replays(strategy: FnasStrategy, batch: BatchContext, n_fresh: int) -> list[tuple[int, Feedback]]:
    """(original sample index, feedback) of the exploited samples of this batch (paper 5).

    At most max_replay_fraction of the PPO batch: n <= n_fresh f / (1 - f).
    The buffer is the one after the first `batch.observed` results (those of
    the earlier batches); beta = `batch.progress` through the budget.
    """
    cfg, buffer = strategy.fnas, batch.buffer
    if not cfg.aeb or buffer is None or n_fresh == 0:
        return []
    n = math.floor(n_fresh * cfg.max_replay_fraction / (1.0 - cfg.max_replay_fraction) + 1e-9)
    seed = strategy.draw_seed()
    if n == 0 or batch.observed == 0:
        return []
    beta = min(1.0, max(0.0, batch.progress))
    try:
        drawn = await buffer.sample(n, beta, seed, batch.observed, cfg.buffer_size, cfg.priority_temperature)
    except BufferUnavailable as e:
        log.warning("buffer unavailable (%s): no replays in this batch", e)
        metrics.DEGRADED.labels("buffer").inc()
        return []
    return [
        (
            r.entry.index,
            Feedback(tuple(r.entry.tokens), r.entry.reward, r.entry.log_prob, r.weight, SAMPLE_SOURCE_BUFFER),
        )
        for r in drawn
    ]
