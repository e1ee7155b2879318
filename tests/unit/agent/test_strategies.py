"""Strategies behind one interface: validity, determinism, bit-identical resume, evolution, plain loop."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
import safetensors.torch
import torch

from fnas.spaces.base import InvalidArchitecture, SearchSpace
from fnas.v1.common_pb2 import SAMPLE_SOURCE_BUFFER, SAMPLE_SOURCE_RECALL, SAMPLE_SOURCE_TRAINED
from fnas_bench.plain_loop import run_plain, samples_to_reach
from services.agent import batch, strategies
from services.agent.batch import Feedback
from services.agent.registry import make
from services.agent.strategies import EvolutionStrategy, Proposal

torch.set_num_threads(1)

NAMES = ("ppo", "random", "evolution")


class FakeSpace(SearchSpace):
    """Four tokens; lists whose first two tokens are equal are invalid; BEST has reward 1."""

    id = "fake"
    token_names = ("a", "b", "c", "d")
    vocab = (3, 3, 2, 4)
    blocks = ((0, 1), (2, 3))
    BEST = (2, 0, 1, 3)

    def _check(self, tokens: tuple[int, ...]) -> None:
        if tokens[0] == tokens[1]:
            raise InvalidArchitecture("a == b")

    def key(self, tokens: Sequence[int]) -> str:
        return ",".join(map(str, self.validate(tokens)))

    def size(self) -> int:
        return 6 * 2 * 4

    def describe(self, tokens: Sequence[int]) -> dict[str, Any]:
        return {"tokens": list(tokens)}

    def reward(self, tokens: Sequence[int]) -> float:
        return sum(t == b for t, b in zip(tokens, self.BEST, strict=True)) / 4


SPACE = FakeSpace()


def feedback(proposals: list[Proposal]) -> list[Feedback]:
    return [Feedback(p.tokens, SPACE.reward(p.tokens), p.log_prob) for p in proposals]


def rounds(strategy, n: int) -> list[Any]:
    """n propose -> update rounds; the proposals and update scalars, for comparison."""
    out = []
    for _ in range(n):
        proposals = strategy.propose(strategy.batch_size)
        out.append((proposals, strategy.update(feedback(proposals))))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_proposals_are_valid_and_in_vocab(name):
    strategy = make(
        name, SPACE, seed=0, batch_size=8, **({"population_size": 8} if name == "evolution" else {})
    )
    for proposals, _ in rounds(strategy, 4):
        assert len(proposals) == 8
        for p in proposals:
            assert SPACE.validate(p.tokens) == p.tokens
            assert all(isinstance(t, int) for t in p.tokens)
            assert p.log_prob < 0 if name == "ppo" else p.log_prob == 0.0
    assert strategy.propose(0) == []


def test_ppo_proposal_log_prob_is_the_policy_log_prob():
    strategy = make("ppo", SPACE, seed=3)
    proposals = strategy.propose(16)
    with torch.no_grad():
        log_prob = strategy.policy.log_prob(torch.tensor([p.tokens for p in proposals]))
    assert max(abs(a - p.log_prob) for a, p in zip(log_prob.tolist(), proposals, strict=True)) < 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_trajectory(name):
    a, b, c = (make(name, SPACE, seed=s, batch_size=5) for s in (1, 1, 2))
    ra, rb, rc = rounds(a, 6), rounds(b, 6), rounds(c, 6)
    assert ra == rb
    assert [p for p, _ in ra] != [p for p, _ in rc]


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip_resumes_bit_identically(name):
    over = {"population_size": 6, "sample_size": 3} if name == "evolution" else {}
    original = make(name, SPACE, seed=11, batch_size=4, **over)
    rounds(original, 3)
    data = original.state()
    assert isinstance(data, bytes) and not data.startswith(b"\x80")  # safetensors, not a pickle
    expected = rounds(original, 4)
    # Another seed and default sizes: everything must come from the state.
    resumed = make(name, SPACE, seed=99)
    resumed.load_state(data)
    assert resumed.batch_size == 4
    assert rounds(resumed, 4) == expected


def test_a_checkpoint_of_an_older_agent_with_unpacked_tensors_still_resumes():
    original = make("ppo", SPACE, seed=5, batch_size=4)
    rounds(original, 2)
    tensors, meta = original._state()
    meta |= {"strategy": "ppo", "space": SPACE.id, "seed": 5, "batch_size": 4}
    meta |= {"n_proposed": original.n_proposed, "n_updates": original.n_updates}
    old = safetensors.torch.save(tensors, metadata={"fnas": json.dumps(meta)})
    packed = original.state()
    assert len(safetensors.torch.load(packed)) == 1 < len(tensors)  # one tensor, whatever the strategy holds
    expected = rounds(original, 3)
    resumed = make("ppo", SPACE, seed=99)
    resumed.load_state(old)
    assert rounds(resumed, 3) == expected


def test_a_packed_state_whose_layout_overruns_its_bytes_is_refused():
    data = make("ppo", SPACE, 0).state()
    meta = json.loads(strategies._metadata(data)["fnas"])
    meta["layout"][0][2] = [10**6]
    forged = safetensors.torch.save(safetensors.torch.load(data), metadata={"fnas": json.dumps(meta)})
    with pytest.raises(ValueError, match="runs past"):
        make("ppo", SPACE, 0).load_state(forged)


def test_load_state_of_another_strategy_is_refused():
    with pytest.raises(ValueError, match="random"):
        make("ppo", SPACE, 0).load_state(make("random", SPACE, 0).state())
    with pytest.raises(ValueError, match="not a strategy state"):
        make("evolution", SPACE, 0).load_state(b"\x80\x04garbage")


def test_make_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="ppo, random, evolution"):
        make("nope", SPACE, 0)
    with pytest.raises(ValueError, match="clip_range"):
        make("ppo", SPACE, 0, clip_rnage=0.1)
    assert make("random", SPACE, 0).batch_size == 10
    assert make("ppo", SPACE, 0, batch_size=3).batch_size == 3


def test_evolution_mutates_exactly_one_token():
    strategy = make("evolution", SPACE, seed=0)
    parent = (1, 2, 0, 3)
    changed_positions = set()
    for _ in range(300):
        child = strategy.mutate(parent)
        diff = [i for i, (a, b) in enumerate(zip(parent, child, strict=True)) if a != b]
        assert len(diff) == 1
        assert 0 <= child[diff[0]] < SPACE.vocab[diff[0]]
        changed_positions |= set(diff)
    assert changed_positions == {0, 1, 2, 3}


def test_evolution_population_ages_and_children_come_from_it():
    strategy: EvolutionStrategy = make(
        "evolution", SPACE, seed=0, batch_size=4, population_size=8, sample_size=3
    )
    first = strategy.propose(8)  # the random initial population
    strategy.update(feedback(first))
    assert [t for t, _ in strategy.population] == [p.tokens for p in first]
    children = strategy.propose(4)
    for child in children:
        assert any(
            sum(a != b for a, b in zip(child.tokens, t, strict=True)) == 1 for t, _ in strategy.population
        )
    strategy.update(feedback(children))
    # Aging: the 4 oldest died, whatever their reward.
    assert [t for t, _ in strategy.population] == [p.tokens for p in first[4:] + children]
    # Replays are not new individuals.
    strategy.update([Feedback(SPACE.BEST, 1.0, 0.0, source=SAMPLE_SOURCE_BUFFER)])
    assert SPACE.BEST not in [t for t, _ in strategy.population][-1:]


def test_ppo_improves_on_the_fake_space():
    strategy = make("ppo", SPACE, seed=0, batch_size=10, lr=0.02)
    best = torch.tensor([SPACE.BEST])
    with torch.no_grad():
        p0 = float(strategy.policy.log_prob(best).exp())
    run = run_plain(strategy, SPACE.reward, 40)
    with torch.no_grad():
        p1 = float(strategy.policy.log_prob(best).exp())
    assert p1 > 0.3 > p0
    # The policy proposed the best one again and again: it learned from recalls, trained it once.
    assert [t for t, _ in run.trajectory].count(SPACE.BEST) == 1
    assert [t for s, t, _ in run.samples if s == SAMPLE_SOURCE_RECALL].count(SPACE.BEST) > 20


def test_run_plain_trains_each_architecture_once_and_cuts_the_last_batch():
    calls = []

    def evaluate(tokens):
        calls.append(tokens)
        return SPACE.reward(tokens)

    strategy = make("random", SPACE, seed=0, batch_size=10)
    run = run_plain(strategy, evaluate, 25)
    assert len(run.trajectory) == 25 == len(calls) == len(set(calls))  # repeats are recalled, not trained
    assert [t for t, _ in run.trajectory] == calls
    assert run.count(SAMPLE_SOURCE_TRAINED) == 25 and run.count(SAMPLE_SOURCE_RECALL) > 0
    assert strategy.n_proposed == len(run.samples) and run.sample_speedup > 1
    rewards = [r for _, r in run.trajectory]
    assert samples_to_reach(rewards, max(rewards)) == rewards.index(max(rewards)) + 1
    assert samples_to_reach(rewards, 2.0) is None


def test_a_search_whose_policy_proposes_only_what_it_trained_ends_converged():
    strategy = make("random", SPACE, seed=0, batch_size=10)
    run = run_plain(strategy, SPACE.reward, 1000)  # the space holds 48 architectures
    assert len(run.trajectory) == 48
    assert strategy.n_updates >= batch.MAX_IDLE_BATCHES and run.samples[-1][0] == SAMPLE_SOURCE_RECALL
