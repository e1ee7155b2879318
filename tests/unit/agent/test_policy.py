"""The LSTM controller and the PPO functions: sampling, scoring, hand-computed loss values, learning."""

from __future__ import annotations

import math

import pytest
import torch

from services.agent import ppo
from services.agent.policy import Controller

torch.set_num_threads(1)

VOCAB = (3, 4, 2)
BEST = (2, 1, 0)


def reward_of(tokens: torch.Tensor) -> torch.Tensor:
    """Fraction of positions that match BEST: a unique best architecture with reward 1."""
    return (tokens == torch.tensor(BEST)).float().mean(dim=1)


def prob_of_best(policy: Controller) -> float:
    with torch.no_grad():
        return float(policy.log_prob(torch.tensor([BEST])).exp())


def test_sample_shapes_and_vocab_ranges():
    policy = Controller(VOCAB, generator=torch.Generator().manual_seed(0))
    tokens, log_prob = policy.sample(500, torch.Generator().manual_seed(1))
    assert tokens.shape == (500, 3) and tokens.dtype == torch.long
    assert log_prob.shape == (500,)
    for t, v in enumerate(VOCAB):
        assert tokens[:, t].min() >= 0 and tokens[:, t].max() < v
        assert len(tokens[:, t].unique()) == v  # near-uniform init reaches every choice
    assert bool((log_prob < 0).all())


