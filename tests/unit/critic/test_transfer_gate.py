"""A transferred critic does not choose the first batch, and is kept only if it ranks that batch's results."""

from __future__ import annotations

import copy

import pytest
import torch

from fnas import spaces
from services.critic.model import FitConfig
from services.critic.search_critic import SearchCritic, ranks

torch.set_num_threads(1)
CORA = spaces.get("nasbench-graph/cora")
ARCHS = [CORA.validate((8, i % 9, (i // 9) % 9, (i // 81) % 9, 1)) for i in range(60)]


def reward(i: int, offset: float = 0.0, sign: int = 1) -> float:
    return 0.7 + offset + sign * (0.002 * (i % 9) + 0.001 * ((i // 9) % 9))


def prior(offset: float, sign: int = 1) -> SearchCritic:
    """A critic trained on 40 results of a task whose rewards sit `offset` above the new one's (in the
    opposite order with sign -1), as a search's transfer would start it (its history forgotten, its
    nets kept)."""
    c = SearchCritic(CORA, seed=3, fit=FitConfig(steps=60))
    for i in range(40):
        c.observe(i, ARCHS[i], reward(i, offset, sign))
    c.train_to(40)
    c.reset_for_transfer()
    return c


def first_round(c: SearchCritic) -> SearchCritic:
    for i in range(40, 60):
        c.observe(i - 40, ARCHS[i], reward(i))
    c.train_to(20)
    return c


def test_ranks_is_a_one_sided_rank_test():
    rewards = [0.70, 0.71, 0.72, 0.73, 0.74, 0.75, 0.76, 0.77]
    assert ranks([0.80, 0.81, 0.82, 0.83, 0.84, 0.85, 0.86, 0.87], rewards)  # the right order, 0.1 too high
    assert ranks([0.1, 0.3, 0.2, 0.4, 0.6, 0.5, 0.8, 0.7], rewards)  # nearly right, another scale
    assert not ranks(list(reversed(rewards)), rewards)  # the wrong order
    assert not ranks([0.72, 0.70, 0.75, 0.71, 0.77, 0.73, 0.74, 0.76], rewards)  # hardly any order
    assert not ranks([0.715] * 8, rewards)  # constant: ranks nothing
    assert not ranks([0.1, 0.2], [0.1, 0.2])  # too few to tell


def test_a_prior_answers_as_a_scratch_critic_until_its_first_round():
    scratch = SearchCritic(CORA, seed=3, fit=FitConfig(steps=60))
    transferred = prior(offset=0.0)
    x = [ARCHS[i] for i in range(40, 60)]
    assert [(p.value, p.uncertainty) for p in transferred.predict(x, 0)] == [
        (p.value, p.uncertainty) for p in scratch.predict(x, 0)
    ]


def test_a_prior_that_ranks_nothing_is_dropped_for_a_scratch_critic_bit_for_bit():
    scratch = first_round(SearchCritic(CORA, seed=3, fit=FitConfig(steps=60)))
    moved = first_round(prior(offset=0.0, sign=-1))  # learned the opposite order
    assert not moved.pretrained and scratch.trained.pairs == moved.trained.pairs == []
    x = [ARCHS[i] for i in range(60)]
    assert [p.value for p in moved.predict(x, 20)] == [p.value for p in scratch.predict(x, 20)]


def test_a_prior_that_ranks_the_task_is_kept_whatever_its_scale():
    kept = prior(offset=0.1)
    before = copy.deepcopy(kept.model.state_dict())
    first_round(kept)
    assert kept.pretrained and len(kept.trained.pairs) == 20  # its first predictions already count
    changed = [k for k, v in kept.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed  # fine-tuned from the prior, not replaced
    assert kept.trained.arrival[0][0] == pytest.approx(reward(40, offset=0.1), abs=0.01)
