"""PPO for the NAS controller as importable functions (cleanrl `ppo.py` order, SB3 logging).

NAS is a one-step episode per architecture (paper 4.1, Eq. 1): there is no GAE;
the advantage is the reward minus MNAS's baseline, an exponential moving average
of past rewards. The importance ratio is taken against the *behaviour* log-prob
that came with each sample, so replays from the experience buffer (paper 5),
drawn by an older policy, are corrected off-policy; each sample carries a weight
(S_i = (N P_i)^-beta for replays, 1 otherwise).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from services.agent.policy import Controller


class RolloutBufferSamples(NamedTuple):
    """One PPO batch: b_tokens [n, T], behaviour log-probs, advantages and weights [n]."""

    tokens: torch.Tensor
    behaviour_log_prob: torch.Tensor
    advantages: torch.Tensor
    weights: torch.Tensor


def update_baseline(baseline: float | None, rewards: torch.Tensor, decay: float) -> float:
    """The MNAS moving-average baseline after absorbing `rewards` one at a time, in order.

    Updating per sample (rather than per batch mean) keeps `decay`'s meaning
    independent of the batch size. The first reward seeds an empty baseline, so
    rewards such as accuracies near 0.8 do not start with all-positive advantages.
    """
    for r in rewards.tolist():
        baseline = r if baseline is None else decay * baseline + (1.0 - decay) * r
    return baseline


def compute_advantages(
    rewards: torch.Tensor, baseline: float | None, normalize_advantage: bool
) -> torch.Tensor:
    """Advantages = reward - baseline (the batch mean if there is no baseline yet).

    With `normalize_advantage` they are standardised per batch as in SB3; that
    also removes the baseline's level, so the baseline is then only logged.
    """
    b = rewards.mean() if baseline is None else torch.tensor(baseline, dtype=rewards.dtype)
    advantages = rewards - b
    if normalize_advantage and len(advantages) > 1:
        # SB3: normalisation is meaningless for a single sample (see SB3 issue #325).
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    return advantages


#: Largest log importance ratio taken at face value (e^20: far beyond any clip range).
MAX_LOG_RATIO = 20.0


def clipped_surrogate(
    log_prob: torch.Tensor,
    behaviour_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weighted PPO-clip policy loss (Schulman et al. 2017, Eq. 7) and the ratio.

    ratio = exp(logp_new - logp_behaviour); loss = -mean_i w_i min(ratio_i A_i,
    clip(ratio_i, 1 - eps, 1 + eps) A_i). The mean is over samples (not divided by
    sum w) as in prioritized replay, so small replay weights shrink their pull.
    """
    # Capped so that a sample the behaviour policy found very unlikely (a local candidate, an old
    # replay) cannot overflow to inf, whose backward pass would turn the policy into NaN.
    ratio = torch.exp((log_prob - behaviour_log_prob).clamp(max=MAX_LOG_RATIO))
    surrogate = torch.min(ratio * advantages, torch.clamp(ratio, 1 - clip_range, 1 + clip_range) * advantages)
    return -(weights * surrogate).mean(), ratio


def ppo_update(
    policy: Controller,
    optimizer: torch.optim.Optimizer,
    batch: RolloutBufferSamples,
    *,
    n_epochs: int,
    clip_range: float,
    ent_coef: float,
    max_grad_norm: float,
    target_kl: float | None,
) -> dict[str, float]:
    """`n_epochs` full-batch gradient steps of the clipped loss; returns SB3-style scalars.

    A NAS batch is a handful of samples, so every epoch uses the whole batch (no
    minibatch shuffling, hence no RNG here). approx-KL is measured against the
    policy at the start of this update, not the behaviour policy: replays are
    far from the current policy by construction and would otherwise stop every
    update at once. As in SB3, an epoch whose approx-KL exceeds 1.5 target_kl is
    not taken, and the remaining epochs are skipped.
    """
    clip_fractions, approx_kl, losses, entropies, n_run = [], 0.0, [], [], 0
    for epoch in range(n_epochs):
        log_prob, entropy = policy.evaluate_actions(batch.tokens)
        if epoch == 0:
            start_log_prob = log_prob.detach()
        policy_loss, ratio = clipped_surrogate(
            log_prob, batch.behaviour_log_prob, batch.advantages, batch.weights, clip_range
        )
        with torch.no_grad():
            # cleanrl / SB3 low-variance estimator of KL(start || current) (http://joschu.net/blog/kl-approx.html).
            log_ratio = log_prob - start_log_prob
            approx_kl = float(((torch.exp(log_ratio) - 1) - log_ratio).mean())
        if target_kl is not None and approx_kl > 1.5 * target_kl:
            break
        entropy_mean = entropy.mean()
        loss = policy_loss - ent_coef * entropy_mean
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
        optimizer.step()
        n_run += 1
        clip_fractions.append(float((torch.abs(ratio.detach() - 1) > clip_range).float().mean()))
        losses.append(float(policy_loss.detach()))
        entropies.append(float(entropy_mean.detach()))
    return {
        "train/policy_loss": sum(losses) / max(len(losses), 1),
        "train/approx_kl": approx_kl,
        "train/clip_fraction": sum(clip_fractions) / max(len(clip_fractions), 1),
        "train/entropy": sum(entropies) / max(len(entropies), 1),
        "train/n_epochs": float(n_run),
    }
