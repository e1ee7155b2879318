import pytest

from fnas.v1 import common_pb2 as c
from services.agent.fnas_strategy import modules
from services.agent.spec import SpecError, validate


def spec(**kw) -> c.SearchSpec:
    base = dict(space="nasbench-graph/cora", budget=c.Budget(max_activated_samples=10))
    base.update(kw)
    return c.SearchSpec(**base)


def test_defaults_filled():
    out = validate(spec())
    assert out.strategy == "ppo"
    assert out.reward.cost == c.COST_METRIC_NONE
    assert not any(modules(out))  # what runs: ppo on a table has no critic, buffer or pool


@pytest.mark.parametrize(
    ("strategy", "switched_off", "space", "ran"),
    [
        ("fnas", (), "nasbench-graph/cora", {"uac", "aeb"}),  # no pool on a table
        ("fnas", ("aeb",), "mnas", {"uac", "akp"}),
        ("fnas-uac", (), "mnas", {"uac", "akp"}),
        ("fnas-aeb", ("akp",), "mnas", {"aeb"}),
        ("ppo", (), "mnas", {"akp"}),  # MNAS with AKP (fnas bench compute's mnas+akp)
        ("bananas", ("uac",), "nasbench-graph/cora", set()),
    ],
)
def test_the_spec_states_the_modules_that_run(strategy, switched_off, space, ran):
    s = spec(strategy=strategy, space=space)
    for name in switched_off:
        setattr(s.modules, name, False)
    out = validate(s)
    assert {name for name, on in modules(out)._asdict().items() if on} == ran
    assert all(out.modules.HasField(name) for name in ("uac", "aeb", "akp"))
    assert validate(out) == out  # a resumed search's spec validates to itself


def test_mnas_gets_default_dataset_and_epochs():
    out = validate(spec(space="mnas"))
    assert out.task.dataset == "digits"
    assert out.task.epochs > 0


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (dict(space="nope"), "space"),
        (dict(strategy="hill-climb"), "strategy"),
        (dict(budget=c.Budget()), "budget"),
        (dict(budget=c.Budget(max_activated_samples=-5)), "budget.max_activated_samples"),
        (dict(budget=c.Budget(max_activated_samples=5, max_seconds=-1)), "budget.max_seconds"),
        (dict(reward=c.RewardSpec(cost=c.COST_METRIC_LATENCY)), "reward"),
        (dict(task=c.Task(dataset="digits")), "task.dataset"),
        (dict(batch_size=100_000), "batch_size"),
        (dict(warm_start=[c.Architecture(tokens=[0, 1, 2, 3, 99])]), "warm_start[0].tokens"),
        (dict(warm_start=[c.Architecture(tokens=[0, 1])]), "warm_start[0].tokens"),
        (dict(warm_start=[c.Architecture(space="mnas", tokens=[0] * 42)]), "warm_start[0].space"),
        (dict(critic_snapshot="abc"), "critic_snapshot"),
    ],
)
def test_bad_fields_name_the_field(bad, field):
    with pytest.raises(SpecError) as e:
        validate(spec(**bad))
    assert e.value.field == field
    assert str(e.value).startswith(f"{field}: ")


def test_token_error_names_position_and_range():
    with pytest.raises(SpecError, match=r"token 4 \(op4\) is 99, allowed range is 0\.\.8"):
        validate(spec(warm_start=[c.Architecture(tokens=[0, 1, 2, 3, 99])]))


def test_akp_warm_samples_train_pool_epochs_half_of_epochs_by_default():
    def task(**kw):
        return c.SearchSpec(space="mnas", budget=c.Budget(max_activated_samples=4), task=c.Task(**kw))

    assert validate(task(dataset="digits", epochs=5)).task.pool_epochs == 3
    assert validate(task(dataset="digits", epochs=4, pool_epochs=4)).task.pool_epochs == 4  # no saving
    no_akp = task(dataset="digits", epochs=4)
    no_akp.modules.akp = False
    assert validate(no_akp).task.pool_epochs == 0
    with pytest.raises(SpecError, match=r"^task.pool_epochs: must be <= task.epochs \(4\), got 5"):
        validate(task(dataset="digits", epochs=4, pool_epochs=5))
