"""Prometheus metrics of the critic (names fnas_critic_<what>_<unit>)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

from services.critic.decision import Prediction
from services.critic.search_critic import SearchCritic

OBSERVATIONS = Counter("fnas_critic_observations_total", "Trained results recorded (once each).")
PREDICTIONS = Counter("fnas_critic_predictions_total", "Predictions by decision.", ["decision"])
ROUNDS = Counter("fnas_critic_training_rounds_total", "Lazy training rounds of V and U.")
ROUND_SECONDS = Histogram(
    "fnas_critic_training_round_seconds",
    "Seconds per training round (in a worker thread).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
THRESHOLD = Gauge(
    "fnas_critic_threshold", "U threshold in force (-1: only known architectures trusted).", ["search"]
)
PREQUENTIAL_ERROR = Gauge(
    "fnas_critic_prequential_error",
    "Mean |V - R| of the latest calibration window, measured before V learned each result.",
    ["search"],
)

for decision in ("trusted", "untrusted", "known"):
    PREDICTIONS.labels(decision)


def observe_round(search_id: str, critic: SearchCritic, seconds: float) -> None:
    """A training round finished."""
    ROUNDS.inc()
    ROUND_SECONDS.observe(seconds)
    THRESHOLD.labels(search_id).set(critic.threshold())
    pairs = critic.trained.pairs
    if pairs:
        PREQUENTIAL_ERROR.labels(search_id).set(sum(e for _, e in pairs) / len(pairs))


def observe_predictions(predictions: Sequence[Prediction]) -> None:
    """Counts one Predict answer by decision."""
    for p in predictions:
        PREDICTIONS.labels("known" if p.known else "trusted" if p.trusted else "untrusted").inc()


def forget(search_id: str) -> None:
    """Drops the series of a finished search, so a long-lived critic's /metrics stays bounded."""
    for gauge in (THRESHOLD, PREQUENTIAL_ERROR):
        with contextlib.suppress(KeyError):
            gauge.remove(search_id)
