"""The search reward, paper Eq. 2 with MnasNet's two exponents.

R(m) = ACC(m) * (LAT(m) / T)^w, with w = alpha when LAT <= T and beta otherwise.
LAT is measured latency or Mult-Adds, whichever the RewardSpec names.
"""

from __future__ import annotations

from dataclasses import dataclass

from fnas.v1 import common_pb2

DEFAULT_EXPONENT = -0.07


@dataclass(frozen=True)
class RewardFn:
    """Eq. 2 for one RewardSpec; build it with `from_spec`, which validates."""

    cost: int
    target: float
    alpha: float
    beta: float

    @classmethod
    def from_spec(cls, spec: common_pb2.RewardSpec) -> RewardFn:
        cost = spec.cost or common_pb2.COST_METRIC_LATENCY
        alpha = spec.alpha if spec.HasField("alpha") else DEFAULT_EXPONENT
        beta = spec.beta if spec.HasField("beta") else DEFAULT_EXPONENT
        if cost == common_pb2.COST_METRIC_LATENCY:
            target = spec.target_latency_ms
            if not target > 0:
                raise ValueError("reward.target_latency_ms must be > 0 when the cost is latency")
        elif cost == common_pb2.COST_METRIC_MULT_ADDS:
            target = float(spec.target_mult_adds)
            if not target > 0:
                raise ValueError("reward.target_mult_adds must be > 0 when the cost is Mult-Adds")
        elif cost == common_pb2.COST_METRIC_NONE:
            target = 1.0
        else:
            raise ValueError(f"reward.cost {cost} is not a known CostMetric")
        return cls(cost, target, alpha, beta)

    def __call__(self, accuracy: float, latency_ms: float = 0.0, mult_adds: int = 0) -> float:
        if self.cost == common_pb2.COST_METRIC_NONE:
            return accuracy
        lat = latency_ms if self.cost == common_pb2.COST_METRIC_LATENCY else float(mult_adds)
        if not lat > 0:
            raise ValueError("the reward's cost term needs a positive latency / Mult-Adds figure")
        ratio = lat / self.target
        return accuracy * ratio ** (self.alpha if ratio <= 1.0 else self.beta)

    def fill(self, reward: common_pb2.Reward) -> common_pb2.Reward:
        """Sets reward.value from its accuracy and cost figures; returns it."""
        reward.value = self(reward.accuracy, reward.latency_ms, reward.mult_adds)
        return reward


def accuracy_only() -> common_pb2.RewardSpec:
    """The RewardSpec whose reward is the validation accuracy alone."""
    return common_pb2.RewardSpec(cost=common_pb2.COST_METRIC_NONE)
