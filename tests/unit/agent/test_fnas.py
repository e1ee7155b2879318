"""FNAS batch assembly (paper 4.2 and 5): the 50% trusted constraint with resampling, audits, dedup,
recalls of what the search trained before, replays with S_i weights, and the off-policy PPO ratio."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import pytest
import torch

from fnas import spaces
from fnas.v1 import common_pb2
from fnas.v1.common_pb2 import (
    SAMPLE_SOURCE_BUFFER,
    SAMPLE_SOURCE_CRITIC,
    SAMPLE_SOURCE_RECALL,
    SAMPLE_SOURCE_TRAINED,
)
from services.agent import assemble, batch, ppo
from services.agent.batch import BatchContext, Feedback, Planned, Recalls
from services.agent.fnas_strategy import FnasConfig, FnasStrategy
from services.agent.registry import make
from services.agent.strategies import Proposal
from services.buffer.aeb import Entry, Replay
from services.critic.decision import DecisionConfig

torch.set_num_threads(1)
CORA = spaces.get("nasbench-graph/cora")


def arch(i: int) -> tuple[int, ...]:
    return CORA.validate((8, i % 9, (i // 9) % 9, 1, 1))


class Scripted(FnasStrategy):
    """Proposes architectures 0, 1, 2, ... in order (log-prob -i), instead of sampling the LSTM."""

    temperatures: list[float]

    def propose(self, n: int, temperature: float = 1.0) -> list[Proposal]:
        self.__dict__.setdefault("temperatures", []).append(temperature)
        out = [Proposal(arch(self.n_proposed + i), -float(self.n_proposed + i)) for i in range(n)]
        self.n_proposed += n
        return out


@dataclass
class Pred:
    value: float
    uncertainty: float
    trusted: bool
    known: bool = False


class FakeCritic:
    """Trusts index = op1 + 9 op2 unless it is a multiple of `every`; V = 0.5, U = index / 100."""

    def __init__(self, every: int = 4, trust_all: bool = False, value=lambda i: 0.5) -> None:
        self.every, self.trust_all, self.value, self.calls = every, trust_all, value, []

    async def predict(self, tokens, min_observed):
        self.calls.append((len(tokens), min_observed))
        out = []
        for t in tokens:
            i = t[1] + 9 * t[2]
            out.append(Pred(self.value(i), i / 100, self.trust_all or i % self.every != 0))
        return out


def ctx(s, critic=None, observed=0, max_trained=100, buffer=None, progress=0.0, recalls=None):
    recalls = recalls if recalls is not None else Recalls(CORA.key)
    return BatchContext(s.batch_size, max_trained, observed, recalls, critic, buffer, progress)


def strategy(batch_size=10, **cfg) -> Scripted:
    # One candidate per slot: the paper's rule, decided proposal by proposal.
    base = dict(audit_fraction=0.0, candidates=1)
    return Scripted(CORA, seed=0, batch_size=batch_size, fnas=FnasConfig(**(base | cfg)))


async def test_trusted_are_capped_at_half_and_the_rest_is_resampled_untrusted():
    s, critic = strategy(), FakeCritic(every=4)
    plan = await assemble.plan_batch(s, ctx(s, critic, observed=7, max_trained=100))
    assert len(plan) == 10
    trusted = [p for p in plan if p.source == SAMPLE_SOURCE_CRITIC]
    trained = [p for p in plan if p.trains]
    assert len(trusted) == 5 and len(trained) == 5
    assert all((p.tokens[1] + 9 * p.tokens[2]) % 4 == 0 for p in trained)  # only untrusted ones are trained
    assert s.n_proposed > 10  # extra trusted proposals were thrown away and resampled
    assert all(observed == 7 for _, observed in critic.calls)  # every prediction reflects the first 7 results


async def test_fraction_is_configurable_and_a_short_budget_keeps_the_ratio():
    s = strategy(max_trusted_fraction=0.2)
    plan = await assemble.plan_batch(s, ctx(s, FakeCritic(), 0, 100))
    assert sum(p.source == SAMPLE_SOURCE_CRITIC for p in plan) == 2 and len(plan) == 10
    s = strategy()
    short = await assemble.plan_batch(s, ctx(s, FakeCritic(), 0, max_trained=2))
    assert sum(p.trains for p in short) == 2
    assert sum(p.source == SAMPLE_SOURCE_CRITIC for p in short) <= 2


async def test_when_everything_is_trusted_the_least_certain_dropped_one_is_trained():
    s = strategy(max_draw_rounds=3)
    plan = await assemble.plan_batch(s, ctx(s, FakeCritic(trust_all=True), 0, 100))
    jobs = [p for p in plan if p.trains]
    assert len(jobs) == 1 and sum(p.source == SAMPLE_SOURCE_CRITIC for p in plan) == 1
    assert s.n_proposed == 10 + 10 + 10
    assert jobs[0].uncertainty == max(p.uncertainty for p in plan)
    assert s.temperatures == [1.0, 2.0, 4.0]  # each resampling round draws a flatter policy


def test_every_fnas_option_sets_a_field_of_the_strategy_or_the_critic():
    # Options are copied by name: one that matches no field would be accepted and silently ignored.
    configs = {f.name for f in fields(FnasConfig)} | {f.name for f in fields(DecisionConfig)}
    assert set(common_pb2.FnasOptions.DESCRIPTOR.fields_by_name) <= configs


async def test_resampling_temperature_is_configurable_and_the_first_round_is_the_policy():
    s = strategy(max_draw_rounds=3, resample_temperature=1.5)
    await assemble.plan_batch(s, ctx(s, FakeCritic(trust_all=True), 0, 100))
    assert s.temperatures == [1.0, 1.5, 2.25]
    with pytest.raises(ValueError, match="resample_temperature"):
        FnasConfig(resample_temperature=0.5)
    with pytest.raises(ValueError, match="ucb"):
        FnasConfig(ucb=-1.0)


async def test_audits_train_would_be_trusted_samples_and_measure_the_error():
    s = strategy(audit_fraction=1.0)
    plan = await assemble.plan_batch(s, ctx(s, FakeCritic(every=1000), 0, 100))
    assert all(p.trains for p in plan) and sum(p.audit for p in plan) == 9  # index 0 is untrusted
    rewards = {pos: 0.5 + 0.01 * pos for pos in range(len(plan))}
    fresh = batch.fresh_feedback(plan, rewards, s.audits)
    assert [f.source for _, f in fresh] == [SAMPLE_SOURCE_TRAINED] * 10
    audited = [pos for pos, p in enumerate(plan) if p.audit]
    assert s.calibration_error() == pytest.approx(sum(0.01 * pos for pos in audited) / 9)  # |V - R|, V = 0.5


async def test_a_trained_candidate_whose_prediction_was_trusted_is_an_audit_too():
    s = strategy(local_candidates=3)
    s.elite = [(0.9, arch(40))]
    # Trusts every index but multiples of 4; V = 0.9 from index 36 (most of the elite's mutations), else 0.5.
    critic = FakeCritic(every=4, value=lambda i: 0.9 if i >= 36 else 0.5)
    plan = await assemble.plan_batch(s, ctx(s, critic, 0, 100))
    trained = [p for p in plan if p.trains]
    assert [p.audit for p in trained] == [(p.tokens[1] + 9 * p.tokens[2]) % 4 != 0 for p in trained]
    assert any(p.audit for p in trained) and not all(p.audit for p in trained)
    rewards = {pos: 0.7 for pos, p in enumerate(plan) if p.trains}
    batch.fresh_feedback(plan, rewards, s.audits)
    assert len(s.audits) == sum(p.audit for p in trained)
    assert s.calibration_error() == pytest.approx(0.2)  # |V - R| of each: V is 0.9 or 0.5, R 0.7


async def test_candidates_are_trained_highest_predicted_reward_first():
    s = strategy(candidates=3)  # ucb 0 by default: V alone ranks them
    critic = FakeCritic(every=1, value=lambda i: -abs(i - 12) / 100)
    plan = await assemble.plan_batch(s, ctx(s, critic, 0, 100))
    # V peaks at index 12 of the 30 drawn; ties keep the order of the draws.
    assert [p.tokens[1] + 9 * p.tokens[2] for p in plan] == sorted(range(30), key=lambda i: abs(i - 12))[:10]


async def test_candidates_ranked_by_v_plus_ucb_times_u():
    s = strategy(candidates=3, ucb=1.0)
    plan = await assemble.plan_batch(s, ctx(s, FakeCritic(every=1), 0, 100))  # nothing trusted
    assert s.n_proposed == 30 and all(p.trains for p in plan)
    # U = index / 100 and V = 0.5 for all: the 10 highest indices of the 30 drawn, best first.
    assert [p.tokens[1] + 9 * p.tokens[2] for p in plan] == list(range(29, 19, -1))


async def test_a_duplicate_in_a_batch_is_trained_once_and_shares_its_result():
    s = strategy()
    s.propose = lambda n, temperature=1.0: [
        Proposal(arch(0), -1.0),
        Proposal(arch(0), -2.0),
        Proposal(arch(4), -3.0),
    ][:n]
    plan = await assemble.plan_batch(s, ctx(s, FakeCritic(every=1), 0, 100))
    assert [p.trains for p in plan[:3]] == [True, False, True] and plan[1].copy_of == 0
    fresh = batch.fresh_feedback(plan[:3], {0: 0.8, 2: 0.6}, s.audits)
    assert [(f.reward, f.log_prob) for _, f in fresh] == [(0.8, -1.0), (0.8, -2.0), (0.6, -3.0)]
    assert [f.source for _, f in fresh] == [
        SAMPLE_SOURCE_TRAINED,
        SAMPLE_SOURCE_RECALL,
        SAMPLE_SOURCE_TRAINED,
    ]


async def test_an_architecture_the_search_trained_before_is_recalled_not_trained_again():
    s, recalls = strategy(), Recalls(CORA.key)
    recalls.add(arch(72), 5, 0.77)  # arch(8) is the same graph as arch(72): the same architecture
    plan = await assemble.plan_batch(s, ctx(s, FakeCritic(every=1), 0, 100, recalls=recalls))
    again = [p for p in plan if CORA.key(p.tokens) == CORA.key(arch(8))]
    assert len(again) == 1 and (again[0].source, again[0].recall_of, again[0].recalled) == (
        SAMPLE_SOURCE_RECALL,
        5,
        0.77,
    )
    assert sum(p.trains for p in plan) == 9 and len(plan) == 10  # a policy sample of the batch, not a job
    [(_, f)] = [
        (pos, f) for pos, f in batch.fresh_feedback(plan, {}, s.audits) if pos == plan.index(again[0])
    ]
    assert (f.reward, f.source) == (0.77, SAMPLE_SOURCE_RECALL)


def test_settle_recalls_repeats_for_any_strategy_and_copies_share_a_recall():
    recalls = Recalls(CORA.key)
    recalls.add(arch(1), 3, 0.5)
    plan = [Planned(t, -1.0, SAMPLE_SOURCE_TRAINED) for t in (arch(2), arch(1), arch(2), arch(72), arch(8))]
    settled = batch.settle(plan, recalls)
    assert [p.trains for p in settled] == [True, False, False, True, False]
    assert [(p.copy_of, p.recall_of) for p in settled] == [(-1, -1), (-1, 3), (0, -1), (-1, -1), (3, -1)]
    recalls.add(arch(8), 9, 0.6)
    again = batch.settle(plan[3:], recalls)  # the job a copy shared is now a recall: so is the copy
    assert [(p.trains, p.copy_of, p.recall_of, p.recalled) for p in again] == [(False, -1, 9, 0.6)] * 2


class FakeBuffer:
    def __init__(self) -> None:
        self.asked = None

    async def sample(self, n, beta, seed, min_observed, capacity, temperature):
        self.asked = (n, beta, min_observed, capacity, temperature)
        return [Replay(Entry(3, arch(3), 0.9, -7.5), 0.25)] * n


async def test_replays_are_at_most_half_the_batch_with_stored_log_prob_and_weight():
    s, buffer = strategy(max_replay_fraction=0.5, buffer_size=7), FakeBuffer()
    out = await assemble.replays(s, ctx(s, buffer=buffer, observed=40, progress=0.25), n_fresh=6)
    assert len(out) == 6 and buffer.asked == (6, 0.25, 40, 7, 1.0)  # n_replay <= n_fresh at 50%
    index, f = out[0]
    assert (index, f.source, f.log_prob, f.weight, f.reward) == (3, SAMPLE_SOURCE_BUFFER, -7.5, 0.25, 0.9)
    s = strategy(max_replay_fraction=0.25)
    third = await assemble.replays(s, ctx(s, buffer=FakeBuffer(), observed=40, progress=0.5), 6)
    assert len(third) == 2  # 2 / (6 + 2) = 25%
    s = strategy(aeb=False)
    assert await assemble.replays(s, ctx(s, buffer=FakeBuffer(), observed=40), 6) == []


def test_off_policy_ratio_uses_the_stored_behaviour_log_prob(monkeypatch):
    log_prob = torch.tensor([-1.0, -2.0])
    behaviour = torch.tensor([-1.0, -4.0])  # the second: a replay drawn by an older, different policy
    loss, ratio = ppo.clipped_surrogate(log_prob, behaviour, torch.tensor([1.0, 1.0]), torch.ones(2), 0.2)
    assert ratio.tolist() == pytest.approx([1.0, math.exp(2.0)])
    assert float(loss) == pytest.approx(-(1.0 + 1.2) / 2)  # the replay's ratio is clipped at 1 + eps
    captured = {}
    real = ppo.ppo_update

    def spy(policy, optimizer, batch, **kw):
        captured["batch"] = batch
        return real(policy, optimizer, batch, **kw)

    monkeypatch.setattr(ppo, "ppo_update", spy)
    s = make("fnas", CORA, seed=1)
    fresh = Planned(arch(1), -3.0, SAMPLE_SOURCE_CRITIC, value=0.7)
    feedback = [f for _, f in batch.fresh_feedback([fresh], {}, s.audits)]
    feedback.append(Feedback(arch(2), 0.8, -9.0, 0.4, SAMPLE_SOURCE_BUFFER))
    s.update(feedback)
    b = captured["batch"]
    assert b.behaviour_log_prob.tolist() == [-3.0, -9.0] and b.weights.tolist() == pytest.approx([1.0, 0.4])


def test_variants_force_their_module_and_state_round_trips():
    assert (make("fnas-uac", CORA, 0).fnas.aeb, make("fnas-aeb", CORA, 0).fnas.uac) == (False, False)
    with pytest.raises(ValueError):
        make("fnas-pool", CORA, 0)
    with pytest.raises(ValueError):
        FnasConfig(max_trusted_fraction=1.0)
    s = make("fnas", CORA, seed=3)
    s.audits, s.elite = [(0.5, 0.6)], [(0.8, arch(3))]
    s.draw_seed()
    t = make("fnas", CORA, seed=3)
    t.load_state(s.state())
    assert (t.audits, t.draw_seed()) == ([(0.5, 0.6)], s.draw_seed())
    assert t.elite == [(0.8, arch(3))]


def test_elite_keeps_the_best_distinct_trained_and_local_candidates_mutate_one_token():
    s = strategy(elite_size=3)
    assert CORA.key(arch(8)) == CORA.key(arch(72)) and arch(8) != arch(72)  # one graph, two token lists
    trained = [(arch(1), 0.9), (arch(2), 0.8), (arch(1), 0.9), (arch(3), 0.1), (arch(8), 0.85)]
    s.update([Feedback(t, r, -1.0, 1.0, SAMPLE_SOURCE_TRAINED) for t, r in trained])
    s.update([Feedback(arch(72), 0.85, -1.0, 1.0, SAMPLE_SOURCE_TRAINED)])
    s.update([Feedback(arch(4), 1.0, -1.0, 1.0, SAMPLE_SOURCE_CRITIC)])  # predictions never count
    assert s.elite == [(0.9, arch(1)), (0.85, arch(8)), (0.8, arch(2))]
    local = s.local_proposals(30)
    assert len(local) == 30
    for p in local:
        assert CORA.validate(p.tokens) == p.tokens
        assert min(sum(a != b for a, b in zip(p.tokens, e, strict=True)) for _, e in s.elite) == 1
    expected = s.policy.log_prob(torch.tensor([p.tokens for p in local])).tolist()
    assert [p.log_prob for p in local] == pytest.approx(expected)
    assert strategy().local_proposals(5) == []  # nothing trained yet
    for bad in ({"local_candidates": -1}, {"elite_size": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FnasConfig(**bad)


class KnowsForty(FakeCritic):
    """Nothing trusted; V = 1 at index 40, where every architecture is already known, else 0.5."""

    async def predict(self, tokens, min_observed):
        preds = await super().predict(tokens, min_observed)
        return [Pred(p.value, p.uncertainty, False, known=p.value == 1.0) for p in preds]


async def test_local_candidates_compete_by_v_and_known_ones_are_skipped():
    def v(i):
        return 1.0 if i == 40 else 0.9 if i == 41 else 0.5

    s = strategy(local_candidates=3)
    s.elite = [(0.9, arch(40))]  # index 40 = op1 4 + 9 * op2 4
    plan = await assemble.plan_batch(s, ctx(s, FakeCritic(every=1, value=v), 0, 100))
    # Mutating the link, op3 or op4 keeps index 40 (V = 1): those are trained before any proposal (V = 0.5).
    first = [p for p in plan if p.tokens[1] + 9 * p.tokens[2] == 40]
    assert first and plan[: len(first)] == first and arch(40) not in [p.tokens for p in plan]
    s = strategy(local_candidates=3)
    s.elite = [(0.9, arch(40))]
    plan = await assemble.plan_batch(s, ctx(s, KnowsForty(every=1, value=v), 0, 100))
    assert not [p for p in plan if p.tokens[1] + 9 * p.tokens[2] == 40]  # known: not trained again
    assert plan[0].tokens[1] + 9 * plan[0].tokens[2] == 41  # op1 4 -> 5: the next best local candidate


def test_a_behaviour_policy_that_found_a_sample_very_unlikely_cannot_make_the_ratio_overflow():
    log_prob = torch.tensor([-1.0, -1.0], requires_grad=True)
    behaviour = torch.tensor([-1.0, -500.0])
    loss, ratio = ppo.clipped_surrogate(log_prob, behaviour, torch.tensor([1.0, -1.0]), torch.ones(2), 0.2)
    loss.backward()
    assert torch.isfinite(ratio).all() and torch.isfinite(loss) and torch.isfinite(log_prob.grad).all()


def test_spec_switches_and_options_reach_the_strategy_and_bad_ones_are_refused():
    from services.agent import spec as specs
    from services.agent.fnas_strategy import config_from_spec

    s = common_pb2.SearchSpec(
        space=CORA.id,
        strategy="fnas",
        budget=common_pb2.Budget(max_activated_samples=10),
        modules=common_pb2.Modules(aeb=False),
        fnas=common_pb2.FnasOptions(
            candidates=1,
            buffer_size=5,
            max_trusted_fraction=0.25,
            ucb=0.5,
            resample_temperature=1.0,
            local_candidates=0,
            elite_size=3,
        ),
    )
    cfg = config_from_spec(specs.validate(s))
    assert (cfg.uac, cfg.aeb, cfg.candidates, cfg.buffer_size, cfg.max_trusted_fraction) == (
        True,
        False,
        1,
        5,
        0.25,
    )
    assert (cfg.ucb, cfg.resample_temperature, cfg.local_candidates, cfg.elite_size) == (0.5, 1.0, 0, 3)
    assert specs.uses_critic(s) and not specs.uses_buffer(s)
    for bad, field in (
        (common_pb2.FnasOptions(candidates=0), "fnas.candidates"),
        (common_pb2.FnasOptions(max_trusted_fraction=1.0), "fnas.max_trusted_fraction"),
        (common_pb2.FnasOptions(priority_temperature=0.0), "fnas.priority_temperature"),
        (common_pb2.FnasOptions(ucb=-0.1), "fnas.ucb"),
        (common_pb2.FnasOptions(resample_temperature=0.5), "fnas.resample_temperature"),
        (common_pb2.FnasOptions(elite_size=0), "fnas.elite_size"),
        (common_pb2.FnasOptions(local_candidates=1001), "fnas.local_candidates"),
    ):
        s.fnas.CopyFrom(bad)
        with pytest.raises(specs.SpecError, match=f"^{field}:"):
            specs.validate(s)


async def test_a_critic_and_buffer_that_answer_nothing_degrade_the_batch_instead_of_failing_it():
    """Real clients to a port nobody serves: past their patience the batch is trained and goes unreplayed."""
    import socket

    from services.buffer.client import BufferClient, RemoteBuffer
    from services.critic.client import CriticClient, RemoteCritic

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening: connections are refused
        async with (
            CriticClient(address, timeout_s=0.5, patience_s=0.5) as critic,
            BufferClient(address, timeout_s=0.5, patience_s=0.5) as buffer,
        ):
            s = strategy(batch_size=10)
            remote = ctx(s, RemoteCritic(critic, "s1", CORA.id), 30, 6, buffer=RemoteBuffer(buffer, "s1"))
            plan = await assemble.plan_batch(s, remote)
            assert len(plan) == 6 and all(p.trains for p in plan)
            assert await assemble.replays(s, remote, 6) == []


class KnowsTrained(FakeCritic):
    """Trusts odd indices; knows (an exact recall) the architectures in `known`."""

    def __init__(self, known) -> None:
        super().__init__(every=2)
        self.known = {CORA.key(t) for t in known}

    async def predict(self, tokens, min_observed):
        preds = await super().predict(tokens, min_observed)
        return [
            Pred(p.value, p.uncertainty, p.trusted, CORA.key(t) in self.known)
            for p, t in zip(preds, tokens, strict=True)
        ]


async def test_what_the_critic_knows_from_this_search_is_a_recall_and_counts_as_trusted():
    s, recalls = strategy(max_trusted_fraction=0.5), Recalls(CORA.key)
    known = [arch(1), arch(3), arch(5)]
    for i, tokens in enumerate(known):
        recalls.add(tokens, 10 + i, 0.7 + i / 100)
    plan = await assemble.plan_batch(s, ctx(s, KnowsTrained(known), 3, 100, recalls=recalls))
    recalled = [
        (p.tokens, p.trusted, p.recall_of, p.recalled) for p in plan if p.source == SAMPLE_SOURCE_RECALL
    ]
    assert recalled == [(t, True, 10 + i, 0.7 + i / 100) for i, t in enumerate(known)]
    # Genuine predictions (arch 7 and 9) and recalls of known ones share the trusted half of the batch.
    assert sum(p.trusted for p in plan) == 5 and sum(p.source == SAMPLE_SOURCE_CRITIC for p in plan) == 2
    assert len(plan) == 10 and sum(p.trains for p in plan) == 5
