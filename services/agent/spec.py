"""Validation and defaults of a SearchSpec, before anything is stored.

Every rejection names the field and the reason; the servicer turns it into
INVALID_ARGUMENT.
"""

from __future__ import annotations

from typing import NamedTuple

from fnas import spaces
from fnas.reward import RewardFn
from fnas.v1 import common_pb2

STRATEGIES = ("ppo", "random", "evolution")
DEFAULT_STRATEGY = "ppo"
DEFAULT_DATASET = "digits"
DEFAULT_EPOCHS = 5
MAX_BATCH_SIZE = 1024
MAX_SAMPLES = 10_000_000


class SpecError(ValueError):
    """A SearchSpec field that cannot be run; str() is '<field>: <reason>'."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


class Modules(NamedTuple):
    uac: bool
    akp: bool
    aeb: bool


def modules(spec: common_pb2.SearchSpec) -> Modules:
    """The module switches with their defaults (on) applied."""
    m = spec.modules
    return Modules(*(not m.HasField(name) or getattr(m, name) for name in Modules._fields))


def validate(spec: common_pb2.SearchSpec) -> common_pb2.SearchSpec:
    """Returns a copy of the spec with defaults filled in, or raises SpecError."""
    out = common_pb2.SearchSpec()
    out.CopyFrom(spec)
    try:
        space = spaces.get(spec.space)
    except spaces.UnknownSpace as e:
        raise SpecError("space", str(e)) from None
    out.strategy = spec.strategy or DEFAULT_STRATEGY
    if out.strategy not in STRATEGIES:
        raise SpecError("strategy", f"unknown strategy {spec.strategy!r}; known: {', '.join(STRATEGIES)}")
    _check_budget(spec.budget)
    if not spec.HasField("reward"):
        out.reward.cost = common_pb2.COST_METRIC_NONE  # accuracy alone
    try:
        RewardFn.from_spec(out.reward)
    except ValueError as e:
        raise SpecError("reward", str(e)) from None
    if space.tabular:
        if spec.task.dataset:
            raise SpecError(
                "task.dataset", f"{space.id} is a benchmark table; its dataset is part of the space id"
            )
    else:
        out.task.dataset = spec.task.dataset or DEFAULT_DATASET
        out.task.epochs = spec.task.epochs or DEFAULT_EPOCHS
    if spec.task.simulated_seconds < 0:
        raise SpecError("task.simulated_seconds", "must be >= 0")
    if spec.batch_size > MAX_BATCH_SIZE:
        raise SpecError("batch_size", f"must be <= {MAX_BATCH_SIZE}")
    if spec.critic_snapshot and not modules(spec).uac:
        raise SpecError("critic_snapshot", "needs the uac module")
    if spec.critic_snapshot or spec.pool_task:
        raise SpecError(
            "critic_snapshot" if spec.critic_snapshot else "pool_task",
            f"transfer needs the critic / pool, which strategy {out.strategy!r} does not use",
        )
    for i, arch in enumerate(spec.warm_start):
        field = f"warm_start[{i}]"
        if arch.space and arch.space != space.id:
            raise SpecError(f"{field}.space", f"is {arch.space!r}, the search space is {space.id!r}")
        try:
            space.validate(arch.tokens)
        except spaces.InvalidArchitecture as e:
            raise SpecError(f"{field}.tokens", str(e)) from None
        out.warm_start[i].space = space.id
    return out


def _check_budget(budget: common_pb2.Budget) -> None:
    for name in ("max_activated_samples", "max_policy_samples"):
        value = getattr(budget, name)
        if not 0 <= value <= MAX_SAMPLES:
            raise SpecError(f"budget.{name}", f"must be in 0..{MAX_SAMPLES:,}, got {value}")
    if not budget.max_activated_samples and not budget.max_policy_samples:
        raise SpecError("budget", "set max_activated_samples or max_policy_samples (> 0)")
    if budget.max_seconds < 0:
        raise SpecError("budget.max_seconds", f"must be >= 0, got {budget.max_seconds}")
