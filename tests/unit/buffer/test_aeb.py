"""The experience buffer's math (paper 5): softmax priorities, (N P_i)^-beta weights, annealing, selection."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.buffer.aeb import Entry, History, beta_at, importance_weights, priorities, sample, select


def test_priorities_are_eq5_softmax():
    p = priorities([0.5, 0.7, 0.9])
    e = [math.exp(0.5), math.exp(0.7), math.exp(0.9)]
    assert p == pytest.approx([x / sum(e) for x in e])
    sharp = priorities([0.5, 0.7, 0.9], temperature=0.1)
    assert sharp[2] > p[2] and sharp.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        priorities([0.1], temperature=0.0)


def test_importance_weights_are_n_p_to_minus_beta_normalised():
    p = np.array([0.1, 0.2, 0.7])
    assert importance_weights(p, 0.0) == pytest.approx([1.0, 1.0, 1.0])
    raw = (3 * p) ** -1.0
    assert importance_weights(p, 1.0) == pytest.approx(raw / raw.max())
    half = importance_weights(p, 0.5)
    assert half == pytest.approx((3 * p) ** -0.5 / ((3 * 0.1) ** -0.5)) and half.max() == 1.0
    with pytest.raises(ValueError):
        importance_weights(p, 1.5)


def test_beta_anneals_from_zero_to_one():
    assert [beta_at(x) for x in (-0.1, 0.0, 0.25, 1.0, 3.0)] == [0.0, 0.0, 0.25, 1.0, 1.0]


def e(index, reward, log_prob=-3.0, tokens=None):
    return Entry(index, tokens or (index,), reward, log_prob)


def test_select_keeps_the_best_distinct_rewards():
    history = [e(0, 0.5), e(1, 0.9), e(2, 0.9), e(3, 0.7), e(4, 0.95, math.nan), e(5, 0.8), e(6, 0.6)]
    buf = select(history, capacity=3)
    # 0.95 is a warm start (no log-prob): not replayable; the second 0.9 (index 2) is a duplicate value.
    assert [(x.index, x.reward) for x in buf] == [(1, 0.9), (5, 0.8), (3, 0.7)]


def test_sample_follows_priorities_and_the_seed():
    buf = [e(0, 1.0), e(1, 0.0)]
    drawn = sample(buf, 4000, beta=1.0, rng=np.random.default_rng(0), temperature=0.5)
    share = sum(r.entry.index == 0 for r in drawn) / len(drawn)
    assert share == pytest.approx(math.exp(2) / (math.exp(2) + 1), abs=0.03)
    weights = {r.entry.index: r.weight for r in drawn}
    assert weights[1] == 1.0 and weights[0] < 1.0  # the rarer draw weighs most
    again = sample(buf, 10, 0.3, np.random.default_rng(7))
    assert again == sample(buf, 10, 0.3, np.random.default_rng(7))
    assert (
        sample([], 5, 0.5, np.random.default_rng(0)) == []
        and sample(buf, 0, 0.5, np.random.default_rng(0)) == []
    )


def test_history_uses_exactly_the_first_n_results():
    h = History()
    for i in [5, 0, 3, 1, 4, 2]:
        assert h.add(e(i, 0.1 * i))
    assert not h.add(e(3, 0.99))  # a redelivery
    replays = h.replays(50, 0.5, seed=1, min_observed=3, capacity=10, temperature=1.0)
    assert {r.entry.index for r in replays} <= {0, 1, 2}
    assert replays == h.replays(50, 0.5, seed=1, min_observed=3, capacity=10, temperature=1.0)
