"""A transferred critic is kept only while it knows the new task better than the mean of its first rewards."""

from __future__ import annotations

import copy

import pytest
import torch

from fnas import spaces
from services.critic.model import FitConfig
from services.critic.search_critic import SearchCritic, misleads

torch.set_num_threads(1)
CORA = spaces.get("nasbench-graph/cora")
ARCHS = [CORA.validate((8, i % 9, (i // 9) % 9, (i // 81) % 9, 1)) for i in range(60)]


def reward(i: int, offset: float = 0.0) -> float:
    return 0.7 + offset + 0.002 * (i % 9) + 0.001 * ((i // 9) % 9)


def prior(offset: float) -> SearchCritic:
    """A critic trained on 40 results of a task whose rewards sit `offset` above the new one's, as a
    search's transfer would start it (its history forgotten, its nets kept)."""
    c = SearchCritic(CORA, seed=3, fit=FitConfig(steps=60))
    for i in range(40):
        c.observe(i, ARCHS[i], reward(i, offset))
    c.train_to(40)
    c.reset_for_transfer()
    return c


def first_round(c: SearchCritic) -> SearchCritic:
    for i in range(40, 60):
        c.observe(i - 40, ARCHS[i], reward(i))
    c.train_to(20)
    return c


def test_misleads_means_worse_than_the_rewards_own_mean():
    rewards = [0.70, 0.71, 0.72, 0.73]  # mean absolute deviation 0.01
    assert not misleads([0.70, 0.71, 0.72, 0.73], rewards)  # exact
    assert not misleads([0.715] * 4, rewards)  # the mean itself: as good as knowing nothing, kept
    assert misleads([0.80, 0.81, 0.82, 0.83], rewards)  # the right ranking, 0.1 too high


def test_a_prior_of_another_scale_is_dropped_for_a_scratch_critic_bit_for_bit():
    scratch = first_round(SearchCritic(CORA, seed=3, fit=FitConfig(steps=60)))
    moved = first_round(prior(offset=0.1))
    assert not moved.pretrained and scratch.trained.pairs == moved.trained.pairs == []
    x = [ARCHS[i] for i in range(60)]
    assert [p.value for p in moved.predict(x, 20)] == [p.value for p in scratch.predict(x, 20)]


def test_a_prior_that_knows_the_task_is_kept():
    kept = prior(offset=0.0)
    before = copy.deepcopy(kept.model.state_dict())
    first_round(kept)
    assert kept.pretrained and len(kept.trained.pairs) == 20  # its first predictions already count
    changed = [k for k, v in kept.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed  # fine-tuned from the prior, not replaced
    assert kept.trained.arrival[0][0] == pytest.approx(reward(40), abs=0.01)


@pytest.mark.parametrize("offset", [0.0, 0.1])
def test_before_the_check_a_prior_answers_as_scratch_so_the_first_batch_is_chosen_as_from_scratch(offset):
    """Whichever way the check goes, the first batch must not depend on the prior: one the check
    drops then costs the search nothing (a prior that ranked it cost pubmed -> citeseer 0.56x)."""
    scratch, moved = SearchCritic(CORA, seed=3, fit=FitConfig(steps=60)), prior(offset)
    x = [ARCHS[i] for i in range(60)]
    assert moved.predict(x, 0) == scratch.predict(x, 0)
    first_round(moved)
    assert moved.pretrained == (offset == 0.0)  # the check itself still reads the prior
    assert moved.predict(x, 20) != scratch.predict(x, 0)