def test_log_prob_of_sample_equals_sampled_log_prob():
    policy = Controller(VOCAB, generator=torch.Generator().manual_seed(0))
    tokens, log_prob = policy.sample(64, torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert float((policy.log_prob(tokens) - log_prob).abs().max()) < 1e-6


def test_probabilities_over_all_token_lists_sum_to_one():
    policy = Controller(VOCAB, generator=torch.Generator().manual_seed(3))
    grid = torch.cartesian_prod(*(torch.arange(v) for v in VOCAB))
    with torch.no_grad():
        log_prob, entropy = policy.evaluate_actions(grid)
    assert math.isclose(float(log_prob.exp().sum()), 1.0, rel_tol=1e-5)
    # Sequence entropy by the chain rule: E[sum of step entropies] = H(sequence).
    expected = float(-(log_prob.exp() * log_prob).sum())
    assert math.isclose(float((log_prob.exp() * entropy).sum()), expected, rel_tol=1e-4)


def test_tempered_samples_carry_the_tempered_log_prob_and_are_flatter():
    policy = Controller(VOCAB, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # a peaked policy: the first head strongly prefers token 2
        policy.heads[0].bias.copy_(torch.tensor([0.0, 0.0, 6.0]))
    grid = torch.cartesian_prod(*(torch.arange(v) for v in VOCAB))
    tokens, log_prob = policy.sample(4000, torch.Generator().manual_seed(1), temperature=3.0)
    with torch.no_grad():
        tempered = policy._steps(len(grid), grid, None, 3.0)[1]
        tempered_of = dict(zip(map(tuple, grid.tolist()), tempered.tolist(), strict=True))
        plain = policy.log_prob(tokens)
    assert math.isclose(float(tempered.exp().sum()), 1.0, rel_tol=1e-5)
    assert all(
        math.isclose(lp, tempered_of[tuple(t)], abs_tol=1e-5)
        for t, lp in zip(tokens.tolist(), log_prob.tolist(), strict=True)
    )
    assert not torch.allclose(plain, log_prob)  # the behaviour log-prob is not the untempered one
    share_of_mode = float((tokens[:, 0] == 2).float().mean())
    cold = float((policy.sample(4000, torch.Generator().manual_seed(1))[0][:, 0] == 2).float().mean())
    assert cold > 0.98 and share_of_mode < 0.9


def test_same_generator_seed_same_init_and_samples():
    a = Controller(VOCAB, generator=torch.Generator().manual_seed(7))
    b = Controller(VOCAB, generator=torch.Generator().manual_seed(7))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    ta, _ = a.sample(20, torch.Generator().manual_seed(2))
    tb, _ = b.sample(20, torch.Generator().manual_seed(2))
    assert torch.equal(ta, tb)


def test_evaluate_actions_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\[n, 3\]"):
        Controller(VOCAB).evaluate_actions(torch.zeros(4, 2, dtype=torch.long))


def test_clipped_surrogate_hand_computed():
    # ratios 1.5, 0.5, 1.0 against behaviour log-prob 0; clip 0.2.
    log_prob = torch.log(torch.tensor([1.5, 0.5, 1.0]))
    advantages = torch.tensor([1.0, -1.0, 2.0])
    weights = torch.tensor([1.0, 1.0, 0.5])
    loss, ratio = ppo.clipped_surrogate(log_prob, torch.zeros(3), advantages, weights, clip_range=0.2)
    assert torch.allclose(ratio, torch.tensor([1.5, 0.5, 1.0]))
    # min(1.5*1, 1.2*1) = 1.2; min(0.5*-1, 0.8*-1) = -0.8; 0.5 * min(2, 2) = 1.0
    assert math.isclose(float(loss), -(1.2 - 0.8 + 1.0) / 3, rel_tol=1e-6)


def test_ratio_uses_behaviour_log_prob():
    # An off-policy replay drawn with p_b = 0.25, now p = 0.5: ratio 2, clipped to 1 + eps for A > 0.
    loss, ratio = ppo.clipped_surrogate(
        torch.log(torch.tensor([0.5])), torch.log(torch.tensor([0.25])), torch.ones(1), torch.ones(1), 0.1
    )
    assert math.isclose(float(ratio), 2.0, rel_tol=1e-6)
    assert math.isclose(float(loss), -1.1, rel_tol=1e-6)


def test_baseline_and_advantages_hand_computed():
    assert ppo.update_baseline(None, torch.tensor([0.8]), 0.9) == pytest.approx(0.8)
    assert ppo.update_baseline(0.5, torch.tensor([1.0, 0.0]), 0.9) == pytest.approx(0.9 * (0.9 * 0.5 + 0.1))
    rewards = torch.tensor([0.7, 0.9])
    assert torch.allclose(ppo.compute_advantages(rewards, 0.75, False), torch.tensor([-0.05, 0.15]))
    assert torch.allclose(ppo.compute_advantages(rewards, None, False), torch.tensor([-0.1, 0.1]))
    normed = ppo.compute_advantages(rewards, 0.75, True)
    assert float(normed.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(normed.std()) == pytest.approx(1.0, rel=1e-4)


def _update(policy, optimizer, n, generator, **kwargs):
    tokens, log_prob = policy.sample(n, generator)
    rewards = reward_of(tokens)
    batch = ppo.RolloutBufferSamples(
        tokens, log_prob, ppo.compute_advantages(rewards, None, True), torch.ones(n)
    )
    defaults = dict(n_epochs=4, clip_range=0.2, ent_coef=0.0, max_grad_norm=0.5, target_kl=None)
    return rewards, ppo.ppo_update(policy, optimizer, batch, **(defaults | kwargs))


def test_target_kl_stops_early():
    policy = Controller(VOCAB, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.05)
    _, scalars = _update(policy, optimizer, 16, torch.Generator().manual_seed(1), n_epochs=10, target_kl=1e-9)
    # Epoch 0 starts at KL 0 and is taken; epoch 1 has moved past 1.5 * target_kl and is not.
    assert scalars["train/n_epochs"] == 1.0
    assert scalars["train/approx_kl"] > 1.5e-9
    _, scalars = _update(policy, optimizer, 16, torch.Generator().manual_seed(1), n_epochs=10)
    assert scalars["train/n_epochs"] == 10.0
    assert set(scalars) >= {"train/policy_loss", "train/approx_kl", "train/clip_fraction", "train/entropy"}


def test_ppo_learns_the_best_architecture():
    policy = Controller(VOCAB, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.02)
    generator = torch.Generator().manual_seed(1)
    p0 = prob_of_best(policy)
    means = [float(_update(policy, optimizer, 10, generator)[0].mean()) for _ in range(30)]
    assert p0 < 0.1  # about 1/24 at the near-uniform init
    assert prob_of_best(policy) > 0.5
    assert sum(means[-5:]) / 5 > means[0] + 0.3
