"""The nets of the Uncertainty-Aware Critic (paper 4.2, 6.1) and their losses.

V predicts an architecture's reward and U how far V is off there; both are
four-layer MLPs with 200 hidden units and PReLU (paper 6.1) on the space's
one-hot expanded embedding (paper 3.1). Targets are standardised with a robust
location and scale of the rewards seen so far, so that one learning rate fits
spaces whose rewards spread over 0.02 or over 0.2, and a net transferred from
another task (paper 3.1, 7.2) keeps its ranking while its level adapts.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

#: Paper 6.1: four layers of 200 hidden units with PReLU.
HIDDEN_SIZE = 200
N_LAYERS = 4
#: IQR / 1.349 is the standard deviation of a normal distribution with that IQR.
_IQR_TO_SIGMA = 1.349


def mlp(
    n_in: int, hidden: int = HIDDEN_SIZE, layers: int = N_LAYERS, generator: torch.Generator | None = None
):
    """`layers` Linear layers (the last one to a scalar) with PReLU between them.

    Weights are drawn from an explicit generator with PyTorch's default bounds
    (U(-1/sqrt(fan_in), 1/sqrt(fan_in))), so the same seed gives the same net
    without touching the global RNG.
    """
    if layers < 2:
        raise ValueError(f"an MLP needs >= 2 layers, got {layers}")
    sizes = [n_in] + [hidden] * (layers - 1) + [1]
    modules: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        linear = nn.Linear(a, b)
        bound = 1.0 / math.sqrt(a)
        with torch.no_grad():
            linear.weight.uniform_(-bound, bound, generator=generator)
            linear.bias.uniform_(-bound, bound, generator=generator)
        modules.append(linear)
        if i < layers - 1:
            modules.append(nn.PReLU(b))
    return nn.Sequential(*modules)


def value_loss(v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Eq. 3, L_V = |V(m) - R(m)| per sample."""
    return (v - r).abs()


