"""Every search strategy by name: the one registry of the agent, the spec check and the benchmarks."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from fnas.spaces.base import SearchSpace
from fnas.v1 import common_pb2
from services.agent.fnas_strategy import FnasConfig, FnasStrategy, config_from_spec
from services.agent.peers import BananasConfig, BananasStrategy, TPEStrategy
from services.agent.strategies import (
    EvolutionConfig,
    EvolutionStrategy,
    PPOConfig,
    PPOStrategy,
    RandomStrategy,
    Strategy,
)

#: Name -> (class, the dataclass of the options `make` accepts as overrides).
_BASELINES: dict[str, tuple[type[Strategy], type | None]] = {
    "ppo": (PPOStrategy, PPOConfig),
    "random": (RandomStrategy, None),
    "evolution": (EvolutionStrategy, EvolutionConfig),
    "tpe": (TPEStrategy, None),
    "bananas": (BananasStrategy, BananasConfig),
}
#: The fnas strategies: name -> (uac, aeb) forced on / off; "fnas" takes the spec's switches
#: (`fnas-uac` and `fnas-aeb` are paper Table 4's ablation).
FNAS_VARIANTS: dict[str, tuple[bool, bool] | None] = {
    "fnas": None,
    "fnas-uac": (True, False),
    "fnas-aeb": (False, True),
}
NAMES = (*_BASELINES, *FNAS_VARIANTS)


def make(
    name: str,
    space: SearchSpace,
    seed: int,
    batch_size: int = 0,
    fnas: FnasConfig | None = None,
    **overrides: Any,
) -> Strategy:
    """The strategy `name` on `space`; batch_size 0 takes its default, overrides set config fields.

    `fnas`: the module switches and batch-assembly limits of an fnas strategy (defaults: FnasConfig()).
    """
    if name in FNAS_VARIANTS:
        cls, config = FnasStrategy, PPOConfig
    elif name in _BASELINES:
        cls, config = _BASELINES[name]
    else:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(NAMES)}")
    allowed = {f.name for f in fields(config)} if config else set()
    if unknown := set(overrides) - allowed:
        raise ValueError(f"{name} has no option {sorted(unknown)}; options: {sorted(allowed) or 'none'}")
    batch_size = batch_size or cls.default_batch_size
    if cls is not FnasStrategy:
        return cls(space, seed, batch_size, **overrides)
    fnas = fnas or FnasConfig()
    if (forced := FNAS_VARIANTS[name]) is not None:
        fnas = FnasConfig(**(asdict(fnas) | {"uac": forced[0], "aeb": forced[1]}))
    return FnasStrategy(space, seed, batch_size, fnas, **overrides)


def from_spec(spec: common_pb2.SearchSpec, space: SearchSpace) -> Strategy:
    """The strategy of a validated SearchSpec."""
    fnas = config_from_spec(spec) if spec.strategy in FNAS_VARIANTS else None
    return make(spec.strategy, space, spec.seed, spec.batch_size, fnas)
