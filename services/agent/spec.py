"""Validation and defaults of a SearchSpec, before anything is stored.

Every rejection names the field and the reason; the servicer turns it into
INVALID_ARGUMENT.
"""

from __future__ import annotations

import math

from fnas import datasets, spaces
from fnas.bounds import clip
from fnas.config import FieldError
from fnas.reward import RewardFn
from fnas.v1 import common_pb2
from services.agent.fnas_strategy import config_from_spec, modules
from services.agent.registry import FNAS_VARIANTS, NAMES
from services.critic.client import check_options

DEFAULT_STRATEGY = "ppo"
DEFAULT_DATASET = "digits"
DEFAULT_EPOCHS = 5
MAX_BATCH_SIZE = 1024
MAX_SAMPLES = 10_000_000
#: The longest emulated training time of a tabular job (it holds a trainer that long).
MAX_SIMULATED_SECONDS = 600.0
#: Longest warm_start and critic_history lists: every progress event carries the spec, and NATS's
#: default message limit is 1 MiB (with strings of at most fnas.bounds.MAX_STRING_CHARS, these fit).
MAX_WARM_START = 1000
MAX_CRITIC_HISTORY = 100


class SpecError(ValueError):
    """A SearchSpec field that cannot be run; str() is '<field>: <reason>'."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


def validate(spec: common_pb2.SearchSpec) -> common_pb2.SearchSpec:
    """Returns a copy of the spec with defaults filled in, or raises SpecError."""
    out = common_pb2.SearchSpec()
    out.CopyFrom(spec)
    try:
        space = spaces.get(spec.space)
    except spaces.UnknownSpace as e:
        raise SpecError("space", str(e)) from None
    out.strategy = spec.strategy or DEFAULT_STRATEGY
    if out.strategy not in NAMES:
        raise SpecError("strategy", f"unknown strategy {clip(spec.strategy)!r}; known: {', '.join(NAMES)}")
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
        _fill_task(spec, out)
    if not 0 <= spec.task.simulated_seconds <= MAX_SIMULATED_SECONDS:
        raise SpecError(
            "task.simulated_seconds",
            f"must be in 0..{MAX_SIMULATED_SECONDS:g}, got {spec.task.simulated_seconds:g}",
        )
    if spec.batch_size > MAX_BATCH_SIZE:
        raise SpecError("batch_size", f"must be <= {MAX_BATCH_SIZE}")
    for name, cap in (("warm_start", MAX_WARM_START), ("critic_history", MAX_CRITIC_HISTORY)):
        if len(getattr(spec, name)) > cap:
            raise SpecError(name, f"at most {cap} entries, got {len(getattr(spec, name))}")
    _check_transfer(out)
    _check_fnas_options(out)
    for i, arch in enumerate(spec.warm_start):
        field = f"warm_start[{i}]"
        if arch.space and arch.space != space.id:
            raise SpecError(f"{field}.space", f"is {clip(arch.space)!r}, the search space is {space.id!r}")
        try:
            space.validate(arch.tokens)
        except spaces.InvalidArchitecture as e:
            raise SpecError(f"{field}.tokens", str(e)) from None
        out.warm_start[i].space = space.id
    _resolve_modules(out, space)
    return out


def _resolve_modules(out: common_pb2.SearchSpec, space: spaces.SearchSpace) -> None:
    """Writes the modules that run into the spec (each set), so that the search result says which ran:
    the critic and buffer only in an fnas strategy that has them, the pool only on a trained space."""
    uac, aeb, akp = uses_critic(out), uses_buffer(out), modules(out).akp and not space.tabular
    out.modules.uac, out.modules.aeb, out.modules.akp = uac, aeb, akp


def _fill_task(spec: common_pb2.SearchSpec, out: common_pb2.SearchSpec) -> None:
    """A trained space's task: dataset and epochs (defaults filled), and AKP's rule for warm samples."""
    out.task.dataset = spec.task.dataset or DEFAULT_DATASET
    out.task.epochs = spec.task.epochs or DEFAULT_EPOCHS
    try:
        datasets.check_name(out.task.dataset)  # its files are the trainers' to check (on their hosts)
    except ValueError as e:
        raise SpecError("task.dataset", str(e)) from None
    if spec.task.pool_epochs > out.task.epochs:
        raise SpecError(
            "task.pool_epochs", f"must be <= task.epochs ({out.task.epochs}), got {spec.task.pool_epochs}"
        )
    # Written into the spec, so that the search result states the rule it ran with.
    pool_epochs = spec.task.pool_epochs or default_pool_epochs(out.task.epochs)
    out.task.pool_epochs = pool_epochs if modules(spec).akp else 0


def default_pool_epochs(epochs: int) -> int:
    """Epochs of a sample warm from the pool when the spec sets none: half, rounded up (`fnas bench akp`
    found pool-initialised rankings at half the epochs as good as scratch rankings at the full count)."""
    return math.ceil(epochs / 2)


def sample_seed(spec: common_pb2.SearchSpec, index: int) -> int:
    """The training seed of sample `index`: distinct per sample, fixed by the search seed (reproducible);
    a final-selection retrain and an export use the seed of the sample they train again."""
    return (spec.seed * 1_000_003 + index) % (1 << 63)


def uses_critic(spec: common_pb2.SearchSpec) -> bool:
    """True when the search runs the UAC: an fnas strategy whose uac module is on (fnas-aeb: never)."""
    if spec.strategy not in FNAS_VARIANTS or spec.strategy == "fnas-aeb":
        return False
    return spec.strategy == "fnas-uac" or modules(spec).uac


def uses_buffer(spec: common_pb2.SearchSpec) -> bool:
    """True when the search runs the AEB: an fnas strategy whose aeb module is on (fnas-uac: never)."""
    if spec.strategy not in FNAS_VARIANTS or spec.strategy == "fnas-uac":
        return False
    return spec.strategy == "fnas-aeb" or modules(spec).aeb


def _check_transfer(spec: common_pb2.SearchSpec) -> None:
    for name in ("critic_snapshot", "critic_history"):
        if getattr(spec, name) and not uses_critic(spec):
            raise SpecError(
                name, f"needs the critic: an fnas strategy with the uac module, not {spec.strategy!r}"
            )
    for i, other in enumerate(spec.critic_history):
        if not other:
            raise SpecError(f"critic_history[{i}]", "empty search id")
    # AKP transfer between tasks (paper Table 5): the trainers query the blocks of pool_task.
    if spec.pool_task and (spaces.get(spec.space).tabular or not modules(spec).akp):
        raise SpecError("pool_task", "needs a trained space (mnas) with the akp module on")
    if spec.HasField("final_top_k") and spec.final_top_k > 100:
        raise SpecError("final_top_k", "must be <= 100")  # final selection (paper 6.2)
    if spec.final_epochs > 10_000:
        raise SpecError("final_epochs", "must be <= 10000")


#: Upper bounds of SearchSpec.fnas against abuse; FnasConfig and DecisionConfig check each field's meaning.
FNAS_CAPS = {
    "warmup": MAX_SAMPLES,
    "buffer_size": 10_000,
    "candidates": 1000,
    "ucb": 1000,
    "resample_temperature": 1000,
    "local_candidates": 1000,
    "elite_size": 1000,
}


def _check_fnas_options(spec: common_pb2.SearchSpec) -> None:
    """The FNAS limits (each field optional): within their caps, and valid for the configs they set."""
    for name, cap in FNAS_CAPS.items():
        if spec.fnas.HasField(name) and getattr(spec.fnas, name) > cap:
            raise SpecError(f"fnas.{name}", f"must be <= {cap}, got {getattr(spec.fnas, name)}")
    try:
        config_from_spec(spec)
        check_options(spec.fnas)
    except FieldError as e:
        raise SpecError(f"fnas.{e.field}", e.reason) from None


def _check_budget(budget: common_pb2.Budget) -> None:
    for name in ("max_activated_samples", "max_policy_samples"):
        value = getattr(budget, name)
        if not 0 <= value <= MAX_SAMPLES:
            raise SpecError(f"budget.{name}", f"must be in 0..{MAX_SAMPLES:,}, got {value}")
    if not budget.max_activated_samples and not budget.max_policy_samples:
        raise SpecError("budget", "set max_activated_samples or max_policy_samples (> 0)")
    if budget.max_seconds < 0:
        raise SpecError("budget.max_seconds", f"must be >= 0, got {budget.max_seconds}")
