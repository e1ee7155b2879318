"""Prometheus metrics of the agent (names fnas_agent_<what>_<unit>)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from prometheus_client import Counter, Gauge

from fnas.sources import SOURCES, label
from fnas.v1 import queue_pb2, search_pb2

SAMPLES = Counter("fnas_agent_samples_total", "Samples the policy learned from, by source.", ["source"])
ACTIVATED = Counter(
    "fnas_agent_activated_samples_total", "Trained samples whose result was received (once each)."
)
FAILED = Counter("fnas_agent_failed_samples_total", "Train jobs that failed or ran out of redeliveries.")
UPDATES = Counter("fnas_agent_updates_total", "Policy updates.")
BEST = Gauge("fnas_agent_best_reward", "Best trained reward of a search.", ["search"])
SEARCHES = Counter("fnas_agent_searches_finished_total", "Searches that reached a final state.", ["state"])
RUNNING = Gauge("fnas_agent_searches_running", "Searches running in this agent.")
POLICY = Gauge("fnas_agent_policy_stat", "Last PPO update scalars (train/approx_kl, ...).", ["stat"])

DEGRADED = Counter(
    "fnas_agent_degraded_batches_total",
    "Batches planned without the critic's predictions or the buffer's replays (it gave none).",
    ["service"],
)

for source in SOURCES:
    SAMPLES.labels(label(source))
for service in ("critic", "buffer"):
    DEGRADED.labels(service)


def observe_result(result: queue_pb2.TrainResult, status: search_pb2.SearchStatus) -> None:
    """A new (not duplicate) train result was stored."""
    if result.outcome == queue_pb2.TRAIN_OUTCOME_OK:
        ACTIVATED.inc()
        if status.state == search_pb2.SEARCH_STATE_RUNNING:  # a late result must not revive the series
            BEST.labels(status.search_id).set(status.best.reward.value)
    else:
        FAILED.inc()


def observe_batch(
    status: search_pb2.SearchStatus, counts: Mapping[int, int], train_stats: dict[str, float]
) -> None:
    """A batch was learned from: its policy samples by SampleSource, the update, and the search's ratios."""
    for source in SOURCES:
        SAMPLES.labels(label(source)).inc(counts.get(source, 0))
    if any(counts.values()):  # as status.updates counts
        UPDATES.inc()
    for name, value in train_stats.items():
        POLICY.labels(name).set(value)
    SAMPLE_SPEEDUP.labels(status.search_id).set(status.sample_speedup)
    if status.HasField("calibration_error"):
        CALIBRATION_ERROR.labels(status.search_id).set(status.calibration_error)


def observe_finished(status: search_pb2.SearchStatus) -> None:
    """Counts the final state and drops the search's own series, so a long-lived agent's /metrics stays
    bounded by the searches running (their figures stay in the search status)."""
    SEARCHES.labels(search_pb2.SearchState.Name(status.state).removeprefix("SEARCH_STATE_").lower()).inc()
    for gauge in PER_SEARCH:
        with contextlib.suppress(KeyError):
            gauge.remove(status.search_id)


CALIBRATION_ERROR = Gauge(
    "fnas_agent_critic_calibration_error",
    "UAC calibration check: mean |V - R| over audited samples (would-be trusted, trained anyway).",
    ["search"],
)
SAMPLE_SPEEDUP = Gauge(
    "fnas_agent_sample_speedup_ratio", "Policy samples (every source) per activated sample.", ["search"]
)


#: Gauges labelled by search id: removed when the search ends.
PER_SEARCH = (BEST, CALIBRATION_ERROR, SAMPLE_SPEEDUP)
