"""The trust decision: threshold calibration, warm-up, recall, no extrapolation above the best."""

from __future__ import annotations

import pytest
import torch

from fnas import spaces
from services.critic.decision import DecisionConfig, NotReady, calibrate
from services.critic.model import FitConfig
from services.critic.search_critic import SearchCritic

torch.set_num_threads(1)
CORA = spaces.get("nasbench-graph/cora")


def test_calibrate_picks_the_largest_prefix_within_target():
    pairs = [(0.4, 0.05), (0.1, 0.001), (0.3, 0.02), (0.2, 0.002)]
    d = DecisionConfig(target_error=0.25, min_calibration=4)
    # Scale 0.01 -> target 0.0025: prefix means 0.001, 0.0015, 0.0077, ... -> the two lowest U.
    assert calibrate(pairs, d, scale=0.01) == 0.3
    assert calibrate(pairs, d, scale=1.0) == pytest.approx(0.4 + 1e-9)  # everything within target
    assert calibrate(pairs, d, scale=0.0001) == -1.0  # nothing within target
    assert calibrate(pairs[:3], d, scale=1.0) == -1.0  # too few pairs


def test_decision_config_rejects_bad_values():
    for bad in (dict(warmup=-1), dict(threshold=-0.1), dict(target_error=0.0), dict(min_calibration=0)):
        with pytest.raises(ValueError):
            DecisionConfig(**bad)


def _arch(i: int) -> tuple[int, ...]:
    """Distinct valid cora architectures: link 8 (a chain), op tokens from i."""
    return CORA.validate((8, i % 9, (i // 9) % 9, (i // 81) % 9, 1))


def _critic(**decision) -> SearchCritic:
    return SearchCritic(CORA, seed=0, decision=DecisionConfig(**decision), fit=FitConfig(steps=5))


def test_not_ready_before_min_observed_and_untrusted_during_warmup():
    c = _critic(warmup=5, threshold=1e9)
    for i in range(3):
        c.observe(i, _arch(i), 0.7)
    with pytest.raises(NotReady):
        c.predict([_arch(50)], min_observed=4)
    assert not any(p.trusted for p in c.predict([_arch(50), _arch(0)], min_observed=3))
    c.observe(3, _arch(3), 0.8)
    c.observe(4, _arch(4), 0.75)
    known, new = c.predict([_arch(1), _arch(50)], min_observed=5)
    assert known.known and known.trusted and known.value == 0.7 and known.uncertainty == 0.0
    assert new.trusted == (new.value <= 0.8)  # a fixed, huge threshold: only extrapolation stays untrusted


def test_predictions_above_the_best_trained_reward_are_never_trusted():
    c = _critic(warmup=0, threshold=1e9)
    for i in range(20):
        c.observe(i, _arch(i), 0.5 + 0.01 * i)
    preds = c.predict([_arch(i) for i in range(100, 160)], min_observed=20)
    assert all(p.trusted == (p.value <= c.trained.best) for p in preds)
    assert c.trained.best == pytest.approx(0.69)


def test_trains_on_exactly_the_first_n_results_by_index():
    early = _critic(warmup=0)
    late = _critic(warmup=0)
    for i in range(12):
        early.observe(i, _arch(i), 0.7 + 0.001 * i)
    # The same 10 first results, arriving in another order, plus later ones that arrived early.
    for i in [11, 3, 2, 10, 0, 1, 9, 8, 7, 6, 5, 4]:
        late.observe(i, _arch(i), 0.7 + 0.001 * i)
    queries = [_arch(i) for i in range(40, 50)]
    assert early.predict(queries, 10) == late.predict(queries, 10)
    assert early.trained.n_trained == 10


def test_state_round_trip_continues_identically():
    a = _critic(warmup=0)
    for i in range(30):
        a.observe(i, _arch(i), 0.6 + 0.005 * (i % 7))
    a.predict([], 10)
    b = _critic(warmup=0)
    for i in range(30):
        b.observe(i, _arch(i), 0.6 + 0.005 * (i % 7))
    b.load_state(a.state())
    queries = [_arch(i) for i in range(60, 70)]
    assert a.predict(queries, 20) == b.predict(queries, 20)
    assert a.trained.pairs == b.trained.pairs and a.threshold() == b.threshold()