def uncertainty_loss(u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Eq. 4, L_U = |U(m) - L_V| per sample, with L_V detached: U never moves V."""
    return (u - value_loss(v, r).detach()).abs()


@dataclass(frozen=True)
class Scale:
    """Robust location and scale of the rewards: the median and IQR / 1.349 (floored)."""

    loc: float = 0.0
    scale: float = 1.0

    @classmethod
    def of(cls, rewards: Sequence[float], floor: float = 1e-3) -> Scale:
        """The scale of `rewards`; the identity for fewer than two."""
        if len(rewards) < 2:
            return cls()
        q1, med, q3 = np.percentile(np.asarray(rewards, dtype=np.float64), [25, 50, 75])
        return cls(float(med), max(float(q3 - q1) / _IQR_TO_SIGMA, floor))


@dataclass(frozen=True)
class FitConfig:
    """How one lazy training round of the critic runs."""

    #: Adam learning rate of both nets.
    lr: float = 1e-3
    #: Adam steps per training round.
    steps: int = 15
    #: Minibatch size (drawn uniformly, with replacement, from every observation so far).
    batch_size: int = 64
    #: Minibatch share reserved for the observations new in this round (they are few and the freshest).
    fresh_share: float = 0.25


class CriticNets(nn.Module):
    """V and U over one-hot embeddings; outputs in reward units through `scale`."""

    def __init__(self, n_in: int, seed: int, hidden: int = HIDDEN_SIZE, layers: int = N_LAYERS) -> None:
        super().__init__()
        self.n_in, self.hidden, self.layers = n_in, hidden, layers
        self.generator = torch.Generator().manual_seed(seed)
        self.value = mlp(n_in, hidden, layers, self.generator)
        self.uncertainty = mlp(n_in, hidden, layers, self.generator)
        self.scale = Scale()
        self.optimizer: torch.optim.Adam | None = None

    def _opt(self, lr: float) -> torch.optim.Adam:
        if self.optimizer is None:
            self.optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        return self.optimizer

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(V, U) in reward units for embeddings x [n, n_in]; U is clamped at 0."""
        if x.shape[0] == 0:
            return np.zeros(0), np.zeros(0)
        v = self.value(x).squeeze(1).double() * self.scale.scale + self.scale.loc
        u = self.uncertainty(x).squeeze(1).double().clamp_min(0.0) * self.scale.scale
        return v.numpy(), u.numpy()

    def fit(
        self,
        x: torch.Tensor,
        rewards: torch.Tensor,
        arrival_values: torch.Tensor,
        n_fresh: int,
        config: FitConfig,
    ) -> dict[str, float]:
        """One training round on every observation so far (x [n, n_in], rewards [n]).

        V learns Eq. 3 on all of them. U learns Eq. 4 with L_V taken when each
        sample arrived (`arrival_values`: V(m) before V had seen m): that is the
        error V makes on an architecture it has not learned, the thing U must
        flag, whereas the in-sample L_V of a 200-unit net shrinks towards zero
        everywhere it was trained. The last `n_fresh` rows are the new ones.
        """
        n = x.shape[0]
        if n == 0:
            return {}
        self.scale = Scale.of(rewards.tolist())
        r = (rewards - self.scale.loc) / self.scale.scale
        v_at_arrival = (arrival_values - self.scale.loc) / self.scale.scale
        opt = self._opt(config.lr)
        n_new = min(n_fresh, n, math.ceil(config.batch_size * config.fresh_share))
        l_v = l_u = 0.0
        for _ in range(config.steps):
            idx = torch.randint(0, n, (config.batch_size - n_new,), generator=self.generator)
            if n_new:  # the fresh rows in every step: a handful among hundreds would be seen rarely
                idx = torch.cat([idx, torch.arange(n - n_new, n)])
            bx, br = x[idx], r[idx]
            lv = value_loss(self.value(bx).squeeze(1), br).mean()
            lu = uncertainty_loss(self.uncertainty(bx).squeeze(1), v_at_arrival[idx], br).mean()
            opt.zero_grad()
            (lv + lu).backward()
            opt.step()
            l_v, l_u = float(lv.detach()), float(lu.detach())
        return {
            "critic/value_loss": l_v * self.scale.scale,
            "critic/uncertainty_loss": l_u * self.scale.scale,
        }

    # state (safetensors-friendly: tensors + JSON-able meta)
    def tensors(self) -> dict[str, torch.Tensor]:
        """Weights, Adam moments and the generator state, as named contiguous tensors."""
        out = {f"net.{k}": v.detach().clone().contiguous() for k, v in self.state_dict().items()}
        if self.optimizer is not None:
            for i, st in self.optimizer.state_dict()["state"].items():
                out |= {f"optim.{i}.{k}": torch.as_tensor(v).clone() for k, v in st.items()}
        out["generator"] = self.generator.get_state()
        return out

    def meta(self) -> dict:
        """Shapes, the reward scale and the optimizer's hyper-parameters."""
        groups = self.optimizer.state_dict()["param_groups"] if self.optimizer is not None else None
        return {
            "n_in": self.n_in,
            "hidden": self.hidden,
            "layers": self.layers,
            "scale": [self.scale.loc, self.scale.scale],
            "param_groups": groups,
        }

    @classmethod
    def restore(cls, tensors: dict[str, torch.Tensor], meta: dict, weights_only: bool = False) -> CriticNets:
        """A UAC from `tensors()` / `meta()`; `weights_only` starts a fresh optimizer (transfer)."""
        net = cls(int(meta["n_in"]), 0, int(meta["hidden"]), int(meta["layers"]))
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        net.scale = Scale(*meta["scale"])
        if "generator" in tensors and not weights_only:
            net.generator.set_state(tensors["generator"])
        if meta.get("param_groups") and not weights_only:
            state: dict[int, dict[str, torch.Tensor]] = {}
            for k, v in tensors.items():
                if k.startswith("optim."):
                    _, i, name = k.split(".", 2)
                    state.setdefault(int(i), {})[name] = v
            net._opt(meta["param_groups"][0]["lr"]).load_state_dict(
                {"state": state, "param_groups": meta["param_groups"]}
            )
        return net
