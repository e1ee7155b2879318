"""The UAC nets and losses (paper 4.2 Eq. 3 and 4, 6.1): shapes, math, determinism, state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from services.critic.model import CriticNets, FitConfig, Scale, mlp, uncertainty_loss, value_loss

torch.set_num_threads(1)


def test_mlp_is_four_layers_of_200_with_prelu():
    net = mlp(45)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(45, 200), (200, 200), (200, 200), (200, 1)]
    assert sum(isinstance(m, nn.PReLU) for m in net) == 3


def test_value_loss_is_eq3():
    v, r = torch.tensor([0.5, 0.9, 0.1]), torch.tensor([0.7, 0.6, 0.1])
    assert torch.allclose(value_loss(v, r), torch.tensor([0.2, 0.3, 0.0]))


def test_uncertainty_loss_is_eq4_with_l_v_detached():
    v = torch.tensor([0.5, 0.9], requires_grad=True)
    u = torch.tensor([0.1, 0.5], requires_grad=True)
    r = torch.tensor([0.7, 0.6])
    loss = uncertainty_loss(u, v, r)
    assert torch.allclose(loss, torch.tensor([abs(0.1 - 0.2), abs(0.5 - 0.3)]))
    loss.sum().backward()
    assert v.grad is None  # L_V is a target for U, U never moves V
    assert torch.allclose(u.grad, torch.tensor([-1.0, 1.0]))


def test_scale_is_median_and_robust_sigma():
    s = Scale.of([1.0, 2.0, 3.0, 4.0, 5.0])
    assert s.loc == 3.0 and s.scale == pytest.approx(2.0 / 1.349)
    assert Scale.of([0.5]) == Scale() and Scale.of([0.7] * 4).scale == 1e-3


def _data(n: int = 200, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 10)
    x[torch.arange(n), torch.randint(0, 10, (n,), generator=g)] = 1.0
    r = 0.7 + 0.01 * x.argmax(1).float()  # reward depends on the one-hot position
    return x, r


def test_fit_learns_and_is_deterministic_per_seed():
    x, r = _data()
    a, b, c = (CriticNets(10, seed=s, hidden=32) for s in (3, 3, 4))
    before = (torch.tensor(a.predict(x)[0]) - r.double()).abs().mean()
    for net in (a, b, c):
        net.fit(x, r, torch.zeros_like(r), 0, FitConfig(steps=40, lr=3e-3))
    after = (torch.tensor(a.predict(x)[0]) - r.double()).abs().mean()
    assert after < 0.2 * before
    assert (a.predict(x)[0] == b.predict(x)[0]).all()
    assert not (a.predict(x)[0] == c.predict(x)[0]).all()


def test_restore_continues_bit_identically():
    x, r = _data()
    a = CriticNets(10, seed=1)
    a.fit(x, r, r, 5, FitConfig())
    b = CriticNets.restore(a.tensors(), a.meta())
    for net in (a, b):
        net.fit(x, r, r, 5, FitConfig())
    assert (a.predict(x)[0] == b.predict(x)[0]).all() and (a.predict(x)[1] == b.predict(x)[1]).all()
