"""The trust decision of the UAC (paper 4.2), without torch: its config, its answer, its calibration.

U(m) below the threshold means trusted: the policy takes V(m) as the reward and
nothing is trained. The threshold is fixed, or calibrated on prequential pairs
(U, |V - R|) taken before V learned each observation (see `calibrate`).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from fnas.config import Ranges, check_ranges, set_fields


@dataclass(frozen=True)
class DecisionConfig:
    """When a prediction is trusted."""

    #: Trained results before anything is trusted.
    warmup: int = 10
    #: Fixed U threshold; None calibrates it (see the module docstring).
    threshold: float | None = None
    #: Calibrated mode: allowed mean |V - R| of trusted predictions, in robust reward scales.
    target_error: float = 0.25
    #: Calibrated mode: the most recent prequential pairs used.
    calibration_window: int = 200
    #: Calibrated mode: pairs needed before anything is trusted.
    min_calibration: int = 10
    #: Trust predictions above the best trained reward (False: a predicted new best is verified by training).
    trust_above_best: bool = False
    #: With trust_above_best False, a sample is also verified when V + optimism * U exceeds the best.
    optimism: float = 0.0
    #: An architecture already trained is predicted as its observed mean reward with U = 0.
    recall: bool = True

    def __post_init__(self) -> None:
        check_ranges(self, LIMITS)


#: The valid range of each DecisionConfig field; SearchSpec.fnas adds upper bounds (services/agent/spec.py).
LIMITS: Ranges = {
    "warmup": (lambda v: v >= 0, "must be >= 0"),
    "threshold": (lambda v: v is None or v >= 0, "must be >= 0 (or unset: calibrated)"),
    "target_error": (lambda v: v > 0, "must be > 0"),
    "calibration_window": (lambda v: v >= 1, "must be >= 1"),
    "min_calibration": (lambda v: v >= 1, "must be >= 1"),
}


@dataclass(frozen=True)
class Prediction:
    """V(m), U(m) and the decision for one architecture."""

    value: float
    uncertainty: float
    trusted: bool
    #: The architecture was trained before (recalled, not predicted).
    known: bool = False


class NotReady(Exception):
    """Fewer results observed than the request's min_observed."""


def from_options(options, defaults: DecisionConfig | None = None) -> DecisionConfig:
    """The UAC fields of a fnas.v1.FnasOptions over `defaults`; FieldError names the bad field."""
    return replace(defaults or DecisionConfig(), **set_fields(options, DecisionConfig))


def calibrate(pairs: Sequence[tuple[float, float]], decision: DecisionConfig, scale: float) -> float:
    """The largest U threshold whose lower-U prequential pairs meet the target error; -1 if none.

    Pairs are sorted by U; the prefix of the k lowest has mean error e_k; the
    threshold lies just above the U of the largest k with e_k <= target, so
    that `U < threshold` admits exactly those k.
    """
    if len(pairs) < decision.min_calibration:
        return -1.0
    target = decision.target_error * scale
    ordered = sorted(pairs)
    errors = np.cumsum([e for _, e in ordered]) / np.arange(1, len(ordered) + 1)
    ok = np.nonzero(errors <= target)[0]
    if len(ok) == 0:
        return -1.0
    k = int(ok[-1])
    us = [u for u, _ in ordered]
    above = bisect.bisect_right(us, us[k])
    return us[above] if above < len(us) and us[above] > us[k] else us[k] + 1e-9
