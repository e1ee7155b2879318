"""The peers users compare against: TPE through Optuna's ask/tell, BANANAS's ensemble acquisition."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from fnas import spaces
from fnas.v1.common_pb2 import SAMPLE_SOURCE_TRAINED
from fnas_bench.plain_loop import run_plain
from fnas_bench.tabular import Setup, evaluator
from services.agent import batch
from services.agent.batch import BatchContext, Feedback, Recalls
from services.agent.peers import BananasStrategy, TPEStrategy
from services.agent.registry import make

torch.set_num_threads(1)
CORA = spaces.get("nasbench-graph/cora")
EVALUATE = evaluator(Setup.of(CORA.id, "accuracy"))


def step(strategy, recalls: Recalls, index: int) -> list:
    """One batch of the loop by hand: plan, settle, evaluate the jobs, learn."""
    context = BatchContext(strategy.batch_size, strategy.batch_size, len(recalls), recalls)
    plan = batch.settle(asyncio.run(strategy.plan(context)), recalls)
    rewards = {pos: EVALUATE(p.tokens) for pos, p in enumerate(plan) if p.trains}
    fresh = batch.fresh_feedback(plan, rewards, strategy.audits)
    strategy.update([f for _, f in fresh])
    for pos, r in rewards.items():
        recalls.add(plan[pos].tokens, index + pos, r)
    return [(p.tokens, p.source) for p in plan]


@pytest.mark.parametrize("name", ["tpe", "bananas"])
def test_a_resumed_peer_continues_bit_identically(name):
    over = {"initial": 10, "epochs": 20, "candidates": 100} if name == "bananas" else {}
    a = make(name, CORA, seed=4, batch_size=5, **over)
    recalls_a, recalls_b = Recalls(CORA.key), Recalls(CORA.key)
    for i in range(3):
        for tokens, source in step(a, recalls_a, 5 * i):
            if source == SAMPLE_SOURCE_TRAINED:
                recalls_b.add(tokens, 0, EVALUATE(tokens))
    b = make(name, CORA, seed=99, batch_size=5, **over)
    b.load_state(a.state())
    assert [step(a, recalls_a, 15 + 5 * i) for i in range(3)] == [
        step(b, recalls_b, 15 + 5 * i) for i in range(3)
    ]


def test_tpe_asks_and_tells_optuna_a_trial_per_proposal_and_fails_what_never_trained():
    s = TPEStrategy(CORA, seed=0, batch_size=4)
    proposals = s.propose(4)
    assert all(CORA.validate(p.tokens) == p.tokens for p in proposals)
    # Two of the four come back (the others failed to train): those two are told, the rest fail.
    s.update([Feedback(p.tokens, 0.5 + i, 0.0) for i, p in enumerate(proposals[:2])])
    trials = s._study.trials
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert [t.value for t in done] == [0.5, 1.5]
    assert sum(t.state.name == "FAIL" for t in trials) >= 2
    assert [kind for kind, _ in s.log if kind != "refused"] == ["ask"] * 4 + ["tell"]


def test_bananas_ranks_candidates_by_mean_plus_kappa_std_of_its_ensemble():
    s = BananasStrategy(CORA, seed=2, batch_size=10, initial=30, epochs=100, candidates=300)
    run = run_plain(s, EVALUATE, 30)  # the initial random architectures
    assert len(s.data) == 30 and run.count(SAMPLE_SOURCE_TRAINED) == 30
    pool = s._candidates()
    assert pool and not {CORA.key(t) for t in pool} & set(s.data)  # untrained ones only
    state = s.generator.get_state()
    score = s._acquisition(pool)
    s.generator.set_state(state)
    greedy = BananasStrategy(CORA, seed=2, batch_size=10, initial=30, epochs=100, candidates=300, kappa=0.0)
    greedy.data, greedy.generator = s.data, s.generator
    mean = greedy._acquisition(pool)
    assert np.all(score >= mean - 1e-6) and not np.allclose(score, mean)  # kappa * std > 0 added
    true = np.array([EVALUATE(t) for t in pool])
    order = np.argsort(-score)
    assert true[order[:30]].mean() > true[order[-30:]].mean() + 0.01  # its favourites beat its last choices
