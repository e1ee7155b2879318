import math

import pytest

from fnas.reward import RewardFn
from fnas.v1 import common_pb2 as c


def test_eq2_uses_alpha_below_and_beta_above_target():
    fn = RewardFn.from_spec(
        c.RewardSpec(cost=c.COST_METRIC_LATENCY, target_latency_ms=10, alpha=-0.1, beta=-0.5)
    )
    assert fn(0.8, latency_ms=5) == pytest.approx(0.8 * 0.5**-0.1)
    assert fn(0.8, latency_ms=20) == pytest.approx(0.8 * 2**-0.5)
    assert fn(0.8, latency_ms=10) == pytest.approx(0.8)


def test_defaults_are_mnas_exponents():
    fn = RewardFn.from_spec(c.RewardSpec(target_latency_ms=1.0))
    assert (fn.alpha, fn.beta) == (-0.07, -0.07)
    assert fn(1.0, latency_ms=2.0) == pytest.approx(math.pow(2.0, -0.07))


def test_mult_adds_cost():
    fn = RewardFn.from_spec(c.RewardSpec(cost=c.COST_METRIC_MULT_ADDS, target_mult_adds=300_000_000))
    assert fn(0.7, mult_adds=600_000_000) == pytest.approx(0.7 * 2**-0.07)


def test_accuracy_only():
    fn = RewardFn.from_spec(c.RewardSpec(cost=c.COST_METRIC_NONE))
    assert fn(0.42) == 0.42


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (c.RewardSpec(cost=c.COST_METRIC_LATENCY), "target_latency_ms"),
        (c.RewardSpec(cost=c.COST_METRIC_MULT_ADDS), "target_mult_adds"),
        (c.RewardSpec(cost=c.COST_METRIC_LATENCY, target_latency_ms=-1), "target_latency_ms"),
    ],
)
def test_bad_spec(spec, message):
    with pytest.raises(ValueError, match=message):
        RewardFn.from_spec(spec)


def test_missing_cost_figure_is_an_error():
    fn = RewardFn.from_spec(c.RewardSpec(target_latency_ms=1.0))
    with pytest.raises(ValueError, match="positive"):
        fn(0.5, latency_ms=0.0)
